"""Sentiment: negative, neutral or positive, and a score in [-1, 1] per segment and per document.

``SentimentModel.predict`` is pure (embeddings in, probabilities out); ``annotate_*`` set the columns.
The score is P(positive) - P(negative); the label is negative or positive when the score passes the
head's neutral band (tuned in training), else neutral. A document's probabilities are the length-weighted mean of its
segments', so a long complaint outweighs a closing "thanks".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .models import Heads

REQUIRES = {"segments": ["text"]}
ASSIGNS = {"segments": ["sentiment", "sentiment_score"], "documents": ["sentiment", "sentiment_score"]}


class SentimentModel:
    def __init__(self, heads: Heads) -> None:
        self.heads = heads
        self.labels = tuple(heads.tasks["sentiment"].labels)

    def predict(
        self, embeddings: np.ndarray, texts: list[str], features: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        return self.heads.predict("sentiment", embeddings, texts, features)

    @property
    def neutral_band(self) -> float | None:
        band = self.heads.tasks["sentiment"].extra.get("neutral_band")
        return None if band is None else float(band)

    def labels_of(self, probs: np.ndarray) -> list[str]:
        """Label by the score when the head has a tuned neutral band (|score| <= band is neutral),
        otherwise by the most likely class."""
        if not len(probs):
            return []
        band = self.neutral_band
        if band is None:
            return [self.labels[i] for i in probs.argmax(1)]
        return [
            "negative" if s < -band else "positive" if s > band else "neutral" for s in self.scores_of(probs)
        ]

    def scores_of(self, probs: np.ndarray) -> np.ndarray:
        if not len(probs):
            return np.zeros(0, dtype=np.float32)
        return (probs[:, self.labels.index("positive")] - probs[:, self.labels.index("negative")]).astype(
            np.float32
        )


def annotate_segments(segments: pd.DataFrame, model: SentimentModel, probs: np.ndarray) -> None:
    segments["sentiment"] = model.labels_of(probs)
    segments["sentiment_score"] = model.scores_of(probs)
    for i, label in enumerate(model.labels):
        segments[f"_p_{label}"] = probs[:, i] if len(probs) else []


def annotate_documents(documents: pd.DataFrame, segments: pd.DataFrame, model: SentimentModel) -> None:
    cols = [f"_p_{l}" for l in model.labels]
    weights = (segments["char_end"] - segments["char_start"]).clip(lower=1).astype(float)
    weighted = segments[cols].mul(weights, axis=0)
    weighted["doc_id"] = segments["doc_id"].values
    weighted["_w"] = weights.values
    sums = weighted.groupby("doc_id", sort=False).sum()
    probs = sums[cols].div(sums["_w"], axis=0).reindex(documents["doc_id"]).fillna(1 / len(cols)).to_numpy()
    documents["sentiment"] = model.labels_of(probs)
    documents["sentiment_score"] = model.scores_of(probs)
