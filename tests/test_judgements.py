"""The stage, sentiment and emotion steps with the real shipped models on clear cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def _seg(result, doc_id: str) -> pd.DataFrame:
    return result.segments[result.segments["doc_id"] == doc_id]


def test_journey_clear_delivery_complaint(mixed_result):
    seg = _seg(mixed_result, "r1")
    assert seg["stage"].tolist() == ["delivery"] and seg["sentiment"].tolist() == ["negative"]
    doc = mixed_result.documents.set_index("doc_id").loc["r1"]
    assert (
        doc["primary_stage"] == "delivery"
        and doc["sentiment"] == "negative"
        and doc["sentiment_score"] < -0.3
    )


def test_journey_clear_support_praise(mixed_result):
    doc = mixed_result.documents.set_index("doc_id").loc["r2"]
    assert doc["primary_stage"] == "support" and doc["sentiment"] == "positive"
    assert doc["emotion"] in {"gratitude", "joy", "satisfaction"}


def test_journey_mixed_review_has_different_stages_and_sentiments(mixed_result):
    seg = _seg(mixed_result, "r3")
    assert len(seg) >= 2
    first, rest = seg.iloc[0], seg.iloc[1:]
    assert first["sentiment"] == "positive" and first["stage"] == "usage"
    assert "negative" in set(rest["sentiment"]) and "delivery" in set(rest["stage"])
    doc = mixed_result.documents.set_index("doc_id").loc["r3"]
    assert {"usage", "delivery"} <= set(doc["stages"])


def test_journey_other_stages_on_clear_cases(mixed_result):
    docs = mixed_result.documents.set_index("doc_id")
    assert docs.loc["r4", "primary_stage"] == "billing"
    assert docs.loc["r5", "primary_stage"] == "loyalty"
    assert docs.loc["r6", "primary_stage"] == "onboarding"
    assert docs.loc["r7", "primary_stage"] == "awareness"


def test_emotion_scores_cover_the_cx_set(mixed_result):
    from cxnlp.schema import CX_EMOTIONS

    for scores in mixed_result.segments["emotion_scores"]:
        assert list(scores) == list(CX_EMOTIONS) and all(0 <= v <= 1 for v in scores.values())
    assert set(mixed_result.segments["emotion"]) <= set(CX_EMOTIONS)


def test_sentiment_scores_are_bounded(mixed_result):
    for frame in (mixed_result.segments, mixed_result.documents):
        assert frame["sentiment_score"].between(-1, 1).all()
        assert set(frame["sentiment"]) <= {"negative", "neutral", "positive"}


def test_emotion_realization_and_curiosity_are_not_reported_as_cx_emotions():
    from cxnlp.emotion import CX_MAP

    assert CX_MAP["realization"] == "neutral" and CX_MAP["curiosity"] == "neutral"


def test_emotion_surprise_and_confusion_need_the_cx_minimum_probability():
    import copy

    import numpy as np

    from cxnlp.emotion import CX_MIN_PROB, EmotionModel
    from cxnlp.models import Heads

    heads = Heads.load("cx-heads")
    shipped = EmotionModel(heads)
    for cx in ("surprise", "confusion"):
        j = shipped.labels.index(cx)
        assert shipped.cx_thresholds[j] == pytest.approx(max(shipped.thresholds[j], CX_MIN_PROB[cx]))
    # A head whose F1-tuned thresholds for these rare labels are very low (cx-heads 2.0.0 had 0.075):
    low = copy.copy(heads)
    low.tasks = dict(heads.tasks)
    spec = copy.copy(heads.tasks["emotion"])
    spec.thresholds = [0.075 if l in CX_MIN_PROB else t for l, t in zip(spec.labels, spec.thresholds or [])]
    low.tasks["emotion"] = spec
    model = EmotionModel(low)
    for cx in ("surprise", "confusion"):
        j = model.labels.index(cx)
        assert model.thresholds[j] < CX_MIN_PROB[cx] == pytest.approx(model.cx_thresholds[j])
        probs = np.zeros((2, len(model.labels)), dtype=np.float32)
        probs[0, j] = (model.thresholds[j] + CX_MIN_PROB[cx]) / 2  # past the tuned threshold only
        probs[1, j] = CX_MIN_PROB[cx]
        labels, _ = model.top(model.to_cx(probs))
        assert labels == ["neutral", cx]
    joy = model.labels.index("joy")  # labels without a CX minimum keep their tuned threshold
    assert model.cx_thresholds[joy] == model.thresholds[joy]


def test_emotion_top_label_never_contradicts_the_sentiment():
    import numpy as np

    from cxnlp.emotion import EmotionModel
    from cxnlp.models import Heads

    model = EmotionModel(Heads.load("cx-heads"))
    probs = np.zeros((4, len(model.labels)), dtype=np.float32)
    for row in range(4):
        probs[row, model.labels.index("approval")] = 0.99  # satisfaction
    probs[1, model.labels.index("annoyance")] = 0.99
    probs[3, model.labels.index("annoyance")] = 0.99
    cx = model.to_cx(probs)
    labels, scores = model.top(cx, ["negative", "negative", "positive", "positive"])
    assert labels == ["neutral", "annoyance", "satisfaction", "satisfaction"]
    assert (scores >= 0).all() and (scores <= 1).all()
    assert model.top(cx)[0][0] == "satisfaction"  # without sentiments: the best emotion past its threshold


def test_emotion_and_sentiment_agree_in_valence(mixed_result):
    from cxnlp.emotion import NEGATIVE_EMOTIONS, POSITIVE_EMOTIONS

    seg = mixed_result.segments
    assert not ((seg["sentiment"] == "negative") & seg["emotion"].isin(POSITIVE_EMOTIONS)).any()
    assert not ((seg["sentiment"] == "positive") & seg["emotion"].isin(NEGATIVE_EMOTIONS)).any()


def _top_by_row(model, cx, sentiments):  # type: ignore[no-untyped-def]
    """The per-segment rule, one row at a time: the specification the vectorised ``top`` follows."""
    from cxnlp.emotion import NEGATIVE_EMOTIONS, POSITIVE_EMOTIONS

    neutral = model.cx_labels.index("neutral")
    positive = [k for k, e in enumerate(model.cx_labels) if e in POSITIVE_EMOTIONS]
    negative = [k for k, e in enumerate(model.cx_labels) if e in NEGATIVE_EMOTIONS]
    labels, scores = [], np.zeros(len(cx), dtype=np.float32)
    for i, row in enumerate(cx):
        masked = row.copy()
        masked[neutral] = -1
        if sentiments is not None and sentiments[i] == "negative":
            masked[positive] = -1
        elif sentiments is not None and sentiments[i] == "positive":
            masked[negative] = -1
        j = int(masked.argmax())
        best = max(float(masked[j]), 0.0)
        labels.append(model.cx_labels[j] if best >= 1.0 else "neutral")
        scores[i] = best if best >= 1.0 else max(row[neutral], 1.0 - best)
    return labels, scores


def test_emotion_decisions_on_whole_arrays_match_the_per_row_rule():
    """Segment and document emotions are decided on whole arrays (the GPU host's critical path): the
    same labels and scores as the rule applied row by row, with ties everywhere (quantised scores)."""
    from cxnlp.emotion import CX_EMOTIONS, EmotionModel, annotate_documents, annotate_segments
    from cxnlp.models import Heads

    model = EmotionModel(Heads.load("cx-heads"))
    rng = np.random.default_rng(0)
    n = 2000
    probs = (rng.integers(0, 4, size=(n, len(model.labels))) / 3).astype(np.float32)
    cx = model.to_cx(probs)
    sentiments = rng.choice(["negative", "positive", "neutral"], n).tolist()
    for given in (sentiments, None):
        labels, scores = model.top(cx, given)
        want_labels, want_scores = _top_by_row(model, cx, given)
        assert labels == want_labels and np.array_equal(scores, want_scores)
    empty_labels, empty_scores = model.top(cx[:0])
    assert empty_labels == [] and empty_scores.shape == (0,)
    segments = pd.DataFrame({"doc_id": [f"d{i % 300}" for i in range(n)], "sentiment": sentiments})
    annotate_segments(segments, model, probs)
    documents = pd.DataFrame({"doc_id": [f"d{i}" for i in range(320)]})  # 20 without segments
    annotate_documents(documents, segments)
    appearance = list(dict.fromkeys(segments.loc[segments["emotion"] != "neutral", "emotion"]))
    for doc_id, got in zip(documents["doc_id"], documents["emotion"]):
        mine = segments[(segments["doc_id"] == doc_id) & (segments["emotion"] != "neutral")]
        if mine.empty:
            assert got == "neutral"
            continue
        means = segments[segments["doc_id"] == doc_id][[f"_e_{e}" for e in CX_EMOTIONS]].mean()
        counts = mine["emotion"].value_counts()
        order = [e for e in appearance if e in counts.index]  # the counts table's column order
        want = max(order, key=lambda e: (counts[e], means[f"_e_{e}"]))
        assert got == want, doc_id


def test_stage_decision_falls_back_to_the_most_likely_label_only_when_asked():
    from cxnlp.journey import decide

    names = ["delivery", "billing", "none"]
    thresholds = np.array([0.5, 0.5, 0.5])
    probs = np.array(
        [
            [0.30, 0.10, 0.20],  # nothing passes: delivery is the most likely label
            [0.10, 0.20, 0.40],  # nothing passes: none is the most likely label
            [0.70, 0.60, 0.10],  # both pass, most likely first
            [0.60, 0.10, 0.90],  # none passes and beats the passing stage
        ]
    )
    assert decide(probs, thresholds, names) == [[], [], ["delivery", "billing"], []]
    assert decide(probs, thresholds, names, fallback=True) == [["delivery"], [], ["delivery", "billing"], []]
