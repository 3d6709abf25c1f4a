"""Batch throughput, per-step rates and peak memory of `cxnlp analyze`, against the easy alternative.

    python benchmarks/bench_batch.py --n 10000 --easy-n 2000
    python benchmarks/bench_batch.py --n 2000 10000 30000 --easy-n 0      # memory flatness across sizes

* cxnlp: the real CLI in a subprocess (`cxnlp analyze FILE -o OUT -q`, chunked batch runner); peak RSS of
  that process (a wrapper process reads its children's ru_maxrss, so each size is measured on its own),
  and the peak of its whole process tree, prepare workers and loaders included (`tree_rss.py`, sampled
  every second: PSS, which counts a page shared by k processes 1/k in each, and RSS; the samples go to
  OUT.rss.tsv for `run_timeline.py --rss`).
* the easy alternative, on the first `--easy-n` reviews of the same corpus, in the same run: what a
  notebook user writes with the same models, without cxnlp's runner:
    - transformers `pipeline("feature-extraction")` over the encoder, mean-pooled, then our sentiment head;
    - the same again for the emotion head (a second pipeline call, as two "models" are two pipelines);
    - sentence-transformers `encode` for the clustering embeddings;
    - BERTopic (its defaults: UMAP + HDBSCAN) on those embeddings for the topics.
  Per review (no sentence splitting), batched as `pipeline(..., batch_size=32)` does.

Results are appended to benchmarks/results.jsonl with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze import code_under_test, machine  # noqa: E402
from make_corpus import make_corpus  # noqa: E402
from tree_rss import watch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
WRAPPER = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "rc = subprocess.run(sys.argv[1:]).returncode; s = time.perf_counter() - t; "
    "print(rc, s, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def run_cxnlp(path: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "cxnlp.cli", "analyze", str(path), "-o", str(out), "-q", *extra]
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, *cmd],
        env=ENV,
        cwd=out.parent,  # not the repository: see bench_analyze.code_under_test
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak: list[tuple[float, float]] = []
    # the tree under the wrapper, which is not cxnlp
    rss_file = out.with_name(out.name + ".rss.tsv")
    watcher = threading.Thread(target=lambda: peak.append(watch(proc, rss_file, skip_root=True)), daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    watcher.join()
    rc, seconds, peak_kb = stdout.split()[-3:]
    if rc != "0" or proc.returncode:
        raise SystemExit(f"cxnlp failed ({rc}): {stderr[-2000:]}")
    manifest = json.loads((out / "run.json").read_text())
    n = manifest["counts"]["analysed"]
    timings = manifest["timings"]
    return {
        "seconds": round(float(seconds), 2),
        "reviews_per_s": round(n / float(seconds), 1),
        "peak_rss_mb": round(int(peak_kb) / 1024, 1),
        "peak_tree_pss_mb": round(peak[0][0], 1),
        "peak_tree_rss_mb": round(peak[0][1], 1),
        "counts": manifest["counts"],
        "timings": timings,
        "per_step_reviews_per_s": {k: round(n / v, 1) for k, v in timings.items() if v > 0},
        "encoder": manifest["config"]["models"],
        "chunk_size": manifest["chunks"]["size"],
    }


def run_easy(rows: list[dict], model: str = "cx-heads", device: str = "cpu") -> dict:
    """transformers pipeline() x2 with our heads + sentence-transformers + BERTopic, each with its defaults
    (fp32) on ``device``."""
    import numpy as np
    import torch
    from bertopic import BERTopic
    from transformers import pipeline

    from cxnlp.emotion import EmotionModel
    from cxnlp.models import Heads, encoder_location, load_encoder
    from cxnlp.sentiment import SentimentModel

    texts = [r["text"] for r in rows]
    heads = Heads.load(model)
    senti, emo = SentimentModel(heads), EmotionModel(heads)
    location = encoder_location(heads.encoder)
    t0 = time.perf_counter()
    extractor = pipeline(
        "feature-extraction", model=location, framework="pt", device=0 if device.startswith("cuda") else -1
    )
    st = load_encoder(heads.encoder, "cpu", "torch", "none").to(device)
    load_seconds = time.perf_counter() - t0

    def pooled(batch_texts: list[str]) -> np.ndarray:
        out = extractor(batch_texts, batch_size=32, truncation=True, return_tensors=True)
        vecs = torch.stack([o[0].mean(0) for o in out]).float().cpu().numpy()
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)

    steps: dict[str, float] = {}
    t = time.perf_counter()
    senti.predict(pooled(texts).astype(np.float32), texts)
    steps["sentiment_pipeline"] = time.perf_counter() - t
    t = time.perf_counter()
    emo.predict(pooled(texts).astype(np.float32), texts)
    steps["emotion_pipeline"] = time.perf_counter() - t
    t = time.perf_counter()
    emb = st.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    steps["sentence_transformers"] = time.perf_counter() - t
    t = time.perf_counter()
    topics, _ = BERTopic(verbose=False).fit_transform(texts, embeddings=emb)
    steps["bertopic"] = time.perf_counter() - t
    seconds = sum(steps.values())
    return {
        "n": len(texts),
        "seconds": round(seconds, 2),
        "load_seconds": round(load_seconds, 2),
        "reviews_per_s": round(len(texts) / seconds, 1),
        "steps": {k: round(v, 2) for k, v in steps.items()},
        "outlier_share": round(float(np.mean(np.asarray(topics) == -1)), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000])
    ap.add_argument("--easy-n", type=int, default=2000, help="reviews for the easy alternative (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "data")
    ap.add_argument(
        "--device", default="cpu", help="cxnlp analyze --device, and the easy alternative's device"
    )
    ap.add_argument("--model", default="cx-heads", help="heads model (name or folder) for both sides")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more cxnlp analyze options")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.extra = ["--device", args.device, "--set", f"models.heads={args.model}", *args.extra]
    rows_max = make_corpus(max(args.n + [args.easy_n]), args.seed)
    results = []
    if args.easy_n:
        path = args.workdir / f"reviews-{args.easy_n}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows_max[: args.easy_n]), encoding="utf-8")
        ours = run_cxnlp(path, args.workdir / f"batch-out-{args.easy_n}", args.extra)
        easy = run_easy(rows_max[: args.easy_n], args.model, args.device)
        results.append(
            {
                "n_reviews": args.easy_n,
                "cxnlp": ours,
                "easy_alternative": easy,
                "speedup": round(ours["reviews_per_s"] / easy["reviews_per_s"], 2),
            }
        )
        print(json.dumps(results[-1], indent=2), flush=True)
    for n in args.n:
        if n == args.easy_n:
            continue
        path = args.workdir / f"reviews-{n}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows_max[:n]), encoding="utf-8")
        results.append(
            {"n_reviews": n, "cxnlp": run_cxnlp(path, args.workdir / f"batch-out-{n}", args.extra)}
        )
        print(json.dumps(results[-1], indent=2), flush=True)
    record = {
        "benchmark": "batch_end_to_end",
        "date": time.strftime("%Y-%m-%d"),
        "runs": results,
        "machine": machine(),
        "cxnlp_code": code_under_test(args.workdir),
        "device": args.device,
        **({"gpu": __import__("torch").cuda.get_device_name()} if args.device.startswith("cuda") else {}),
    }
    with (ROOT / "benchmarks" / "results.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
