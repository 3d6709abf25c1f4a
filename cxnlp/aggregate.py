"""Aggregate segment judgements into the per-stage summary (one row per stage, in journey order)."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from .schema import CX_EMOTIONS, OTHER_PAIN_POINT

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
    rows = []
    doc_counts = Counter(s for stages in documents["stages"] for s in stages) if len(documents) else Counter()
    for position, stage in enumerate(stage_ids):
        # one stage's rows and the three columns read here (a large run holds millions of segments)
        seg = (
            segments.loc[segments["stage"] == stage, ["sentiment", "sentiment_score", "emotion"]]
            if len(segments)
            else segments
        )
        counts = seg["sentiment"].value_counts() if len(seg) else pd.Series(dtype=int)
        pos, neu, neg = (int(counts.get(k, 0)) for k in ("positive", "neutral", "negative"))
        n = len(seg)
        emos = Counter(e for e in seg["emotion"] if e != "neutral") if n else Counter()
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
                "documents": int(doc_counts.get(stage, 0)),
                "segments": n,
                "positive": pos,
                "neutral": neu,
                "negative": neg,
                "net_sentiment": 100.0 * (pos - neg) / n if n else None,
                "mean_sentiment_score": float(seg["sentiment_score"].mean()) if n else None,
                "top_emotions": [
                    e for e, _ in sorted(emos.items(), key=lambda kv: (-kv[1], CX_EMOTIONS.index(kv[0])))[:3]
                ],
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
