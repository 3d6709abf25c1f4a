"""The batch runner: chunked, streaming, resumable and incremental runs.

``cxnlp analyze`` reads its input in chunks of ``batch.chunk_size`` records. Each chunk goes through the
per-document steps (normalize, redact, segment, embed, journey, sentiment, emotion, cluster_space) and is committed to
a work folder next to OUTDIR as soon as it is done; then each chunk is read once more, counted into the
run's :class:`~cxnlp.digest.Digest` (what the stage summary and the report read) and trimmed to the
segments the cluster step clusters (:func:`reduce_chunk`), the pain points are found over those, the
final tables are streamed from the chunks one at a time, and OUTDIR is swapped in atomically::

    .NAME.work/
      plan.json              what this work folder belongs to (fingerprint of inputs, config, models)
      lock                   held (flock) while a run uses the folder
      chunks/000000/         one committed chunk: documents.parquet, segments.parquet,
                             embeddings.npy (float16), rejects.jsonl, part.json

A run that is killed at any point (SIGKILL included) and started again with the same command re-reads
the input, skips the committed chunks and finishes with exactly the records a run without the crash
would have had. A chunk is written into a temporary folder and renamed into place, so it is either
complete or absent.

With ``--state DIR`` runs are incremental: ``DIR/state.sqlite`` remembers each analysed doc id with the
hash of its record, a run analyses only new or changed records, and its tables are added to
``DIR/tables/<table>/run_date=YYYY-MM-DD/run-<seq>-<run_id>.parquet`` (read them with
:func:`read_state_table`). Running the same input again analyses nothing and adds nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import gc
import hashlib
import itertools
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import cluster, memory, processes
from .about import __version__
from .config import Config, config_to_dict
from .digest import Digest, drivers_of
from .errors import CxnlpError, Errors, PipelineError
from .io import ReadResult, Record, Reject, SeenIds, _file_digest, expand_inputs, in_memory, iter_inputs
from .output import MARKER, TableStream, conform, extra_array, extra_columns, to_arrow, write_rejects
from .pipeline import MODEL_STEPS, AnalysisResult, Analyzer, Part, Progress, emptied, merge_parts, prepare
from .schema import column_names, positions

logger = logging.getLogger(__name__)

PLAN = "plan.json"
CHUNKS = "chunks"
STATE_DB = "state.sqlite"
STATE_TABLES = ("documents", "segments", "pain_points")


@dataclass
class ChunkInfo:
    """The bookkeeping of one committed chunk (part.json)."""

    index: int
    read: int
    unchanged: int
    hashes: list[tuple[str, str]] = field(default_factory=list)
    budget: RejectBudget | None = None


@dataclass
class RejectBudget:
    """``input.max_rejects`` given as a count: once more records than that are rejected, the models
    stop running (the run fails with E212 anyway); the rest is still read so rejects.jsonl is complete.
    A fraction can only be judged at the end, against the total read."""

    limit: int | None
    seen: int = 0

    @property
    def exceeded(self) -> bool:
        return self.limit is not None and self.seen > self.limit


# ------------------------------------------------------------------------------------------ helpers


def content_hash(record: Record) -> str:
    """The hash of everything the input says about a record (all fields, canonical JSON)."""
    data = {k: v for k, v in record.data.items() if not k.startswith("__")}
    blob = json.dumps(data, sort_keys=True, default=str, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:32]


# Settings that committed chunks do not depend on: those of the reduce phase (clustering and its seed,
# the report, the output format; the reduce reads them when it runs) and the prepare workers' count. A
# run resumed with other values of these keeps its chunks (a crashed million-review run retried with
# fewer cluster workers does not map again); any other change starts the map phase afresh.
NOT_IN_CHUNKS: dict[str, set[str] | None] = {
    "seed": None,
    "cluster": None,
    "report": None,
    "output": None,
    "batch": {"workers"},
}


def chunk_config(config: Config) -> dict[str, Any]:
    """The part of ``config`` that the committed chunks depend on (see :data:`NOT_IN_CHUNKS`)."""
    data = config_to_dict(config)
    for key, inner in NOT_IN_CHUNKS.items():
        if inner is None:
            data.pop(key, None)
        else:
            data[key] = {k: v for k, v in data.get(key, {}).items() if k not in inner}
    return data


def fingerprint(inputs: list[Any], analyzer: Analyzer, chunk_size: int) -> str | None:
    """What a work folder belongs to: the inputs' bytes, the config the chunks depend on
    (:func:`chunk_config`), the models and the chunk size.

    None when the input cannot be read twice (stdin): such a run is not resumable."""
    h = hashlib.sha256()
    if in_memory(inputs):
        h.update(json.dumps(inputs, sort_keys=True, default=str).encode("utf-8", "surrogatepass"))
    else:
        for path in expand_inputs(inputs):
            if path == "-":
                return None
            try:
                size, digest = _file_digest(path)
            except OSError:
                return None  # the reader reports the unreadable file with its own error
            h.update(f"{path}\0{size}\0{digest}\n".encode())
    info = {
        "cxnlp": __version__,
        "config": chunk_config(analyzer.config),
        "heads": analyzer.heads.version,
        "encoder": analyzer.encoder_name,
        "cluster_map": analyzer.cluster_map_hash,  # the chunks' embeddings are mapped by it
        "taxonomy": analyzer.stage_model.taxonomy_hash,
        "chunk_size": chunk_size,
    }
    h.update(json.dumps(info, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def _chunked(items: Iterator[Record | Reject], size: int) -> Iterator[list[Record | Reject]]:
    batch: list[Record | Reject] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _frame(table: pa.Table, arrow: tuple[str, ...] = ()) -> pd.DataFrame:
    """Arrow -> pandas with list and struct cells as Python lists and dicts (as the steps produce them),
    except the columns in ``arrow``, which stay Arrow arrays (``pd.ArrowDtype``): a list of strings per
    row costs about a fifth of the memory that way."""
    frame = table.to_pandas()
    for i, f in enumerate(table.schema):
        if f.name in arrow:
            frame[f.name] = pd.Series(pd.arrays.ArrowExtensionArray(table.column(i)), index=frame.index)
        elif pa.types.is_list(f.type) or pa.types.is_struct(f.type) or pa.types.is_map(f.type):
            frame[f.name] = table.column(i).to_pylist()
    return frame


def _loose(name: str, frame: pd.DataFrame) -> pa.Table:
    """The schema's Arrow table with every column nullable: a chunk lacks what the corpus-wide steps add."""
    table = to_arrow(name, frame)
    for col in frame.columns:  # working columns the output leaves out (segments.phrases)
        if col not in table.column_names:
            table = table.append_column(col, pa.array(frame[col].tolist(), from_pandas=True))
    schema = pa.schema([f.with_nullable(True) for f in table.schema], metadata=table.schema.metadata)
    return pa.Table.from_arrays(table.columns, schema=schema)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------------------- chunks


def save_chunk(chunks: Path, info: ChunkInfo, part: Part) -> Path:
    """Commit one chunk: write it into a temporary folder, then rename it into place."""
    final = chunks / f"{info.index:06d}"
    tmp = chunks / f"{info.index:06d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pq.write_table(_loose("documents", part.documents), tmp / "documents.parquet")
    segments = part.segments if len(part.segments.columns) else pd.DataFrame(columns=["segment_id"])
    pq.write_table(_loose("segments", segments), tmp / "segments.parquet")
    np.save(tmp / "embeddings.npy", np.asarray(part.embeddings, dtype=np.float16))
    write_rejects(part.rejects, tmp / "rejects.jsonl")
    meta = {
        "index": info.index,
        "read": info.read,
        "unchanged": info.unchanged,
        "hashes": info.hashes,
        "redactions": part.redactions,
        "timings": part.timings,
        "documents": len(part.documents),
        "segments": len(part.segments),
        "rejects": len(part.rejects),
    }
    (tmp / "part.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    for f in tmp.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, final)
    _fsync_dir(chunks)
    return final


def _one_chunk_arrow(frame: pd.DataFrame) -> None:
    """The Arrow-backed columns of a merged frame (one Arrow chunk per batch chunk) as one Arrow chunk
    each, in place, dtypes unchanged: lists (phrases, flags, stages) and, with pandas' Arrow strings,
    the ids and texts. Taking rows from a column of 200 chunks costs Arrow a pass over all of them: the
    cluster step takes each cluster's rows, 6.8 ms a take at 1M reviews against 0.03 ms from one chunk.
    A column too large for one chunk's 32-bit offsets stays as it is."""
    for col in frame.columns:
        values = frame[col].array
        if not isinstance(values, pd.arrays.ArrowExtensionArray):
            continue
        chunked = pa.array(values)  # the array's ChunkedArray
        if not isinstance(chunked, pa.ChunkedArray) or chunked.num_chunks <= 1:
            continue
        try:
            whole = chunked.combine_chunks()
        except (pa.ArrowInvalid, pa.ArrowCapacityError):  # pragma: no cover - over 2 GB of one column
            continue
        frame[col] = pd.Series(pd.array(whole, dtype=frame[col].dtype), index=frame.index)


def _read_chunk_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """Those of ``columns`` a chunk's table has, with :data:`REDUCE_ARROW` kept in Arrow."""
    names = pq.read_schema(path).names
    columns = [c for c in columns if c in names]
    frame = _frame(pq.read_table(path, columns=columns), REDUCE_ARROW)
    for col in REDUCE_CATEGORICAL:
        if col in frame.columns:
            frame[col] = frame[col].astype("category")
    return frame


# ------------------------------------------------------------------------------------------- reduce

#: The columns the corpus-wide steps (cluster, aggregate), the manifest and the report read of each chunk
#: (:func:`reduce_chunk`): counted into the run's digest, and kept for the segments the cluster step
#: clusters. Everything else (document text, emotion scores, input columns, ...) stays in the chunks and
#: is streamed into the final tables, one chunk at a time.
REDUCE_COLUMNS = {
    "documents": ["doc_id", "created_at", "rating", "channel", "language", "flags", "stages"],
    "segments": [
        "doc_id",
        "segment_id",
        "stage",
        "sentiment",
        "sentiment_score",
        "emotion",
        "phrases",
        "text",
    ],
}


#: Reduce columns held as Arrow lists rather than Python lists (a fraction of the memory): the cluster step
#: reads segments.phrases a block of rows at a time; the aggregate and the report iterate over documents'
#: flags and stages, which yields the same Python lists.
REDUCE_ARROW = ("phrases", "flags", "stages")

#: Reduce columns of a few distinct values, held as pandas categoricals (a byte per row instead of a
#: string): a million reviews' three million segments hold 137 MB of these as strings. Chunks'
#: categories are unified when they are merged (:func:`~cxnlp.pipeline.merge_parts`).
REDUCE_CATEGORICAL = ("stage", "sentiment", "emotion", "channel")


@dataclass
class ReducedChunk:
    """One committed chunk as the reduce holds it (:func:`reduce_chunk`)."""

    path: Path
    info: ChunkInfo
    #: the segments the cluster step clusters, with their documents' ids and dates; its phrase_stats
    #: hold what the cluster step reads of the other segments' phrases
    part: Part
    digest: Digest  # every row, counted for the stage summary and the report
    rows: np.ndarray  # the clustered segments' positions among the chunk's


def reduce_chunk(path: Path, config: Config, stage_ids: list[str]) -> ReducedChunk:
    """Read one committed chunk for the reduce: the :class:`~cxnlp.digest.Digest` of all its documents
    and segments, and only the rows the cluster step reads (:func:`cluster.text_needed`: the segments
    it clusters, and their documents' dates). The other segments' phrases are counted into
    ``part.phrase_stats`` (:func:`cluster.trim_phrases`). What a chunk leaves in memory is then the
    clustered segments' (the one part of the reduce that grows with the run) and a few counts.

    The part's embeddings stay the whole chunk's, memory-mapped; ``rows`` selects the clustered ones."""
    meta = json.loads((path / "part.json").read_text(encoding="utf-8"))
    documents = _read_chunk_table(path / "documents.parquet", REDUCE_COLUMNS["documents"])
    segments = _read_chunk_table(path / "segments.parquet", REDUCE_COLUMNS["segments"])
    digest = Digest.of(documents, segments, stage_ids, config.report.verbatims)
    stats = cluster.PhraseStats()
    rows = np.zeros(0, dtype=np.int64)
    if len(segments):
        rows = np.flatnonzero(cluster.text_needed(segments, stage_ids, config.cluster).to_numpy())
        cluster.trim_phrases(segments, stage_ids, config.cluster, stats)
        segments = segments.iloc[rows].reset_index(drop=True)
        if "doc_id" in documents.columns:
            documents = documents.loc[positions(documents["doc_id"], segments["doc_id"]) >= 0]
        documents = documents[[c for c in ("doc_id", "created_at") if c in documents.columns]]
        documents = documents.reset_index(drop=True)
    embeddings = np.load(path / "embeddings.npy", mmap_mode="r", allow_pickle=False)
    with (path / "rejects.jsonl").open(encoding="utf-8") as fh:
        rejects = [Reject.from_dict(json.loads(line)) for line in fh]
    part = Part(documents, segments, embeddings, rejects, meta["redactions"], meta["timings"])
    part.phrase_stats = stats
    # without the record hashes: the state reads them back chunk by chunk when it commits (_hashes)
    info = ChunkInfo(meta["index"], meta["read"], meta["unchanged"])
    return ReducedChunk(path, info, part, digest, rows)


# Loading the committed chunks for the reduce is one core's work per chunk (Parquet, then the phrase
# statistics in Python): 66 s of one core for 200 chunks on an H100 host (benchmarks/README.md). From
# this many chunks on, they are loaded in processes.
MIN_PARALLEL_LOAD = 4
MAX_LOADERS = 8


def loaders_for(analyzer: Analyzer, n_chunks: int) -> int:
    """Processes that load the chunks for the reduce, from :data:`MIN_PARALLEL_LOAD` chunks on:
    ``batch.workers`` (at most :data:`MAX_LOADERS`); auto (null) is all cores but two on an accelerator,
    as for the prepare workers, and none on the CPU (where the prepare workers do run). Like them, the loaders are
    :mod:`cxnlp.processes` workers, so a script that runs a batch must guard its entry point
    (``if __name__ == "__main__":``)."""
    if n_chunks < MIN_PARALLEL_LOAD:
        return 0
    # workers_for without a chunk size is 0 on the CPU in auto: two loaders gained nothing on the 2-core
    # VM (benchmarks/README.md)
    n = min(MAX_LOADERS, workers_for(analyzer), n_chunks)
    return n if n > 1 else 0


def _reduce_chunk(path: Path, blob: str, stage_ids: list[str]) -> ReducedChunk:
    """:func:`reduce_chunk` in a loader process, without the embeddings (the main process maps the
    chunk's file itself)."""
    chunk = reduce_chunk(path, _worker_config(blob), stage_ids)
    chunk.part.embeddings = np.zeros((0, 0), dtype=np.float16)
    return chunk


def reduced_chunks(analyzer: Analyzer, paths: list[Path]) -> Iterator[ReducedChunk]:
    """The committed chunks in order, as :func:`reduce_chunk` reads them: in :func:`loaders_for`
    processes when there are enough chunks, with the same result."""
    n = loaders_for(analyzer, len(paths))
    stage_ids = list(analyzer.stage_ids)
    if n == 0:
        for path in paths:
            yield reduce_chunk(path, analyzer.config, stage_ids)
        return
    from itertools import repeat

    blob = json.dumps(config_to_dict(analyzer.config), sort_keys=True, default=str)
    with processes.pool(n) as pool:
        for chunk in pool.map(_reduce_chunk, paths, repeat(blob), repeat(stage_ids)):
            chunk.part.embeddings = np.load(chunk.path / "embeddings.npy", mmap_mode="r", allow_pickle=False)
            yield chunk


@dataclass
class _Chunk:
    path: Path
    documents: int
    segments: int


def _hashes(paths: list[Path]) -> Iterator[tuple[str, str]]:
    """The (doc id, content hash) of every record the chunks analysed, read back one chunk at a time
    (a million of them are a quarter of a gigabyte as Python strings)."""
    for path in paths:
        meta = json.loads((path / "part.json").read_text(encoding="utf-8"))
        yield from ((d, h) for d, h in meta["hashes"])


def _document_extras(chunks: list[_Chunk]) -> dict[str, pa.DataType | pa.Array]:
    """How each input column of the documents table becomes Arrow when the table is written chunk by
    chunk, so that it comes out as :func:`~cxnlp.output.to_arrow` makes it from the whole table.

    Columns in the order the chunks introduce them. A column every chunk has, with one type (or none,
    all null), gets that type, and each chunk is converted on its own. Otherwise (a chunk lacks it, or
    its types differ between chunks) that one column is read from every chunk and converted whole, as
    an in-memory run does; the result is an array, sliced per chunk when written."""
    full = [c for c in chunks if c.documents]
    order: list[str] = []
    types: dict[str, set[Any]] = {}
    whole: set[str] = set()
    for i, chunk in enumerate(full):
        path = chunk.path / "documents.parquet"
        cols = extra_columns(pq.read_schema(path).names)
        whole.update(c for c in order if c not in cols)
        for col in cols:
            if col not in order:
                order.append(col)
                types[col] = set()
                if i:
                    whole.add(col)
        frame = _frame(pq.read_table(path, columns=cols)) if cols else pd.DataFrame()
        for col in cols:
            try:
                types[col].add(pa.array(frame[col].tolist(), from_pandas=True).type)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                whole.add(col)
    plan: dict[str, pa.DataType | pa.Array] = {}
    for col in order:
        found = types[col] - {pa.null()}
        if col not in whole and len(found) <= 1:
            plan[col] = found.pop() if found else pa.string()
            continue
        pieces = []
        for chunk in full:
            path = chunk.path / "documents.parquet"
            has = col in pq.read_schema(path).names
            pieces.append(
                _frame(pq.read_table(path, columns=[col]))
                if has
                else pd.DataFrame(index=range(chunk.documents))
            )
        plan[col] = extra_array(pd.concat(pieces, ignore_index=True)[col].tolist())
    return plan


def _streams(chunks: list[_Chunk], pain_point_ids: _PainPointIds) -> dict[str, TableStream]:
    """The documents and segments tables of a batch run, read back chunk by chunk from the committed
    chunks and completed with what the corpus-wide steps add: each document's ``n_segments`` (counted in
    its own chunk) and each segment's ``pain_point_id``."""
    extras = _document_extras(chunks)

    # Each piece stays in Arrow (output.conform): the chunk's columns as it holds them, the added one
    # converted; only the input columns converted by type go through pandas.
    convert = [k for k, v in extras.items() if isinstance(v, pa.DataType)]

    def documents() -> Iterator[pa.Table]:
        first = 0
        for chunk in chunks:
            if not chunk.documents:
                continue
            table = pq.read_table(chunk.path / "documents.parquet")
            own = {
                k: v if isinstance(v, pa.DataType) else v.slice(first, chunk.documents)
                for k, v in extras.items()
            }
            present = [c for c in convert if c in table.column_names]
            inputs = _frame(table.select(present)) if present else None
            yield conform(
                "documents", table, {"n_segments": _segments_per_document(chunk, table)}, own, inputs
            )
            first += chunk.documents

    def segments() -> Iterator[pa.Table]:
        written = False
        for i, chunk in enumerate(chunks):
            if not chunk.segments:
                continue
            table = pq.read_table(chunk.path / "segments.parquet")
            written = True
            yield conform("segments", table, {"pain_point_id": pain_point_ids[i].tolist()})
        if not written:
            yield to_arrow("segments", pd.DataFrame())

    return {"documents": documents, "segments": segments}


def _segments_per_document(chunk: _Chunk, documents: pa.Table) -> list[int]:
    """Each of a chunk's documents' number of segments (a document's segments are in its own chunk)."""
    if not chunk.segments:
        return [0] * documents.num_rows
    doc_ids = pq.read_table(chunk.path / "segments.parquet", columns=["doc_id"]).column("doc_id").to_pandas()
    found = positions(doc_ids, documents.column("doc_id").to_pandas())
    return np.bincount(found[found >= 0], minlength=documents.num_rows).astype(int).tolist()


class _PainPointIds:
    """Each chunk's segments' pain point ids (None where not clustered), made one chunk at a time from
    the ids of the clustered segments (in chunk order) and their positions in their chunk: a run's
    millions of segments never get a Python object each at once."""

    def __init__(self, chunks: list[_Chunk], rows: list[np.ndarray], clustered: pd.Series) -> None:
        self.sizes = [c.segments for c in chunks]
        self.rows = rows
        self.starts = np.cumsum([0] + [len(r) for r in rows])
        # as codes into the few distinct ids (a Python string per clustered segment would be ~60 bytes each)
        codes, names = pd.factorize(clustered, use_na_sentinel=True)
        self.codes = np.asarray(codes, dtype=np.int32)
        self.names = np.asarray([*names, None], dtype=object)  # code -1 (the last): not clustered

    def __getitem__(self, i: int) -> np.ndarray:
        ids = np.full(self.sizes[i], None, dtype=object)
        ids[self.rows[i]] = self.names[self.codes[self.starts[i] : self.starts[i + 1]]]
        return ids


def _add_drivers(digest: Digest, chunks: list[_Chunk], pain_point_ids: _PainPointIds) -> None:
    """The report's drivers need each rated document's issues, pain points included: counted here, a
    chunk at a time, once the pain points are known."""
    for i, chunk in enumerate(chunks):
        if not chunk.documents:
            continue
        docs = _read_chunk_table(chunk.path / "documents.parquet", ["doc_id", "rating"])
        segs = _read_chunk_table(chunk.path / "segments.parquet", ["doc_id", "stage", "sentiment"])
        if len(segs):
            segs["pain_point_id"] = pain_point_ids[i]
        digest.add_drivers(drivers_of(docs, segs, digest.stage_ids))


class BatchResult(AnalysisResult):
    """:func:`run_batch`'s result. The run streamed its documents and segments tables from the chunks
    into OUTDIR without holding them whole; they are read back from there when first asked for."""

    outdir: Path

    @property  # type: ignore[override]
    def documents(self) -> pd.DataFrame:
        return self._table("documents")

    @documents.setter
    def documents(self, value: pd.DataFrame | None) -> None:
        self.__dict__["documents"] = value

    @property  # type: ignore[override]
    def segments(self) -> pd.DataFrame:
        return self._table("segments")

    @segments.setter
    def segments(self, value: pd.DataFrame | None) -> None:
        self.__dict__["segments"] = value

    def _table(self, name: str) -> pd.DataFrame:
        frame = self.__dict__.get(name)
        if frame is None:
            from .output import read_outputs

            table = read_outputs(self.outdir, [name])[name] if (self.outdir / MARKER).is_file() else None
            frame = pd.DataFrame(columns=column_names(name)) if table is None else _frame(table)
            self.__dict__[name] = frame
        return frame

    @classmethod
    def of(cls, result: AnalysisResult, outdir: Path) -> BatchResult:
        """``result`` with its documents and segments to be read back from ``outdir``."""
        values = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        out = cls(**{**values, "documents": None, "segments": None})
        out.outdir = outdir
        return out


# -------------------------------------------------------------------------------------------- state


class State:
    """``--state DIR``: which doc ids (with the hash of their record) earlier runs analysed, and the
    tables those runs added, partitioned by run date."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path / STATE_DB)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS docs (doc_id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, run_id TEXT NOT NULL)"
            )
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS runs (seq INTEGER PRIMARY KEY, run_id TEXT UNIQUE NOT NULL,"
                " run_date TEXT NOT NULL, committed_at TEXT NOT NULL, analysed INTEGER, unchanged INTEGER,"
                " rejected INTEGER)"
            )
            self.db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise PipelineError(Errors.E208, path=str(self.path), problem=str(exc)) from exc

    def close(self) -> None:
        self.db.close()

    def generation(self) -> str:
        row = self.db.execute("SELECT run_id FROM runs ORDER BY seq DESC LIMIT 1").fetchone()
        return row[0] if row else ""

    def next_seq(self) -> int:
        row = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM runs").fetchone()
        return int(row[0]) + 1

    def has_run(self, run_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None

    def known(self, doc_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(doc_ids), 500):
            ids = doc_ids[i : i + 500]
            marks = ",".join("?" * len(ids))
            out.update(
                self.db.execute(f"SELECT doc_id, content_hash FROM docs WHERE doc_id IN ({marks})", ids)
            )
        return out

    def commit(
        self, result: AnalysisResult, run_id: str, run_date: str, hashes: Iterable[tuple[str, str]]
    ) -> None:
        """Add this run's tables as a partition, then record its doc ids, in that order: a crash in
        between leaves the same partition to be rewritten (identically) by the rerun."""
        seq = self.next_seq()
        counts = result.counts
        if counts["analysed"]:
            for name in STATE_TABLES:
                self._write_partition(
                    name, result.streams.get(name) or getattr(result, name), run_id, seq, run_date
                )
        now = datetime.now(timezone.utc).isoformat()
        with self.db:
            self.db.executemany(
                "INSERT INTO docs (doc_id, content_hash, run_id) VALUES (?, ?, ?) "
                "ON CONFLICT(doc_id) DO UPDATE SET content_hash = excluded.content_hash, run_id = excluded.run_id",
                ((d, h, run_id) for d, h in hashes),
            )
            self.db.execute(
                "INSERT INTO runs (seq, run_id, run_date, committed_at, analysed, unchanged, rejected) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    run_id,
                    run_date,
                    now,
                    counts["analysed"],
                    counts.get("unchanged", 0),
                    counts["rejected"],
                ),
            )

    def _write_partition(
        self, name: str, source: pd.DataFrame | TableStream, run_id: str, seq: int, run_date: str
    ) -> None:
        """Write one table of a run (a frame, or a stream of Arrow pieces) as this run's partition."""
        pieces = [to_arrow(name, source)] if isinstance(source, pd.DataFrame) else source()

        def tagged() -> Iterator[pa.Table]:
            for table in pieces:
                table = table.append_column("run_id", pa.array([run_id] * len(table), pa.string()))
                yield table.append_column("run_seq", pa.array([seq] * len(table), pa.int64()))

        root = self.path / "tables" / name
        filename = f"run-{seq:06d}-{run_id}.parquet"
        for old in root.glob(f"run_date=*/run-*-{run_id}.parquet"):  # a crashed attempt of this run
            old.unlink()
        folder = root / f"run_date={run_date}"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{filename}.tmp"
        written = tagged()
        first = next(written)
        with pq.ParquetWriter(tmp, first.schema) as writer:
            writer.write_table(first)
            for table in written:
                writer.write_table(table)
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, folder / filename)


def read_state_table(state: str | Path, name: str, current: bool = True) -> pd.DataFrame:
    """A table accumulated by incremental runs. ``current``: documents and segments as of each doc id's
    latest run (a changed record's older version is left out); pain points are per run either way."""
    import duckdb

    root = Path(state) / "tables" / name
    if not any(root.glob("run_date=*/*.parquet")):
        return pd.DataFrame()
    pattern = str(root / "run_date=*" / "*.parquet").replace("'", "''")
    source = f"read_parquet('{pattern}', hive_partitioning = true, union_by_name = true)"
    con = duckdb.connect()
    try:
        if current and name in ("documents", "segments"):
            docs = str(Path(state) / "tables" / "documents" / "run_date=*" / "*.parquet").replace("'", "''")
            latest = (
                f"SELECT doc_id, max(run_seq) AS run_seq FROM read_parquet('{docs}', hive_partitioning = true,"
                " union_by_name = true) GROUP BY doc_id"
            )
            sql = f"SELECT t.* FROM {source} t JOIN ({latest}) l USING (doc_id, run_seq) ORDER BY run_seq"
        else:
            sql = f"SELECT * FROM {source} ORDER BY run_seq"
        return con.execute(sql).df()
    finally:
        con.close()


# ------------------------------------------------------------------------------------------- runner


@dataclass
class BatchRun:
    result: AnalysisResult
    outdir: Path
    resumed_chunks: int = 0
    already_committed: bool = False


class _WorkFolder:
    """OUTDIR's sibling ``.NAME.work``. Nothing is created until the first chunk is about to be
    committed (``ensure``), so a run refused early (bad input, bad config) writes nothing at all."""

    def __init__(self, outdir: Path, fp: str | None) -> None:
        self.path = outdir.parent / f".{outdir.name}.work"
        self.outdir = outdir
        self.chunks = self.path / CHUNKS
        self._lock: Any = None
        plan = self.read_plan() if self.path.is_dir() else None
        self.fresh = plan is None or fp is None or plan.get("fingerprint") != fp
        if self.fresh:
            self.plan: dict[str, Any] = {
                "fingerprint": fp,
                "run_date": date.today().isoformat(),
                "created_at": datetime.now(timezone.utc).isoformat(),
            }
        else:
            self.plan = dict(plan or {})
        if self.path.is_dir():
            self.ensure()

    def ensure(self) -> None:
        """Create (or take over) the folder: lock it, drop what belongs to another run, write the plan."""
        if self._lock is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = (self.path / "lock").open("a+")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise PipelineError(
                Errors.E208,
                path=str(self.outdir),
                problem="another cxnlp run is writing to it (wait for it, or choose another output folder)",
            ) from None
        if self.fresh:
            if self.chunks.exists():
                logger.info("discarding %s: it belongs to a different input, config or model", self.path)
            shutil.rmtree(self.chunks, ignore_errors=True)
        self.write_plan()
        self.chunks.mkdir(exist_ok=True)
        for tmp in self.chunks.glob("*.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)

    def scratch(self) -> Path:
        """The folder, created and locked, for scratch files the run removes itself."""
        self.ensure()
        return self.path

    def set_run_id(self, run_id: str) -> None:
        """Record the run id in the plan (written now if the folder exists, else by ``ensure``)."""
        if self.plan.get("run_id") != run_id:
            self.plan["run_id"] = run_id
            if self._lock is not None:
                self.write_plan()

    def read_plan(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.path / PLAN).read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None

    def write_plan(self) -> None:
        tmp = self.path / f"{PLAN}.tmp"
        tmp.write_text(json.dumps(self.plan, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path / PLAN)

    def committed(self) -> dict[int, Path]:
        if not self.chunks.is_dir():
            return {}
        return {
            int(p.name): p for p in self.chunks.iterdir() if p.name.isdigit() and (p / "part.json").is_file()
        }

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.close()

    def close(self) -> None:
        if self._lock is not None and not self._lock.closed:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()


MapEngine = Callable[
    [Analyzer, Iterator[tuple[ChunkInfo, list[Record], list[Reject]]], Path, "Progress | None"], None
]


def prepare_chunk(
    records: list[Record],
    rejects: list[Reject],
    config: dict[str, Any],
    text_features: tuple[str, ...] = (),
    tokenizer: tuple[str, int] | None = None,
) -> Part:
    """normalize, redact and segment one chunk, away from the models: in a worker process when
    ``batch.workers`` > 0, and in the Ray engine's CPU stage. ``text_features`` (``Heads.text_features``)
    and, with ``tokenizer`` (``Analyzer.pretokenizer``), the segments' token ids are computed here too,
    so that the model step does not wait for them (VADER is pure Python)."""
    from .models import TEXT_FEATURES, pretokenize
    from .segment import segment_documents

    cfg = _worker_config(json.dumps(config, sort_keys=True, default=str))
    part = prepare(records, rejects, cfg)
    t = time.perf_counter()
    if len(part.documents):
        part.segments = segment_documents(part.documents, cfg.segment)
    part.timings["segment"] = time.perf_counter() - t
    if len(part.segments) and (text_features or tokenizer):
        t = time.perf_counter()
        texts = part.segments["text"].tolist()
        for name in text_features:
            part.features[name] = TEXT_FEATURES[name](texts)
        if tokenizer is not None:
            part.features.update(pretokenize(texts, *tokenizer))
        part.timings["features"] = time.perf_counter() - t
    return part


@functools.lru_cache(maxsize=2)
def _worker_config(blob: str) -> Any:
    from .config import load_config

    return load_config(None, json.loads(blob))


# Auto prepare workers on an accelerator: one H200 ran the model step at about 2,500 reviews/s
# (benchmarks/README.md) while one spaCy worker prepares about 150-230, so a GPU needs most of the host's
# cores preparing. Each worker holds a spaCy pipeline (about 0.5 GB), hence the caps.
MAX_AUTO_WORKERS = 16
# On the CPU the encoder's threads already use every core; prepare workers there run at the lowest
# priority and take the cores only while the models' process leaves them idle (its one-threaded steps,
# its waits for the next chunk). One per core, at most this many, and only for runs of two chunks or
# more whose chunks give each worker a full slice: starting the processes (3-4 s of imports) is paid
# before the first chunk, and only later chunks are prepared while the models run.
MAX_AUTO_CPU_WORKERS = 4
CPU_WORKER_NICE = 19


def workers_for(analyzer: Analyzer, chunk_records: int | None = None) -> int:
    """``batch.workers``; auto (null): on an accelerator, all cores but two (at most
    :data:`MAX_AUTO_WORKERS`), so that spaCy keeps up with the GPU; on the CPU, one per core (at most
    :data:`MAX_AUTO_CPU_WORKERS`) at the lowest priority, when the run has more than one chunk and the
    first (``chunk_records``; 0 for a one-chunk run) has at least two :data:`MIN_SLICE` slices;
    otherwise none."""
    configured = analyzer.config.batch.workers
    if configured is not None:
        return configured
    cores = os.cpu_count() or 2
    if analyzer.device == "cpu":
        if chunk_records is None or chunk_records < 2 * MIN_SLICE:
            return 0
        return min(MAX_AUTO_CPU_WORKERS, cores)
    return min(MAX_AUTO_WORKERS, max(1, cores - 2))


# The fewest bytes a record takes in an input file: a run over files smaller than a chunk of such records
# has one chunk, and on the CPU no prepare workers (a compressed file counts its compressed bytes).
MIN_RECORD_BYTES = 40


def may_use_workers(config: Config, inputs: list[Any]) -> bool:
    """Whether a local run over ``inputs`` may start worker processes: ``cxnlp analyze`` then starts their
    fork server (:func:`cxnlp.processes.warm_up`) before it loads the models. Not with ``batch.workers``
    0 or the Ray engine, nor for files too small to hold more than one chunk of :data:`MIN_RECORD_BYTES`
    records; stdin: yes; in-memory records: when there are more than a chunk of them."""
    if config.batch.workers == 0 or config.batch.engine != "local":
        return False
    if in_memory(inputs):
        return len(inputs) > config.batch.chunk_size
    total = 0
    try:
        for path in expand_inputs(inputs):
            if path == "-":
                return True
            total += os.path.getsize(path)
    except (OSError, CxnlpError):  # the reader reports a missing or unreadable input itself
        return False
    return total > config.batch.chunk_size * MIN_RECORD_BYTES


def preload_worker_pipelines(config: Config) -> None:
    """Name to the workers' fork server (:func:`cxnlp.processes.preload_spacy`) the spaCy pipelines
    that the prepare workers run: segmentation's, and its NER when person names are redacted."""
    processes.preload_spacy(config.segment.spacy_model, config.redact.enabled and config.redact.person_names)


def map_local(
    analyzer: Analyzer,
    chunks: Iterator[tuple[ChunkInfo, list[Record], list[Reject]]],
    folder: Path,
    progress: Progress | None,
) -> None:
    """The per-document steps in this process, one chunk after the other. With workers, the next
    chunks are normalized, redacted and segmented in worker processes while this one runs the models,
    so the accelerator never waits for spaCy."""
    source = iter(chunks)
    ahead = list(itertools.islice(source, 2))  # on the CPU a one-chunk run gets no workers
    if not ahead:
        return
    source = itertools.chain(ahead, source)
    n_workers = workers_for(analyzer, len(ahead[0][1]) if len(ahead) > 1 else 0)
    if n_workers == 0:
        for info, records, rejects in source:
            t = time.perf_counter()
            part = analyzer.prepare(records, rejects)
            if not _over_budget(info, part):
                analyzer.annotate(part, progress)
            save_chunk(folder, info, part)
            _log_chunk(info, part, time.perf_counter() - t)
        return
    from collections import deque

    config = config_to_dict(analyzer.config)
    text_features = tuple(analyzer.heads.text_features)
    tokenizer = analyzer.pretokenizer()
    nice = CPU_WORKER_NICE if analyzer.device == "cpu" else 0
    preload_worker_pipelines(analyzer.config)
    with processes.pool(n_workers, nice) as pool:
        # A chunk is prepared in slices, one per worker, so that every worker is busy on the chunk the
        # models need next: the first chunk is ready in a slice's time, and the run does not end on a
        # last wave of whole chunks with most workers idle. A few chunks are queued ahead.
        pending: deque[tuple[ChunkInfo, list[Any]]] = deque()
        exhausted = False
        while True:
            while not exhausted and sum(len(f) for _, f in pending) < 2 * n_workers + 1:
                try:
                    info, records, rejects = next(source)
                except StopIteration:
                    exhausted = True
                    break
                futures = [
                    pool.submit(
                        prepare_chunk, piece, rejects if i == 0 else [], config, text_features, tokenizer
                    )
                    for i, piece in enumerate(slices(records, n_workers))
                ]
                pending.append((info, futures))
            if not pending:
                break
            info, futures = pending.popleft()
            t = time.perf_counter()
            part = merge_parts([f.result() for f in futures])
            if not _over_budget(info, part):
                analyzer.annotate(part, progress, steps=MODEL_STEPS)
            save_chunk(folder, info, part)
            _log_chunk(info, part, time.perf_counter() - t)


# The smallest slice of a chunk a prepare worker gets: spaCy's nlp.pipe batches (segment.batch_size)
# stay full, and the pickling per task stays small against the work.
MIN_SLICE = 256


def slices(records: list[Record], n_workers: int) -> list[list[Record]]:
    """``records`` in up to ``n_workers`` consecutive slices of at least :data:`MIN_SLICE` records (one
    slice for a small chunk, and an empty chunk still gives one, for its rejects)."""
    k = max(1, min(n_workers, len(records) // MIN_SLICE))
    size = -(-len(records) // k) if records else 0
    return [records[i : i + size] for i in range(0, len(records), size)] if records else [records]


def _join_embeddings(path: Path, chunks: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The clustered segments' float16 embeddings, ``(chunk's embeddings, rows)`` for each chunk, in one
    memory-mapped file, copied chunk by chunk: the cluster step reads the rows it needs, so they never
    have to fit in memory."""
    chunks = [(a, rows) for a, rows in chunks if a.ndim == 2 and len(rows)]
    if not chunks:
        return np.zeros((0, 0), np.float16)
    n, dim = sum(len(rows) for _, rows in chunks), chunks[0][0].shape[1]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    i = 0
    for a, rows in chunks:
        out[i : i + len(rows)] = a[rows]
        out.flush()  # written back, so the pages can leave this process's resident memory
        cluster.release(out, (i, i + len(rows)))
        cluster.release(a)
        i += len(rows)
    del out
    return np.load(path, mmap_mode="r")


def _over_budget(info: ChunkInfo, part: Part) -> bool:
    if info.budget is None:
        return False
    info.budget.seen += len(part.rejects)
    return info.budget.exceeded


def _log_chunk(info: ChunkInfo, part: Part, seconds: float) -> None:
    logger.info(
        "chunk %d: %d documents, %d segments in %.1fs",
        info.index,
        len(part.documents),
        len(part.segments),
        seconds,
        extra={
            "step": "map",
            "chunk": info.index,
            "documents": len(part.documents),
            "segments": len(part.segments),
            "seconds": round(seconds, 3),
        },
    )


def run_batch(
    analyzer: Analyzer,
    inputs: Iterable[Any],
    outdir: str | Path,
    chunk_size: int | None = None,
    state: str | Path | None = None,
    baseline: str | Path | None = None,
    progress: Progress | None = None,
    engine: str | None = None,
    ray_address: str | None = None,
) -> BatchRun:
    """Analyse ``inputs`` chunk by chunk into ``outdir`` (resumable; incremental with ``state``)."""
    cfg = analyzer.config.batch
    chunk_size = chunk_size or cfg.chunk_size
    engine = engine or cfg.engine
    outdir = Path(outdir).resolve()
    inputs = list(inputs)
    base = cluster.load_baseline(baseline) if baseline is not None else None
    started = datetime.now(timezone.utc)
    fp = fingerprint(inputs, analyzer, chunk_size)
    try:
        outdir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(Errors.E208, path=str(outdir), problem=exc.strerror or str(exc)) from exc
    work = _WorkFolder(outdir, fp)
    st = State(state) if state is not None else None
    try:
        run_id = hashlib.sha256(f"{fp}\0{st.generation() if st else ''}".encode()).hexdigest()[:12]
        work.set_run_id(run_id)
        if st is not None and fp is not None and st.has_run(run_id) and (outdir / MARKER).is_file():
            # Killed after the state was committed: the outputs are complete; only the cleanup was left.
            manifest = json.loads((outdir / MARKER).read_text(encoding="utf-8"))
            if manifest.get("run_id") == run_id:
                from .report import load_run

                work.remove()
                return BatchRun(load_run(outdir), outdir, already_committed=True)  # type: ignore[arg-type]
        done = work.committed()
        read = ReadResult()
        t = time.perf_counter()

        read_seconds = [0.0]
        max_rejects = analyzer.config.input.max_rejects
        budget = RejectBudget(
            int(max_rejects) if max_rejects is not None and (max_rejects >= 1 or max_rejects == 0) else None
        )
        for path in done.values():
            budget.seen += int(json.loads((path / "part.json").read_text(encoding="utf-8")).get("rejects", 0))

        def timed(items: Iterator[list[Record | Reject]]) -> Iterator[list[Record | Reject]]:
            while True:
                t0 = time.perf_counter()
                try:
                    batch = next(items)
                except StopIteration:
                    return
                finally:
                    read_seconds[0] += time.perf_counter() - t0
                yield batch

        def todo() -> Iterator[tuple[ChunkInfo, list[Record], list[Reject]]]:
            # The ids read so far (for the duplicate check) go to the work folder past the first 100k.
            seen_ids = SeenIds(spill=work.scratch)
            try:
                yield from chunks_todo(seen_ids)
            finally:
                seen_ids.close()

        def chunks_todo(seen_ids: SeenIds) -> Iterator[tuple[ChunkInfo, list[Record], list[Reject]]]:
            items = _chunked(iter_inputs(inputs, analyzer.config.input.fields, read, seen_ids), chunk_size)
            for index, batch in enumerate(timed(items)):
                if index in done:
                    continue
                work.ensure()
                records = [x for x in batch if isinstance(x, Record)]
                rejects = [x for x in batch if isinstance(x, Reject)]
                hashes = [(r.data["__doc_id__"], content_hash(r)) for r in records]
                unchanged = 0
                if st is not None and records:
                    known = st.known([d for d, _ in hashes])
                    keep = [known.get(d) != h for d, h in hashes]
                    unchanged = keep.count(False)
                    records = [r for r, k in zip(records, keep) if k]
                    hashes = [x for x, k in zip(hashes, keep) if k]
                yield ChunkInfo(index, len(batch), unchanged, hashes, budget), records, rejects

        if done:
            logger.info("resuming: %d chunk(s) already done in %s", len(done), work.path)
        if engine == "ray":
            from .ray_engine import map_ray

            map_ray(analyzer, todo(), work.chunks, progress, ray_address)
        elif engine == "local":
            map_local(analyzer, todo(), work.chunks, progress)
        else:  # pragma: no cover - the config validates it
            raise ValueError(engine)
        map_seconds = time.perf_counter() - t

        # reduce: every chunk, in input order, holding only the columns the corpus-wide steps read; Arrow
        # on the system allocator, whose freed memory trim_heap hands back (see cxnlp.memory)
        with memory.system_arrow_pool():
            memory.bound_heap()
            gc.collect()  # what reading the input held
            memory.trim_heap()
            # Each chunk is counted into the run's digest (what the stage summary and the report read) as
            # it is read; only the segments the cluster step clusters are kept, with their phrase
            # statistics of the others.
            parts: list[Part] = []
            rows: list[np.ndarray] = []
            chunks: list[_Chunk] = []
            unchanged = n_read = 0
            stats = cluster.PhraseStats()
            digest = Digest(list(analyzer.stage_ids), analyzer.config.report.verbatims)
            paths = [path for _index, path in sorted(work.committed().items())]
            for chunk in reduced_chunks(analyzer, paths):
                unchanged += chunk.info.unchanged
                n_read += chunk.info.read
                digest.merge(chunk.digest)
                if chunk.part.phrase_stats is not None:
                    stats.merge(chunk.part.phrase_stats)
                    chunk.part.phrase_stats = None
                parts.append(chunk.part)
                rows.append(chunk.rows)
                chunks.append(_Chunk(chunk.path, chunk.digest.documents, chunk.digest.segments))
                del chunk  # its part is in parts (else the last chunk's would outlive the loop)
            read.n_read = n_read  # the records themselves went to the chunks
            embeddings = _join_embeddings(
                work.path / "embeddings.npy", [(p.embeddings, r) for p, r in zip(parts, rows)]
            )
            # the parts merge without their embeddings (a comprehension, whose variable goes with it)
            parts = [replace(p, embeddings=p.embeddings[:0]) for p in parts]
            part = merge_parts(parts) if parts else analyzer.prepare([], [])
            del parts  # the merged part holds the same rows
            _one_chunk_arrow(part.segments)
            _one_chunk_arrow(part.documents)
            part.embeddings = embeddings
            part.phrase_stats = stats
            memory.trim_heap()
            limit = analyzer.config.input.reject_limit(read.read)
            failed = limit is not None and len(part.rejects) > limit
            part.timings = {"read": read_seconds[0], "map": map_seconds, **part.timings}
            extra_manifest: dict[str, Any] = {
                "run_id": run_id,
                "engine": engine,
                "chunks": {"size": chunk_size, "count": len(chunks), "resumed": len(done)},
            }
            if st is not None:
                extra_manifest["state"] = {"path": str(st.path), "run_date": work.plan["run_date"]}
            result = analyzer.finish(
                part,
                read,
                started,
                base,
                progress,
                failed,
                extra_counts={"unchanged": unchanged} if st is not None else None,
                extra_manifest=extra_manifest,
                digest=digest,
            )
            del part, embeddings, stats  # the cluster step's: its clustered rows' file and phrase counts
            memory.trim_heap()
            if not failed and digest.documents:
                clustered = (
                    result.segments["pain_point_id"] if "pain_point_id" in result.segments else pd.Series()
                )
                pain_point_ids = _PainPointIds(chunks, rows, clustered)
                # The clustered segments have served: the tables stream from the chunks, and the report
                # reads the digest.
                result.documents, result.segments = emptied(result.documents), emptied(result.segments)
                del clustered
                memory.trim_heap()
                if digest.rated:
                    _add_drivers(digest, chunks, pain_point_ids)
                result.streams = _streams(chunks, pain_point_ids)
            result.write(outdir)
        result = BatchResult.of(result, outdir)  # the reduced tables go; the full ones are read back
        if st is not None and not failed:
            st.commit(result, run_id, work.plan["run_date"], _hashes([c.path for c in chunks]))
        work.remove()
        result.streams = {}  # they read the chunks, which are gone
        return BatchRun(result, outdir, resumed_chunks=len(done))
    except BaseException:
        # Keep committed chunks for the rerun to resume from; a run that failed before committing any
        # leaves nothing behind.
        if work.path.is_dir() and not work.committed():
            work.remove()
        elif work.path.is_dir():
            logger.warning("stopped; %d chunk(s) kept in %s for the rerun", len(work.committed()), work.path)
        raise
    finally:
        work.close()
        if st is not None:
            st.close()
