"""End-to-end throughput and peak memory of `cxnlp analyze`, against the easy alternative, in one run.

    python benchmarks/bench_analyze.py --n 10000

* cxnlp: the real CLI in a subprocess (`cxnlp analyze FILE -o OUT -q`); peak RSS of that process.
* easy alternative: what a notebook user writes first: a loop over reviews that runs spaCy, then
  encodes each review's sentences with `model.encode(...)` one review at a time (no cross-review
  batching), then the same heads. Measured on the first `--baseline-n` reviews and reported per review.

Results are appended to benchmarks/results.jsonl with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_corpus import make_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict:
    """The machine a benchmark ran on (every bench script records this one description)."""
    import torch

    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu_model"] = next(l.split(":", 1)[1].strip() for l in cpuinfo if l.startswith("model name"))
        info["mem_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except (OSError, StopIteration, ValueError):
        pass
    return info


def code_under_test(cwd: Path) -> dict:
    """Which cxnlp a ``python -m cxnlp.cli`` child started in ``cwd`` imports, and that tree's git revision
    (``+`` when it has uncommitted changes). ``-m`` puts the working directory first on ``sys.path``, so a
    child started in the repository runs the repository's code whatever ``PYTHONPATH`` names: the CLI
    children run in ``cwd`` (the benchmark's work folder), and A/B runs of two trees
    (``PYTHONPATH=/tmp/old``) are told apart by this record."""
    where = subprocess.run(
        [sys.executable, "-c", "import cxnlp, pathlib; print(pathlib.Path(cxnlp.__file__).parent.parent)"],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    git = ["git", "-C", where]
    rev = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    return {"path": where, "rev": (rev + ("+" if dirty.stdout.strip() else "")) or None}


def record(benchmark: str, **fields: object) -> dict:
    """Append one result to benchmarks/results.jsonl, stamped with the time and :func:`machine`."""
    from datetime import datetime, timezone

    entry = {
        "benchmark": benchmark,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        **fields,
    }
    with (ROOT / "benchmarks" / "results.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    return entry


def run_cxnlp(path: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "cxnlp.cli", "analyze", str(path), "-o", str(out), "-q"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run(cmd, check=True, env=env, cwd=out.parent)  # not the repo: see code_under_test
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    manifest = json.loads((out / "run.json").read_text())
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "counts": manifest["counts"],
        "timings": manifest["timings"],
    }


def run_easy(rows: list[dict]) -> dict:
    """The notebook version: per-review spaCy + per-review encode + heads."""
    from cxnlp.emotion import EmotionModel
    from cxnlp.journey import StageModel
    from cxnlp.models import Heads, load_encoder
    from cxnlp.segment import load_spacy
    from cxnlp.sentiment import SentimentModel

    heads = Heads.load("cx-heads")
    encoder = load_encoder(heads.encoder, "cpu")
    nlp = load_spacy("en_core_web_sm")
    stage, senti, emo = StageModel(heads), SentimentModel(heads), EmotionModel(heads)
    t0 = time.perf_counter()
    for row in rows:
        sents = [s.text for s in nlp(row["text"]).sents]
        emb = encoder.encode(sents, normalize_embeddings=True, show_progress_bar=False)
        stage.predict(emb, sents), senti.predict(emb, sents), emo.predict(emb, sents)
    return {"seconds": round(time.perf_counter() - t0, 2), "n": len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--baseline-n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "data")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = make_corpus(args.n, args.seed)
    path = args.workdir / f"reviews-{args.n}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    ours = run_cxnlp(path, args.workdir / f"out-{args.n}")
    easy = run_easy(rows[: args.baseline_n])
    ours_rate = args.n / ours["seconds"]
    easy_rate = easy["n"] / easy["seconds"]
    result = {
        "benchmark": "analyze_end_to_end",
        "date": time.strftime("%Y-%m-%d"),
        "n_reviews": args.n,
        "cxnlp": {**ours, "reviews_per_s": round(ours_rate, 1)},
        "easy_alternative": {
            **easy,
            "reviews_per_s": round(easy_rate, 1),
            "note": "spaCy + encode + heads, one review at a time, no clustering or writing",
        },
        "speedup": round(ours_rate / easy_rate, 2),
        "machine": machine(),
        "cxnlp_code": code_under_test(args.workdir),
    }
    with (ROOT / "benchmarks" / "results.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
