from __future__ import annotations

import pandas as pd
import pytest

from cxnlp.config import SegmentConfig
from cxnlp.segment import segment_documents


def _segments(text: str, **kw) -> list[str]:
    docs = pd.DataFrame({"doc_id": ["d"], "text": [text]})
    return segment_documents(docs, SegmentConfig(**kw))["text"].tolist()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("great food but a rude waiter", ["great food", "a rude waiter"]),
        (
            "Although the pasta was lovely, the box arrived two days late.",
            ["Although the pasta was lovely", "the box arrived two days late."],
        ),
        (
            "The recipes are fantastic; however, the delivery was late.",
            ["The recipes are fantastic", "however, the delivery was late."],
        ),
        ("Good but pricey.", ["Good but pricey."]),
        ("The app is quick. Support was slow.", ["The app is quick.", "Support was slow."]),
    ],
)
def test_segment_splits_sentences_and_contrastive_clauses(text, expected):
    assert _segments(text) == expected


def test_segment_offsets_point_into_the_text():
    text = "Loved it.\n\nBut the bill was wrong and nobody answered the phone"
    docs = pd.DataFrame({"doc_id": ["d"], "text": [text]})
    seg = segment_documents(docs, SegmentConfig())
    for row in seg.itertuples():
        assert text[row.char_start : row.char_end] == row.text
    assert seg["segment_id"].tolist() == [f"d:{i}" for i in range(len(seg))]


def test_segment_contrastive_split_can_be_switched_off():
    assert _segments("great food but a rude waiter", split_contrastive=False) == [
        "great food but a rude waiter"
    ]


def test_segment_long_segments_are_cut():
    text = ", ".join(["the delivery was late again"] * 40)
    parts = _segments(text, max_segment_chars=100)
    assert len(parts) > 5 and all(len(p) <= 100 for p in parts)


def test_segment_collects_keyphrases():
    docs = pd.DataFrame({"doc_id": ["d"], "text": ["I was charged twice at checkout."]})
    phrases = segment_documents(docs, SegmentConfig())["phrases"][0]
    assert "charged twice at checkout" in phrases and "checkout" in phrases
