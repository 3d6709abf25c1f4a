"""The batch runner: chunked runs equal in-memory ones, killed runs resume exactly, --state runs are
incremental and idempotent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxnlp import batch
from cxnlp.batch import read_state_table, run_batch
from cxnlp.io import SeenIds
from cxnlp.pipeline import MODEL_STEPS

LABEL_COLUMNS = {
    "documents": ["doc_id", "stages", "primary_stage", "sentiment", "emotion", "n_segments", "language"],
    "segments": ["doc_id", "segment_id", "text", "stage", "stages", "sentiment", "emotion", "pain_point_id"],
    "pain_points": ["pain_point_id", "stage", "label", "size", "n_documents"],
}


def tables(outdir: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(outdir / f"{name}.parquet") for name in LABEL_COLUMNS}


def assert_same_run(a: Path, b: Path) -> None:
    ta, tb = tables(a), tables(b)
    for name, columns in LABEL_COLUMNS.items():
        x, y = ta[name], tb[name]
        assert len(x) == len(y), name
        for c in columns:
            assert x[c].astype(str).tolist() == y[c].astype(str).tolist(), f"{name}.{c}"
    for name, col in (("segments", "sentiment_score"), ("segments", "stage_score")):
        np.testing.assert_allclose(ta[name][col], tb[name][col], atol=1e-4)
    ma = json.loads((a / "run.json").read_text())
    mb = json.loads((b / "run.json").read_text())
    assert ma["counts"] == mb["counts"]
    # the corpus-wide results computed from the reduce phase's tables: the stage summary and the report
    pd.testing.assert_frame_equal(
        pd.read_parquet(a / "stage_summary.parquet"), pd.read_parquet(b / "stage_summary.parquet")
    )
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for key in set(sa) - {"generated_at", "analysed_at"}:
        assert sa[key] == sb[key], f"summary.json: {key}"


def test_batch_chunked_run_equals_in_memory_run(analyzer, reviews, tmp_path):
    run = run_batch(analyzer, [str(reviews)], tmp_path / "chunked", chunk_size=7)
    assert run.result.manifest["chunks"]["count"] == 9
    assert run.result.manifest["run_id"]
    analyzer.analyze([str(reviews)]).write(tmp_path / "memory")
    assert_same_run(tmp_path / "chunked", tmp_path / "memory")
    c = run.result.counts
    assert c["read"] == c["analysed"] + c["rejected"] == 60
    assert not (tmp_path / ".chunked.work").exists(), "the work folder is removed after a complete run"


@pytest.mark.parametrize("id_buffer", [None, 2])
def test_batch_rejects_and_counts_add_up_across_chunks(analyzer, tmp_path, monkeypatch, id_buffer):
    if id_buffer:  # the ids read go to the work folder's SQLite file every two ids
        monkeypatch.setattr(SeenIds, "BUFFER", id_buffer)
        spilled = []
        real_close = SeenIds.close
        monkeypatch.setattr(SeenIds, "close", lambda self: (spilled.append(self.spilled), real_close(self)))
    src = tmp_path / "in.jsonl"
    rows = [json.dumps({"id": f"d{i}", "text": f"Delivery number {i} arrived late again."}) for i in range(9)]
    rows[2] = "{not json"
    rows[5] = json.dumps({"id": "d5", "text": "   "})
    rows[7] = json.dumps({"id": "d1", "text": "A duplicate id."})
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    run = run_batch(analyzer, [str(src)], tmp_path / "out", chunk_size=2)
    c = run.result.counts
    assert (c["read"], c["analysed"], c["rejected"]) == (9, 6, 3)
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["source_line"] for r in rejects) == [3, 6, 8]
    assert f"{src}:2" in next(r["reason"] for r in rejects if r["code"] == "R006")
    if id_buffer:
        assert spilled == [6]  # the duplicate was looked up in the file
        assert not (tmp_path / ".out.work").exists()


def _fail_after(n: int):
    real = batch.save_chunk
    calls = {"n": 0}

    def save(folder, info, part):
        if calls["n"] >= n:
            raise KeyboardInterrupt("simulated crash")
        calls["n"] += 1
        return real(folder, info, part)

    return save


@pytest.mark.parametrize("crash_after", [0, 1, 4])
def test_batch_resumes_after_a_crash_between_chunks(analyzer, reviews, tmp_path, monkeypatch, crash_after):
    out = tmp_path / "out"
    monkeypatch.setattr(batch, "save_chunk", _fail_after(crash_after))
    with pytest.raises(KeyboardInterrupt):
        run_batch(analyzer, [str(reviews)], out, chunk_size=10)
    assert not (out / "run.json").exists()
    work = tmp_path / ".out.work" / "chunks"
    committed = [p for p in work.iterdir() if p.name.isdigit()] if work.is_dir() else []
    assert len(committed) == crash_after  # a run stopped before its first commit leaves nothing behind
    monkeypatch.undo()
    run = run_batch(analyzer, [str(reviews)], out, chunk_size=10)
    assert run.resumed_chunks == crash_after
    assert run.result.manifest["chunks"]["resumed"] == crash_after
    run_batch(analyzer, [str(reviews)], tmp_path / "clean", chunk_size=10)
    assert_same_run(out, tmp_path / "clean")


def test_batch_half_written_chunk_is_discarded(analyzer, reviews, tmp_path):
    out = tmp_path / "out"
    chunks = tmp_path / ".out.work" / "chunks"
    run_batch(analyzer, [str(reviews)], tmp_path / "clean", chunk_size=30)
    # A run killed while writing chunk 0: its temporary folder is left, holding part of the files.
    (chunks / "000000.tmp-99999").mkdir(parents=True)
    (chunks / "000000.tmp-99999" / "documents.parquet").write_bytes(b"PAR1 truncated")
    run = run_batch(analyzer, [str(reviews)], out, chunk_size=30)
    assert run.resumed_chunks == 0
    assert_same_run(out, tmp_path / "clean")


def test_batch_work_folder_of_other_input_is_not_reused(analyzer, reviews, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(batch, "save_chunk", _fail_after(2))
    with pytest.raises(KeyboardInterrupt):
        run_batch(analyzer, [str(reviews)], out, chunk_size=10)
    monkeypatch.undo()
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "x", "text": "Checkout kept failing."}) + "\n", encoding="utf-8")
    run = run_batch(analyzer, [str(other)], out, chunk_size=10)
    assert run.resumed_chunks == 0
    assert run.result.counts["analysed"] == 1


def test_batch_resumes_with_other_reduce_settings_but_not_other_map_settings(
    analyzer, reviews, tmp_path, monkeypatch
):
    """Committed chunks do not depend on clustering, the report, the output format, the seed or the
    prepare workers: a crashed run retried with other values of these keeps its chunks (and ends as a
    clean run with those values would). Redaction changes what the chunks hold: they are discarded."""
    import copy

    from cxnlp.config import load_config

    def variant(overrides: dict):  # type: ignore[no-untyped-def]
        other = copy.copy(analyzer)
        other.config = load_config(None, overrides)
        return other

    out = tmp_path / "out"
    monkeypatch.setattr(batch, "save_chunk", _fail_after(3))
    with pytest.raises(KeyboardInterrupt):
        run_batch(analyzer, [str(reviews)], out, chunk_size=10)
    monkeypatch.undo()
    reduce_only = {
        "seed": 7,
        "cluster": {"min_cluster_size": 3, "workers": 0},
        "report": {"verbatims": 1, "html": False},
        "batch": {"workers": 0},
    }
    run = run_batch(variant(reduce_only), [str(reviews)], out, chunk_size=10)
    assert run.resumed_chunks == 3
    run_batch(variant(reduce_only), [str(reviews)], tmp_path / "clean", chunk_size=10)
    assert_same_run(out, tmp_path / "clean")
    assert not (out / "report.html").exists()

    out2 = tmp_path / "out2"
    monkeypatch.setattr(batch, "save_chunk", _fail_after(3))
    with pytest.raises(KeyboardInterrupt):
        run_batch(analyzer, [str(reviews)], out2, chunk_size=10)
    monkeypatch.undo()
    run = run_batch(variant({"redact": {"person_names": False}}), [str(reviews)], out2, chunk_size=10)
    assert run.resumed_chunks == 0


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_batch_state_analyses_only_new_or_changed_records(analyzer, tmp_path):
    state = tmp_path / "state"
    day1 = [
        {"id": f"t{i}", "text": t, "created_at": "2026-11-01"}
        for i, t in enumerate(
            [
                "The parcel arrived two weeks late.",
                "Support never answered my emails.",
                "I was charged twice for one order.",
                "Setup took five minutes, lovely app.",
            ]
        )
    ]
    r1 = run_batch(
        analyzer, [str(_write(tmp_path / "d1.jsonl", day1))], tmp_path / "o1", chunk_size=3, state=state
    )
    assert (r1.result.counts["analysed"], r1.result.counts["unchanged"]) == (4, 0)
    day2 = [*day1, {"id": "t4", "text": "The courier left my box in the rain.", "created_at": "2026-11-02"}]
    day2[1] = {**day2[1], "text": "Support finally answered, after nine days."}
    r2 = run_batch(
        analyzer, [str(_write(tmp_path / "d2.jsonl", day2))], tmp_path / "o2", chunk_size=3, state=state
    )
    c = r2.result.counts
    assert (c["read"], c["analysed"], c["unchanged"], c["rejected"]) == (5, 2, 3, 0)
    assert sorted(r2.result.documents["doc_id"]) == ["t1", "t4"]

    docs = read_state_table(state, "documents")
    assert sorted(docs["doc_id"]) == ["t0", "t1", "t2", "t3", "t4"]
    assert docs.set_index("doc_id").loc["t1", "text"].startswith("Support finally answered")
    history = read_state_table(state, "documents", current=False)
    assert len(history) == 6 and sorted(history["run_seq"].unique()) == [1, 2]
    segs = read_state_table(state, "segments")
    assert not segs.duplicated("segment_id").any()
    assert "nine days" in " ".join(segs[segs["doc_id"] == "t1"]["text"])
    parts = sorted(p.name for p in (state / "tables" / "documents").glob("run_date=*/*.parquet"))
    assert len(parts) == 2

    # The same input again: nothing analysed, nothing added.
    r3 = run_batch(analyzer, [str(tmp_path / "d2.jsonl")], tmp_path / "o3", chunk_size=3, state=state)
    assert (r3.result.counts["analysed"], r3.result.counts["unchanged"]) == (0, 5)
    assert sorted(p.name for p in (state / "tables" / "documents").glob("run_date=*/*.parquet")) == parts
    assert len(read_state_table(state, "documents", current=False)) == 6


def test_batch_state_crash_after_outputs_before_commit_adds_nothing_twice(analyzer, tmp_path, monkeypatch):
    state = tmp_path / "state"
    src = _write(
        tmp_path / "d.jsonl", [{"id": f"k{i}", "text": f"Order {i} arrived damaged."} for i in range(5)]
    )

    def crash(self, *a, **kw):
        self._write_partition("documents", a[0].documents, a[1], 1, a[2])  # half of the commit
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(batch.State, "commit", crash)
    with pytest.raises(KeyboardInterrupt):
        run_batch(analyzer, [str(src)], tmp_path / "o", chunk_size=2, state=state)
    monkeypatch.undo()
    run = run_batch(analyzer, [str(src)], tmp_path / "o", chunk_size=2, state=state)
    assert run.resumed_chunks == 3
    assert len(read_state_table(state, "documents", current=False)) == 5
    again = run_batch(analyzer, [str(src)], tmp_path / "o", chunk_size=2, state=state)
    assert again.result.counts["analysed"] == 0
    assert len(read_state_table(state, "documents", current=False)) == 5


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cxnlp.cli", "analyze", *args, "-q"]


def test_batch_sigkill_at_random_points_then_rerun_matches_a_clean_run(reviews, tmp_path):
    """A real SIGKILL of the CLI while it works through chunks; the rerun must equal a clean run."""
    env = {**os.environ, "CXNLP_LOG": "warning"}
    clean = tmp_path / "clean"
    subprocess.run(_cli(str(reviews), "-o", str(clean), "--chunk-size", "6"), check=True, env=env)
    out = tmp_path / "out"
    chunks = tmp_path / ".out.work" / "chunks"
    rng = np.random.default_rng(7)
    kills = 0
    for _attempt in range(3):  # kill after a random number of committed chunks, three times
        target = int(rng.integers(1, 9))
        proc = subprocess.Popen(_cli(str(reviews), "-o", str(out), "--chunk-size", "6"), env=env)
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            done = [p for p in chunks.iterdir() if p.name.isdigit()] if chunks.is_dir() else []
            if len(done) >= target:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.05)
        proc.wait()
        if (out / "run.json").exists():
            break
    assert kills >= 1
    subprocess.run(_cli(str(reviews), "-o", str(out), "--chunk-size", "6"), check=True, env=env)
    assert_same_run(out, clean)
    ids = pd.read_parquet(out / "documents.parquet")["doc_id"]
    assert ids.is_unique and len(ids) == 60


def test_batch_ray_engine_equals_local_engine(analyzer, reviews, tmp_path):
    """--engine ray on a local Ray: the same tables, counts and pain points as the local engine."""
    import ray

    try:
        run = run_batch(analyzer, [str(reviews)], tmp_path / "ray", chunk_size=25, engine="ray")
    finally:
        ray.shutdown()
    assert run.result.manifest["engine"] == "ray"
    assert run.result.manifest["chunks"]["count"] == 3
    run_batch(analyzer, [str(reviews)], tmp_path / "local", chunk_size=25)
    assert_same_run(tmp_path / "ray", tmp_path / "local")


def test_batch_prepare_workers_give_the_same_run(reviews, tmp_path):
    """batch.workers: spaCy in a worker process while the models run here; same outputs."""
    from cxnlp.config import load_config
    from cxnlp.pipeline import Analyzer

    analyzer = Analyzer(load_config(None, {"batch": {"workers": 1}}), device="cpu")
    run_batch(analyzer, [str(reviews)], tmp_path / "workers", chunk_size=20)
    plain = Analyzer(device="cpu")
    run_batch(plain, [str(reviews)], tmp_path / "plain", chunk_size=20)
    assert_same_run(tmp_path / "workers", tmp_path / "plain")


def _niceness() -> int:
    return os.nice(0)


@pytest.mark.skipif(not hasattr(os, "nice"), reason="Unix only")
def test_cpu_prepare_workers_run_at_the_lowest_priority():
    # On the CPU the workers must not take cores from the encoder's threads (benchmarks/README.md).
    from cxnlp import batch, processes

    with processes.pool(1, nice=19) as pool:
        assert pool.submit(_niceness).result() == min(19, os.nice(0) + 19)
    with processes.pool(1) as pool:
        assert pool.submit(_niceness).result() == os.nice(0)
    assert batch.CPU_WORKER_NICE == 19


def test_cpu_auto_workers_start_only_for_runs_of_several_full_chunks(
    analyzer, reviews, tmp_path, monkeypatch
):
    import concurrent.futures

    from cxnlp import batch

    pools = []

    def pool(max_workers, nice=0):  # type: ignore[no-untyped-def]
        pools.append((max_workers, nice))
        return concurrent.futures.ThreadPoolExecutor(max_workers)

    monkeypatch.setattr(batch.processes, "pool", pool)
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(batch, "MIN_SLICE", 4)  # the fixture's chunks of 20 count as full ones
    assert analyzer.config.batch.workers is None and analyzer.device == "cpu"
    run_batch(analyzer, [str(reviews)], tmp_path / "one", chunk_size=1000)  # one chunk: no workers
    assert pools == []
    run_batch(analyzer, [str(reviews)], tmp_path / "several", chunk_size=20)
    assert pools == [(2, batch.CPU_WORKER_NICE)]
    assert_same_run(tmp_path / "several", tmp_path / "one")


def test_prepare_workers_compute_the_heads_text_features(tmp_path):
    """VADER runs next to segmentation in the worker; the sentiment head gives the same probabilities
    from the precomputed features as from the texts, and the features are not kept after annotate."""
    from cxnlp.config import config_to_dict, load_config
    from cxnlp.io import read_inputs
    from cxnlp.models import Heads, vader_features
    from cxnlp.pipeline import Analyzer

    analyzer = Analyzer(device="cpu")
    assert analyzer.heads.text_features == ["vader"]
    texts = ["Delivery was late and nobody answered.", "Love the new app, setup took a minute!"]
    src = _write(tmp_path / "in.jsonl", [{"id": str(i), "text": t} for i, t in enumerate(texts)])
    config = load_config()
    records = read_inputs([str(src)], config.input.fields).records
    part = batch.prepare_chunk(records, [], config_to_dict(config), ("vader",))
    seg_texts = part.segments["text"].tolist()
    assert np.array_equal(part.features["vader"], vader_features(seg_texts))
    emb = analyzer.embed(seg_texts)
    heads = Heads.load("cx-heads")
    from_texts = heads.predict("sentiment", emb, seg_texts)
    given = heads.predict("sentiment", emb, None, part.features)
    assert np.array_equal(from_texts, given)
    analyzer.annotate(part, steps=MODEL_STEPS)
    assert part.features == {} and len(part.segments) == len(seg_texts)
    # the heads read the tuned embedding; the chunk keeps it mapped into the clustering space
    assert analyzer.cluster_map is not None
    mapped = emb @ analyzer.cluster_map
    assert np.allclose(part.embeddings, mapped / np.linalg.norm(mapped, axis=1, keepdims=True), atol=1e-5)
    assert not np.allclose(part.embeddings, emb, atol=1e-2)


def test_heads_move_to_a_device_as_a_copy():
    """Analyzer(device=...) runs its heads on its device; the heads Heads.load shares stay where they
    are (torch's "meta" device stands in for a GPU here: same moves, no data)."""
    from cxnlp.models import Heads

    shared = Heads.load("cx-heads")
    assert shared.on("cpu") is shared
    moved = shared.on("meta")
    assert moved.device == "meta" and shared.device == "cpu" and moved.tasks is shared.tasks
    assert {p.device.type for p in moved.modules.parameters()} == {"meta"}
    assert {b.device.type for b in moved.modules.buffers()} == {"meta"}  # the kNN vote's examples too
    assert {p.device.type for p in shared.modules.parameters()} == {"cpu"}


def test_pretokenized_encoding_equals_the_encoders_own():
    """Token ids from a prepare worker, padded and encoded here, give the torch encoder's embeddings:
    stripped like sentence-transformers strips, truncated at its max length, special tokens added."""
    from cxnlp.models import encode, encode_pretokenized, load_encoder, pretokenize

    model = load_encoder("cx-encoder", "cpu", "torch")
    texts = [
        "  The courier left it in the rain.  ",
        "ok",
        "Café crème was cold, the barista rude 😠",
        "refund " * 400,  # far past the 256-token limit: truncated the same way
        "Billing charged me twice\tfor one month.",
    ]
    tokens = pretokenize(texts, "cx-encoder", model.get_max_seq_length())
    assert len(tokens["token_offsets"]) == len(texts) + 1
    assert tokens["token_offsets"][-1] == len(tokens["token_ids"])
    ours = encode_pretokenized(model, tokens["token_ids"], tokens["token_offsets"], batch_size=2)
    theirs = encode(model, texts, batch_size=2)
    assert ours.shape == theirs.shape and np.abs(ours - theirs).max() < 1e-5
    assert encode_pretokenized(model, np.zeros(0, np.int32), np.zeros(1, np.int64)).shape == (0, 384)


def test_pretokenize_reads_tokenizer_json_with_transformers_ids(tmp_path):
    """The workers tokenise with the ``tokenizers`` library (no transformers import): the same ids as
    transformers' AutoTokenizer, truncation included; a tokenizer_config.json that overrides the
    normaliser sends it back to transformers."""
    import shutil

    from transformers import AutoTokenizer

    from cxnlp import models

    texts = ["  Café crème was COLD  ", "", "refund " * 400, "😠 late\tagain", "Naïve façade ÉCOLE"]
    location = Path(models.encoder_location("cx-encoder"))

    def ids(tokens: dict) -> list[list[int]]:
        o = tokens["token_offsets"]
        return [tokens["token_ids"][o[i] : o[i + 1]].tolist() for i in range(len(o) - 1)]

    def reference(folder: Path, max_length: int) -> list[list[int]]:
        auto = AutoTokenizer.from_pretrained(str(folder))
        return auto([t.strip() for t in texts], truncation=True, max_length=max_length)["input_ids"]

    assert not models._tokenizer_overrides(location)
    for max_length in (256, 8):
        assert ids(models.pretokenize(texts, "cx-encoder", max_length)) == reference(location, max_length)
    cased = tmp_path / "cased"
    shutil.copytree(location, cased)
    config = json.loads((cased / "tokenizer_config.json").read_text(encoding="utf-8"))
    (cased / "tokenizer_config.json").write_text(
        json.dumps({**config, "do_lower_case": False}), encoding="utf-8"
    )
    assert models._tokenizer_overrides(cased)
    got = ids(models.pretokenize(texts, str(cased), 256))
    assert got == reference(cased, 256) and got != reference(location, 256)


def test_prepare_workers_tokenize_for_a_torch_encoder_with_the_same_run(reviews, tmp_path, monkeypatch):
    """With a torch encoder (as on a GPU) the workers send token ids and the run is unchanged."""
    from cxnlp.config import load_config
    from cxnlp.pipeline import Analyzer

    seen = []
    real = batch.prepare_chunk

    def spy(*args, **kw):  # type: ignore[no-untyped-def]
        part = real(*args, **kw)
        seen.append(sorted(part.features))
        return part

    torch_cfg = {"models": {"backend": "torch"}}
    analyzer = Analyzer(load_config(None, {**torch_cfg, "batch": {"workers": 1}}), device="cpu")
    assert analyzer.pretokenizer() is None  # only on an accelerator ...
    monkeypatch.setattr(  # ... which this test stands in for
        Analyzer, "pretokenizer", lambda self: (self.encoder_name, 256)
    )
    monkeypatch.setattr(batch, "prepare_chunk", spy)
    import concurrent.futures

    monkeypatch.setattr(  # a thread, so that the spy sees the parts
        batch.processes,
        "pool",
        lambda max_workers, nice=0: concurrent.futures.ThreadPoolExecutor(max_workers),
    )
    run_batch(analyzer, [str(reviews)], tmp_path / "tokens", chunk_size=20)
    assert seen and all(s == ["token_ids", "token_offsets", "vader"] for s in seen if s)
    run_batch(
        Analyzer(load_config(None, torch_cfg), device="cpu"),
        [str(reviews)],
        tmp_path / "plain",
        chunk_size=20,
    )
    assert_same_run(tmp_path / "tokens", tmp_path / "plain")


def test_prepare_workers_share_each_chunk_in_slices_with_the_same_run(reviews, tmp_path, monkeypatch):
    """Several workers prepare each chunk in slices (rejects, documents, segments, VADER features and
    token ids merged in order, the token offsets shifted): the run equals the one without workers, down
    to the rejects file's order."""
    import concurrent.futures

    from cxnlp.config import load_config
    from cxnlp.pipeline import Analyzer

    lines = reviews.read_text(encoding="utf-8").splitlines()
    lines.insert(12, "{not json")  # rejected when read: goes with the chunk's first slice
    lines.insert(33, json.dumps({"review_id": "x1", "text": "?!?! ..."}))  # rejected in a later slice
    lines.insert(50, json.dumps({"review_id": "x2", "text": "...."}))
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sizes = []
    real = batch.prepare_chunk

    def spy(records, *args, **kw):  # type: ignore[no-untyped-def]
        sizes.append(len(records))
        return real(records, *args, **kw)

    torch_cfg = {"models": {"backend": "torch"}}
    analyzer = Analyzer(load_config(None, {**torch_cfg, "batch": {"workers": 3}}), device="cpu")
    monkeypatch.setattr(Analyzer, "pretokenizer", lambda self: (self.encoder_name, 256))
    monkeypatch.setattr(batch, "prepare_chunk", spy)
    monkeypatch.setattr(batch, "MIN_SLICE", 4)
    monkeypatch.setattr(
        batch.processes,
        "pool",
        lambda max_workers, nice=0: concurrent.futures.ThreadPoolExecutor(max_workers),
    )
    run = run_batch(analyzer, [str(src)], tmp_path / "sliced", chunk_size=30)
    assert run.result.manifest["counts"]["rejected"] == 3
    assert max(sizes) <= 10 and len(sizes) >= 6  # chunks of 30 records in slices of 10
    plain = Analyzer(load_config(None, torch_cfg), device="cpu")
    run_batch(plain, [str(src)], tmp_path / "plain", chunk_size=30)
    assert_same_run(tmp_path / "sliced", tmp_path / "plain")
    rejects = [(tmp_path / d / "rejects.jsonl").read_text(encoding="utf-8") for d in ("sliced", "plain")]
    assert rejects[0] == rejects[1] and rejects[0].count("\n") == 3


def test_slices_and_their_merge():
    from cxnlp.pipeline import Part, merge_parts

    assert [len(s) for s in batch.slices(list(range(1000)), 3)] == [334, 334, 332]
    assert [len(s) for s in batch.slices(list(range(300)), 14)] == [300]  # under two MIN_SLICE
    assert batch.slices([], 4) == [[]]
    parts = []
    for texts in (["a b", "c"], [], ["d e f"]):
        seg = pd.DataFrame({"text": texts}) if texts else pd.DataFrame()
        lengths = [len(t.split()) for t in texts]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.arange(offsets[-1], dtype=np.int32) + 100 * len(parts)
        features = (
            {"token_ids": ids, "token_offsets": offsets, "vader": np.ones((len(texts), 2))} if texts else {}
        )
        parts.append(
            Part(pd.DataFrame({"doc_id": [str(len(parts))]}), seg, np.zeros((0, 0)), [], {}, {}, features)
        )
    merged = merge_parts(parts)
    assert merged.segments["text"].tolist() == ["a b", "c", "d e f"]
    assert merged.features["token_offsets"].tolist() == [0, 2, 3, 6]
    assert merged.features["token_ids"].tolist() == [0, 1, 2, 200, 201, 202]
    assert merged.features["vader"].shape == (3, 2)
    assert merged.documents["doc_id"].tolist() == ["0", "1", "2"]


def test_ray_rows_carry_the_workers_features():
    """The Ray CPU stage's rows keep VADER features and token ids (dtypes too) for the model actors."""
    from cxnlp.pipeline import Part
    from cxnlp.ray_engine import part_row, row_part

    features = {
        "vader": np.array([[0.1, 0.7, 0.2, 0.3]], np.float32),
        "token_ids": np.array([101, 2023, 102], np.int32),
        "token_offsets": np.array([0, 3], np.int64),
    }
    part = Part(pd.DataFrame({"doc_id": ["a"]}), pd.DataFrame({"text": ["x"]}), np.zeros((0, 0)), [])
    part.features = features
    back = row_part(part_row(0, 0, part)).features
    assert sorted(back) == sorted(features)
    for k, v in features.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)
    part.features = {}
    assert row_part(part_row(0, 0, part)).features == {}


def test_auto_prepare_workers_fill_the_host_on_an_accelerator_and_idle_cores_on_the_cpu(monkeypatch):
    from types import SimpleNamespace

    from cxnlp import batch
    from cxnlp.config import load_config

    def fake(device: str, workers: int | None = None) -> SimpleNamespace:
        return SimpleNamespace(device=device, config=load_config(None, {"batch": {"workers": workers}}))

    monkeypatch.setattr(batch.os, "cpu_count", lambda: 16)
    assert batch.workers_for(fake("cpu")) == 0  # chunk size unknown
    assert batch.workers_for(fake("cpu"), 2 * batch.MIN_SLICE - 1) == 0  # a small run: not worth it
    assert batch.workers_for(fake("cpu"), 5000) == batch.MAX_AUTO_CPU_WORKERS
    assert batch.workers_for(fake("cpu", workers=0), 5000) == 0
    assert batch.loaders_for(fake("cpu"), 200) == 0  # the reduce's loaders stay off on the CPU
    assert batch.loaders_for(fake("cuda"), 200) == batch.MAX_LOADERS
    assert batch.workers_for(fake("cuda")) == 14
    assert batch.workers_for(fake("cuda", workers=3)) == 3
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 2)
    assert batch.workers_for(fake("cuda")) == 1
    assert batch.workers_for(fake("cpu"), 5000) == 2
    monkeypatch.setattr(batch.os, "cpu_count", lambda: 128)
    assert batch.workers_for(fake("mps")) == batch.MAX_AUTO_WORKERS


def test_cli_log_format_json_writes_one_object_per_line(tmp_path):
    src = _write(
        tmp_path / "in.jsonl", [{"id": "a", "text": "The courier was rude."}, {"id": "b", "text": ""}]
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxnlp.cli",
            "analyze",
            str(src),
            "-o",
            str(tmp_path / "o"),
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [json.loads(x) for x in proc.stderr.splitlines() if x.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    chunk = [x for x in lines if x.get("step") == "map"]
    assert chunk and chunk[0]["documents"] == 1 and chunk[0]["chunk"] == 0


def test_pipeline_out_of_memory_halves_the_batch_and_keeps_going(analyzer, monkeypatch):
    """On an accelerator an OOM batch is retried at half the size; the embeddings are unchanged."""
    from cxnlp import pipeline

    texts = ["The parcel arrived late.", "Support was kind.", "Billing charged me twice."] * 3
    expected = analyzer.embed(texts)
    real = pipeline.encode
    sizes: list[int] = []

    def flaky(model, chunk, batch_size, progress=None):
        sizes.append(batch_size)
        if batch_size > 16:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, chunk, batch_size, progress)

    monkeypatch.setattr(pipeline, "encode", flaky)
    monkeypatch.setattr(analyzer, "device", "cuda")
    monkeypatch.setattr(analyzer, "batch_size", 128)
    np.testing.assert_allclose(analyzer.embed(texts), expected, atol=1e-6)
    assert sizes == [128, 64, 32, 16] and analyzer.batch_size == 16


def test_pipeline_out_of_memory_at_batch_one_is_e214(analyzer, monkeypatch):
    from cxnlp import pipeline
    from cxnlp.errors import ModelError

    def oom(*a, **kw):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(pipeline, "encode", oom)
    monkeypatch.setattr(analyzer, "device", "cuda")
    monkeypatch.setattr(analyzer, "batch_size", 2)
    part = analyzer.prepare([], [])
    with pytest.raises(RuntimeError, match="out of memory"):
        analyzer.embed(["one text"])
    assert analyzer.batch_size == 1
    from cxnlp.io import Record

    rec = Record(
        "x.jsonl",
        1,
        {
            "text": "A late parcel.",
            "__roles__": {"text": "text", "id": None, "timestamp": None, "rating": None, "channel": None},
            "__doc_id__": "d1",
        },
    )
    part = analyzer.prepare([rec], [])
    with pytest.raises(ModelError, match=r"\[E214\]"):
        analyzer.annotate(part)


@pytest.mark.gpu
@pytest.mark.skipif("not __import__('torch').cuda.is_available()")
def test_batch_gpu_run_equals_cpu_run(reviews, tmp_path):
    """fp16 on CUDA with an automatic batch size: the same labels as the CPU run (scores within 0.02)."""
    from cxnlp.pipeline import Analyzer

    gpu = Analyzer(device="cuda")
    assert gpu.batch_size >= 128
    assert gpu.heads.device == "cuda" and Analyzer(device="cpu").heads.device == "cpu"  # a copy moved
    run_batch(gpu, [str(reviews)], tmp_path / "gpu", chunk_size=20)
    run_batch(Analyzer(device="cpu"), [str(reviews)], tmp_path / "cpu", chunk_size=20)
    a, b = tables(tmp_path / "gpu"), tables(tmp_path / "cpu")
    agree = (a["segments"]["sentiment"] == b["segments"]["sentiment"]).mean()
    assert agree > 0.97
