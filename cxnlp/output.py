"""Write a run's outputs: tables (Parquet, CSV or one DuckDB file), rejects.jsonl, run.json and the reports.

Everything is written into a fresh sibling folder and swapped into place at the end, so OUTDIR always
holds one complete run: a rerun replaces the previous outputs atomically, and a failed run leaves the
previous outputs untouched.
"""

from __future__ import annotations

import errno
import glob
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import Errors, PipelineError
from .schema import TABLES, arrow_schema, column_names

if TYPE_CHECKING:
    from .io import Reject
    from .pipeline import AnalysisResult

logger = logging.getLogger(__name__)

TABLE_NAMES = ("documents", "segments", "pain_points", "stage_summary")
MARKER = "run.json"


def to_arrow(
    name: str, frame: pd.DataFrame, extras: Mapping[str, pa.DataType | pa.Array] | None = None
) -> pa.Table:
    """A frame -> an Arrow table with exactly the schema's columns and types (plus input extras on documents).

    ``extras`` (documents only) fixes the input columns, in order, when the frame is one piece of a larger
    table: a type to convert the frame's values to, or the piece's array already converted with the whole
    table's values (see :func:`extra_array`), so that every piece has the schema of the whole."""
    base = arrow_schema(name)
    arrays = [
        column_array(frame[f.name].tolist() if f.name in frame.columns else [None] * len(frame), f.type)
        for f in base
    ]
    fields = list(base)
    if name == "documents" and extras is not None:
        _append_extras(frame, extras, arrays, fields)
    elif name == "documents":
        for col in extra_columns(frame.columns):
            arr = extra_array(frame[col].tolist())
            arrays.append(arr)
            fields.append(pa.field(col, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=base.metadata))


def column_array(values: list[Any], type: pa.DataType) -> pa.Array:
    """One schema column's values as Arrow: missing ones (None, NaN, NaT, pd.NA) null."""
    return pa.array([None if _missing(v) else v for v in values], type=type, from_pandas=True)


def _append_extras(
    frame: pd.DataFrame,
    extras: Mapping[str, pa.DataType | pa.Array],
    arrays: list[Any],
    fields: list[pa.Field],
) -> None:
    for col, how in extras.items():
        if isinstance(how, pa.DataType):
            values = frame[col].tolist() if col in frame.columns else [None] * len(frame)
            arr = pa.array(values, type=how, from_pandas=True)
        else:
            arr = how
        arrays.append(arr)
        fields.append(pa.field(col, arr.type))


def conform(
    name: str,
    table: pa.Table,
    added: Mapping[str, list[Any]],
    extras: Mapping[str, pa.DataType | pa.Array] | None = None,
    extras_frame: pd.DataFrame | None = None,
) -> pa.Table:
    """What :func:`to_arrow` gives for ``table`` read into pandas, with the ``added`` columns' values
    set, without the round trip through Python objects: a table that a committed batch chunk holds has
    the schema's columns with the schema's types already (it was written with ``to_arrow``), so they are
    taken as they are; a column of another type, or missing, is converted as ``to_arrow`` converts it.
    ``extras`` as for ``to_arrow`` (documents), from ``extras_frame``, the input columns as pandas."""
    base = arrow_schema(name)
    arrays: list[Any] = []
    for f in base:
        if f.name in added:
            arrays.append(column_array(list(added[f.name]), f.type))
        elif f.name in table.column_names and table.schema.field(f.name).type == f.type:
            arrays.append(table.column(f.name))
        else:
            values = table.column(f.name).to_pylist() if f.name in table.column_names else [None] * len(table)
            arrays.append(column_array(values, f.type))
    fields = list(base)
    if name == "documents" and extras is not None:
        frame = extras_frame if extras_frame is not None else pd.DataFrame(index=range(len(table)))
        _append_extras(frame, extras, arrays, fields)
    elif name == "documents":
        raise ValueError("conform needs the documents' extras plan")
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=base.metadata))


def extra_columns(columns: Iterable[str]) -> list[str]:
    """The input columns among a documents frame's: those the schema does not name, minus working ones."""
    known = set(column_names("documents"))
    return [c for c in columns if c not in known and not c.startswith("_")]


def extra_array(values: list[Any]) -> pa.Array:
    """An input column's values as Arrow: their own type, text when they have none in common, text when
    all are null. Missing values stay null as text too (not "nan": pandas fills a column that some chunks
    of a batch run lack, or hold as integers, with NaN)."""
    try:
        arr = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        arr = pa.array([None if _missing(v) else str(v) for v in values], type=pa.string())
    return arr.cast(pa.string()) if pa.types.is_null(arr.type) else arr


def _missing(v: Any) -> bool:
    return v is None or (not isinstance(v, (list, dict, str)) and bool(pd.isna(v)))


def _csv_ready(table: pa.Table) -> pa.Table:
    """Lists and structs become JSON text in CSV."""
    cols = []
    for i, f in enumerate(table.schema):
        col = table.column(i)
        if pa.types.is_list(f.type) or pa.types.is_struct(f.type):
            col = pa.array(
                [None if v is None else json.dumps(v, ensure_ascii=False) for v in col.to_pylist()],
                type=pa.string(),
            )
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


def write_table(table: pa.Table | Iterable[pa.Table], path: Path, fmt: str) -> Path:
    """Write a table, whole or as pieces with one schema (at least one), holding one piece at a time:
    Parquet gets a row group per piece; CSV is the same bytes as the whole table written at once."""
    it = iter([table]) if isinstance(table, pa.Table) else iter(table)
    first = next(it)
    if fmt == "parquet":
        target = path.with_suffix(".parquet")
        with pq.ParquetWriter(target, first.schema, compression="zstd") as pw:
            pw.write_table(first)
            for piece in it:
                pw.write_table(piece)
    else:
        target = path.with_suffix(".csv")
        ready = _csv_ready(first)
        with pacsv.CSVWriter(target, ready.schema) as cw:
            cw.write(ready)
            for piece in it:
                cw.write(_csv_ready(piece))
    return target


TableStream = Callable[[], Iterator[pa.Table]]


def table_pieces(result: AnalysisResult, name: str) -> Iterator[pa.Table]:
    """A result's table as Arrow pieces: streamed when the result has a stream for it (a batch run
    reads its chunks one at a time), else the whole table in one piece."""
    stream = result.streams.get(name)
    if stream is None:
        yield to_arrow(name, getattr(result, name))
    else:
        yield from stream()


def _reader(pieces: Iterator[pa.Table]) -> pa.RecordBatchReader:
    first = next(pieces)

    def batches() -> Iterator[pa.RecordBatch]:
        yield from first.to_batches()
        for table in pieces:
            yield from table.to_batches()

    return pa.RecordBatchReader.from_batches(first.schema, batches())


def write_outputs(result: AnalysisResult, outdir: Path, fmt: str = "parquet") -> Path:
    from .report import write_reports

    outdir = Path(outdir).resolve()
    parent = outdir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _recover(outdir)
        staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.partial-{os.getpid()}-", dir=parent))
    except OSError as exc:
        raise _write_error(outdir, exc) from exc
    try:
        files: dict[str, Any] = {}
        if result.manifest.get("status") == "failed":
            # Stopped by input.max_rejects: only rejects.jsonl and run.json, so it cannot pass for a complete run.
            write_rejects(result.rejects, staging / "rejects.jsonl")
            manifest_failed = {**result.manifest, "format": fmt, "outputs": {"rejects": "rejects.jsonl"}}
            (staging / MARKER).write_text(
                json.dumps(manifest_failed, indent=2, default=str) + "\n", encoding="utf-8"
            )
            _swap(staging, outdir)
            return outdir
        if fmt == "duckdb":
            from .warehouse import DUCKDB_FILE, write_duckdb

            # DuckDB reads each table through a RecordBatchReader, one piece at a time.
            tables = {name: _reader(table_pieces(result, name)) for name in TABLE_NAMES}
            rejects = [r.to_dict() for r in result.rejects]
            files["database"] = write_duckdb(
                cast("dict[str, pa.Table]", tables), staging / DUCKDB_FILE, rejects, result.manifest
            ).name
        else:
            for name in TABLE_NAMES:
                files[name] = write_table(table_pieces(result, name), staging / name, fmt).name
        write_rejects(result.rejects, staging / "rejects.jsonl")
        files["rejects"] = "rejects.jsonl"
        # report.html, report.md, summary.json and charts/*.png, from one build of the report
        files.update(
            write_reports(
                result, staging, html=result.config.report.html, markdown=result.config.report.markdown
            )
        )
        manifest: dict[str, Any] = {**result.manifest, "format": fmt, "outputs": files}
        (staging / MARKER).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
        _swap(staging, outdir)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise _write_error(outdir, exc) from exc
        raise
    logger.info("wrote %s", outdir)
    return outdir


_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def write_rejects(rejects: Iterable[Reject], path: Path) -> None:
    """One JSON object per line; Unicode line separators are escaped too, so no reader splits a record."""
    with path.open("w", encoding="utf-8", errors="replace") as fh:
        for r in rejects:
            fh.write(json.dumps(r.to_dict(), ensure_ascii=False).translate(_LINE_BREAKS) + "\n")


def _write_error(outdir: Path, exc: OSError) -> PipelineError:
    """Disk full (or over quota) gets its own message; any other OS error is 'not writable'."""
    problem = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return PipelineError(Errors.E213, path=str(outdir), problem=problem)
    return PipelineError(Errors.E208, path=str(outdir), problem=problem)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _recover(outdir: Path) -> None:
    """Clean up after a run that was killed (SIGKILL, power loss) while writing to ``outdir``: a
    staging folder of a dead process is removed; a previous run moved aside by a dead process is put
    back if ``outdir`` is missing."""
    for sibling in outdir.parent.glob(f".{glob.escape(outdir.name)}.*-*"):
        kind, _, rest = sibling.name[len(outdir.name) + 2 :].partition("-")
        pid = rest.split("-")[0]
        if (
            kind not in ("partial", "old")
            or not pid.isdigit()
            or int(pid) == os.getpid()
            or _pid_alive(int(pid))
        ):
            continue
        if kind == "old" and not outdir.exists() and (sibling / MARKER).is_file():
            logger.warning("restoring %s from %s, left by an interrupted run", outdir, sibling.name)
            os.replace(sibling, outdir)
        else:
            logger.info("removing %s, left by an interrupted run", sibling)
            shutil.rmtree(sibling, ignore_errors=True)


def _swap(staging: Path, outdir: Path) -> None:
    """Replace ``outdir`` with ``staging``. Refuses to replace a folder that is not a cxnlp output."""
    if outdir.exists():
        if not outdir.is_dir():
            raise PipelineError(Errors.E208, path=str(outdir), problem="it exists and is not a directory")
        entries = list(outdir.iterdir())
        if entries and not (outdir / MARKER).is_file():
            raise PipelineError(
                Errors.E208,
                path=str(outdir),
                problem="it is not empty and holds no cxnlp run.json; choose a new or empty folder",
            )
        old = outdir.with_name(f".{outdir.name}.old-{os.getpid()}")
        os.replace(outdir, old)
        try:
            os.replace(staging, outdir)
        except BaseException:  # including KeyboardInterrupt: put the previous run back
            os.replace(old, outdir)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, outdir)
    os.chmod(outdir, 0o755)


def read_outputs(outdir: str | Path, names: Iterable[str] | None = None) -> dict[str, Any]:
    """Load a finished run's tables (for ``cxnlp report`` and tests) as Arrow tables with the schema's types.

    Parquet, CSV (list and struct cells are JSON text there) and ``cxnlp.duckdb`` all come back alike;
    ``names`` picks tables (default: all). A table the run did not write is None.
    """
    outdir = Path(outdir)
    marker = outdir / MARKER
    if not marker.is_file():
        raise PipelineError(Errors.E209, path=str(outdir), problem="run.json is missing")
    manifest = json.loads(marker.read_text(encoding="utf-8"))
    tables: dict[str, Any] = {"manifest": manifest}
    wanted = list(TABLES) if names is None else list(names)
    for name in wanted:
        parquet, csv = outdir / f"{name}.parquet", outdir / f"{name}.csv"
        tables[name] = (
            pq.read_table(parquet) if parquet.is_file() else _read_csv(csv, name) if csv.is_file() else None
        )
    from .warehouse import DUCKDB_FILE, read_duckdb

    missing = [name for name in wanted if tables[name] is None]
    if missing and (outdir / DUCKDB_FILE).is_file():
        tables.update(read_duckdb(outdir / DUCKDB_FILE, missing))
    return tables


def _read_csv(path: Path, name: str) -> pa.Table:
    """A CSV table with the schema's types: scalars parsed as typed, list and struct cells decoded from JSON."""
    columns = {c.name: c.type for c in TABLES.get(name, [])}
    nested = {n: t for n, t in columns.items() if pa.types.is_list(t) or pa.types.is_struct(t)}
    types = {n: pa.string() if n in nested else t for n, t in columns.items()}
    options = pacsv.ConvertOptions(
        column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    table = pacsv.read_csv(path, convert_options=options)
    for col, typ in nested.items():
        if col in table.column_names:
            values = [None if v is None or v == "" else json.loads(v) for v in table.column(col).to_pylist()]
            table = table.set_column(table.column_names.index(col), col, pa.array(values, type=typ))
    return table.replace_schema_metadata(arrow_schema(name).metadata) if name in TABLES else table
