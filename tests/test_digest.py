"""The report's digest: counted chunk by chunk and merged, it gives what one digest of the whole gives."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxnlp.digest import CHURN_PATTERN, CHURN_QUOTES, Digest, _clip, drivers_of

STAGES = ["purchase", "delivery", "billing"]


def _corpus(n_docs: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Documents and their segments with what makes the report's choices hard: tied scores, repeated
    texts (verbatims and churn quotes skip repeats), missing labels, stages and dates, several churn
    hits per document."""
    rng = np.random.default_rng(seed)
    docs = pd.DataFrame(
        {
            "doc_id": [f"d{i:04d}" for i in range(n_docs)],
            "created_at": pd.to_datetime("2026-01-01", utc=True)
            + pd.to_timedelta(rng.integers(0, 200, n_docs), unit="D")
            + pd.to_timedelta(rng.integers(0, 86_400, n_docs), unit="s"),
            "rating": np.where(rng.random(n_docs) < 0.8, rng.integers(1, 6, n_docs).astype(float), np.nan),
            "channel": rng.choice(["app", "web", "", None], n_docs),
            "language": rng.choice(["en", "de"], n_docs),
            "flags": [list(rng.choice(["short", "spam"], rng.integers(0, 2))) for _ in range(n_docs)],
        }
    )
    docs.loc[rng.random(n_docs) < 0.05, "created_at"] = pd.NaT
    texts = ["I am cancelling my plan.", "Late again.", "Great service!", "Billing was wrong, I will cancel"]
    rows = []
    for i, doc in enumerate(docs["doc_id"]):
        for j in range(int(rng.integers(1, 6))):
            rows.append(
                {
                    "doc_id": doc,
                    "segment_id": f"{doc}:{j}",
                    "stage": rng.choice([*STAGES, None]),
                    "sentiment": rng.choice(
                        ["negative", "neutral", "positive", None], p=[0.5, 0.2, 0.25, 0.05]
                    ),
                    "sentiment_score": float(np.round(rng.uniform(-1, 1), 1)),  # ties
                    "emotion": rng.choice(["anger", "joy", "neutral", "frustration"]),
                    "text": texts[int(rng.integers(0, 4))]
                    if rng.random() < 0.5
                    else f"switched to rival {i % 23}"
                    if rng.random() < 0.3
                    else f"segment {i} {j}",
                    "pain_point_id": rng.choice(["delivery-1", "billing-1", "billing-other", None]),
                }
            )
    segments = pd.DataFrame(rows)
    docs["stages"] = [
        sorted(set(segments.loc[segments["doc_id"] == d, "stage"].dropna())) for d in docs["doc_id"]
    ]
    return docs, segments


def _chunks(docs: pd.DataFrame, segments: pd.DataFrame, size: int) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    out = []
    for lo in range(0, len(docs), size):
        part = docs.iloc[lo : lo + size].reset_index(drop=True)
        out.append((part, segments[segments["doc_id"].isin(part["doc_id"])].reset_index(drop=True)))
    return out


def _verbatims(segments: pd.DataFrame, stage: str, kind: str, k: int) -> list[tuple[str, float, str]]:
    """The report's verbatims by their definition, over every row: the most extreme of one sentiment
    (by label; by the score's sign where the stage has no label), ties in table order, repeats skipped."""
    rows = segments[segments["stage"] == stage]
    if rows["sentiment"].notna().any():
        mine = rows[rows["sentiment"] == kind]
    else:
        mine = rows[np.sign(rows["sentiment_score"]) == (1 if kind == "positive" else -1)]
    sign = 1 if kind == "negative" else -1
    ranked = sorted(
        zip(mine["sentiment_score"], mine.index, mine["text"], mine["segment_id"]),
        key=lambda r: (sign * r[0], r[1]),
    )
    out, seen = [], set()
    for score, _, text, sid in ranked:
        if _clip(text).casefold() not in seen:
            seen.add(_clip(text).casefold())
            out.append((_clip(text), score, sid))
    return out[:k]


def _churn_quotes(segments: pd.DataFrame) -> list[tuple[str, str, float]]:
    """The churn quotes by their definition: every hit, the most negative first (ties in table order),
    a text or a document already quoted skipped."""
    found = segments["text"].map(lambda t: CHURN_PATTERN.search(t) is not None)
    hits = segments[(segments["sentiment"] != "positive") & found]
    ranked = sorted(
        zip(hits["sentiment_score"], hits.index, hits["text"], hits["stage"], hits["doc_id"]),
        key=lambda r: (r[0], r[1]),
    )
    out, seen = [], set()
    for score, _, text, stage, doc in ranked:
        if _clip(text).casefold() in seen or doc in seen:
            continue
        seen.update({_clip(text).casefold(), doc})
        out.append((_clip(text), stage if isinstance(stage, str) else "", score))
    return out[:CHURN_QUOTES]


def _view(d: Digest) -> dict:
    return {
        "top": (d.documents, d.segments, dict(d.sentiment), d.unassigned, d.created, d.rated, d.rating_sum),
        "counters": (dict(d.channels), dict(d.languages), dict(d.flags)),
        "stages": [
            (s.positive, s.neutral, s.negative, s.segments, round(s.score_sum, 9), s.scored, dict(s.emotions))
            + (s.documents, s.mentions, s.rated, s.rating_sum, s.labelled)
            for s in d.stages
        ],
        "verbatims": [
            [d.verbatims_of(i, kind) for kind in ("negative", "positive")] for i in range(len(STAGES))
        ],
        "trends": (d.trend_span, d.trend_counts),
        "churn": (d.churn_documents, dict(d.churn_by_stage), d.churn_quotes()),
        "drivers": None
        if d.drivers is None
        else (d.drivers.rated, d.drivers.total, d.drivers.low, d.drivers.high, d.drivers.stages)
        + (d.drivers.pain_points,),
    }


def test_digest_of_chunks_merged_equals_the_digest_of_the_whole() -> None:
    docs, segments = _corpus()
    whole = Digest.of(docs, segments, STAGES, verbatims=2)
    for size in (1, 7, 64):
        merged = Digest(STAGES, 2)
        for part_docs, part_segments in _chunks(docs, segments, size):
            merged.merge(Digest.of(part_docs, part_segments, STAGES, verbatims=2))
        assert _view(merged) == _view(whole), size
        assert merged.churn_quotes() == _churn_quotes(segments)
        for i, stage in enumerate(STAGES):
            for kind in ("negative", "positive"):
                assert merged.verbatims_of(i, kind) == _verbatims(segments, stage, kind, 2)
    view = _view(whole)
    assert len(view["churn"][2]) == CHURN_QUOTES
    assert all(len(q) == 2 for stage in view["verbatims"] for q in stage)
    assert view["trends"][1] and view["drivers"][0] > 100


def test_digest_chunks_keep_few_candidates_and_still_choose_the_same() -> None:
    """A chunk keeps the verbatim candidates a whole run could quote (4 per verbatim) and the churn hits
    that could still be quoted; the choice over the merged pools is the choice over every row."""
    docs, segments = _corpus(n_docs=2_000, seed=1)
    merged = Digest(STAGES, 1)
    for part_docs, part_segments in _chunks(docs, segments, 500):
        merged.merge(Digest.of(part_docs, part_segments, STAGES, verbatims=1))
    whole = Digest.of(docs, segments, STAGES, verbatims=1)
    assert all(len(pool) <= 4 for s in merged.stages for pool in s.pools.values())
    hits = int(segments["text"].str.contains("cancel|switched").sum())
    assert len(merged.churn_pool) < hits / 10
    assert merged.churn_quotes() == _churn_quotes(segments) == whole.churn_quotes()
    for i, stage in enumerate(STAGES):
        assert merged.verbatims_of(i, "negative") == _verbatims(segments, stage, "negative", 1)


def test_digest_drivers_added_after_clustering_equal_the_ones_counted_with_the_pain_points() -> None:
    """A batch run counts its chunks before the pain points exist and adds the drivers afterwards."""
    docs, segments = _corpus()
    with_pain_points = Digest.of(docs, segments, STAGES)
    later = Digest.of(docs, segments.drop(columns=["pain_point_id"]), STAGES)
    assert later.drivers is None
    for part_docs, part_segments in _chunks(docs, segments, 50):
        later.add_drivers(drivers_of(part_docs, part_segments, STAGES))
    assert _view(later)["drivers"] == _view(with_pain_points)["drivers"]


def test_digest_verbatim_pool_holds_candidates_past_repeated_texts() -> None:
    """The most extreme segments often say the same thing: a chunk keeps more candidates than verbatims
    shown, so the merged pool still holds the next distinct text."""
    docs = pd.DataFrame({"doc_id": ["a", "b", "c", "d"]})
    segments = pd.DataFrame(
        {
            "doc_id": ["a", "b", "c", "d"],
            "segment_id": ["a:0", "b:0", "c:0", "d:0"],
            "stage": ["delivery"] * 4,
            "sentiment": ["negative"] * 4,
            "sentiment_score": [-1.0, -1.0, -0.9, -0.8],
            "text": ["Late again.", "late  again.", "Late again.", "Box crushed."],
        }
    )
    expected = [("Late again.", -1.0, "a:0"), ("Box crushed.", -0.8, "d:0")]
    merged = Digest(STAGES, 2)
    for part_docs, part_segments in _chunks(docs, segments, 2):
        merged.merge(Digest.of(part_docs, part_segments, STAGES, verbatims=2))
    assert merged.verbatims_of(1, "negative") == expected == _verbatims(segments, "delivery", "negative", 2)
