"""The batch runner's reduce phase holds only what clustering, the aggregates and the report read; the
final documents and segments tables are streamed from the committed chunks and equal an in-memory run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLES

from cxnlp import batch
from cxnlp.batch import REDUCE_COLUMNS, run_batch
from cxnlp.output import read_outputs


def test_reduce_holds_only_the_columns_the_corpus_wide_steps_read(analyzer, reviews, tmp_path, monkeypatch):
    seen = {}
    real = batch.Analyzer.finish

    def spy(self, part, *args, **kwargs):
        seen["documents"], seen["segments"] = part.documents.copy(), part.segments.copy()
        return real(self, part, *args, **kwargs)

    monkeypatch.setattr(batch.Analyzer, "finish", spy)
    run = run_batch(analyzer, [str(reviews)], tmp_path / "out", chunk_size=7)
    docs, segs = seen["documents"], seen["segments"]
    assert set(docs.columns) <= set(REDUCE_COLUMNS["documents"]) | {"n_segments"}
    assert set(segs.columns) <= set(REDUCE_COLUMNS["segments"]) | {"pain_point_id"}
    assert "text" not in docs.columns and "emotion_scores" not in segs.columns
    for frame, col in [(segs, "stage"), (segs, "sentiment"), (segs, "emotion"), (docs, "channel")]:
        assert isinstance(frame[col].dtype, pd.CategoricalDtype), col  # a byte a row, across all chunks
    kept = segs["text"].notna()
    assert 0 < kept.sum() < len(segs), "only the texts that clustering and the report may quote are kept"
    # ...and the texts the pain points and the report quote are among them
    quoted = {q for qs in run.result.pain_points["example_quotes"] for q in qs}
    assert quoted <= set(segs.loc[kept, "text"])
    written = pd.read_parquet(tmp_path / "out" / "segments.parquet")
    assert written["text"].notna().all() and len(written) == len(segs)


def test_merge_parts_unifies_categories_and_keeps_every_value():
    import numpy as np

    from cxnlp.pipeline import Part, merge_parts

    def part(stages: list[str | None], channel: pd.Series) -> Part:
        segs = pd.DataFrame({"stage": pd.Series(stages, dtype="category"), "n": range(len(stages))})
        docs = pd.DataFrame({"channel": channel})
        return Part(docs, segs, np.zeros((len(stages), 2), np.float16), [], {}, {})

    a = part(["delivery", None, "billing"], pd.Series(["app"], dtype="category"))
    b = part(["usage", "delivery"], pd.Series(["web", "email"]))  # one chunk's channel is not categorical
    merged = merge_parts([a, b])
    stage = merged.segments["stage"]
    assert isinstance(stage.dtype, pd.CategoricalDtype)
    assert stage.cat.add_categories("-").fillna("-").tolist() == [
        "delivery",
        "-",
        "billing",
        "usage",
        "delivery",
    ]
    assert stage.isna().tolist() == [False, True, False, False, False]
    assert merged.documents["channel"].astype(str).tolist() == ["app", "web", "email"]
    assert merged.segments["n"].tolist() == [0, 1, 2, 0, 1]


def test_reduce_batch_result_reads_the_full_tables_back(analyzer, reviews, tmp_path):
    run = run_batch(analyzer, [str(reviews)], tmp_path / "out", chunk_size=25)
    segs = run.result.segments
    assert segs["text"].notna().all() and isinstance(segs["emotion_scores"].iloc[0], dict)
    assert isinstance(segs["stages"].iloc[0], list)
    on_disk = read_outputs(tmp_path / "out", ["documents"])["documents"]
    assert run.result.documents["doc_id"].tolist() == on_disk.column("doc_id").to_pylist()
    assert "text" in run.result.documents.columns


def _mixed_input(path: Path) -> Path:
    """Input columns whose types differ from chunk to chunk, or that some chunks lack."""
    rows = [json.loads(x) for x in (SAMPLES / "reviews.jsonl").read_text(encoding="utf-8").splitlines()[:24]]
    for i, r in enumerate(rows):
        r["shop"] = i if i < 6 else None if i < 12 else f"s{i}"  # ints, nulls, then text
        if i % 5:
            r["meta"] = {"k": i}  # nested, missing in some rows
        if i >= 9:
            r["weight"] = 1.5 * i if i % 2 else i  # a column the first chunks lack
        r["plain"] = f"p{i}"  # the same type everywhere
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_reduce_input_columns_of_mixed_types_come_out_as_in_memory(analyzer, tmp_path, fmt):
    src = _mixed_input(tmp_path / "mixed.jsonl")
    from cxnlp.config import load_config
    from cxnlp.pipeline import Analyzer

    an = analyzer
    if fmt != "parquet":
        an = Analyzer(load_config(None, {"output": {"format": fmt}}), device="cpu")
    run_batch(an, [str(src)], tmp_path / "chunked", chunk_size=6)
    an.analyze([str(src)]).write(tmp_path / "memory")
    if fmt == "csv":
        a = (tmp_path / "chunked" / "documents.csv").read_text(encoding="utf-8").splitlines()
        b = (tmp_path / "memory" / "documents.csv").read_text(encoding="utf-8").splitlines()
        assert a[0] == b[0]
        cols = a[0].split(",")
        extras = [cols.index(f'"{c}"') for c in ("shop", "meta", "weight", "plain")]
        rows_a = [r.split(",") for r in a[1:]]
        rows_b = [r.split(",") for r in b[1:]]
        assert [[r[i] for i in extras] for r in rows_a] == [[r[i] for i in extras] for r in rows_b]
        return
    a = pq.read_table(tmp_path / "chunked" / "documents.parquet")
    b = pq.read_table(tmp_path / "memory" / "documents.parquet")
    assert a.schema.equals(b.schema, check_metadata=True)
    for col in ("doc_id", "shop", "meta", "weight", "plain", "text", "flags"):
        assert a.column(col).to_pylist() == b.column(col).to_pylist(), col
