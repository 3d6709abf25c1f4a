"""Pain-point clustering at scale: time and peak memory for 100k and 1M segments on this machine.

    python benchmarks/bench_cluster_scale.py --n 100000 1000000

* Embeddings: the cached banking77 embeddings (run bench_cluster.py once), resampled with a seeded
  Gaussian jitter (sigma 0.02 per dimension, cosine about 0.93 to the source query) up to N rows,
  streamed to ``benchmarks/data/scale-N.npy`` in float16 with ``cxnlp.cluster.write_embeddings``
  (N x 384 x 2 bytes: 768 MB for a million). Never held in memory whole.
* Clustering: a fresh subprocess memory-maps the file (``open_embeddings``) and runs
  ``cluster_segments`` with the defaults: HDBSCAN on a seeded sample of ``cluster.fit_sample`` rows,
  then chunked nearest-centre passes over every row. It reports its wall time and its own peak RSS:
  ``VmHWM`` from /proc/self/status (the high-water mark of this process image, mapped pages it touched
  included), and ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which Linux carries over from the
  forking parent across exec and so is only an upper bound.
* Quality check: NMI/ARI of the labels against the intent of each row's source query.

Results are appended to benchmarks/results.jsonl with the machine they ran on.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
WORKDIR = ROOT / "benchmarks" / "data"
SIGMA = 0.02


def make_embeddings(
    base: np.ndarray, n: int, seed: int, path: Path, chunk: int = 100_000
) -> tuple[np.ndarray, float]:
    """Write ``n`` jittered copies of ``base`` rows to ``path`` (float16); returns the source row of each."""
    from cxnlp.cluster import write_embeddings

    rng = np.random.default_rng(seed)
    source = rng.integers(0, len(base), n)

    def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, n, chunk):
            rows = base[source[i : i + chunk]]
            yield rows + rng.normal(0, SIGMA, rows.shape).astype(np.float32)

    t0 = time.perf_counter()
    write_embeddings(path, chunks(), n, base.shape[1])
    return source, time.perf_counter() - t0


def child(path: Path, seed: int, out: Path) -> None:
    """Runs in its own process: cluster the memory-mapped file, report time and own peak RSS."""
    from cxnlp.cluster import cluster_segments, open_embeddings
    from cxnlp.config import ClusterConfig

    before = _vmhwm_kb()
    emb = open_embeddings(path)
    t0 = time.perf_counter()
    labels = cluster_segments(emb, ClusterConfig(), seed)
    seconds = time.perf_counter() - t0
    np.save(out, labels)
    peak = _vmhwm_kb()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": round(seconds, 2),
                "peak_rss_mb": round(peak / 1024, 1),
                "rss_after_imports_mb": round(before / 1024, 1),
                "ru_maxrss_mb": round(maxrss / 1024, 1),
            }
        )
    )


def _vmhwm_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=WORKDIR)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.jsonl")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.seed, args.child_out)
        return

    from bench_cluster import embed_cached, load_banking77, machine
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    docs, truth = load_banking77()
    base, _, _ = embed_cached(docs)
    args.workdir.mkdir(parents=True, exist_ok=True)
    runs = []
    for n in args.n:
        path = args.workdir / f"scale-{n}-{args.seed}.npy"
        source, gen_seconds = make_embeddings(base, n, args.seed, path)
        out = args.workdir / f"scale-{n}-{args.seed}-labels.npy"
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(path),
            "--child-out",
            str(out),
            "--seed",
            str(args.seed),
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        labels = np.load(out)
        y = truth[source]
        run = {
            "n": n,
            "cluster_seconds": report["seconds"],
            "process_seconds": round(wall, 2),
            "peak_rss_mb": report["peak_rss_mb"],
            "rss_after_imports_mb": report["rss_after_imports_mb"],
            "ru_maxrss_mb_upper_bound": report["ru_maxrss_mb"],
            "embeddings_file_mb": round(path.stat().st_size / 2**20, 1),
            "generate_seconds": round(gen_seconds, 2),
            "n_clusters": int(labels.max()) + 1,
            "outlier_share": round(float((labels == -1).mean()), 4),
            "nmi_vs_source_intent": round(float(normalized_mutual_info_score(y, labels)), 4),
            "ari_vs_source_intent": round(float(adjusted_rand_score(y, labels)), 4),
        }
        runs.append(run)
        print(json.dumps(run), flush=True)
        path.unlink()
        out.unlink()
    from cxnlp.config import ClusterConfig

    result = {
        "benchmark": "cluster_scale",
        "date": time.strftime("%Y-%m-%d"),
        "data": f"banking77 train embeddings resampled with N(0, {SIGMA}) jitter, float16 memory map",
        "config": ClusterConfig().model_dump(),
        "seed": args.seed,
        "runs": runs,
        "machine": machine(),
    }
    with args.results.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")
    print(
        "| segments | cluster time | process time | peak RSS | clusters | outliers | NMI vs source intent |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r['n']:,} | {r['cluster_seconds']:.1f} s | {r['process_seconds']:.1f} s | {r['peak_rss_mb'] / 1024:.2f} GB | {r['n_clusters']} | {100 * r['outlier_share']:.1f}% | {r['nmi_vs_source_intent']:.3f} |"
        )


if __name__ == "__main__":
    main()
