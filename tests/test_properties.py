"""Property-based tests (hypothesis) over the reader and the whole pipeline, and a 10,000-input fuzz run
over reader + normaliser + redactor: nothing crashes, counts reconcile, outputs validate."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxnlp.config import InputConfig, RedactConfig
from cxnlp.errors import InputError
from cxnlp.io import read_inputs
from cxnlp.normalize import normalize_records
from cxnlp.output import read_outputs
from cxnlp.redact import luhn_ok, redact_corpus, redact_text
from cxnlp.schema import validate_table

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _expected_jsonl_records(data: bytes) -> int:
    """Non-blank lines, split the way the reader's text layer splits them (\\n, \\r\\n or \\r)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", "replace")
    else:
        text = data.decode("utf-8-sig", "replace")
    return sum(1 for line in re.split(r"\r\n|\r|\n", text) if line.strip())


def _read_bytes(data: bytes, suffix: str):  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        return read_inputs([str(path)])


@FAST
@given(st.binary(max_size=3000))
def test_properties_reader_survives_random_bytes(data):
    try:
        result = _read_bytes(data, ".jsonl")
    except InputError as exc:  # only "no text field" can make a whole JSONL file unusable
        assert exc.code == "E101" and exc.exit_code == 2
        return
    assert result.read == len(result.records) + len(result.rejects) == _expected_jsonl_records(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
records = st.dictionaries(
    st.sampled_from(["text", "id", "rating", "created_at", "channel", "extra", "body"]),
    json_values,
    max_size=6,
)


@FAST
@given(st.lists(st.one_of(records, json_values), min_size=1, max_size=12))
def test_properties_reader_accounts_for_every_json_line(items):
    lines = [json.dumps(x, ensure_ascii=bool(i % 2)) for i, x in enumerate(items)]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    try:
        result = _read_bytes(data, ".jsonl")
    except InputError as exc:
        assert exc.code == "E101"
        return
    assert result.read == len(items) == len(result.records) + len(result.rejects)
    ids = [r.data["__doc_id__"] for r in result.records]
    assert len(ids) == len(set(ids))
    documents, more = normalize_records(result.records, InputConfig())
    assert len(documents) + len(more) == len(result.records)


@FAST
@given(
    st.lists(st.lists(st.text(max_size=20), min_size=3, max_size=3), min_size=1, max_size=10),
    st.sampled_from([",", "\t"]),
)
def test_properties_reader_reads_random_csv_back(rows, delimiter):
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter)  # \r\n line ends: cells holding \r or \n are quoted
    writer.writerow(["id", "text", "rating"])
    writer.writerows(rows)
    try:
        result = _read_bytes(buf.getvalue().encode("utf-8"), ".csv" if delimiter == "," else ".tsv")
    except InputError as exc:
        pytest.fail(str(exc))
    # Rows whose cells are all blank are skipped, like blank lines; every other row is one record.
    non_blank = [r for r in rows if any(c.strip() for c in r)]
    assert result.read == len(non_blank) == len(result.records) + len(result.rejects)


fragments = st.sampled_from(
    [
        "The box was late again", "Great food but a rude waiter", "mail jo@example.com", "call +44 20 7946 0958",
        "card 4111 1111 1111 1111", "😀🔥", "<b>bold</b> &amp;", "   ", "\x00\u200b", "配送が遅れました", "Regards,\nSarah Jones",
        "refund to GB82 WEST 1234 5698 7654 32", "$59.99 on 2024-03-15", "\ud800", "", "\r\n",
    ]
)  # fmt: skip
texts = st.one_of(
    st.lists(fragments, max_size=4).map(" ".join), st.text(max_size=60), st.integers(), st.none()
)
pipeline_records = st.fixed_dictionaries(
    {"text": texts},
    optional={
        "rating": st.one_of(st.integers(-5, 10), st.text(max_size=5), st.none()),
        "created_at": st.one_of(st.text(max_size=12), st.integers(), st.none()),
        "note": st.text(max_size=20),
    },
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(st.lists(pipeline_records, min_size=1, max_size=6), st.booleans())
def test_properties_pipeline_never_crashes_and_outputs_validate(analyzer, items, via_file):
    with tempfile.TemporaryDirectory() as folder:
        if via_file:
            path = Path(folder) / "in.jsonl"
            path.write_text(
                "".join(json.dumps(r) + "\n" for r in items), encoding="utf-8", errors="surrogatepass"
            )
            result = analyzer.analyze([str(path)])
        else:
            result = analyzer.analyze(items)
        counts = result.counts
        assert counts["read"] == len(items) == counts["analysed"] + counts["rejected"]
        out = result.write(Path(folder) / "out")
        tables = read_outputs(out)
        for name in ("documents", "segments", "pain_points", "stage_summary"):
            assert validate_table(name, tables[name]) == [], name
        assert tables["documents"].num_rows == counts["analysed"]
        assert len((out / "rejects.jsonl").read_text(encoding="utf-8").split("\n")) - 1 == counts["rejected"]
        blob = (out / "report.html").read_text(encoding="utf-8") + json.dumps(
            tables["documents"].to_pylist(), default=str
        )
        assert "jo@example.com" not in blob and "4111 1111 1111 1111" not in blob


# ------------------------------------------------------------------------------------------- fuzz


def _card(rng: random.Random) -> str:
    while True:
        digits = str(rng.choice([4, 5])) + "".join(str(rng.randrange(10)) for _ in range(15))
        if luhn_ok(digits):
            return " ".join(digits[i : i + 4] for i in range(0, 16, 4))


def _iban(rng: random.Random) -> str:
    account = "".join(str(rng.randrange(10)) for _ in range(18))
    check = 98 - int("".join(str(int(c, 36)) for c in account + "DE00")) % 97
    return f"DE{check:02d}{account}"


def _fuzz_record(rng: random.Random, i: int) -> tuple[dict[str, object], list[str]]:
    pii = {
        "email": f"{rng.choice(['ann', 'bo', 'c.d', 'e_f'])}{i}@{rng.choice(['example.com', 'mail.example.org'])}",
        "phone": f"+44 7{rng.randrange(100, 999)} {rng.randrange(100000, 999999)}",
        "card": _card(rng),
        "iban": _iban(rng),
        "ip": f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
    }
    planted = rng.sample(sorted(pii), rng.randrange(0, 3))
    alphabet = "abcdefghij KLMNOP  0123456789.,;:!?-/()@+#\n\t€£$😀ßé\u200b<>&\"'"
    words = [
        "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12))) for _ in range(rng.randrange(0, 8))
    ]
    for kind in planted:
        words.insert(rng.randrange(len(words) + 1), f" {pii[kind]} ")
    text: object = " ".join(words)
    roll = rng.random()
    if roll < 0.03:
        text = rng.choice([None, 42, 3.5, [1], {"a": 1}, True])
    elif roll < 0.06:
        text = rng.choice(["", "   ", "\x00", "😀😀"])
    record: dict[str, object] = {"text": text, "id": f"f{i}" if rng.random() < 0.9 else f"f{i - 1}"}
    if rng.random() < 0.3:
        record["rating"] = rng.choice([1, "5/5", "bad", None, 2.5])
    if rng.random() < 0.2:
        record["note"] = f"contact {pii['email']}"
        planted.append("email")
    return record, [pii[k] for k in planted]


def test_properties_fuzz_10000_inputs_reader_normaliser_redactor(tmp_path):
    rng = random.Random(20240607)
    start = time.perf_counter()
    pairs = [_fuzz_record(rng, i) for i in range(10_000)]
    # Half the inputs go through a JSONL file (with some junk lines), half as in-memory records.
    path = tmp_path / "fuzz.jsonl"
    lines = []
    for record, _ in pairs[:5000]:
        lines.append(json.dumps(record, ensure_ascii=False))
        if rng.random() < 0.05:
            lines.append(rng.choice(["{broken", "[1, 2]", "null", "\x00junk"]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = RedactConfig(person_names=False)
    total_read = 0
    for source in ([str(path)], [r for r, _ in pairs[5000:]]):
        read = read_inputs(source)  # type: ignore[arg-type]
        documents, more = normalize_records(read.records, InputConfig(max_chars=500))
        rejects = read.rejects + more
        assert read.read == len(documents) + len(rejects)
        total_read += read.read
        redact_corpus(documents, rejects, config, "en_core_web_sm")
        blob = (
            "\n".join(documents["text"])
            + "\n".join(map(str, documents.get("note", [])))
            + "\n".join(r.raw for r in rejects)
        )
        planted = [
            p for _, values in (pairs[:5000] if source[0] == str(path) else pairs[5000:]) for p in values
        ]
        leaked = [p for p in planted if p in blob]
        assert leaked == [], leaked[:5]
        for text in documents["text"].sample(200, random_state=1):
            assert redact_text(text, person_cues=False) == (text, {})  # idempotent: placeholders stay put
    assert total_read >= 10_000
    assert time.perf_counter() - start < 60
