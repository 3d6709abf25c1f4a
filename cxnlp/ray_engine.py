"""``--engine ray``: the per-document steps as Ray Data stages, the models as an actor pool.

The driver reads and validates the input (ids, duplicates and rejects need one global view), drops
records the ``--state`` folder has already seen, and writes each chunk's records as Parquet. Ray Data
then runs::

    read_parquet(records)
      -> map_batches(Prepare)    CPU workers: normalize, redact, segment (spaCy)
      -> map_batches(Annotate)   actor pool, ``batch.ray_actors`` actors with ``ray_gpus_per_actor`` GPUs:
                                 one encoder pass, then the stage, sentiment and emotion heads
      -> write_parquet(annotated)

and the driver turns the annotated Parquet back into committed chunks, so the corpus-wide steps
(cluster, aggregate), the outputs, resuming and ``--state`` are exactly those of the local engine.
Without ``--ray-address`` (or ``batch.ray_address``) a local Ray starts on this machine.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import ConfigError, Errors
from .io import Record, Reject

if TYPE_CHECKING:
    from .batch import ChunkInfo
    from .pipeline import Analyzer, Part, Progress

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- serialisation


def _ipc(frame: pd.DataFrame, name: str) -> bytes:
    from .batch import _loose

    table = _loose(name, frame) if len(frame.columns) else pa.table({})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _from_ipc(blob: bytes) -> pd.DataFrame:
    from .batch import _frame

    table = pa.ipc.open_stream(io.BytesIO(blob)).read_all()
    return _frame(table)


def _npy(array: np.ndarray) -> bytes:
    sink = io.BytesIO()
    np.save(sink, np.asarray(array, dtype=np.float32), allow_pickle=False)
    return sink.getvalue()


def _from_npy(blob: bytes) -> np.ndarray:
    return np.load(io.BytesIO(blob), allow_pickle=False)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    sink = io.BytesIO()
    np.savez(sink, allow_pickle=False, **arrays)
    return sink.getvalue()


def _from_npz(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _rejects(rejects: list[Reject]) -> str:
    return json.dumps([r.to_dict() for r in rejects], ensure_ascii=False)


def _from_rejects(text: str) -> list[Reject]:
    return [Reject.from_dict(d) for d in json.loads(text)]


def part_row(chunk: int, first: int, part: Part) -> dict[str, Any]:
    return {
        "chunk": chunk,
        "first": first,
        "documents": _ipc(part.documents, "documents"),
        "segments": _ipc(part.segments, "segments"),
        "embeddings": _npy(part.embeddings),
        "rejects": _rejects(part.rejects),
        "redactions": json.dumps(part.redactions),
        "timings": json.dumps(part.timings),
        "features": _npz(part.features),  # VADER, token ids: from the CPU stage to the model actors
    }


def row_part(row: dict[str, Any]) -> Part:
    from .pipeline import Part

    return Part(
        _from_ipc(row["documents"]),
        _from_ipc(row["segments"]),
        _from_npy(row["embeddings"]),
        _from_rejects(row["rejects"]),
        json.loads(row["redactions"]),
        json.loads(row["timings"]),
        _from_npz(row["features"]) if row.get("features") else {},
    )


# ------------------------------------------------------------------------------------------ stages


def prepare_batch(
    batch: pd.DataFrame,
    config: dict[str, Any],
    text_features: tuple[str, ...] = (),
    tokenizer: tuple[str, int] | None = None,
) -> pd.DataFrame:
    """Ray Data stage 1 (CPU tasks): records -> normalized, redacted, segmented documents, one row per
    chunk piece, with the heads' text features (and token ids for GPU actors). spaCy loads once per
    worker process (``load_spacy`` is cached)."""
    from .batch import prepare_chunk

    rows = []
    for chunk, group in batch.sort_values(["chunk", "row"]).groupby("chunk", sort=True):
        records, rejects = [], []
        for r in group.itertuples(index=False):
            if r.kind == "record":
                records.append(Record(r.source_file, int(r.source_line), json.loads(r.data)))
            else:
                rejects.append(Reject(r.source_file, int(r.source_line), r.code, r.reason, r.data))
        part = prepare_chunk(records, rejects, config, text_features, tokenizer)
        rows.append(part_row(int(chunk), int(group["row"].min()), part))
    return pd.DataFrame(rows)


class Annotate:
    """Ray Data stage 2 (actor pool, GPU when asked): embed once, then every head."""

    def __init__(self, config: dict[str, Any], device: str) -> None:
        from .config import load_config
        from .pipeline import Analyzer

        self.analyzer = Analyzer(load_config(None, config), device)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from .pipeline import MODEL_STEPS

        rows = []
        for row in batch.to_dict("records"):
            part = row_part(row)
            if len(part.documents):
                self.analyzer.annotate(part, steps=MODEL_STEPS)
            else:
                self.analyzer.annotate(part)
            rows.append(part_row(int(row["chunk"]), int(row["first"]), part))
        return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------- driver

_RECORD_SCHEMA = pa.schema(
    [
        ("chunk", pa.int64()),
        ("row", pa.int64()),
        ("kind", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
        ("data", pa.string()),
        ("code", pa.string()),
        ("reason", pa.string()),
    ]
)


def _write_records(folder: Path, info: ChunkInfo, records: list[Record], rejects: list[Reject]) -> None:
    rows: list[dict[str, Any]] = []
    for r in records:
        data = json.dumps(r.data, ensure_ascii=False, default=str)
        rows.append(
            {"kind": "record", "source_file": r.source_file, "source_line": r.source_line, "data": data}
        )
    for j in rejects:
        rows.append(
            {
                "kind": "reject",
                "source_file": j.source_file,
                "source_line": j.source_line,
                "data": j.raw,
                "code": j.code,
                "reason": j.reason,
            }
        )
    if not rows:  # keep the chunk in the plan: it still counts its unchanged records
        rows.append({"kind": "empty", "source_file": "", "source_line": 0, "data": ""})
    for i, row in enumerate(rows):
        row.update(chunk=info.index, row=i)
        row.setdefault("code", None)
        row.setdefault("reason", None)
    pq.write_table(pa.Table.from_pylist(rows, schema=_RECORD_SCHEMA), folder / f"{info.index:06d}.parquet")


def _init_ray(address: str | None) -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(Errors.E007, engine="ray", package="ray[data]", extra="ray") from exc
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {
            "ignore_reinit_error": True,
            "log_to_driver": False,
            "include_dashboard": False,
        }
        if address:
            kwargs["address"] = address
        else:
            # Logical CPUs for scheduling: the model actors hold theirs for the whole run, and the
            # read, prepare and write tasks need some left (2 would deadlock a 2-core machine).
            kwargs["num_cpus"] = max(4, os.cpu_count() or 1)
        ray.init(**kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True
    return ray


def map_ray(
    analyzer: Analyzer,
    chunks: Iterator[tuple[ChunkInfo, list[Record], list[Reject]]],
    folder: Path,
    progress: Progress | None,
    address: str | None = None,
) -> None:
    """Run the chunks that are not committed yet through Ray Data and commit them into ``folder``."""
    from .batch import save_chunk
    from .config import config_to_dict

    cfg = analyzer.config.batch
    staging = folder.parent / "ray"
    infos: dict[int, ChunkInfo] = {}
    for info, records, rejects in chunks:
        if not infos:  # the work folder exists once the first chunk is read
            shutil.rmtree(staging, ignore_errors=True)
            (staging / "records").mkdir(parents=True)
        _write_records(staging / "records", info, records, rejects)
        infos[info.index] = info
    if not infos:
        return
    ray = _init_ray(address or cfg.ray_address)
    config = config_to_dict(analyzer.config)
    device = analyzer.device if cfg.ray_gpus_per_actor > 0 else "cpu"
    ds = ray.data.read_parquet(str(staging / "records"))
    ds = ds.filter(lambda r: r["kind"] != "empty").map_batches(
        prepare_batch,
        fn_kwargs={
            "config": config,
            "text_features": tuple(analyzer.heads.text_features),
            # token ids only for GPU actors (whose tokenizer would otherwise sit on their critical path)
            "tokenizer": analyzer.pretokenizer() if device != "cpu" else None,
        },
        batch_size=cfg.chunk_size,
        batch_format="pandas",
        num_cpus=1,
    )
    ds = ds.map_batches(
        Annotate,
        fn_constructor_kwargs={"config": config, "device": device},
        batch_size=1,
        batch_format="pandas",
        concurrency=cfg.ray_actors,
        num_gpus=cfg.ray_gpus_per_actor or None,
        num_cpus=cfg.ray_cpus_per_actor,
    )
    ds.write_parquet(str(staging / "annotated"))
    # Where each chunk's pieces are (file, row), so that chunks are committed one at a time, holding one
    # file of annotated pieces rather than all of them.
    where: dict[int, list[tuple[int, Path, int]]] = {}
    for path in sorted((staging / "annotated").glob("*.parquet")):
        keys = pq.read_table(path, columns=["chunk", "first"]).to_pydict()
        for row, (chunk, first) in enumerate(zip(keys["chunk"], keys["first"])):
            where.setdefault(int(chunk), []).append((int(first), path, row))
    from .pipeline import merge_parts, prepare

    loaded: dict[Path, pa.Table] = {}

    def piece(path: Path, row: int) -> Part:
        if path not in loaded:
            loaded.clear()
            loaded[path] = pq.read_table(path)
        return row_part(loaded[path].slice(row, 1).to_pylist()[0])

    tick = progress("chunks", len(infos)) if progress else None
    for index, info in sorted(infos.items()):
        found = [piece(path, row) for _, path, row in sorted(where.get(index, []), key=lambda x: x[0])]
        part = merge_parts(found) if found else prepare([], [], analyzer.config)
        save_chunk(folder, info, part)
        if tick:
            tick(1)
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("ray: %d chunk(s) annotated", len(infos))
