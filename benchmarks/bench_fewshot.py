"""How well a custom taxonomy works with 5, 10 and 25 examples per stage.

    python benchmarks/bench_fewshot.py

Simulates a user's own taxonomy by sampling k examples per stage from the default taxonomy (two seeds),
trains a stage head exactly as `cxnlp analyze --taxonomy` does at run start (cxnlp.journey's custom
head: the none examples capped, linear head below 50 examples per stage), and scores it on the project's
stage test set data/eval/stages.jsonl. Results are appended to benchmarks/results.jsonl.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import torch
    from bench_analyze import machine

    from cxnlp.evaluate import multilabel_metrics
    from cxnlp.journey import decide, with_none_examples
    from cxnlp.models import PACKAGED_ENCODER
    from cxnlp.taxonomy import Stage, Taxonomy, load_taxonomy
    from cxnlp.train import StageTrainConfig, embed_cached, train_stage_head

    tax = load_taxonomy("default")
    rows = [json.loads(l) for l in (ROOT / "data/eval/stages.jsonl").read_text().splitlines() if l.strip()]
    texts, gold = [r["text"] for r in rows], [r["stages"] or ["none"] for r in rows]
    emb = embed_cached(texts, PACKAGED_ENCODER)
    results = []
    for k in (5, 10, 25):
        scores, seconds = [], []
        for seed in (0, 1):
            rng = random.Random(seed)
            stages = tuple(
                Stage(s.id, s.description, tuple(rng.sample(s.examples, k)), s.label) for s in tax.stages
            )
            sub = with_none_examples(Taxonomy(f"k{k}", stages, ()), seed)
            t0 = time.perf_counter()
            cfg = StageTrainConfig(
                hidden=0 if k < 50 else 256,
                epochs=100 if k < 50 else 40,
                lr=0.01 if k < 50 else 0.002,
                batch_size=16,
                folds=5,
            )
            spec, module, _ = train_stage_head(sub, PACKAGED_ENCODER, cfg, seed)
            seconds.append(time.perf_counter() - t0)
            with torch.inference_mode():
                probs = torch.sigmoid(module(torch.from_numpy(emb))).numpy()
            pred = [p or ["none"] for p in decide(probs, np.array(spec.thresholds), spec.labels)]
            scores.append(multilabel_metrics(gold, pred, spec.labels)["macro_f1"])
        row = {
            "k_per_stage": k,
            "macro_f1_seeds": scores,
            "macro_f1_mean": round(float(np.mean(scores)), 3),
            "train_seconds_mean": round(float(np.mean(seconds)), 1),
        }
        print(json.dumps(row), flush=True)
        results.append(row)
    record = {
        "benchmark": "custom_taxonomy_fewshot",
        "date": time.strftime("%Y-%m-%d"),
        "test_set": "data/eval/stages.jsonl",
        "results": results,
        "machine": machine(),
    }
    with (ROOT / "benchmarks" / "results.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
