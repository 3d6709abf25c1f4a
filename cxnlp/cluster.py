"""Pain points: cluster the negative segments of each stage and label the clusters.

Per stage: normalised embeddings -> PCA (``cluster.reduce_dims``) -> HDBSCAN, with a minimum cluster
size that grows with the number of segments. Outliers close enough to a cluster centre (cosine >=
``cluster.assign_threshold``) join it; the rest form a visible ``<stage>-other`` group.

Labels come from keyphrases (noun chunks and verb phrases collected by the segment step) ranked by
class-based TF-IDF against the stage's other clusters and its non-negative segments, so that generic
words of the stage ("box", "order") do not win. Each label is unique within the run.

Everything is deterministic for a given input and seed: PCA uses a full SVD, HDBSCAN has no
randomness, and ties are broken by segment id. ``cluster_segments`` works on its own with precomputed
embeddings.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .config import ClusterConfig
from .schema import CX_EMOTIONS, OTHER_PAIN_POINT

logger = logging.getLogger(__name__)

REQUIRES = {"segments": ["stage", "sentiment", "sentiment_score", "emotion", "phrases"]}
ASSIGNS = {"segments": ["pain_point_id"]}
PAIN_POINT_COLUMNS = [
    "pain_point_id", "stage", "label", "keyphrases", "size", "share_of_stage_negative", "n_documents",
    "mean_sentiment_score", "top_emotions", "first_seen", "last_seen", "example_segment_ids", "example_quotes",
]


def auto_min_cluster_size(n: int) -> int:
    """About sqrt(n)/2, at least 3: 60 segments -> 4, 1,000 -> 16, 100,000 -> 158."""
    return max(3, int(round(math.sqrt(n) / 2)))


def cluster_segments(embeddings: np.ndarray, config: ClusterConfig | None = None, seed: int = 0) -> np.ndarray:
    """Cluster labels (0..k-1, largest first) or -1 for the ``other`` group, for one set of embeddings."""
    import hdbscan
    from sklearn.decomposition import PCA

    config = config or ClusterConfig()
    n = len(embeddings)
    if n < config.min_segments:
        return np.full(n, -1, dtype=np.int64)
    X = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    dims = min(config.reduce_dims, n - 1, X.shape[1])
    Z = PCA(n_components=dims, svd_solver="full", random_state=seed).fit_transform(X) if dims < X.shape[1] else X
    mcs = config.min_cluster_size or auto_min_cluster_size(n)
    ms = config.min_samples or max(1, mcs // 2)
    raw = hdbscan.HDBSCAN(min_cluster_size=mcs, min_samples=ms, metric="euclidean", cluster_selection_method="eom").fit_predict(Z.astype(np.float64))
    labels = np.asarray(raw, dtype=np.int64)
    clusters = sorted(set(labels) - {-1})
    if not clusters:
        return labels
    centroids = np.stack([X[labels == c].mean(0) for c in clusters])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    out = labels.copy()
    outliers = np.flatnonzero(labels == -1)
    if len(outliers):
        sims = X[outliers] @ centroids.T
        best = sims.argmax(1)
        ok = sims[np.arange(len(outliers)), best] >= config.assign_threshold
        out[outliers[ok]] = np.array(clusters)[best[ok]]
    # Renumber: largest first, ties by first member index (deterministic).
    sizes = {c: (-(out == c).sum(), int(np.flatnonzero(out == c)[0])) for c in clusters}
    order = {c: i for i, c in enumerate(sorted(clusters, key=sizes.__getitem__))}
    return np.array([order[c] if c != -1 else -1 for c in out], dtype=np.int64)


def ctfidf(class_phrases: list[list[str]]) -> list[dict[str, float]]:
    """Class-based TF-IDF (as in BERTopic): tf within the class x log(1 + mean class size / frequency)."""
    counts = [Counter(p) for p in class_phrases]
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    avg = max(sum(sum(c.values()) for c in counts) / max(len(counts), 1), 1.0)
    out = []
    for c in counts:
        n = max(sum(c.values()), 1)
        out.append({t: (k / n) * math.log(1 + avg / total[t]) for t, k in c.items()})
    return out


def _rank(scores: dict[str, float], counts: Counter, size: int) -> list[str]:
    # Prefer phrases that recur (in at least two segments, or 10% of the cluster) and multi-word ones.
    def key(t: str) -> tuple[float, str]:
        recurring = counts[t] >= max(2, 0.1 * size)
        words = min(len(t.split()), 3)
        return (-(scores[t] * (1.0 if recurring else 0.2) * (1 + 0.35 * (words - 1))), t)

    return sorted(scores, key=key)


def _quotes(idx: np.ndarray, X: np.ndarray, texts: list[str], ids: list[str], n: int) -> tuple[list[str], list[str]]:
    centre = X[idx].mean(0)
    centre /= max(np.linalg.norm(centre), 1e-12)
    sims = X[idx] @ centre
    order = sorted(range(len(idx)), key=lambda i: (-round(float(sims[i]), 6), ids[idx[i]]))
    chosen: list[int] = []
    for i in order:
        j = idx[i]
        if any(float(X[j] @ X[k]) > 0.9 or texts[j].lower() == texts[k].lower() for k in chosen):
            continue
        chosen.append(j)
        if len(chosen) == n:
            break
    return [ids[j] for j in chosen], [texts[j] for j in chosen]


@dataclass
class _Group:
    stage: str
    number: int | None  # None for the other group
    index: np.ndarray


def find_pain_points(
    segments: pd.DataFrame, embeddings: np.ndarray, documents: pd.DataFrame, stage_ids: list[str], config: ClusterConfig, seed: int = 0
) -> tuple[pd.DataFrame, list[str | None]]:
    """Returns the pain_points table and a pain_point_id per segment (None where not clustered)."""
    assignment: list[str | None] = [None] * len(segments)
    rows: list[dict] = []
    if not config.enabled or segments.empty:
        return pd.DataFrame(columns=PAIN_POINT_COLUMNS), assignment
    X = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    texts = segments["text"].tolist()
    ids = segments["segment_id"].tolist()
    phrases = segments["phrases"].tolist()
    stage_col = segments["stage"].to_numpy()
    negative = (segments["sentiment"] == "negative").to_numpy()
    created = dict(zip(documents["doc_id"], documents["created_at"]))
    used_labels: set[str] = set()
    for stage in stage_ids:
        in_stage = stage_col == stage
        scope = in_stage & negative if config.scope == "negative" else in_stage
        idx = np.flatnonzero(scope)
        if not len(idx):
            continue
        labels = cluster_segments(X[idx], config, seed)
        groups = [_Group(stage, int(c) + 1, idx[labels == c]) for c in sorted(set(labels) - {-1})]
        if (labels == -1).any():
            groups.append(_Group(stage, None, idx[labels == -1]))
        background = np.flatnonzero(in_stage & ~scope)
        class_phr = [[p for i in g.index for p in set(phrases[i])] for g in groups]
        scores = ctfidf(class_phr + [[p for i in background for p in set(phrases[i])]])
        for g, sc, cp in zip(groups, scores, class_phr):
            pid = f"{stage}-{g.number}" if g.number is not None else f"{stage}-{OTHER_PAIN_POINT}"
            ranked = _rank(sc, Counter(cp), len(g.index))
            if g.number is None:
                label = f"other {stage} issues" if config.scope == "negative" else f"other {stage}"
            else:
                label = next((t for t in ranked if t not in used_labels), None) or f"{stage} issue {g.number}"
                if label in used_labels:
                    label = f"{label} ({stage})"
            used_labels.add(label)
            for i in g.index:
                assignment[i] = pid
            seg = segments.iloc[g.index]
            emos = Counter(e for e in seg["emotion"] if e != "neutral")
            docs = sorted(set(seg["doc_id"]))
            dates = [created[d] for d in docs if created.get(d) is not None and not pd.isna(created.get(d))]
            q_ids, quotes = _quotes(g.index, X, texts, ids, config.n_quotes)
            rows.append(
                {
                    "pain_point_id": pid,
                    "stage": stage,
                    "label": label,
                    "keyphrases": ranked[:5],
                    "size": len(g.index),
                    "share_of_stage_negative": len(g.index) / max(len(idx), 1),
                    "n_documents": len(docs),
                    "mean_sentiment_score": float(seg["sentiment_score"].mean()),
                    "top_emotions": [e for e, _ in sorted(emos.items(), key=lambda kv: (-kv[1], CX_EMOTIONS.index(kv[0])))[:3]],
                    "first_seen": min(dates) if dates else None,
                    "last_seen": max(dates) if dates else None,
                    "example_segment_ids": q_ids,
                    "example_quotes": quotes,
                }
            )
        logger.info("%s: %d segments -> %d pain points, %d in other", stage, len(idx), len(groups) - int((labels == -1).any()), int((labels == -1).sum()))
    table = pd.DataFrame(rows, columns=PAIN_POINT_COLUMNS)
    if not table.empty:
        table["first_seen"] = pd.to_datetime(table["first_seen"], utc=True)
        table["last_seen"] = pd.to_datetime(table["last_seen"], utc=True)
    return table, assignment
