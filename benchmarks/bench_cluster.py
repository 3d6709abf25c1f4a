"""Pain-point clustering against BERTopic, on the same banking77 embeddings, in one run.

    python benchmarks/bench_cluster.py                  # cxnlp + BERTopic (pip install -e '.[bench]')
    python benchmarks/bench_cluster.py --variants       # also the reduction/selection variants behind the defaults

* Data: the 10,003 banking77 training queries (77 intents), ``../shared/data/banking77/train.csv``.
  They are embedded once with the packaged encoder (all-MiniLM-L6-v2); the embeddings are cached in
  ``~/.cache/cxnlp/bench/`` and every method reads the same array. With ``--encoder`` a fine-tuned
  encoder that has a cluster map, the embeddings are mapped as the pipeline maps them before clustering
  (``--raw``: not).
* cxnlp: ``cxnlp.cluster.cluster_segments(embeddings, ClusterConfig(), seed)``, the defaults.
* BERTopic: ``BERTopic(umap_model=UMAP(<BERTopic's default UMAP parameters>, random_state=seed))``
  and ``fit_transform(docs, embeddings)``: its defaults (UMAP 5-d, HDBSCAN min_cluster_size=10, c-TF-IDF
  topic words) with the seed its docs recommend for reproducibility; one more run with ``BERTopic()``
  exactly (unseeded). A small untimed fit first compiles numba, so BERTopic's timings are warm.
* Metrics: NMI and ARI against the intents over all queries (outliers count as one more cluster),
  outlier share, number of clusters, wall time; a rerun with the first seed checks that the labels are
  identical (``labels_sha256``).

Everything was tuned on banking77 train only. Results are appended to benchmarks/results.jsonl.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "banking77" / "train.csv"
CACHE = Path(os.environ.get("CXNLP_BENCH_CACHE", Path.home() / ".cache" / "cxnlp" / "bench"))


def machine() -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_analyze import machine as _machine

    return _machine()


def load_banking77(path: Path = DATA) -> tuple[list[str], np.ndarray]:
    frame = pd.read_csv(path)
    return frame["text"].astype(str).tolist(), frame["category"].astype(str).to_numpy()


def embed_cached(
    texts: list[str], cache: Path = CACHE, encoder: str | None = None
) -> tuple[np.ndarray, Path, float | None]:
    """Normalised float32 embeddings from ``encoder`` (default: the packaged one), computed once and
    cached by content and encoder location."""
    from cxnlp.models import encode, encoder_location, load_encoder

    location = encoder_location(encoder)
    key = hashlib.sha256(("\n".join(texts) + location).encode()).hexdigest()[:16]
    path = cache / f"banking77-train-{key}.npy"
    if path.is_file():
        return np.load(path), path, None
    t0 = time.perf_counter()
    emb = encode(load_encoder(encoder, "cpu"), texts, 128)
    seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb, path, seconds


def score(truth: np.ndarray, labels: np.ndarray, seconds: float) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = np.asarray(labels, dtype=np.int64)
    clustered = labels != -1
    return {
        "nmi": round(float(normalized_mutual_info_score(truth, labels)), 4),
        "ari": round(float(adjusted_rand_score(truth, labels)), 4),
        "nmi_clustered_only": round(
            float(normalized_mutual_info_score(truth[clustered], labels[clustered])), 4
        )
        if clustered.any()
        else None,
        "outlier_share": round(float((~clustered).mean()), 4),
        "n_clusters": len(set(labels.tolist()) - {-1}),
        "seconds": round(seconds, 2),
        "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest()[:16],
    }


def run_cxnlp(emb: np.ndarray, seed: int, **overrides: object) -> tuple[np.ndarray, float]:
    from cxnlp.cluster import cluster_segments
    from cxnlp.config import ClusterConfig

    config = ClusterConfig(**overrides)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    labels = cluster_segments(emb, config, seed)
    return labels, time.perf_counter() - t0


def _bertopic(seed: int | None):  # type: ignore[no-untyped-def]
    try:
        from bertopic import BERTopic
        from umap import UMAP
    except ImportError as exc:  # pragma: no cover
        raise SystemExit("BERTopic is not installed: pip install -e '.[bench]'") from exc
    if seed is None:
        return BERTopic()
    # BERTopic's default UMAP (bertopic/_bertopic.py), plus the seed its FAQ recommends.
    umap = UMAP(
        n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", low_memory=False, random_state=seed
    )
    return BERTopic(umap_model=umap)


def run_bertopic(docs: list[str], emb: np.ndarray, seed: int | None) -> tuple[np.ndarray, float]:
    model = _bertopic(seed)
    t0 = time.perf_counter()
    topics, _ = model.fit_transform(docs, emb)
    return np.asarray(topics, dtype=np.int64), time.perf_counter() - t0


def run_umap_variant(emb: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """cxnlp's pipeline with UMAP (BERTopic's parameters) in place of PCA: the reduction alternative."""
    import hdbscan
    from umap import UMAP

    from cxnlp.cluster import (
        _centres_from_sums,
        _nearest_pass,
        _renumber,
        auto_min_cluster_size,
        auto_min_samples,
        normalize,
    )
    from cxnlp.config import ClusterConfig

    cfg = ClusterConfig()
    t0 = time.perf_counter()
    X = normalize(emb)
    Z = UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine", random_state=seed).fit_transform(
        X
    )
    mcs = auto_min_cluster_size(len(X))
    fit = np.asarray(
        hdbscan.HDBSCAN(
            min_cluster_size=mcs, min_samples=auto_min_samples(mcs), cluster_selection_method="leaf"
        ).fit_predict(Z),
        dtype=np.int64,
    )
    sums = np.zeros((int(fit.max()) + 1, X.shape[1]))
    np.add.at(sums, fit[fit >= 0], X[fit >= 0])
    centres, _ = _centres_from_sums(sums)
    labels, sums = _nearest_pass(X, centres, cfg.assign_threshold, fit)
    for _ in range(cfg.refine_iterations):
        labels, sums = _nearest_pass(X, _centres_from_sums(sums)[0], cfg.assign_threshold)
    return _renumber(labels), time.perf_counter() - t0


VARIANTS: dict[str, dict[str, object]] = {
    "pca10-leaf": {"reduce_dims": 10},
    "pca30-leaf": {"reduce_dims": 30},
    "pca15-eom": {"selection": "eom"},
    "pca15-leaf-no-refine": {"refine_iterations": 0},
    "pca15-leaf-threshold-0.6": {"assign_threshold": 0.6},
    "pca15-leaf-mcs-50": {"min_cluster_size": 50},
    "pca15-leaf-sklearn-hdbscan": {"backend": "sklearn"},
}


def markdown(rows: list[dict]) -> str:
    out = [
        "| method | seed | NMI | ARI | outliers | clusters | seconds | labels sha256 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['method']} | {r['seed']} | {r['nmi']:.3f} | {r['ari']:.3f} | {100 * r['outlier_share']:.1f}% | {r['n_clusters']} | {r['seconds']:.1f} | `{r['labels_sha256']}` |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--no-bertopic", action="store_true", help="Only cxnlp (and --variants).")
    ap.add_argument(
        "--variants", action="store_true", help="Also the reduction/selection variants behind the defaults."
    )
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results.jsonl")
    ap.add_argument(
        "--encoder", default=None, help="Encoder name or folder (default: the packaged all-MiniLM-L6-v2)."
    )
    ap.add_argument(
        "--raw",
        action="store_true",
        help="Cluster the encoder's own embeddings even when it has a cluster map (cxnlp clusters mapped ones).",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    docs, truth = load_banking77(args.data)
    emb, cache_path, embed_seconds = embed_cached(docs, encoder=args.encoder)
    from cxnlp.cluster import normalize
    from cxnlp.finetune import cluster_map_for

    cluster_map = None if args.raw else cluster_map_for(args.encoder)
    if cluster_map is not None:  # what the pipeline's cluster_space step hands clustering
        emb = normalize(emb @ cluster_map)
    rows: list[dict] = []

    def record(method: str, seed: int | None, labels: np.ndarray, seconds: float, **extra: object) -> None:
        row = {"method": method, "seed": seed, **score(truth, labels, seconds), **extra}
        rows.append(row)
        print(json.dumps(row), flush=True)

    first = args.seeds[0]
    for seed in args.seeds:
        labels, seconds = run_cxnlp(emb, seed)
        record("cxnlp", seed, labels, seconds)
    labels, seconds = run_cxnlp(emb, first)
    record("cxnlp (rerun)", first, labels, seconds)
    if not args.no_bertopic:
        run_bertopic(
            docs[:5000], emb[:5000], 0
        )  # compile numba (incl. pynndescent, used above 4,096 rows) once, untimed
        for seed in args.seeds:
            labels, seconds = run_bertopic(docs, emb, seed)
            record("BERTopic", seed, labels, seconds)
        labels, seconds = run_bertopic(docs, emb, first)
        record("BERTopic (rerun)", first, labels, seconds)
        labels, seconds = run_bertopic(docs, emb, None)
        record("BERTopic() unseeded", None, labels, seconds)
    if args.variants:
        for name, overrides in VARIANTS.items():
            labels, seconds = run_cxnlp(emb, first, **overrides)
            record(f"variant {name}", first, labels, seconds, overrides=overrides)
        labels, seconds = run_umap_variant(emb, first)
        record("variant umap5-leaf (cxnlp with UMAP)", first, labels, seconds)

    same = {
        r["method"].removesuffix(" (rerun)"): r["labels_sha256"]
        for r in rows
        if r["method"].endswith("(rerun)")
    }
    identical = {
        m: any(r["method"] == m and r["seed"] == first and r["labels_sha256"] == h for r in rows)
        for m, h in same.items()
    }
    try:
        import bertopic

        bertopic_version = bertopic.__version__
    except ImportError:
        bertopic_version = None
    result = {
        "benchmark": "cluster_vs_bertopic",
        "date": time.strftime("%Y-%m-%d"),
        "data": {"name": "banking77 train", "n": len(docs), "intents": len(set(truth.tolist()))},
        "embeddings": {
            "encoder": args.encoder or "packaged all-MiniLM-L6-v2",
            "cluster_map": cluster_map is not None,
            "cache": str(cache_path),
            "embed_seconds": embed_seconds,
        },
        "rerun_identical": identical,
        "rows": rows,
        "bertopic_version": bertopic_version,
        "machine": machine(),
    }
    with args.results.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")
    print(markdown(rows))
    print("rerun identical:", identical)


if __name__ == "__main__":
    main()
