"""How well a custom taxonomy works with 5, 10 and 25 examples per stage.

    python benchmarks/bench_fewshot.py [--encoder NAME] [--k 5 10 25] [--seeds 0 1]

Simulates a user's own taxonomy by sampling k examples per stage from the default taxonomy (seeds 0
and 1 unless told) and trains a stage head as `cxnlp analyze --taxonomy` does at run start
(cxnlp.journey: the none examples capped, `custom_head_config`, the stages' description phrases as
training-only examples, `description_examples`, and `stage.fallback`: a text that no stage passes takes
its most likely label). In the same run: each of the two changes without the other, and the head before
session 24 (neither). Every head is scored on two sets the default taxonomy's examples never came from:

- the second written set `data/train/stage_examples.jsonl` (752), which decides between recipes;
- the project stage test set `data/eval/stages.jsonl` (547), reported, never a choice.

The default encoder is the packaged base: cx-encoder was fine-tuned on most of the default taxonomy's
examples, so sampling them would flatter it. Results are appended to benchmarks/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

# (description phrases, fallback to the most likely label): cxnlp's recipe first, then each part alone,
# then the head before session 24.
RECIPES = ((True, True), (True, False), (False, True), (False, False))
SETS = {"second_written_set": "data/train/stage_examples.jsonl", "test_set": "data/eval/stages.jsonl"}


def main() -> None:
    import torch
    from bench_analyze import machine

    from cxnlp.evaluate import multilabel_metrics, read_labelled
    from cxnlp.journey import custom_head_config, decide, description_examples, with_none_examples
    from cxnlp.models import PACKAGED_ENCODER
    from cxnlp.taxonomy import Stage, Taxonomy, load_taxonomy
    from cxnlp.train import embed_cached, train_stage_head

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default=PACKAGED_ENCODER)
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 25], help="examples per stage")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    encoder = args.encoder
    tax = load_taxonomy("default")
    sets = {}
    for name, path in SETS.items():
        texts, gold = read_labelled(str(ROOT / path), "stage")
        sets[name] = (embed_cached(texts, encoder), [g or ["none"] for g in gold])
    results = []
    for k in args.k:
        for descriptions, fallback in RECIPES:
            scores: dict[str, list[float]] = {name: [] for name in sets}
            seconds = []
            for seed in args.seeds:
                rng = random.Random(seed)
                stages = tuple(
                    Stage(s.id, s.description, tuple(rng.sample(s.examples, k)), s.label) for s in tax.stages
                )
                sub = with_none_examples(Taxonomy(f"k{k}", stages, ()), seed)
                t0 = time.perf_counter()
                weak = description_examples(sub) if descriptions else None
                cfg = custom_head_config(sub).model_copy(update={"fallback": fallback})
                spec, module, _ = train_stage_head(sub, encoder, cfg, seed, weak=weak)
                seconds.append(time.perf_counter() - t0)
                for name, (emb, gold) in sets.items():
                    with torch.inference_mode():
                        probs = torch.sigmoid(module(torch.from_numpy(emb))).numpy()
                    rule = bool(spec.extra.get("fallback"))  # as StageModel.active_stages decides
                    pred = [
                        p or ["none"] for p in decide(probs, np.array(spec.thresholds), spec.labels, rule)
                    ]
                    scores[name].append(multilabel_metrics(gold, pred, spec.labels)["macro_f1"])
            row = {
                "k_per_stage": k,
                "description_phrases": descriptions,
                "fallback": fallback,
                **{f"{name}_macro_f1_seeds": v for name, v in scores.items()},
                **{f"{name}_macro_f1_mean": round(float(np.mean(v)), 3) for name, v in scores.items()},
                "train_seconds_mean": round(float(np.mean(seconds)), 1),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    record = {
        "benchmark": "custom_taxonomy_fewshot",
        "date": time.strftime("%Y-%m-%d"),
        "encoder": encoder,
        "sets": SETS,
        "results": results,
        "machine": machine(),
    }
    with (ROOT / "benchmarks" / "results.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
