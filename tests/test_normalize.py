from __future__ import annotations

from cxnlp.config import InputConfig
from cxnlp.io import read_inputs
from cxnlp.normalize import normalize_records, normalize_text, parse_timestamp, truncate


def test_normalize_text_strips_html_controls_and_spaces():
    assert normalize_text("<p>Great &amp; fast</p><br>but\u200b   late\x07") == "Great & fast\nbut late"
    assert normalize_text("<b>bold</b> text", strip_html=False) == "<b>bold</b> text"


def test_normalize_truncates_on_a_word_boundary():
    text, cut = truncate("word " * 100, 101)
    assert cut and len(text) <= 101 and text.endswith("word")


def test_normalize_timestamps_are_utc():
    assert str(parse_timestamp("2026-10-01T10:00:00+02:00")) == "2026-10-01 08:00:00+00:00"
    assert str(parse_timestamp(1_790_000_000)) == "2026-09-21 14:13:20+00:00"
    assert str(parse_timestamp(1_790_000_000_000)) == "2026-09-21 14:13:20+00:00"
    assert parse_timestamp("next tuesday") is None


def test_normalize_records_keep_extras_and_flag_bad_values():
    records = read_inputs(
        [
            {"review": "Lovely", "stars": "4", "date": "2026-01-02", "sentiment": "mine", "meta": {"a": 1}},
            {"review": "ok then", "stars": "five", "date": "soon"},
            {"review": "🙂🙂"},
        ]
    ).records
    docs, rejects = normalize_records(records, InputConfig())
    assert list(docs["rating"].fillna(-1)) == [4.0, -1]
    assert docs.loc[0, "input_sentiment"] == "mine" and docs.loc[0, "meta"] == '{"a": 1}'
    assert set(docs.loc[1, "flags"]) == {"created_at_unparsed", "rating_unparsed", "id_generated"}
    assert [r.code for r in rejects] == ["R008"]


def test_normalize_detects_the_language_of_each_document():
    from cxnlp.normalize import detect_language

    assert detect_language("The box arrived late again and the ice packs had melted.") == "en"
    assert detect_language("La livraison était en retard et le colis était abîmé, je suis très déçu.") == "fr"
    assert detect_language("ok") == "und"
    records = read_inputs(
        [{"text": "Der Kundendienst hat mir sehr schnell geholfen, vielen Dank dafür."}]
    ).records
    docs, _ = normalize_records(records, InputConfig())
    assert docs.loc[0, "language"] == "de"
