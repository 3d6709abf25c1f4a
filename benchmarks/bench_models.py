"""Model speed (issue 3): all three judgements (encoder + stage, sentiment and emotion heads) per encoder
backend, on the same segments in the same run, with the fidelity of each backend to torch fp32.

    python benchmarks/bench_models.py                 # speed + fidelity + head metrics on the eval sets
    python benchmarks/bench_models.py --no-quality    # speed and fidelity only (about a minute)

Segments: data/samples/reviews.jsonl cut by cxnlp's own segmenter (default config), repeated
``--repeat`` times. Each round times every backend once, in turn (interleaved, so a burst of load from
other jobs hits all of them); the table reports the best and the median round. Segments/s counts the
encoder pass (tokenising included) and the three heads with their decisions (VADER features for the
sentiment head included), not model loading.

Batch independence: the first 200 segments encoded in one call, in chunks of 7 and 193 and in reverse
order with batch size 16; the column is the largest absolute difference of an embedding value between
these compositions (0 up to float rounding when a segment's embedding does not depend on its batch).

``torch-bf16`` (on CPUs with bfloat16 units only: AMX or AVX512-BF16) is torch under bfloat16 autocast with fixed-shape batches.
``onnx-unfused`` is the plain export (no fused attention, LayerNorm, GELU kernels), for comparison.

Fidelity, against torch fp32 on the same segments: cosine of the embeddings, and how often the stage
set, the sentiment label and the top CX emotion agree. ``--quality`` (default) also scores the heads
on the evaluation sets with each backend (``python -m cxnlp.evaluate FILE --task ... --backend ...``).
Results are appended to benchmarks/results.jsonl with the machine they ran on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze import machine  # noqa: E402

BACKENDS = [("torch", "none"), ("onnx", "none"), ("onnx", "int8"), ("onnx", "int8-static")]
DATA = ROOT.parent / "shared" / "data"
QUALITY_SETS = [
    ("stage", ROOT / "data" / "eval" / "stages.jsonl"),
    ("sentiment", ROOT / "data" / "eval" / "stages.jsonl"),
    ("sentiment", DATA / "sst2" / "dev.tsv"),
    ("emotion", DATA / "goemotions" / "original" / "dev.tsv"),
]


def sample_segments() -> list[str]:
    from cxnlp.config import SegmentConfig
    from cxnlp.segment import segment_documents

    rows = [
        json.loads(l) for l in (ROOT / "data" / "samples" / "reviews.jsonl").read_text().splitlines() if l
    ]
    docs = pd.DataFrame({"doc_id": [r["review_id"] for r in rows], "text": [r["text"] for r in rows]})
    return segment_documents(docs, SegmentConfig())["text"].tolist()


def judge(encoder, heads, models, texts: list[str], batch_size: int) -> tuple[np.ndarray, dict, float]:  # type: ignore[no-untyped-def]
    """One timed pass: embeddings, the three judgements, seconds."""
    from cxnlp.models import encode

    stage_model, sentiment_model, emotion_model = models
    t0 = time.perf_counter()
    emb = encode(encoder, texts, batch_size)
    stages = stage_model.active_stages(stage_model.predict(emb, texts))
    sentiments = sentiment_model.labels_of(sentiment_model.predict(emb, texts))
    emotions, _ = emotion_model.top(emotion_model.to_cx(emotion_model.predict(emb, texts)))
    seconds = time.perf_counter() - t0
    return emb, {"stage": stages, "sentiment": sentiments, "emotion": emotions}, seconds


def batch_independence(encoder, texts: list[str], batch_size: int) -> float:  # type: ignore[no-untyped-def]
    """Largest absolute embedding difference between three batch compositions of the same texts."""
    from cxnlp.models import encode

    texts = texts[:200]
    whole = encode(encoder, texts, batch_size)
    split = np.concatenate([encode(encoder, texts[:7], batch_size), encode(encoder, texts[7:], batch_size)])
    reverse = encode(encoder, texts[::-1], 16)[::-1]
    return float(max(np.abs(whole - split).max(), np.abs(whole - reverse).max()))


def quality(backend: str, quantize: str) -> list[dict]:
    from cxnlp.evaluate import evaluate_file

    out = []
    for task, path in QUALITY_SETS:
        if not path.is_file():
            continue
        r = evaluate_file(path, task, backend=backend, quantize=quantize)
        out.append(
            {
                "task": task,
                "file": str(path.relative_to(ROOT))
                if ROOT in path.parents
                else f"../{path.relative_to(ROOT.parent)}",
                "n": r["n"],
                "accuracy": r["accuracy"],
                "macro_f1": r["macro_f1"],
                "micro_f1": r["micro_f1"],
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=2, help="repeat the sample segments this many times")
    ap.add_argument("--batch-size", type=int, default=128, help="models.batch_size")
    ap.add_argument("--quality", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.jsonl")
    args = ap.parse_args()

    from cxnlp.emotion import EmotionModel
    from cxnlp.journey import StageModel
    from cxnlp.models import Heads, OnnxEncoder, bf16_units_available, encoder_backend, load_encoder
    from cxnlp.sentiment import SentimentModel

    if bf16_units_available():  # torch-bf16 resolves to onnx elsewhere: nothing new to measure there
        BACKENDS.append(("torch-bf16", "none"))
    texts = sample_segments() * args.repeat
    heads = Heads.load("cx-heads")
    models = (StageModel(heads), SentimentModel(heads), EmotionModel(heads))
    encoders = {}
    for backend, quantize in BACKENDS:
        t0 = time.perf_counter()
        enc = load_encoder(heads.encoder, "cpu", backend, quantize)
        name = encoder_backend(enc)
        encoders[name] = (enc, round(time.perf_counter() - t0, 2))
        judge(enc, heads, models, texts[:64], args.batch_size)  # warm up
    # The plain export without the fused kernels (what "none" ran before cxnlp-onnx-3): speed and
    # fidelity only, its embeddings are fp32 like the fused graph's.
    fused = encoders["onnx"][0]
    if isinstance(fused, OnnxEncoder):
        plain = OnnxEncoder(fused.path.with_name("model.onnx"), fused.location, "none")
        encoders["onnx-unfused"] = (plain, 0.0)
        judge(plain, heads, models, texts[:64], args.batch_size)
    load_before = os.getloadavg()[0]
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    outputs: dict[str, tuple[np.ndarray, dict]] = {}
    for _ in range(args.rounds):
        for name, (enc, _) in encoders.items():
            emb, labels, s = judge(enc, heads, models, texts, args.batch_size)
            seconds[name].append(s)
            outputs[name] = (emb, labels)
    load_after = os.getloadavg()[0]

    ref_emb, ref_labels = outputs["torch"]
    rows = []
    for name, (_enc, load_s) in encoders.items():
        emb, labels = outputs[name]
        cos = (emb * ref_emb).sum(1)
        agree = {
            task: round(float(np.mean([a == b for a, b in zip(labels[task], ref_labels[task])])), 4)
            for task in labels
        }
        best, median = min(seconds[name]), statistics.median(seconds[name])
        batch_diff = batch_independence(_enc, texts, args.batch_size)
        rows.append(
            {
                "backend": name,
                "segments_per_s_best": round(len(texts) / best, 1),
                "segments_per_s_median": round(len(texts) / median, 1),
                "seconds": [round(s, 3) for s in seconds[name]],
                "load_seconds": load_s,
                "batch_max_abs_diff": float(f"{batch_diff:.2e}"),
                "cosine_to_torch": {
                    "mean": round(float(cos.mean()), 5),
                    "min": round(float(cos.min()), 5),
                    "p1": round(float(np.percentile(cos, 1)), 5),
                },
                "agreement_with_torch": agree,
            }
        )
    if args.quality:
        for row, (backend, quantize) in zip(rows, BACKENDS):
            row["quality"] = quality(backend, quantize)

    record = {
        "benchmark": "model_speed",
        "date": dt.date.today().isoformat(),
        "n_segments": len(texts),
        "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "judgements": "encoder + stage, sentiment (with VADER features) and emotion heads and their decisions",
        "results": rows,
        "load_avg_1m": {"before": round(load_before, 2), "after": round(load_after, 2)},
        "machine": machine(),
    }
    with args.results.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    print(
        f"{len(texts)} segments, mean {record['mean_chars']} chars, load {load_before:.1f}-{load_after:.1f}"
    )
    for r in rows:
        c = r["cosine_to_torch"]
        print(
            f"{r['backend']:<10} best {r['segments_per_s_best']:>6.1f}/s  median {r['segments_per_s_median']:>6.1f}/s"
            f"  batch diff {r['batch_max_abs_diff']:.1e}"
            f"  cosine mean {c['mean']:.4f} min {c['min']:.4f}  agreement {r['agreement_with_torch']}"
        )
        for q in r.get("quality", []):
            print(f"    {q['task']:<9} {q['file']:<45} acc {q['accuracy']:.4f}  macro-F1 {q['macro_f1']:.4f}")


if __name__ == "__main__":
    main()
