from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cxnlp.config import FieldsConfig
from cxnlp.errors import InputError, PipelineError
from cxnlp.io import SeenIds, detect_format, iter_inputs, read_inputs, stable_id
from tests.conftest import FIXTURES


def test_io_jsonl_bad_lines_go_to_rejects_with_line_and_reason():
    result = read_inputs([str(FIXTURES / "bad.jsonl")])
    assert [r.data["__doc_id__"] for r in result.records] == ["b1", "b9"]
    got = {(r.source_line, r.code) for r in result.rejects}
    assert got == {
        (2, "R001"),
        (3, "R001"),
        (4, "R004"),
        (5, "R005"),
        (6, "R002"),
        (7, "R006"),
        (8, "R003"),
        (9, "R004"),
    }
    assert result.read == 10 == len(result.records) + len(result.rejects)
    dup = next(r for r in result.rejects if r.code == "R006")
    assert "duplicate id 'b1'" in dup.reason and "bad.jsonl:1" in dup.reason
    missing = next(r for r in result.rejects if r.code == "R003")
    assert missing.reason == "field 'text' is missing" and '"body"' in missing.raw


def test_io_csv_quoted_newlines_and_short_rows(tmp_path):
    result = read_inputs([str(FIXTURES / "tickets.csv")])
    assert (
        result.roles["text"] == "body"
        and result.roles["id"] == "ticket_id"
        and result.roles["rating"] == "csat"
    )
    texts = [r.data["body"] for r in result.records]
    assert texts[0] == "Hi, my router drops every evening.\nPlease help."
    assert texts[1] == 'The engineer never turned up, "again".'
    assert [(r.code, r.source_line) for r in result.rejects] == [("R007", 6)]


def test_io_gzip_parquet_and_glob_read_the_same_records(tmp_path):
    rows = [{"review": f"Review number {i} about delivery.", "stars": i % 5 + 1} for i in range(5)]
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b.parquet")
    result = read_inputs([str(tmp_path / "*.gz"), str(tmp_path / "b.parquet")])
    assert len(result.records) == 10
    assert [f.format for f in result.files] == ["jsonl", "parquet"]
    assert all(f.sha256 and f.size for f in result.files)
    # Same text -> same stable id; the duplicate in the second file gets a suffix, not a reject.
    ids = [r.data["__doc_id__"] for r in result.records]
    assert ids[0] == stable_id(rows[0]["review"]) and ids[5] == ids[0] + "-2"


def test_io_missing_text_field_suggests_the_right_name(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"reviw_text": "hello", "id": 1}\n')
    with pytest.raises(InputError) as exc:
        read_inputs([str(path)])
    msg = str(exc.value)
    assert (
        "[E101]" in msg and str(path) in msg and "Did you mean 'reviw_text'?" in msg and "--text-field" in msg
    )


def test_io_configured_field_must_exist(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("comment,stars\nnice,5\n")
    with pytest.raises(InputError) as exc:
        read_inputs([str(path)], FieldsConfig(text="coment"))
    assert "[E106]" in str(exc.value) and "Did you mean 'comment'?" in str(exc.value)


@pytest.mark.parametrize(
    "name, problem",
    [("missing.jsonl", "E102"), ("notes.xlsx", "E103"), ("nothing-*.csv", "E105")],
)
def test_io_unusable_inputs_raise_clear_errors(tmp_path, name, problem):
    if name.endswith(".xlsx"):
        (tmp_path / name).write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError) as exc:
        read_inputs([str(tmp_path / name)])
    assert f"[{problem}]" in str(exc.value) and exc.value.exit_code == 2


def test_io_invalid_gzip_is_reported(tmp_path):
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match=r"\[E104\].*gzip"):
        read_inputs([str(path)])


def test_io_detect_format_handles_compound_suffixes():
    assert detect_format("a.csv.gz") == ("csv", True)
    assert detect_format("a.TSV") == ("tsv", False)
    assert detect_format("-") == ("jsonl", False)


def test_io_utf16_with_bom_and_invalid_utf8_are_read(tmp_path):
    (tmp_path / "u16.csv").write_bytes("text\nCafé was great\n".encode("utf-16"))
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "caf\xe9 late delivery"}\n')
    result = read_inputs([str(tmp_path / "u16.csv"), str(tmp_path / "bad.jsonl")])
    texts = [r.data["text"] for r in result.records]
    assert texts[0] == "Café was great" and texts[1] == "caf\ufffd late delivery"


@pytest.mark.parametrize("data", [b"\xef", b"\xef\xbb", b'\xef\xbb{"text": "late"}\n'])
def test_io_partial_utf8_bom_is_not_swallowed(tmp_path, data):
    """A file that starts like a UTF-8 BOM but is not one keeps its line (found by the property test)."""
    (tmp_path / "in.jsonl").write_bytes(data)
    result = read_inputs([str(tmp_path / "in.jsonl")])
    assert result.read == len(result.rejects) == 1


def test_io_utf8_bom_is_stripped(tmp_path):
    (tmp_path / "in.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "late box"}\n')
    assert [r.data["text"] for r in read_inputs([str(tmp_path / "in.jsonl")]).records] == ["late box"]


def test_io_seen_ids_spill_to_sqlite_and_answer_like_a_dict(tmp_path):
    spills = []

    def folder():
        spills.append(1)
        return tmp_path / "work"

    seen = SeenIds(spill=folder, buffer=3)
    reference: dict[str, str] = {}
    for i in range(11):
        seen.add(f"id-{i}", f"f.jsonl:{i + 1}")
        reference[f"id-{i}"] = f"f.jsonl:{i + 1}"
    assert spills == [1] and seen.spilled == 9 and len(seen) == 11  # three flushes, one file
    assert (tmp_path / "work" / SeenIds.FILE).is_file()
    for doc_id, where in reference.items():  # spilled and still buffered alike
        assert seen.first(doc_id) == where and doc_id in seen
    # Ids never added are not found, including ones whose filter bits another id set.
    assert all(seen.first(f"other-{i}") is None for i in range(2000))
    seen.close()
    assert not (tmp_path / "work" / SeenIds.FILE).exists()


def test_io_duplicate_ids_are_found_across_spills(tmp_path):
    path = tmp_path / "in.jsonl"
    rows = [{"id": f"d{i}", "text": f"Review {i}."} for i in range(20)]
    rows[13] = {"id": "d2", "text": "A second record with an id read long before."}
    rows[17] = {"text": "Same words, no id."}
    rows[19] = {"text": "Same words, no id."}
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    seen = SeenIds(spill=lambda: tmp_path / "work", buffer=4)
    items = list(iter_inputs([str(path)], seen_ids=seen))
    assert seen.spilled >= 16  # d2 and the first "Same words" were in the file when looked up
    rejects = [x for x in items if not hasattr(x, "data")]
    assert [(r.source_line, r.code) for r in rejects] == [(14, "R006")]
    assert f"{path}:3" in rejects[0].reason
    ids = [x.data["__doc_id__"] for x in items if hasattr(x, "data")]
    same = stable_id("Same words, no id.")
    assert (ids[16], ids[18]) == (same, same + "-2")  # lines 18 and 20: both kept, distinct ids
    # The same reading with every id in a dict.
    plain = read_inputs([str(path)])
    assert [r.data["__doc_id__"] for r in plain.records] == ids
    assert [(r.source_line, r.reason) for r in plain.rejects] == [(r.source_line, r.reason) for r in rejects]
    seen.close()


def test_io_seen_ids_that_cannot_spill_say_where_and_why(tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the work folder should be")
    seen = SeenIds(spill=lambda: blocked / "work", buffer=2)
    seen.add("a", "f:1")
    with pytest.raises(PipelineError) as exc:
        seen.add("b", "f:2")
    msg = str(exc.value)
    assert "[E208]" in msg and str(blocked / "work") in msg and SeenIds.FILE in msg and "free space" in msg
