"""Read and validate input records: JSONL, JSON, CSV/TSV or Parquet, optionally gzip-compressed.

Every record read ends up either as a :class:`Record` (to analyse) or as a :class:`Reject` (with file,
line and reason). Field roles (text, id, timestamp, rating, channel) come from the config or are
auto-detected from common names.
"""

from __future__ import annotations

import csv
import functools
import glob
import gzip
import hashlib
import io
import json
import logging
import math
import os
import re
import sqlite3
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import FieldsConfig
from .errors import Errors, InputError, PipelineError, did_you_mean

logger = logging.getLogger(__name__)

ROLE_CANDIDATES: dict[str, tuple[str, ...]] = {
    "text": (
        "text",
        "review",
        "review_text",
        "body",
        "comment",
        "comments",
        "message",
        "content",
        "feedback",
        "verbatim",
        "description",
    ),
    "id": ("id", "review_id", "ticket_id", "doc_id", "document_id", "uuid", "case_id"),
    "timestamp": (
        "created_at",
        "date",
        "timestamp",
        "time",
        "datetime",
        "created",
        "submitted_at",
        "review_date",
    ),
    "rating": ("rating", "stars", "score", "star_rating", "nps", "csat"),
    "channel": ("channel", "source", "platform"),
}
ROLES = tuple(ROLE_CANDIDATES)
SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
RAW_LIMIT = 2000
# How many leading records without a recognisable text field are tolerated before the file is refused.
MAX_PENDING = 100


@dataclass
class Record:
    source_file: str
    source_line: int
    data: dict[str, Any]


@dataclass
class Reject:
    source_file: str
    source_line: int
    code: str
    reason: str
    raw: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_file": self.source_file,
            "source_line": self.source_line,
            "code": self.code,
            "reason": self.reason,
            "raw": self.raw,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reject:
        """The inverse of :meth:`to_dict` (for rejects cxnlp wrote itself)."""
        return cls(d["source_file"], d["source_line"], d["code"], d["reason"], d["raw"])


@dataclass
class InputFile:
    path: str
    format: str
    compressed: bool
    size: int | None = None
    sha256: str | None = None
    records: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "compressed": self.compressed,
            "bytes": self.size,
            "sha256": self.sha256,
            "records": self.records,
        }


@dataclass
class ReadResult:
    records: list[Record] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    files: list[InputFile] = field(default_factory=list)
    roles: dict[str, str | None] = field(default_factory=dict)
    # Set by a reader that streamed the records elsewhere (the batch runner): how many it read.
    n_read: int | None = None

    @property
    def read(self) -> int:
        return self.n_read if self.n_read is not None else len(self.records) + len(self.rejects)


_CODES = {v: k for k, v in vars(Errors).items() if k[:1] in "ER" and k[1:].isdigit()}
# strict=False: raw tabs and other control characters inside strings are kept (normalisation drops them).
_DECODER = json.JSONDecoder(strict=False)
_JSON_STARTS = frozenset('{["-0123456789tfnNI')
_SURROGATE_ESCAPE = "\\ud"
_SURROGATES = re.compile("[\ud800-\udfff]")


def _reject(path: str, line: int, template: str, raw: Any, **kw: Any) -> Reject:
    code = _CODES[template]
    if not isinstance(raw, str):
        try:
            raw = json.dumps(raw, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            raw = "(a value too deeply nested to show)"
    return Reject(path, line, code, clean_text(template.format(**kw)), clean_text(raw[:RAW_LIMIT]))


def clean_text(text: str) -> str:
    """Lone surrogates (JSON escapes such as "\\ud800") cannot be written as UTF-8: make them U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)


def clean_value(value: Any) -> Any:
    """``value`` with every string in it passed through :func:`clean_text` (iteratively: no recursion limit)."""
    if isinstance(value, str):
        return clean_text(value)
    if not isinstance(value, (dict, list)):
        return value
    root: list[Any] = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        item = container[key]
        if isinstance(item, str):
            container[key] = clean_text(item)
        elif isinstance(item, dict):
            for k in list(item):
                if isinstance(k, str) and clean_text(k) != k:
                    item[clean_text(k)] = item.pop(k)
            stack.extend((item, k) for k in item)
        elif isinstance(item, list):
            stack.extend((item, i) for i in range(len(item)))
    return root[0]


def expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Expand globs; keep order; ``-`` means stdin."""
    paths: list[str] = []
    for item in inputs:
        item = str(item)
        if item == "-":
            paths.append(item)
        elif any(ch in item for ch in "*?["):
            matched = sorted(glob.glob(item, recursive=True))
            if not matched:
                raise InputError(Errors.E105, pattern=item)
            paths.extend(matched)
        else:
            if not Path(item).exists():
                raise InputError(Errors.E102, path=item)
            if Path(item).is_dir():
                raise InputError(
                    Errors.E104,
                    path=item,
                    problem="it is a directory; pass the files in it or a glob such as 'dir/*.jsonl'",
                )
            paths.append(item)
    if not paths:
        raise InputError(Errors.E107)
    return paths


def detect_format(path: str) -> tuple[str, bool]:
    if path == "-":
        return "jsonl", False
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    if compressed:
        suffixes = suffixes[:-1]
    suffix = suffixes[-1] if suffixes else ""
    if suffix not in SUFFIXES:
        raise InputError(Errors.E103, path=path, suffix=suffix or "(none)")
    return SUFFIXES[suffix], compressed


def _file_digest(path: str) -> tuple[int, str]:
    """(size, sha256) of a file. Remembered while the file is unchanged (same inode, size and mtime),
    so the batch runner's fingerprint and the reader's run record hash each input once."""
    st = os.stat(path)
    return _digest(os.path.abspath(path), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _digest(path: str, inode: int, size: int, mtime_ns: int) -> tuple[int, str]:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return size, h.hexdigest()


def _open_text(path: str, compressed: bool) -> io.TextIOBase:
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
    raw: Any = gzip.open(path, "rb") if compressed else open(path, "rb")  # noqa: SIM115 - closed by the wrapper
    head = raw.peek(4)[:4] if hasattr(raw, "peek") else b""
    # utf-8-sig only for a whole BOM: its decoder swallows a file that is just a partial BOM (b"\xef").
    encoding = "utf-8-sig" if head.startswith(b"\xef\xbb\xbf") else "utf-8"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    # errors="replace" never drops a record: undecodable bytes become U+FFFD in the text.
    return io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="")


def _iter_jsonl(path: str, compressed: bool) -> Iterator[tuple[int, Any, Reject | None]]:
    with _open_text(path, compressed) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            idx = len(line) - len(line.lstrip(" \t\n\r"))
            if line[idx] not in _JSON_STARTS:  # cheap and common: junk that cannot be JSON at all
                problem = f"Expecting value: line 1 column {idx + 1} (char {idx})"
                yield lineno, None, _reject(path, lineno, Errors.R001, line.rstrip("\r\n"), problem=problem)
                continue
            try:
                obj = _DECODER.decode(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                problem = str(exc)[:200] if not isinstance(exc, RecursionError) else "nested too deeply"
                yield lineno, None, _reject(path, lineno, Errors.R001, line.rstrip("\r\n"), problem=problem)
                continue
            if _SURROGATE_ESCAPE in line or "\\uD" in line:
                obj = clean_value(obj)
            if not isinstance(obj, dict):
                yield (
                    lineno,
                    None,
                    _reject(
                        path,
                        lineno,
                        Errors.R002,
                        line.rstrip("\r\n"),
                        kind=type(obj).__name__.replace("dict", "object").replace("list", "array"),
                    ),
                )
                continue
            yield lineno, obj, None


def _iter_json(path: str, compressed: bool) -> Iterator[tuple[int, Any, Reject | None]]:
    with _open_text(path, compressed) as fh:
        text = fh.read()
    try:
        data = _DECODER.decode(text)
    except json.JSONDecodeError:
        # Many ".json" exports are really JSON Lines.
        yield from _iter_jsonl(path, compressed)
        return
    except RecursionError:
        yield 1, None, _reject(path, 1, Errors.R001, text[:RAW_LIMIT], problem="nested too deeply")
        return
    data = clean_value(data)
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else [data]
    if not isinstance(data, list):
        raise InputError(Errors.E104, path=path, problem="expected a JSON array of objects or JSON Lines")
    for i, obj in enumerate(data, start=1):
        if isinstance(obj, dict):
            yield i, obj, None
        else:
            yield i, None, _reject(path, i, Errors.R002, obj, kind=type(obj).__name__)


def _iter_csv(path: str, compressed: bool, delimiter: str) -> Iterator[tuple[int, Any, Reject | None]]:
    csv.field_size_limit(sys.maxsize)
    with _open_text(path, compressed) as fh:
        last_line = [""]

        def lines() -> Iterator[str]:
            for physical in fh:
                last_line[0] = physical
                yield physical

        reader = csv.reader(lines(), delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(
                Errors.E104, path=path, problem=f"the header could not be parsed ({exc})"
            ) from exc
        header = [h.strip() for h in header]

        def outcome(start: int, end: int, row: list[str]) -> tuple[int, Any, Reject | None]:
            if len(row) == len(header):
                return start, dict(zip(header, row)), None
            if len(row) < len(header) and end > start and any("\n" in c for c in row):
                # A quote that is never closed swallows the following lines into one cell.
                return (
                    start,
                    None,
                    _reject(
                        path,
                        start,
                        Errors.R011,
                        delimiter.join(row),
                        end=end,
                        got=len(row),
                        expected=len(header),
                    ),
                )
            return (
                start,
                None,
                _reject(path, start, Errors.R007, delimiter.join(row), got=len(row), expected=len(header)),
            )

        # A multi-line row whose last cell ends with a line break is held back: if it is the file's last
        # row, its quote ran to the end of the file and was never closed.
        held: tuple[int, int, list[str]] | None = None
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                if held is not None:
                    h_start, h_end, h_row = held
                    if h_row[-1].endswith(
                        last_line[0]
                    ):  # the file's last line, newline included, is inside the cell
                        yield (
                            h_start,
                            None,
                            _reject(
                                path,
                                h_start,
                                Errors.R011,
                                delimiter.join(h_row),
                                end=h_end,
                                got=len(h_row),
                                expected=len(header),
                            ),
                        )
                    else:
                        yield outcome(*held)
                return
            except csv.Error as exc:
                if held is not None:
                    yield outcome(*held)
                    held = None
                yield start, None, _reject(path, start, Errors.R009, "", problem=str(exc))
                continue
            if held is not None:
                yield outcome(*held)
                held = None
            if not row or all(not c.strip() for c in row):
                continue
            if reader.line_num > start and row[-1].endswith(("\n", "\r")):
                held = (start, reader.line_num, row)
                continue
            yield outcome(start, reader.line_num, row)


def _iter_parquet(path: str) -> Iterator[tuple[int, Any, Reject | None]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(Errors.E104, path=path, problem=str(exc).splitlines()[0]) from exc
    row = 0
    for batch in pf.iter_batches(batch_size=8192):
        for obj in batch.to_pylist():
            row += 1
            yield row, obj, None


def iter_file(path: str, fmt: str, compressed: bool) -> Iterator[tuple[int, Any, Reject | None]]:
    if fmt == "jsonl":
        return _iter_jsonl(path, compressed)
    if fmt == "json":
        return _iter_json(path, compressed)
    if fmt in ("csv", "tsv"):
        return _iter_csv(path, compressed, "\t" if fmt == "tsv" else ",")
    if compressed:
        raise InputError(
            Errors.E103, path=path, suffix=".parquet.gz (Parquet is compressed internally; drop the .gz)"
        )
    return _iter_parquet(path)


def detect_roles(keys: Iterable[str], fields: FieldsConfig, path: str) -> dict[str, str | None]:
    """Map roles to field names: configured names must exist; others are auto-detected."""
    keys = list(keys)
    lowered = {k.lower().strip(): k for k in keys}
    roles: dict[str, str | None] = {}
    for role in ROLES:
        configured = getattr(fields, role)
        if configured:
            if configured not in keys:
                raise InputError(
                    Errors.E106,
                    field=configured,
                    role=role,
                    path=path,
                    suggestion=did_you_mean(configured, keys),
                    seen=", ".join(keys) or "(none)",
                )
            roles[role] = configured
            continue
        roles[role] = next((lowered[c] for c in ROLE_CANDIDATES[role] if c in lowered), None)
    if roles["text"] is None:
        guess = did_you_mean("text", keys) or next(
            (f" Did you mean '{k}'?" for k in keys for c in ROLE_CANDIDATES["text"] if c in k.lower()), ""
        )
        raise InputError(
            Errors.E101,
            path=path,
            field_note=" (looked for " + ", ".join(ROLE_CANDIDATES["text"][:6]) + ", ...)",
            suggestion=guess,
            seen=", ".join(keys) or "(none)",
        )
    # A rating role must not steal the id, e.g. a column named "score" that is really an id.
    if roles["id"] is not None and roles["id"] == roles["rating"]:
        roles["rating"] = None
    return roles


def stable_id(text: str) -> str:
    return "doc-" + hashlib.sha1(text.encode("utf-8", "replace")).hexdigest()[:16]


class SeenIds:
    """The doc ids read so far, each with where it was first read: the duplicate-id check's memory.

    Held in a dict while there are few. With ``spill`` (a callable giving the folder to write to, called
    once), every ``buffer`` ids go to an SQLite file there instead, so memory stays bounded however
    large the input: the buffer, a fixed filter of 16 MiB (a Bloom filter with one hash) and SQLite's
    page cache. The filter sets a bit per spilled id, so an id never seen (nearly all) is answered
    without reading the file; a false positive of the filter only costs a lookup, it never rejects a
    record.

    ``first(doc_id)`` is where the id was first read (``"file:line"``) or None; ``add`` records it.
    """

    FILE = "seen-ids.sqlite"
    _BITS = 1 << 27  # the filter, one bit per id: 16 MiB; 0.7% false positives at 1M ids, 7% at 10M
    _MASK = _BITS - 1

    BUFFER = 100_000

    def __init__(self, spill: Callable[[], Path] | None = None, buffer: int | None = None) -> None:
        self._spill = spill
        self._buffer_size = buffer or self.BUFFER
        self._recent: dict[str, str] = {}
        self._db: sqlite3.Connection | None = None
        self._path: Path | None = None
        self._filter: bytearray | None = None
        self.spilled = 0

    def __contains__(self, doc_id: str) -> bool:
        return self.first(doc_id) is not None

    def __len__(self) -> int:
        return self.spilled + len(self._recent)

    def first(self, doc_id: str) -> str | None:
        where = self._recent.get(doc_id)
        if where is not None or self._filter is None:
            return where
        bit = hash(doc_id) & self._MASK  # salted per process; the filter lives only in this one
        if not self._filter[bit >> 3] & (1 << (bit & 7)):
            return None
        assert self._db is not None
        try:
            row = self._db.execute("SELECT at FROM seen WHERE id = ?", (doc_id,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return None if row is None else str(row[0])

    def add(self, doc_id: str, where: str) -> None:
        self._recent[doc_id] = where
        if self._spill is not None and len(self._recent) >= self._buffer_size:
            self._flush()

    def close(self) -> None:
        """Drop the spill file, if any (the ids are gone; reading is over)."""
        self._recent = {}
        self._filter = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    def _error(self, exc: BaseException) -> PipelineError:
        where = self._path.parent if self._path is not None else "the work folder"
        problem = (
            f"the ids read could not be kept in {self.FILE} ({exc}); it needs to be a writable folder with "
            "free space"
        )
        return PipelineError(Errors.E208, path=str(where), problem=problem)

    def _flush(self) -> None:
        try:
            self._spill_recent()
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from exc

    def _spill_recent(self) -> None:
        if self._db is None:
            assert self._spill is not None
            folder = self._spill()
            self._path = folder / self.FILE
            folder.mkdir(parents=True, exist_ok=True)
            self._path.unlink(missing_ok=True)  # a killed run's
            # Autocommit; no journal and no fsync: the file is scratch, rebuilt by every run. One reader
            # uses it at a time, whichever thread advances the reading.
            self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = OFF")
            self._db.execute("PRAGMA synchronous = OFF")
            self._db.execute("CREATE TABLE seen (id TEXT PRIMARY KEY, at TEXT NOT NULL) WITHOUT ROWID")
            self._filter = bytearray(self._BITS >> 3)
        assert self._filter is not None
        bits = np.fromiter(map(hash, self._recent), dtype=np.int64, count=len(self._recent)) & self._MASK
        view = np.frombuffer(self._filter, dtype=np.uint8)
        np.bitwise_or.at(view, bits >> 3, np.left_shift(1, bits & 7).astype(np.uint8))
        self._db.execute("BEGIN")
        # in key order: the inserts then walk the index's pages in order
        self._db.executemany("INSERT INTO seen VALUES (?, ?)", sorted(self._recent.items()))
        self._db.execute("COMMIT")
        self.spilled += len(self._recent)
        self._recent = {}


def read_inputs(
    inputs: Iterable[str | os.PathLike[str]] | list[dict[str, Any]],
    fields: FieldsConfig | None = None,
) -> ReadResult:
    """Read files (or in-memory records) into records and rejects. Raises InputError for unusable files."""
    result = ReadResult()
    for item in iter_inputs(inputs, fields, result):
        _add(result, item)
    return result


def in_memory(inputs: Sequence[Any]) -> bool:
    """Whether ``inputs`` are records (dicts) rather than paths: ``cxnlp.Analyzer`` and ``run_batch``
    take either."""
    return bool(inputs) and all(isinstance(x, dict) for x in inputs)


def iter_inputs(
    inputs: Iterable[str | os.PathLike[str]] | list[dict[str, Any]],
    fields: FieldsConfig | None = None,
    result: ReadResult | None = None,
    seen_ids: SeenIds | None = None,
) -> Iterator[Record | Reject]:
    """Stream records and rejects in input order, one at a time (the batch runner reads in chunks).

    ``result`` collects the file list and the detected field roles as reading goes; its ``records`` and
    ``rejects`` stay empty (the caller decides where each item goes). ``seen_ids`` holds the ids read,
    for the duplicate check: a dict by default; the batch runner passes one that spills to its work
    folder (the caller closes it)."""
    fields = fields or FieldsConfig()
    result = result if result is not None else ReadResult()
    inputs = list(inputs)  # type: ignore[assignment]
    sources: list[tuple[str, Iterator[tuple[int, Any, Reject | None]]]] = []
    if in_memory(inputs):  # type: ignore[arg-type]
        result.files.append(InputFile("<records>", "records", False, records=len(inputs)))  # type: ignore[arg-type]
        records = [dict(r) for r in inputs]  # type: ignore[arg-type]
        sources.append(("<records>", iter((i, clean_value(r), None) for i, r in enumerate(records, start=1))))
    else:
        for path in expand_inputs(inputs):  # type: ignore[arg-type]
            fmt, compressed = detect_format(path)
            info = InputFile(path, fmt, compressed)
            if path != "-":
                try:
                    info.size, info.sha256 = _file_digest(path)
                except OSError as exc:
                    raise InputError(Errors.E104, path=path, problem=exc.strerror or str(exc)) from exc
                if compressed:
                    try:
                        with gzip.open(path, "rb") as fh:
                            fh.read(1)
                    except OSError as exc:
                        raise InputError(
                            Errors.E104, path=path, problem=f"not a valid gzip file ({exc})"
                        ) from exc
            result.files.append(info)
            sources.append((path, iter_file(path, fmt, compressed)))

    seen_ids = seen_ids if seen_ids is not None else SeenIds()
    for (path, rows), info in zip(sources, result.files):
        roles: dict[str, str | None] | None = None
        # Records seen before the field roles could be detected (their keys held no text field).
        pending: list[tuple[int, dict[str, Any]]] = []
        first_error: InputError | None = None
        line = 0
        try:
            for line, obj, reject in rows:
                info.records += 1
                if reject is not None:
                    yield reject
                    continue
                if roles is None:
                    try:
                        roles = detect_roles(obj.keys(), fields, path)
                    except InputError as exc:
                        first_error = first_error or exc
                        pending.append((line, obj))
                        if len(pending) >= MAX_PENDING:
                            raise first_error from None
                        continue
                    if not result.roles:
                        result.roles = roles
                    logger.info("%s: fields %s", path, ", ".join(f"{r}={n}" for r, n in roles.items() if n))
                    for p_line, p_obj in pending:
                        yield _validate(path, p_line, p_obj, roles, seen_ids)
                    pending.clear()
                yield _validate(path, line, obj, roles, seen_ids)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            # A truncated or corrupt compressed stream: keep what was read, reject the rest as one record.
            info.records += 1
            yield _reject(path, line + 1, Errors.R010, "", problem=str(exc) or type(exc).__name__, last=line)
        except OSError as exc:
            raise InputError(Errors.E104, path=path, problem=str(exc)) from exc
        if pending and first_error is not None:
            raise first_error


def _add(result: ReadResult, item: Record | Reject) -> None:
    if isinstance(item, Reject):
        result.rejects.append(item)
    else:
        result.records.append(item)


def _validate(
    path: str, line: int, obj: dict[str, Any], roles: dict[str, str | None], seen_ids: SeenIds
) -> Record | Reject:
    text_field = roles["text"]
    assert text_field is not None
    if text_field not in obj:
        return _reject(path, line, Errors.R003, obj, field=text_field)
    text = obj[text_field]
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return _reject(path, line, Errors.R004, obj, field=text_field)
    if not isinstance(text, str):
        return _reject(path, line, Errors.R005, obj, field=text_field, kind=type(text).__name__)
    if not text.strip():
        return _reject(path, line, Errors.R004, obj, field=text_field)
    data = dict(obj)
    data["__roles__"] = roles
    id_field = roles["id"]
    raw_id = obj.get(id_field) if id_field else None
    if isinstance(raw_id, (dict, list)):
        return _reject(path, line, Errors.R005, obj, field=id_field, kind=type(raw_id).__name__)
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        doc_id = stable_id(text)
        n = 2
        base = doc_id
        while doc_id in seen_ids:  # the same text twice: keep both, with distinct stable ids
            doc_id = f"{base}-{n}"
            n += 1
        data["__id_generated__"] = True
    else:
        doc_id = str(raw_id).strip()
        first = seen_ids.first(doc_id)
        if first is not None:
            return _reject(path, line, Errors.R006, obj, doc_id=doc_id, first=first)
    seen_ids.add(doc_id, f"{path}:{line}")
    data["__doc_id__"] = doc_id
    return Record(path, line, data)
