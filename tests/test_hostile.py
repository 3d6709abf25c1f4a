"""The hostile-input corpus: every kind has one documented outcome (docs/data-safety.md), asserted here.

Record-level kinds are written as one file each into tmp_path and analysed together in one real
pipeline run; file-level kinds (the whole file is unusable, empty or truncated) go through the reader.
Counts always reconcile: read = analysed + rejected, per file and in total.
"""

from __future__ import annotations

import codecs
import gzip
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cxnlp.errors import InputError
from cxnlp.io import read_inputs
from cxnlp.output import read_outputs
from cxnlp.schema import validate_table
from tests.conftest import ROOT

MB = 1 << 20


def jl(*records: object) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@dataclass
class Kind:
    name: str  # as in the table in docs/data-safety.md
    suffix: str
    content: Callable[[], bytes]
    analysed: int = 0
    rejects: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # flags every analysed record from the file carries
    check: Callable[[list[str]], bool] | None = None  # on the analysed texts


RNG = random.Random(7)
BINARY = bytes(RNG.randrange(256) for _ in range(64 * 1024)).replace(b"{", b"(")

RECORD_KINDS = [
    Kind(
        "malformed JSON line",
        ".jsonl",
        lambda: b'{"id": "m1", "text": "unterminated\n{"id": "m2", "text": "fine and late"}\n',
        1,
        ["R001"],
    ),
    Kind(
        "JSON array or scalar lines",
        ".jsonl",
        lambda: b'["a", "b"]\n42\n"just a string"\nnull\ntrue\n{"text": "ok then"}\n',
        1,
        ["R002"] * 5,
    ),
    Kind(
        "text is a number, object or list",
        ".jsonl",
        lambda: jl({"text": "fine"}, {"text": 42}, {"text": {"a": 1}}, {"text": ["x"]}, {"text": True}),
        1,
        ["R005"] * 4,
    ),
    Kind(
        "text field missing",
        ".jsonl",
        lambda: jl({"text": "the first has one"}, {"body": "this one does not"}),
        1,
        ["R003"],
    ),
    Kind(
        "empty, null or whitespace-only text",
        ".jsonl",
        lambda: jl({"text": "ok"}, {"text": ""}, {"text": None}, {"text": " \t\n\u3000 "}),
        1,
        ["R004"] * 3,
    ),
    Kind(
        "1 MB text",
        ".jsonl",
        lambda: jl({"text": ("The box was late again and the chicken was warm. " * 22000)[:MB]}),
        1,
        [],
        ["truncated"],
        lambda t: len(t[0]) <= 20000,
    ),
    Kind("5 MB single line", ".jsonl", lambda: jl({"text": "word " * (MB + 5)}), 1, [], ["truncated"]),
    Kind("5 MB line that is not JSON", ".jsonl", lambda: b"x" * (5 * MB) + b"\n", 0, ["R001"]),
    Kind("binary bytes", ".jsonl", lambda: BINARY, 0, None),  # type: ignore[arg-type]  # every line R001
    Kind(
        "invalid UTF-8",
        ".jsonl",
        lambda: b'{"text": "caf\xe9 was late \xff\xfe again"}\n',
        1,
        [],
        [],
        lambda t: "\ufffd" in t[0],
    ),
    Kind(
        "UTF-16 JSONL with a BOM",
        ".jsonl",
        lambda: codecs.BOM_UTF16_LE + '{"text": "Café delivery was late"}\n'.encode("utf-16-le"),
        1,
        [],
        [],
        lambda t: t == ["Café delivery was late"],
    ),
    Kind(
        "UTF-16 CSV with a BOM",
        ".csv",
        lambda: "text,rating\nCafé was great,5\n".encode("utf-16"),
        1,
        [],
        [],
        lambda t: t == ["Café was great"],
    ),
    Kind("UTF-8 CSV with a BOM", ".csv", lambda: codecs.BOM_UTF8 + b"text,rating\nfine,4\n", 1),
    Kind(
        "CSV with quoted newlines",
        ".csv",
        lambda: b'id,text\nq1,"line one\nline two, ""quoted"""\n',
        1,
        [],
        [],
        lambda t: t == ['line one\nline two, "quoted"'],
    ),
    Kind(
        "CSV row with too many or too few cells",
        ".csv",
        lambda: b"id,text,rating\nr1,fine,5\nr2,short\nr3,long,5,extra\n",
        1,
        ["R007", "R007"],
    ),
    Kind(
        "CSV quote never closed",
        ".csv",
        lambda: b'id,text\nu1,fine\nu2,"never closed\nu3,swallowed\n',
        1,
        ["R011"],
    ),
    Kind(
        "CSV with NUL bytes",
        ".csv",
        lambda: b"id,text\nn1,nul\x00 in the text\n",
        1,
        [],
        [],
        lambda t: t == ["nul in the text"],
    ),
    Kind(
        "CRLF line endings",
        ".jsonl",
        lambda: b'{"text": "crlf one"}\r\n{"text": "crlf two\\r\\nsecond line"}\r\n',
        2,
        [],
        [],
        lambda t: not any("\r" in x for x in t),
    ),
    Kind(
        "CRLF CSV",
        ".csv",
        lambda: b'id,text\r\nc1,"two\r\nlines"\r\nc2,plain\r\n',
        2,
        [],
        [],
        lambda t: "two\nlines" in t,
    ),
    Kind(
        "duplicate ids",
        ".jsonl",
        lambda: jl({"id": "dup-1", "text": "first"}, {"id": "dup-1", "text": "second"}),
        1,
        ["R006"],
    ),
    Kind(
        "emoji-only or symbol-only text",
        ".jsonl",
        lambda: jl({"text": "😀🔥👍"}, {"text": "!!! ??? ..."}, {"text": "\u200b\u200b"}),
        0,
        ["R008"] * 3,
    ),
    Kind("emoji with words", ".jsonl", lambda: jl({"text": "Love it 😍🔥 but late 😡"}), 1),
    Kind(
        "HTML",
        ".jsonl",
        lambda: jl(
            {
                "text": "<p>Delivery was <b>late</b> &amp; cold</p><script>alert(1)</script><img src=x onerror=alert(2)>"
            }
        ),
        1,
        [],
        [],
        lambda t: "<" not in t[0] and "&amp;" not in t[0],
    ),
    Kind(
        "Markdown",
        ".jsonl",
        lambda: jl({"text": "# Late\n\n**Box** was _late_, see [site](http://example.com) and `code`."}),
        1,
        [],
        [],
        lambda t: t[0].startswith("# Late"),
    ),
    Kind(
        "non-English text",
        ".jsonl",
        lambda: jl(
            {"text": "配送が遅れました。"},
            {"text": "التوصيل تأخر كثيرا"},
            {"text": "Доставка опоздала на два дня."},
            {"text": "डिलीवरी देर से आई"},
        ),
        4,
    ),
    Kind(
        "right-to-left marks and combining characters",
        ".jsonl",
        lambda: jl({"text": "\u202eetal saw xob\u202c Z\u0351\u0300a\u036d\u0301l\u033ag\u0350o"}),
        1,
    ),
    Kind(
        "JSON nested 10,000 deep",
        ".jsonl",
        lambda: b'{"text": ' + nested(10_000).encode() + b"}\n" + jl({"text": "after the deep one"}),
        1,
        ["R001"],
    ),
    Kind(
        "JSON nested 500 deep in another field",
        ".jsonl",
        lambda: b'{"text": "fine", "meta": ' + nested(500).encode() + b"}\n",
        1,
    ),
    Kind("JSON document nested 10,000 deep", ".json", lambda: nested(10_000).encode(), 0, ["R001"]),
    Kind(
        "JSON array with non-objects",
        ".json",
        lambda: b'[{"text": "ok"}, 1, "two", null, [3]]',
        1,
        ["R002"] * 4,
    ),
    Kind(
        "raw control characters and NUL in JSON strings",
        ".jsonl",
        lambda: b'{"text": "tab\there and nul\x00 there"}\n',
        1,
        [],
        [],
        lambda t: t == ["tab here and nul there"],
    ),
    Kind(
        "NUL bytes outside JSON", ".jsonl", lambda: b'\x00\x00{"text": "x"}\n{"text": "fine"}\n', 1, ["R001"]
    ),
    Kind(
        "lone UTF-16 surrogates",
        ".jsonl",
        lambda: b'{"text": "bad \\ud800 surrogate", "note": "\\udfff"}\n',
        1,
        [],
        [],
        lambda t: "\ufffd" in t[0],
    ),
    Kind(
        "wrong types in other fields",
        ".jsonl",
        lambda: jl(
            {
                "text": "ok",
                "rating": "five stars",
                "created_at": "yesterday-ish",
                "channel": {"a": 1},
                "id": 3.5,
            }
        ),
        1,
        [],
        ["created_at_unparsed", "rating_unparsed"],
    ),
    Kind(
        "NaN, Infinity and huge numbers",
        ".jsonl",
        lambda: b'{"text": "ok", "rating": NaN, "big": 100000000000000000000000000000, "inf": Infinity}\n',
        1,
        [],
        ["rating_unparsed"],
    ),
    Kind(
        "id is an object or list",
        ".jsonl",
        lambda: jl(
            {"id": "ok-1", "text": "fine"}, {"id": {"x": 1}, "text": "bad id"}, {"id": [1], "text": "bad id"}
        ),
        1,
        ["R005", "R005"],
    ),
    Kind(
        "field names that collide or look like paths",
        ".jsonl",
        lambda: jl({"text": "ok", "stages": "mine", "": "empty key", "../../etc/passwd": "x", "_private": 1}),
        1,
    ),
]

FILE_KINDS = {
    # name: (suffix, content or a writer, expected read count, expected reject codes, InputError code)
    "empty file": (".jsonl", b"", 0, [], None),
    "blank lines only": (".jsonl", b"\n\n  \n\r\n", 0, [], None),
    "header-only CSV": (".csv", b"id,text,rating\n", 0, [], None),
    "truncated gzip": (".jsonl.gz", "truncated", 401, ["R010"], None),
    "not gzip at all": (".jsonl.gz", b"this is not gzip", 0, [], "E104"),
    "corrupt Parquet": (".parquet", b"PAR1 garbage PAR1", 0, [], "E104"),
    "unsupported suffix": (".xlsx", b"PK\x03\x04", 0, [], "E103"),
    "no text field anywhere": (".jsonl", b'{"id": 1, "stars": 5}\n', 0, [], "E101"),
    "semicolon CSV read as comma CSV": (".csv", b"text;rating\nlate;1\n", 0, [], "E101"),
}


def _write_truncated_gzip(path: Path) -> None:
    data = gzip.compress(jl(*({"text": f"record {i} was fine but late"} for i in range(2000))))
    path.write_bytes(data[: len(data) // 4])


# ---------------------------------------------------------------------------------- record kinds


@pytest.fixture(scope="module")
def hostile_run(analyzer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    paths = {}
    for i, kind in enumerate(RECORD_KINDS):
        path = folder / f"k{i:02d}{kind.suffix}"
        path.write_bytes(kind.content())
        paths[kind.name] = str(path)
    start = time.perf_counter()
    result = analyzer.analyze(list(paths.values()))
    seconds = time.perf_counter() - start
    out = result.write(folder / "out")
    return result, paths, out, seconds


def test_hostile_corpus_has_at_least_30_kinds():
    assert len(RECORD_KINDS) + len(FILE_KINDS) + 1 >= 30  # + the millions of junk lines


@pytest.mark.parametrize("kind", RECORD_KINDS, ids=lambda k: k.name)
def test_hostile_record_kind_has_its_documented_outcome(hostile_run, kind):
    result, paths, _, _ = hostile_run
    path = paths[kind.name]
    docs = result.documents[result.documents["source_file"] == path]
    rejects = [r for r in result.rejects if r.source_file == path]
    info = next(f for f in result.manifest["inputs"] if f["path"] == path)
    assert info["records"] == len(docs) + len(rejects)  # this file's counts reconcile
    assert len(docs) == kind.analysed, [r.reason for r in rejects]
    if kind.rejects is None:  # binary: every line is rejected (not JSON, or JSON that is not an object)
        assert rejects and {r.code for r in rejects} <= {"R001", "R002"}
    else:
        assert sorted(r.code for r in rejects) == sorted(kind.rejects), [(r.code, r.reason) for r in rejects]
    assert all(r.reason and len(r.raw) <= 2000 for r in rejects)
    for flags in docs["flags"]:
        assert set(kind.flags) <= set(flags)
    if kind.check is not None:
        assert kind.check(docs["text"].tolist()), docs["text"].tolist()


def test_hostile_run_counts_reconcile_and_outputs_validate(hostile_run):
    result, paths, out, seconds = hostile_run
    counts = result.manifest["counts"]
    assert (
        counts["read"]
        == counts["analysed"] + counts["rejected"]
        == sum(f["records"] for f in result.manifest["inputs"])
    )
    tables = read_outputs(out)
    for name in ("documents", "segments", "pain_points", "stage_summary"):
        assert validate_table(name, tables[name]) == [], name
    assert len((out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()) == counts["rejected"]
    assert "input_stages" in tables["documents"].column_names  # a reserved name is kept under input_
    assert seconds < 300


def test_hostile_kinds_are_documented():
    doc = (ROOT / "docs" / "data-safety.md").read_text(encoding="utf-8")
    for name in [k.name for k in RECORD_KINDS] + list(FILE_KINDS) + ["millions of junk lines"]:
        assert f"| {name} |" in doc, name


# ------------------------------------------------------------------------------------ file kinds


@pytest.mark.parametrize("name", list(FILE_KINDS))
def test_hostile_file_kind_has_its_documented_outcome(tmp_path, name):
    suffix, content, n_read, codes, error = FILE_KINDS[name]
    path = tmp_path / f"input{suffix}"
    if content == "truncated":
        _write_truncated_gzip(path)
    else:
        path.write_bytes(content)  # type: ignore[arg-type]
    if error:
        with pytest.raises(InputError) as exc:
            read_inputs([str(path)])
        assert exc.value.code == error and exc.value.exit_code == 2
        return
    result = read_inputs([str(path)])
    assert result.read == len(result.records) + len(result.rejects)
    assert [r.code for r in result.rejects] == codes
    if name == "truncated gzip":
        # What was read before the cut is kept; the cut is one R010 reject that names the line.
        assert len(result.records) >= 300 and "ends early" in result.rejects[0].reason
        assert result.rejects[0].source_line == len(result.records) + 1
    else:
        assert result.read == n_read


def test_hostile_millions_of_junk_lines_are_read_in_seconds(tmp_path):
    path = tmp_path / "junk.jsonl"
    rng = random.Random(1)
    junk = [b"garbage", b"{not json", b"]]", b"\x00\x01", b"1,2,3", b"<html>", b'{"a":', b"\xff\xfe"]
    lines = [b"garbage"] + [junk[rng.randrange(len(junk))] for _ in range(999_999)]
    lines += [b""] * 500_000  # blank lines are not records
    lines.append(b'{"text": "the one real record"}')
    path.write_bytes(b"\n".join(lines) + b"\n")
    start = time.perf_counter()
    result = read_inputs([str(path)])
    seconds = time.perf_counter() - start
    assert len(result.records) == 1 and result.read == 1_000_001
    assert Counter(r.code for r in result.rejects) == {"R001": 1_000_000}
    assert seconds < 60, seconds


def test_hostile_junk_lines_through_the_cli_fail_cleanly(tmp_path):
    from click.testing import CliRunner

    from cxnlp.cli import cli

    path = tmp_path / "junk.jsonl"
    path.write_bytes(b"junk\n" * 1000 + b'{"text": "only one real record about a late box"}\n')
    result = CliRunner().invoke(
        cli,
        ["analyze", str(path), "-o", str(tmp_path / "o"), "-q", "--max-rejects", "0.5"],
        catch_exceptions=False,
    )
    assert result.exit_code == 1 and "[E212] 1000 of 1001 input records were rejected" in result.output
    assert len((tmp_path / "o" / "rejects.jsonl").read_text().splitlines()) == 1000
    assert not (tmp_path / "o" / "documents.parquet").exists()
    assert json.loads((tmp_path / "o" / "run.json").read_text())["status"] == "failed"


def test_hostile_parquet_with_odd_columns(tmp_path):
    table = pa.table(
        {
            "text": ["fine", None, "ok"],
            "blob": [b"\x00\xff", b"x", None],
            "when": ["2024-01-01", "not a date", None],
        }
    )
    pq.write_table(table, tmp_path / "odd.parquet")
    result = read_inputs([str(tmp_path / "odd.parquet")])
    assert len(result.records) == 2 and [r.code for r in result.rejects] == ["R004"]


def test_hostile_normalisation_is_linear_on_pathological_whitespace_and_tags():
    from cxnlp.normalize import normalize_text

    for text in ("\u2028" * 200_000 + "x", "<br" * 200_000, "< " * 200_000, " \n" * 200_000 + "x"):
        start = time.perf_counter()
        normalize_text(text)
        assert time.perf_counter() - start < 5
    assert normalize_text("a \n\n\n\n b\u2028\n\nc") == "a\n\nb\n\nc"


def test_hostile_strings_do_not_crash_the_writer(analyzer, tmp_path):
    records = [
        {"text": "late box \ud83d", "x": "\udc00", "id": "s\ud800"},
        {"text": re.sub("x", "\x00", "nul x here")},
    ]
    result = analyzer.analyze(records)
    out = result.write(tmp_path / "o")
    assert read_outputs(out)["documents"].num_rows == 2
