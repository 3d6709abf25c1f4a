from __future__ import annotations

import numpy as np
import pandas as pd

from cxnlp.cluster import auto_min_cluster_size, cluster_segments, ctfidf, find_pain_points
from cxnlp.config import ClusterConfig


def _blobs(seed: int = 0, per: int = 20, noise: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 32) * 3
    X = np.concatenate([c + rng.normal(0, 0.15, (per, 32)) for c in centres] + [rng.normal(0, 1.5, (noise, 32))])
    truth = np.repeat(np.arange(4), [per, per, per, noise])
    return X.astype(np.float32), truth


def test_cluster_finds_groups_largest_first_and_is_deterministic():
    X, truth = _blobs()
    a = cluster_segments(X, ClusterConfig(min_cluster_size=5))
    b = cluster_segments(X.copy(), ClusterConfig(min_cluster_size=5))
    assert np.array_equal(a, b)
    for k in range(3):
        members = a[truth == k]
        assert len(set(members)) == 1 and members[0] >= 0
    sizes = [int((a == c).sum()) for c in sorted(set(a) - {-1})]
    assert sizes == sorted(sizes, reverse=True)


def test_cluster_outliers_join_a_close_cluster_or_stay_other():
    X, truth = _blobs(noise=0)
    near = X[0] + 0.01  # very close to blob 0
    far = -X[0]  # opposite direction: cosine -1 to blob 0
    labels = cluster_segments(np.vstack([X, near, far]), ClusterConfig(min_cluster_size=5, assign_threshold=0.6))
    assert labels[-2] == labels[0]
    assert labels[-1] == -1


def test_cluster_small_inputs_are_all_other():
    assert (cluster_segments(np.ones((3, 8), np.float32), ClusterConfig(min_segments=6)) == -1).all()


def test_cluster_auto_min_cluster_size_grows_with_n():
    assert auto_min_cluster_size(10) == 3 and auto_min_cluster_size(1000) == 16 and auto_min_cluster_size(100_000) == 158


def test_cluster_ctfidf_prefers_distinctive_terms():
    scores = ctfidf([["late delivery", "box", "late delivery"], ["box", "melted ice"], ["box"]])
    assert scores[0]["late delivery"] > scores[0]["box"]


def test_cluster_pain_points_have_unique_labels_quotes_and_dates():
    X, truth = _blobs(per=12, noise=0)
    phrases = {0: ["late delivery", "courier"], 1: ["melted ice packs", "box"], 2: ["missing ingredients", "box"]}
    n = len(X)
    segments = pd.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(n)],
            "segment_id": [f"d{i}:0" for i in range(n)],
            "text": [f"text {i} about {phrases[int(t)][0]}" for i, t in enumerate(truth)],
            "stage": ["delivery"] * n,
            "sentiment": ["negative"] * n,
            "sentiment_score": [-0.8] * n,
            "emotion": ["annoyance"] * n,
            "phrases": [phrases[int(t)] for t in truth],
        }
    )
    documents = pd.DataFrame({"doc_id": segments["doc_id"], "created_at": pd.to_datetime(["2026-10-01"] * (n - 1) + ["2026-10-20"], utc=True)})
    table, assignment = find_pain_points(segments, X, documents, ["delivery", "billing"], ClusterConfig(min_cluster_size=5))
    assert set(table["label"]) == {"late delivery", "melted ice packs", "missing ingredients"}
    assert table["label"].is_unique and table["size"].sum() == n and all(a is not None for a in assignment)
    assert all(1 <= len(q) <= 3 for q in table["example_quotes"])
    assert table["share_of_stage_negative"].sum() == 1.0
    assert table["last_seen"].max() == pd.Timestamp("2026-10-20", tz="UTC")
    again, _ = find_pain_points(segments, X, documents, ["delivery", "billing"], ClusterConfig(min_cluster_size=5))
    pd.testing.assert_frame_equal(table, again)
