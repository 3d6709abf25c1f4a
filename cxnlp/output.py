"""Write a run's outputs: tables (Parquet or CSV), rejects.jsonl, run.json and the reports.

Everything is written into a fresh sibling folder and swapped into place at the end, so OUTDIR always
holds one complete run: a rerun replaces the previous outputs atomically, and a failed run leaves the
previous outputs untouched.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import Errors, PipelineError
from .schema import TABLES, arrow_schema, column_names

if TYPE_CHECKING:
    from .pipeline import AnalysisResult

logger = logging.getLogger(__name__)

TABLE_NAMES = ("documents", "segments", "pain_points", "stage_summary")
MARKER = "run.json"


def to_arrow(name: str, frame: pd.DataFrame) -> pa.Table:
    """A frame -> an Arrow table with exactly the schema's columns and types (plus input extras on documents)."""
    base = arrow_schema(name)
    arrays = []
    for f in base:
        values = frame[f.name].tolist() if f.name in frame.columns else [None] * len(frame)
        values = [None if (v is not None and not isinstance(v, (list, dict, str)) and pd.isna(v)) else v for v in values]
        arrays.append(pa.array(values, type=f.type, from_pandas=True))
    fields = list(base)
    if name == "documents":
        known = set(column_names("documents"))
        for col in frame.columns:
            if col in known or col.startswith("_"):
                continue
            try:
                arr = pa.array(frame[col].tolist(), from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                arr = pa.array([None if v is None else str(v) for v in frame[col].tolist()], type=pa.string())
            if pa.types.is_null(arr.type):
                arr = arr.cast(pa.string())
            arrays.append(arr)
            fields.append(pa.field(col, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=base.metadata))


def _csv_ready(table: pa.Table) -> pa.Table:
    """Lists and structs become JSON text in CSV."""
    cols = []
    for i, f in enumerate(table.schema):
        col = table.column(i)
        if pa.types.is_list(f.type) or pa.types.is_struct(f.type):
            col = pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in col.to_pylist()], type=pa.string())
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


def write_table(table: pa.Table, path: Path, fmt: str) -> Path:
    if fmt == "parquet":
        target = path.with_suffix(".parquet")
        pq.write_table(table, target, compression="zstd")
    else:
        target = path.with_suffix(".csv")
        pacsv.write_csv(_csv_ready(table), target)
    return target


def write_outputs(result: AnalysisResult, outdir: Path, fmt: str = "parquet") -> Path:
    from .report import render_html, render_markdown

    outdir = Path(outdir).resolve()
    parent = outdir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.partial-", dir=parent))
    except OSError as exc:
        raise PipelineError(Errors.E208, path=str(outdir), problem=exc.strerror or str(exc)) from exc
    try:
        files: dict[str, str] = {}
        for name in TABLE_NAMES:
            frame = getattr(result, name)
            files[name] = write_table(to_arrow(name, frame), staging / name, fmt).name
        with (staging / "rejects.jsonl").open("w", encoding="utf-8") as fh:
            for r in result.rejects:
                fh.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
        files["rejects"] = "rejects.jsonl"
        if result.config.report.html:
            (staging / "report.html").write_text(render_html(result), encoding="utf-8")
            files["report_html"] = "report.html"
        if result.config.report.markdown:
            (staging / "report.md").write_text(render_markdown(result), encoding="utf-8")
            files["report_md"] = "report.md"
        manifest: dict[str, Any] = {**result.manifest, "format": fmt, "outputs": files}
        (staging / MARKER).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
        _swap(staging, outdir)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise PipelineError(Errors.E208, path=str(outdir), problem=exc.strerror or str(exc)) from exc
        raise
    logger.info("wrote %s", outdir)
    return outdir


def _swap(staging: Path, outdir: Path) -> None:
    """Replace ``outdir`` with ``staging``. Refuses to replace a folder that is not a cxnlp output."""
    if outdir.exists():
        if not outdir.is_dir():
            raise PipelineError(Errors.E208, path=str(outdir), problem="it exists and is not a directory")
        entries = list(outdir.iterdir())
        if entries and not (outdir / MARKER).is_file():
            raise PipelineError(Errors.E208, path=str(outdir), problem="it is not empty and holds no cxnlp run.json; choose a new or empty folder")
        old = outdir.with_name(f".{outdir.name}.old-{os.getpid()}")
        os.replace(outdir, old)
        try:
            os.replace(staging, outdir)
        except OSError:
            os.replace(old, outdir)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, outdir)
    os.chmod(outdir, 0o755)


def read_outputs(outdir: str | Path) -> dict[str, Any]:
    """Load a finished run's tables (for ``cxnlp report`` and tests)."""
    outdir = Path(outdir)
    marker = outdir / MARKER
    if not marker.is_file():
        raise PipelineError(Errors.E209, path=str(outdir), problem="run.json is missing")
    manifest = json.loads(marker.read_text(encoding="utf-8"))
    tables: dict[str, Any] = {"manifest": manifest}
    for name in TABLES:
        parquet, csv = outdir / f"{name}.parquet", outdir / f"{name}.csv"
        tables[name] = pq.read_table(parquet) if parquet.is_file() else pacsv.read_csv(csv) if csv.is_file() else None
    return tables
