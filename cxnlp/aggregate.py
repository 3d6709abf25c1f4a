"""Aggregate segment judgements into the per-stage summary (one row per stage, in journey order), from a
run's :class:`~cxnlp.digest.Digest`."""

from __future__ import annotations

import math

import pandas as pd

from .digest import Digest
from .schema import OTHER_PAIN_POINT

REQUIRES = {
    "segments": ["stage", "sentiment", "sentiment_score", "emotion", "pain_point_id"],
    "documents": ["stages"],
}
STAGE_SUMMARY_COLUMNS = [
    "stage",
    "position",
    "documents",
    "segments",
    "positive",
    "neutral",
    "negative",
    "net_sentiment",
    "mean_sentiment_score",
    "top_emotions",
    "top_pain_points",
]


def stage_summary(
    documents: pd.DataFrame,
    segments: pd.DataFrame,
    pain_points: pd.DataFrame,
    stage_ids: list[str],
    top_n: int = 5,
) -> pd.DataFrame:
    """The stage summary of these documents and segments (see :func:`summary_of`)."""
    return summary_of(Digest.of(documents, segments, stage_ids, 0), pain_points, top_n)


def summary_of(digest: Digest, pain_points: pd.DataFrame, top_n: int = 5) -> pd.DataFrame:
    """One row per stage of ``digest`` (a run's counts, :class:`~cxnlp.digest.Digest`), in journey order;
    its top pain points from ``pain_points``."""
    rows = []
    for position, stage in enumerate(digest.stage_ids):
        sd = digest.stages[position]
        n = sd.segments
        pps = (
            pain_points[
                (pain_points["stage"] == stage)
                & ~pain_points["pain_point_id"].str.endswith(f"-{OTHER_PAIN_POINT}")
            ]
            if len(pain_points)
            else pain_points
        )
        rows.append(
            {
                "stage": stage,
                "position": position,
                "documents": sd.mentions,
                "segments": n,
                "positive": sd.positive,
                "neutral": sd.neutral,
                "negative": sd.negative,
                "net_sentiment": 100.0 * (sd.positive - sd.negative) / n if n else None,
                "mean_sentiment_score": (sd.score_sum / sd.scored if sd.scored else math.nan) if n else None,
                "top_emotions": [e for e, _ in digest.top_emotions(position)],
                "top_pain_points": pps.sort_values(["size", "pain_point_id"], ascending=[False, True])[
                    "label"
                ]
                .head(top_n)
                .tolist()
                if len(pps)
                else [],
            }
        )
    return pd.DataFrame(rows, columns=STAGE_SUMMARY_COLUMNS)
