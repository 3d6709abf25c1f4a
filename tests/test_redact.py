"""Redaction: the detectors one by one, what must survive, and the seeded PII set through the real pipeline."""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cxnlp.cli import cli
from cxnlp.config import RedactConfig, load_config
from cxnlp.io import Reject
from cxnlp.redact import iban_ok, luhn_ok, redact_corpus, redact_text, redact_texts
from cxnlp.schema import validate_table
from tests.conftest import FIXTURES

PII_FILE = FIXTURES / "pii.jsonl"

# Every piece of personal data planted in tests/fixtures/pii.jsonl (fake: example domains, test card
# numbers, documentation IP ranges, the IBAN registry's examples, 555 phone numbers).
PLANTED = {
    "email": [
        "sarah.okonkwo@example.com", "j.mcallister+orders@example.co.uk", "priya_r@mail.example.org",
        "dana.k@example.org", "jonas.becker@example.de", "yuki.t@example.jp", "leo.martin%40example.net",
    ],
    "phone": [
        "+44 20 7946 0958", "(212) 555-0147", "07700 900123", "+49 30 901820", "+1 (415) 555-0199",
        "06 12 34 56 78", "612 345 678", "0044 161 496 0753", "212-555-0183", "+61 2 9876 5432",
        "+91 98765 43210", "555.201.4477", "0171 1234567", "+49 151 23456789", "5553217788",
    ],
    "card": [
        "4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005", "6011 0009 9013 9424",
        "2223 0031 2200 3222", "4012888888881881", "3530 1113 3330 0000",
    ],
    "iban": [
        "GB82 WEST 1234 5698 7654 32", "DE89 3704 0044 0532 0130 00", "NL91ABNA0417164300",
        "ES91 2100 0418 4502 0005 1332", "IE29 AIBK 9311 5212 3456 78",
    ],
    "ip": ["203.0.113.77", "2001:db8:85a3::8a2e:370:7334", "192.168.0.42", "fe80::1ff:fe23:4567:890a"],
    "url": [
        "8f14e45fceea167a5a36dedd4bea2543", "abc123def456", "deadbeef1234cafe", "AKIAIOSFODNN7EXAMPLE",
        "sk_live_51HxExampleKey9", "code=99812",
    ],
    "person": [
        "Sarah Okonkwo", "Tomasz Nowak", "Kevin", "Hannah Whitfield", "Adeyemi", "Becker", "Priya Raghunathan",
        "Aoife Murphy", "Daniel Brooks", "Luis Fernández", "Mei Lin", "Oliver Grant", "Jonas Becker",
        "Fatima Zahra", "Yuki Tanaka",
    ],
}  # fmt: skip

# What must survive: prices, dates, years, times, quantities, order numbers and ordinary words.
SURVIVORS = [
    "$59.99", "Order 100234567", "2024-03-15", "12 boxes", "€45.50", "#4829-1034", "£19.99", "$1,299.99",
    "15/03/2024", "March 3, 2024", "since 2021", "in 2023", "10:30", "8-10 am", "3 units", "2 x 500g", "$89.00",
    "ORD-2024-000123", "order 55120", "exp 12/26", "Apple Pay", "Family Plan", "Android", "courier", "refund",
]  # fmt: skip


def _compact(text: str) -> str:
    return re.sub(r"[\s\-.()/]", "", text)


def _blobs(outdir: Path) -> dict[str, str]:
    """Every file under outdir as searchable text: tables cell by cell, JSON decoded, HTML unescaped."""
    blobs: dict[str, str] = {}
    for path in sorted(p for p in outdir.rglob("*") if p.is_file()):
        name = str(path.relative_to(outdir))
        if path.suffix == ".parquet":
            blobs[name] = json.dumps(pq.read_table(path).to_pylist(), ensure_ascii=False, default=str)
        elif path.suffix == ".duckdb":
            import duckdb

            con = duckdb.connect(str(path), read_only=True)
            try:
                rows = []
                for (table,) in con.execute("select table_name from information_schema.tables").fetchall():
                    rows += con.execute(f'select * from "{table}"').fetchall()
                blobs[name] = json.dumps(rows, ensure_ascii=False, default=str)
            finally:
                con.close()
        else:
            text = path.read_bytes().decode("utf-8", "replace")
            if path.suffix in (".json", ".jsonl"):
                text += "\n" + json.dumps(
                    [json.loads(line) for line in text.splitlines() if line.strip()]
                    if path.suffix == ".jsonl"
                    else json.loads(text),
                    ensure_ascii=False,
                )
            if path.suffix == ".html":
                text += "\n" + html.unescape(text)
            blobs[name] = text
    return blobs


def _leaks(blobs: dict[str, str]) -> list[str]:
    found = []
    for name, blob in blobs.items():
        compact, lower = _compact(blob), blob.lower()
        for kind, values in PLANTED.items():
            for value in values:
                if value in blob or (kind in ("phone", "card", "iban") and _compact(value) in compact):
                    found.append(f"{kind} {value!r} in {name}")
                if kind == "person":
                    for word in value.split():
                        if len(word) >= 4 and re.search(rf"\b{re.escape(word.lower())}\b", lower):
                            found.append(f"name {word!r} in {name}")
    return found


# ---------------------------------------------------------------------------------------- detectors


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Mail jo.doe+x@example.co.uk now", "Mail [EMAIL] now"),
        ("Call +44 20 7946 0958 or 0044 20 7946 0958.", "Call [PHONE] or [PHONE]."),
        (
            "US (555) 123-4567, 555-123-4567, 555.123.4567, +1 555-0134",
            "US [PHONE], [PHONE], [PHONE], [PHONE]",
        ),
        ("UK 07700 900123, DE 030/12345678, FR 06 12 34 56 78", "UK [PHONE], DE [PHONE], FR [PHONE]"),
        ("mobile 612 345 678 please", "mobile [PHONE] please"),
        ("card 4111 1111 1111 1111 exp 12/25", "card [CARD] exp 12/25"),
        ("card 4111111111111111 12/25", "card [CARD] 12/25"),
        ("amex 3782-822463-10005.", "amex [CARD]."),
        ("IBAN GB82 WEST 1234 5698 7654 32 thanks", "IBAN [IBAN] thanks"),
        ("iban de89370400440532013000", "iban [IBAN]"),
        ("from 10.0.12.5:8080 and ::ffff:192.0.2.1 and 2001:db8::1", "from [IP]:8080 and [IP] and [IP]"),
        ("go to https://x.example.com/r?token=abc&u=1.", "go to [URL]."),
        ("see example.com/login?session=9f8e7d and www.example.com/a#access_token=zz", "see [URL] and [URL]"),
        ("ftp://bob:hunter2@files.example.com/x", "[URL]"),
        ("Regards,\nSarah Connor", "Regards,\n[PERSON]"),
        (
            "Mr. Patel and Dr Emily Watson; my name is Jo March.",
            "Mr. [PERSON] and Dr [PERSON]; my name is [PERSON].",
        ),
        ("Thanks to Priya Raghunathan for the help", "Thanks to [PERSON] for the help"),
    ],
)
def test_redact_detects_each_type(text, expected):
    assert redact_text(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        "Paid $1,299.99 on 2024-03-15 for order #4829-1034: 12 boxes, 3 units, 2 x 500g.",
        "Delivered 15/03/2024 12 units at 10:30; another on 01.02.2024 12:30 and 03-04-2024.",
        "Order 100234567, invoice INV-2024-00042, ticket ORD-2024-000123, tracking 1Z999AA10123456784.",
        "In 2023 and 2024 prices rose 20%: £19.99/month, €45.50, 1.299,00 €, 0.5 kg, ¥1200.",
        "Rated 4/5 and 10/10; app v2.4.1 build 20240312; postcode SW1A 1AA; zip 90210.",
        "Harvest Box and the Classic Plan arrived on Tuesday; Apple Pay failed; see https://example.com/help?page=2",
        "Card ending 1111 declined; order 4111111111111112 (not Luhn-valid); 1234567890123",
        "Times 09:30-17:00, version 1.2.3, section 3.4.5, ratio 16:9, score 3-1.",
    ],
)
def test_redact_keeps_prices_dates_quantities_and_order_numbers(text):
    assert redact_text(text) == (text, {})


def test_redact_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB82WEST12345698765433")
    assert not iban_ok("XX00") and not iban_ok("DE8937040044053201300")  # too short for DE


def test_redact_counts_per_type_and_is_idempotent():
    text = "a@example.com b@example.org +44 20 7946 0958 4111 1111 1111 1111 Mr Smith"
    red, counts = redact_text(text)
    assert counts == {"email": 2, "phone": 1, "card": 1, "person": 1}
    assert redact_text(red) == (red, {})


def test_redact_types_and_keep_are_honoured():
    text = "Write to help@harvestbox.example.com or jo@example.com, call 07700 900123"
    assert redact_text(text, types=["phone"]) == (
        "Write to help@harvestbox.example.com or jo@example.com, call [PHONE]",
        {"phone": 1},
    )
    red, _ = redact_text(text, keep=["help@harvestbox.example.com"])
    assert red == "Write to help@harvestbox.example.com or [EMAIL], call [PHONE]"


def test_redact_names_with_the_entity_recogniser_spare_brands():
    texts = [
        "I called Sarah Jones at the help desk and she was lovely.",
        "The driver, Tomasz Nowak, left it at the door.",
        "Harvest Box is great. Apple Pay failed. Felt rushed. Recipes were good.",
        "Veggie Plan was fine but the Classic Plan is better; saw it on Instagram.",
    ]
    out, counts = redact_texts(texts)
    assert out[0] == "I called [PERSON] at the help desk and she was lovely."
    assert out[1] == "The driver, [PERSON], left it at the door."
    assert out[2:] == texts[2:] and counts == {"person": 2}


@pytest.mark.parametrize(
    "hostile",
    [
        "1." * 200_000,
        "Mr " * 100_000,
        "0" + "1" * 400_000,
        ("+1 " + "2" * 40 + " ") * 8000,
        ":" * 400_000,
        "a@" * 200_000,
        "de12 " * 80_000,
        "0171 " * 80_000,
        "4111 " * 80_000,
    ],
)
def test_redact_is_linear_on_hostile_text(hostile):
    start = time.perf_counter()
    redact_text(hostile)
    assert time.perf_counter() - start < 5


def test_redact_corpus_covers_extra_columns_and_rejects():
    import pandas as pd

    docs = pd.DataFrame(
        {
            "doc_id": ["d1", "d2"],
            "text": ["mail a@example.com", "fine"],
            "customer_name": ["Jo Bloggs", None],
            "phone": ["5553217788", "n/a"],
            "note": ["call 07700 900123", None],
            "rating": [1.0, 2.0],
        }
    )
    rejects = [Reject("f.jsonl", 3, "R003", "field 'text' is missing", '{"body": "mail b@example.com"}')]
    counts = redact_corpus(docs, rejects, RedactConfig(person_names=False), "en_core_web_sm")
    assert docs["text"].tolist() == ["mail [EMAIL]", "fine"]
    assert docs["customer_name"].tolist()[0] == "Jo Bloggs"  # names off: name columns stay
    assert docs["phone"].tolist() == ["[PHONE]", "n/a"] and docs["note"].tolist()[0] == "call [PHONE]"
    assert rejects[0].raw == '{"body": "mail [EMAIL]"}'
    assert counts == {"email": 2, "phone": 2}
    assert redact_corpus(docs, rejects, RedactConfig(enabled=False), "en_core_web_sm") == {}


def test_redact_config_rejects_unknown_types():
    from cxnlp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[E002\].*redact.types"):
        load_config(overrides=["redact.types=[email, ssn]"])


# ------------------------------------------------------------------------------ the seeded PII set


@pytest.fixture(scope="module")
def pii_run(analyzer, tmp_path_factory):
    result = analyzer.analyze([str(PII_FILE)])
    root = tmp_path_factory.mktemp("pii")
    outs = [result.write(root / "parquet"), result.write(root / "csv", "csv")]
    try:
        import duckdb  # noqa: F401

        from cxnlp import warehouse  # noqa: F401

        outs.append(result.write(root / "duckdb", "duckdb"))
    except ImportError:
        pass
    return result, outs


def test_redact_pii_fixture_plants_what_the_test_looks_for():
    raw = PII_FILE.read_text(encoding="utf-8")
    assert len(raw.splitlines()) >= 45
    for kind, values in PLANTED.items():
        for value in values:
            assert value in raw, (kind, value)
    for value in SURVIVORS:
        assert value in raw, value


def test_redact_pii_set_leaks_nothing_into_any_output_file(pii_run):
    result, outs = pii_run
    for out in outs:
        blobs = _blobs(out)
        assert {"run.json", "rejects.jsonl", "report.html", "report.md"} <= set(blobs), sorted(blobs)
        assert _leaks(blobs) == [], out


def test_redact_pii_set_keeps_prices_dates_and_words(pii_run):
    result, outs = pii_run
    text = "\n".join(result.documents["text"])
    assert [s for s in SURVIVORS if s not in text] == []
    segments = pq.read_table(outs[0] / "segments.parquet")
    assert validate_table("segments", segments) == []
    assert any("Apple Pay" in t for t in segments.column("text").to_pylist())


def test_redact_pii_set_counts_are_in_run_json(pii_run):
    result, outs = pii_run
    manifest = json.loads((outs[0] / "run.json").read_text())
    counts = manifest["redactions"]
    assert set(counts) == {"email", "phone", "card", "iban", "ip", "url", "person"}
    assert counts["card"] >= 8 and counts["iban"] >= 5 and counts["person"] >= 12
    assert (
        "redact" in manifest["timings"]
        and manifest["counts"]["read"]
        == 48
        == manifest["counts"]["analysed"] + manifest["counts"]["rejected"]
    )
    assert {r.code for r in result.rejects} == {"R001", "R003", "R006"}


def test_redact_no_redact_flag_keeps_the_raw_text(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "Late again, mail me at jo.bloggs@example.com or call 07700 900123."}\n')
    result = CliRunner().invoke(
        cli,
        ["analyze", str(src), "-o", str(tmp_path / "o"), "-q", "--no-redact", "--device", "cpu"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    docs = pq.read_table(tmp_path / "o" / "documents.parquet").column("text").to_pylist()
    assert docs == ["Late again, mail me at jo.bloggs@example.com or call 07700 900123."]
    manifest = json.loads((tmp_path / "o" / "run.json").read_text())
    assert manifest["redactions"] == {} and manifest["config"]["redact"]["enabled"] is False


def test_names_only_go_to_ner_where_a_capitalised_word_could_be_one(monkeypatch):
    """NER (the costly part of redaction) runs only on texts with a capitalised word that may be a
    name: not for contractions and hyphenations of common words, which most reviews hold ("I'm",
    "Couldn't", "Set-up"), but still for a name's possessive, a name with an apostrophe or a hyphen;
    the names in those texts are redacted."""
    import cxnlp.redact as redact

    common = redact.common_words("en_core_web_sm")
    plain = ["I'm done. We’ve waited and Couldn't log in", "Set-up was easy, It's fine and Won't stop"]
    named = ["Sam's reply was rude", "O'Brien never called", "Mary-Kate at the desk ignored us"]
    assert not any(redact._may_name(t, common) for t in plain)
    assert all(redact._may_name(t, common) for t in named)
    seen: list[str] = []
    real = redact.load_ner

    def spy(name):  # type: ignore[no-untyped-def]
        nlp = real(name)

        class Spy:
            pipe_names = nlp.pipe_names

            def pipe(self, texts, **kw):  # type: ignore[no-untyped-def]
                texts = list(texts)
                seen.extend(texts)
                return nlp.pipe(texts, **kw)

        return Spy()

    monkeypatch.setattr(redact, "load_ner", spy)
    agent = "Our agent Bartholomew Featherstone was rude to me"  # no known given name: NER finds it
    owner = "Sam's reply was rude and slow"  # "Sam" is also a word: the possessive sends it to NER
    out, counts = redact_texts([*plain, agent, owner, "Priya O'Brien and Priya McDonald were rude"])
    assert seen == [agent, owner]
    assert out == [
        *plain,
        "Our agent [PERSON] was rude to me",
        "[PERSON]'s reply was rude and slow",
        "[PERSON] and [PERSON] were rude",  # a given name takes its surname: apostrophe, inner capital
    ]
    assert counts["person"] == 4
