"""Emotion: the 28 GoEmotions labels, mapped to the CX emotion set the reports show.

The head is multi-label with a tuned threshold per GoEmotions label. A CX emotion's score is the
largest of its GoEmotions labels' probabilities divided by that label's threshold (capped at 1), so a
score of 1 means "passed its threshold". For the CX emotions in ``CX_MIN_PROB`` the threshold is at
least that probability: the F1-tuned GoEmotions thresholds of rare labels are very low (0.075 for
surprise and confusion), which made them fire on plain complaints. The top CX emotion of a segment is the best one that passed,
or ``neutral``. A document's scores are the mean of its segments'; its emotion is the most frequent
non-neutral segment emotion (ties broken by mean score), or ``neutral``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .models import Heads
from .schema import CX_EMOTIONS

REQUIRES = {"segments": ["text", "sentiment"]}
ASSIGNS = {
    "segments": ["emotion", "emotion_score", "emotion_scores"],
    "documents": ["emotion", "emotion_scores"],
}

CX_MAP: dict[str, str] = {
    "joy": "joy",
    "amusement": "joy",
    "excitement": "joy",
    "love": "joy",
    "gratitude": "gratitude",
    "admiration": "satisfaction",
    "approval": "satisfaction",
    "relief": "satisfaction",
    "pride": "satisfaction",
    "optimism": "satisfaction",
    "caring": "satisfaction",
    "anger": "anger",
    "disgust": "anger",
    "annoyance": "annoyance",
    "disapproval": "annoyance",
    "disappointment": "disappointment",
    "remorse": "disappointment",
    "embarrassment": "disappointment",
    "sadness": "sadness",
    "grief": "sadness",
    "fear": "fear",
    "nervousness": "fear",
    "confusion": "confusion",
    # realization ("I realised ...", precision 0.08 at its tuned threshold 0.05 on GoEmotions dev) and
    # curiosity (questions) are not customer emotions: as surprise and confusion they fired on 16% and
    # 3% of the sample review segments, mostly plain complaints (models/cx-heads/README.md, limits).
    "curiosity": "neutral",
    "surprise": "surprise",
    "realization": "neutral",
    "desire": "neutral",
    "neutral": "neutral",
}


# Valence of the CX emotions: a segment's reported emotion never contradicts its sentiment (a
# "satisfaction" on "the code wouldn't apply at checkout" reads as a broken report). The scores keep
# every emotion; only the top label is chosen among those whose valence fits.
POSITIVE_EMOTIONS = frozenset({"joy", "gratitude", "satisfaction"})
NEGATIVE_EMOTIONS = frozenset({"anger", "annoyance", "disappointment", "sadness", "fear"})

# Minimum GoEmotions probability for these CX emotions (on top of the tuned per-label threshold).
# 0.15: below it the sample segments ranked by P(surprise) / P(confusion) are mostly neutral statements.
CX_MIN_PROB: dict[str, float] = {"surprise": 0.15, "confusion": 0.15}


class EmotionModel:
    def __init__(self, heads: Heads) -> None:
        spec = heads.tasks["emotion"]
        self.heads = heads
        self.labels = list(spec.labels)
        self.thresholds = np.array(spec.thresholds or [0.5] * len(self.labels), dtype=np.float32)
        cx_map = spec.extra.get("cx_map", CX_MAP)
        cx_min = spec.extra.get("cx_min_prob", CX_MIN_PROB)
        self.cx_labels = CX_EMOTIONS
        # The thresholds a probability is divided by for the CX scores (never below the CX minimum).
        self.cx_thresholds = np.array(
            [
                max(float(t), float(cx_min.get(cx_map.get(l, ""), 0.0)))
                for l, t in zip(self.labels, self.thresholds)
            ],
            dtype=np.float32,
        )
        self._groups = [
            [i for i, l in enumerate(self.labels) if cx_map.get(l) == cx] for cx in self.cx_labels
        ]

    def predict(self, embeddings: np.ndarray, texts: list[str]) -> np.ndarray:
        return self.heads.predict("emotion", embeddings, texts)

    def active_labels(self, probs: np.ndarray) -> list[list[str]]:
        return [[self.labels[j] for j in np.flatnonzero(row >= self.thresholds)] for row in probs]

    def to_cx(self, probs: np.ndarray) -> np.ndarray:
        """GoEmotions probabilities -> CX scores in [0, 1] (1 = passed the threshold)."""
        ratio = np.minimum(probs / self.cx_thresholds, 1.0) if len(probs) else probs
        out = np.zeros((len(probs), len(self.cx_labels)), dtype=np.float32)
        for k, idx in enumerate(self._groups):
            if idx:
                out[:, k] = ratio[:, idx].max(1)
        return out

    def top(self, cx: np.ndarray, sentiments: list[str] | None = None) -> tuple[list[str], np.ndarray]:
        """The best CX emotion past its threshold, or neutral. With ``sentiments``, an emotion whose
        valence contradicts the segment's sentiment (joy on a negative segment, anger on a positive
        one) is not chosen. Whole arrays at once: on a GPU host this runs on the critical path."""
        n = len(cx)
        if n == 0:
            return [], np.zeros(0, dtype=np.float32)
        neutral = self.cx_labels.index("neutral")
        masked = cx.copy()
        masked[:, neutral] = -1
        if sentiments is not None:
            valence = np.asarray(sentiments, dtype=object)
            positive = [k for k, e in enumerate(self.cx_labels) if e in POSITIVE_EMOTIONS]
            negative = [k for k, e in enumerate(self.cx_labels) if e in NEGATIVE_EMOTIONS]
            masked[np.ix_(valence == "negative", positive)] = -1
            masked[np.ix_(valence == "positive", negative)] = -1
        j = masked.argmax(1)
        best = np.maximum(masked[np.arange(n), j].astype(np.float64), 0.0)
        passed = best >= 1.0
        labels = np.where(passed, np.asarray(self.cx_labels, dtype=object)[j], "neutral").tolist()
        scores = np.where(passed, best, np.maximum(cx[:, neutral].astype(np.float64), 1.0 - best))
        return labels, scores.astype(np.float32)


def _struct(rows: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(CX_EMOTIONS, r)) for r in np.round(rows, 4).tolist()]


def annotate_segments(segments: pd.DataFrame, model: EmotionModel, probs: np.ndarray) -> None:
    cx = model.to_cx(probs)
    sentiments = segments["sentiment"].tolist() if "sentiment" in segments else None
    labels, scores = model.top(cx, sentiments)
    segments["emotion"] = labels
    segments["emotion_score"] = scores
    segments["emotion_scores"] = _struct(cx)
    for k, name in enumerate(CX_EMOTIONS):
        segments[f"_e_{name}"] = cx[:, k] if len(cx) else []


def annotate_documents(documents: pd.DataFrame, segments: pd.DataFrame) -> None:
    cols = [f"_e_{e}" for e in CX_EMOTIONS]
    means = segments.groupby("doc_id", sort=False)[cols].mean().reindex(documents["doc_id"]).fillna(0.0)
    non_neutral = segments[segments["emotion"] != "neutral"]
    counts = non_neutral.groupby(["doc_id", "emotion"], sort=False).size().unstack(fill_value=0)
    # Per document: the most frequent non-neutral emotion, ties broken by the mean score, then by the
    # counts' column order (as ``max`` over them would); neutral where there is none.
    best = np.full(len(documents), "neutral", dtype=object)
    if len(counts.columns):
        cnt = counts.reindex(documents["doc_id"]).fillna(0).to_numpy()
        score = means.to_numpy()[:, [CX_EMOTIONS.index(e) for e in counts.columns]]
        most = cnt.max(1, keepdims=True)
        j = np.where(cnt == most, score, -np.inf).argmax(1)
        found = most[:, 0] > 0
        best[found] = np.asarray(counts.columns, dtype=object)[j[found]]
    documents["emotion"] = best.tolist()
    documents["emotion_scores"] = _struct(means.to_numpy())
