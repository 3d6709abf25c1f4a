"""The batch runner's reduce phase holds only what clustering, the aggregates and the report read; the
final documents and segments tables are streamed from the committed chunks and equal an in-memory run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLES

from cxnlp import batch, pipeline
from cxnlp.batch import REDUCE_COLUMNS, run_batch
from cxnlp.output import read_outputs


def test_reduce_holds_only_the_segments_it_clusters(analyzer, reviews, tmp_path, monkeypatch):
    """The reduce counts every chunk into the run's digest as it reads it and keeps only the segments
    the cluster step clusters (negative ones with a stage), with their documents' ids and dates."""
    seen = {}
    real = batch.Analyzer.finish

    def spy(self, part, *args, **kwargs):
        seen["documents"], seen["segments"] = part.documents.copy(), part.segments.copy()
        seen["digest"] = kwargs["digest"]
        return real(self, part, *args, **kwargs)

    monkeypatch.setattr(batch.Analyzer, "finish", spy)
    run = run_batch(analyzer, [str(reviews)], tmp_path / "out", chunk_size=7)
    docs, segs, digest = seen["documents"], seen["segments"], seen["digest"]
    written = pd.read_parquet(tmp_path / "out" / "segments.parquet")
    assert digest.segments == len(written) == run.result.counts["segments"]
    assert digest.documents == run.result.counts["analysed"] == 60
    clustered = written["sentiment"].eq("negative") & written["stage"].isin(analyzer.stage_ids)
    assert 0 < len(segs) == clustered.sum() < len(written)
    assert segs["segment_id"].tolist() == written.loc[clustered, "segment_id"].tolist()
    assert written.loc[~clustered, "pain_point_id"].isna().all()
    assert written.loc[clustered, "pain_point_id"].notna().all()
    assert set(docs.columns) == {"doc_id", "created_at"} and set(docs["doc_id"]) == set(segs["doc_id"])
    assert set(segs.columns) <= set(REDUCE_COLUMNS["segments"]) | {"pain_point_id"}
    for col in ("stage", "sentiment", "emotion"):
        assert isinstance(segs[col].dtype, pd.CategoricalDtype), col  # a byte a row, across all chunks
    quoted = {q for qs in run.result.pain_points["example_quotes"] for q in qs}
    assert quoted <= set(segs["text"])
    documents = pd.read_parquet(tmp_path / "out" / "documents.parquet")
    assert documents["n_segments"].tolist() == [
        int((written["doc_id"] == d).sum()) for d in documents["doc_id"]
    ]


def test_reduce_lets_the_clustered_rows_go_before_the_stage_summary(analyzer, reviews, tmp_path, monkeypatch):
    """Once the cluster step has its pain points, nothing holds the clustered segments' rows: the stage
    summary, the drivers pass and the writing run without them."""
    import gc

    from cxnlp import aggregate

    # ids of this run's own, so that frames other tests left alive do not count
    src = tmp_path / "in.jsonl"
    rows = [json.loads(line) for line in reviews.read_text(encoding="utf-8").splitlines()]
    src.write_text("".join(json.dumps({**r, "review_id": f"let-go-{r['review_id']}"}) + "\n" for r in rows))
    alive = []
    real = aggregate.summary_of

    def ours(frame: pd.DataFrame) -> bool:
        ids = frame["doc_id"] if "doc_id" in frame.columns else pd.Series(dtype=object)
        return bool(len(frame)) and ids.astype(str).str.startswith("let-go-").any()

    def spy(*args, **kwargs):
        gc.collect()
        alive.extend(
            (o.shape, list(o.columns)) for o in gc.get_objects() if isinstance(o, pd.DataFrame) and ours(o)
        )
        return real(*args, **kwargs)

    monkeypatch.setattr(aggregate, "summary_of", spy)
    run = run_batch(analyzer, [str(src)], tmp_path / "out", chunk_size=7)
    assert run.result.counts["segments"] > 0 and len(run.result.pain_points)
    assert alive == []


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


def test_final_pieces_stay_in_arrow_and_equal_the_pandas_round_trip(analyzer, tmp_path):
    """The final tables are streamed from the chunks in Arrow (output.conform), without the round trip
    through pandas and Python objects that to_arrow makes; each piece must be the table to_arrow gives,
    values, types and schema metadata, for every column a real run holds (timestamps, NaN ratings,
    lists, dicts, input columns of mixed types), and a column stored with another type is converted."""
    import numpy as np
    import pyarrow as pa

    from cxnlp.output import conform, to_arrow

    result = analyzer.analyze([str(_mixed_input(tmp_path / "mixed.jsonl"))])
    docs, segs = result.documents.copy(), result.segments.copy()
    docs.loc[docs.index[:3], "rating"] = np.nan
    plan = batch._document_extras(
        # saved as the map phase saves a chunk: before the corpus-wide steps add these two columns
        [
            batch._Chunk(
                _saved(tmp_path, "c0", docs.drop(columns="n_segments"), segs.drop(columns="pain_point_id")),
                len(docs),
                len(segs),
            )
        ]
    )
    assert set(plan) >= {"shop", "meta", "weight", "plain"}
    chunk = tmp_path / "c0"
    for name, added in [
        ("segments", {"pain_point_id": segs["pain_point_id"].tolist()}),
        ("documents", {"n_segments": docs["n_segments"].tolist()}),
    ]:
        stored = pq.read_table(chunk / f"{name}.parquet")
        expected = to_arrow(name, batch._frame(stored).assign(**added), plan if name == "documents" else None)
        convert = [k for k, v in plan.items() if isinstance(v, pa.DataType)]
        inputs = batch._frame(stored.select(convert)) if name == "documents" else None
        got = conform(name, stored, added, plan if name == "documents" else None, inputs)
        assert got.schema.equals(expected.schema, check_metadata=True), name
        assert got.equals(expected), name
        # a column the chunk holds with another type (say, written by other code) is converted
        i = stored.column_names.index("doc_id")
        other = stored.set_column(
            i, "doc_id", pa.array([f"{v}" for v in stored["doc_id"].to_pylist()], pa.large_string())
        )
        assert conform(name, other, added, plan if name == "documents" else None, inputs).equals(expected)


def _saved(tmp_path: Path, name: str, docs: pd.DataFrame, segs: pd.DataFrame) -> Path:
    import numpy as np

    from cxnlp.pipeline import Part

    info = batch.ChunkInfo(0, len(docs), 0, [])
    part = Part(docs, segs, np.zeros((len(segs), 4), np.float16), [], {}, {})
    path = batch.save_chunk(tmp_path, info, part)
    return path.rename(tmp_path / name)


def test_reduce_loads_chunks_in_processes_with_the_same_result(analyzer, reviews, tmp_path, monkeypatch):
    """With loaders (batch.workers, spawned processes), the reduce gets every chunk as one process
    loads it: the same reduced tables, and the same phrase statistics of the segments not clustered."""
    import numpy as np

    from cxnlp.cluster import PhraseStats

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise Stop

    monkeypatch.setattr(analyzer, "finish", stop)
    with pytest.raises(Stop):
        run_batch(analyzer, [str(reviews)], tmp_path / "out", chunk_size=12)
    monkeypatch.undo()
    paths = sorted(p for p in (tmp_path / ".out.work" / "chunks").iterdir() if p.name.isdigit())
    assert len(paths) == 5 and batch.loaders_for(analyzer, len(paths)) == 0  # auto: none on the CPU
    serial = list(batch.reduced_chunks(analyzer, paths))
    monkeypatch.setattr(analyzer.config.batch, "workers", 2)
    assert batch.loaders_for(analyzer, len(paths)) == 2
    assert batch.loaders_for(analyzer, batch.MIN_PARALLEL_LOAD - 1) == 0
    parallel = list(batch.reduced_chunks(analyzer, paths))
    assert len(parallel) == len(serial)
    one, many = PhraseStats(), PhraseStats()
    for a, b in zip(serial, parallel):
        assert a.path == b.path and a.info == b.info and np.array_equal(a.rows, b.rows)
        pd.testing.assert_frame_equal(a.part.documents, b.part.documents)
        pd.testing.assert_frame_equal(a.part.segments, b.part.segments)
        assert np.array_equal(a.part.embeddings, b.part.embeddings) and a.part.rejects == b.part.rejects
        assert len(a.rows) == len(a.part.segments) < a.digest.segments  # only the clustered ones
        assert a.digest.sentiment == b.digest.sentiment and a.digest.trend_counts == b.digest.trend_counts
        one.merge(a.part.phrase_stats)
        many.merge(b.part.phrase_stats)
    assert one.said and one.said == many.said
    assert one.background == many.background  # (their order varies with Python's string hashes anyway)


def test_reduce_holds_arrow_columns_in_one_chunk(analyzer, reviews, tmp_path, monkeypatch):
    """Merged from many batch chunks, the reduce's Arrow columns (phrases, flags, stages) are one Arrow
    chunk each: the cluster step takes each cluster's rows from them, and a take from a column of many
    chunks costs a pass over all of them. Values and dtypes are unchanged."""
    import pyarrow as pa

    seen = {}
    real = batch.Analyzer.finish

    def spy(self, part, *args, **kwargs):
        seen["segments"], seen["documents"] = part.segments, part.documents
        return real(self, part, *args, **kwargs)

    monkeypatch.setattr(batch.Analyzer, "finish", spy)
    run_batch(analyzer, [str(reviews)], tmp_path / "out", chunk_size=7)
    arrow = [
        (frame, col)
        for frame in (seen["segments"], seen["documents"])
        for col in frame.columns
        if isinstance(frame[col].array, pd.arrays.ArrowExtensionArray)
    ]
    assert {col for _, col in arrow} >= {"phrases"}
    for frame, col in arrow:
        arr = pa.array(frame[col].array)
        assert not isinstance(arr, pa.ChunkedArray) or arr.num_chunks == 1, col

    chunks = pa.chunked_array([pa.array([["late box"], None]), pa.array([["refund", "box"]])])
    frame = pd.DataFrame({"phrases": pd.arrays.ArrowExtensionArray(chunks), "n": [1, 2, 3]})
    frame["text"] = pd.concat(  # pandas' Arrow-backed strings, as concat leaves them: two chunks
        [pd.Series(["a", None], dtype="string[pyarrow]"), pd.Series(["c"], dtype="string[pyarrow]")],
        ignore_index=True,
    )
    assert pa.array(frame["text"].array).num_chunks == 2
    before = {c: (frame[c].dtype, frame[c].tolist()) for c in frame.columns}
    batch._one_chunk_arrow(frame)
    assert {c: (frame[c].dtype, frame[c].tolist()) for c in frame.columns} == before
    for col in ("phrases", "text"):
        arr = pa.array(frame[col].array)
        assert not isinstance(arr, pa.ChunkedArray) or arr.num_chunks == 1, col


def test_reduce_emptied_tables_let_the_clustered_rows_arrow_buffers_go():
    import gc

    import pyarrow as pa

    before = pa.total_allocated_bytes()
    texts = pd.array([f"segment {i} " * 20 for i in range(5000)], dtype=pd.ArrowDtype(pa.string()))
    frame = pd.DataFrame(
        {"text": texts, "stage": pd.Categorical(["billing"] * 5000), "score": 0.5, "n": range(5000)}
    )
    assert pa.total_allocated_bytes() - before > 500_000
    sliced = frame.iloc[:0].copy()  # what the reduce did: this keeps every text's buffer
    emptied = pipeline.emptied(frame)
    del frame, texts
    gc.collect()
    assert pa.total_allocated_bytes() - before > 500_000
    del sliced
    gc.collect()
    assert pa.total_allocated_bytes() - before < 1000  # the emptied frame's own empty buffers
    assert len(emptied) == 0 and list(emptied.columns) == ["text", "stage", "score", "n"]
    assert list(emptied.dtypes.astype(str)) == ["string[pyarrow]", "category", "float64", "int64"]
