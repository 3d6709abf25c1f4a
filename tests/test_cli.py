"""End-to-end through the real CLI (click's runner in-process, and the installed entry point once)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cxnlp.cli import cli
from cxnlp.output import read_outputs
from cxnlp.schema import DEFAULT_STAGES, validate_table
from tests.conftest import FIXTURES, SAMPLES


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "demo"
    result = invoke("analyze", str(SAMPLES / "reviews.jsonl"), "-o", str(out), "--device", "cpu")
    assert result.exit_code == 0, result.output
    return out, result.output


def test_cli_analyze_samples_writes_every_output(sample_run):
    out, output = sample_run
    for name in (
        "documents.parquet",
        "segments.parquet",
        "pain_points.parquet",
        "stage_summary.parquet",
        "rejects.jsonl",
        "run.json",
        "report.html",
        "report.md",
    ):
        assert (out / name).is_file(), name
    assert "Report:" in output and "Journey" in output


def test_cli_analyze_samples_tables_match_the_schema(sample_run):
    tables = read_outputs(sample_run[0])
    for name in ("documents", "segments", "pain_points", "stage_summary"):
        assert validate_table(name, tables[name]) == [], name
        assert (
            tables[name].schema.metadata[b"cxnlp.schema_version"]
            == tables["manifest"]["schema_version"].encode()
        )
    docs = tables["documents"]
    assert {"product"} <= set(docs.column_names)  # input fields are preserved


def test_cli_analyze_samples_counts_add_up(sample_run):
    out, _ = sample_run
    tables = read_outputs(out)
    counts = tables["manifest"]["counts"]
    n_lines = sum(1 for line in (SAMPLES / "reviews.jsonl").read_text().splitlines() if line.strip())
    rejects = (out / "rejects.jsonl").read_text().splitlines()
    assert counts["read"] == n_lines == counts["analysed"] + counts["rejected"]
    assert tables["documents"].num_rows == counts["analysed"] and len(rejects) == counts["rejected"]
    assert (
        tables["segments"].num_rows
        == counts["segments"]
        == sum(tables["documents"].column("n_segments").to_pylist())
    )
    manifest = tables["manifest"]
    assert (
        manifest["inputs"][0]["sha256"]
        and manifest["models"]["heads"]["version"]
        and manifest["device"] == "cpu"
    )
    assert set(manifest["timings"]) >= {
        "read",
        "normalize",
        "segment",
        "embed",
        "journey",
        "sentiment",
        "emotion",
        "cluster",
        "aggregate",
    }


def test_cli_analyze_samples_covers_the_journey_and_finds_pain_points(sample_run):
    tables = read_outputs(sample_run[0])
    summary = tables["stage_summary"].to_pylist()
    assert [r["stage"] for r in summary] == list(DEFAULT_STAGES)
    assert all(r["segments"] > 0 for r in summary)
    pp = tables["pain_points"].to_pylist()
    real = [p for p in pp if not p["pain_point_id"].endswith("-other")]
    assert len(real) >= 5
    assert len({p["label"] for p in pp}) == len(pp)
    assert all(p["example_quotes"] and p["size"] >= 3 for p in real)
    seg_ids = set(tables["segments"].column("segment_id").to_pylist())
    assert all(set(p["example_segment_ids"]) <= seg_ids for p in pp)
    delivery = [p["label"] for p in real if p["stage"] == "delivery"]
    assert delivery, "the samples' recurring late-delivery complaints form a pain point"


def test_cli_rerun_replaces_outputs_atomically(sample_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(sample_run[0], out)
    first = json.loads((out / "run.json").read_text())["started_at"]
    result = invoke("analyze", str(FIXTURES / "mixed.jsonl"), "-o", str(out), "-q", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["started_at"] != first
    assert not (out / "documents.parquet").exists() and (out / "documents.csv").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folders left


def test_cli_refuses_to_replace_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = invoke("analyze", str(FIXTURES / "mixed.jsonl"), "-o", str(tmp_path), "-q")
    assert result.exit_code == 1 and "[E208]" in result.output
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_cli_bad_records_go_to_rejects_and_the_run_goes_on(tmp_path):
    result = invoke("analyze", str(FIXTURES / "bad.jsonl"), "-o", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert "10 records: 2 analysed, 8 rejected" in result.output
    rejects = [json.loads(l) for l in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["source_line"], r["code"]) for r in rejects] == [
        (2, "R001"),
        (3, "R001"),
        (4, "R004"),
        (5, "R005"),
        (6, "R002"),
        (7, "R006"),
        (8, "R003"),
        (9, "R004"),
    ]
    assert all(r["source_file"].endswith("bad.jsonl") and r["reason"] for r in rejects)


def test_cli_all_rejected_exits_1_after_writing_rejects(tmp_path):
    src = tmp_path / "empty.jsonl"
    src.write_text('{"text": ""}\n{"text": null}\n')
    result = invoke("analyze", str(src), "-o", str(tmp_path / "o"))
    assert result.exit_code == 1
    assert (
        "[E207] All 2 input records were rejected" in result.output
        and "field 'text' is empty" in result.output
    )
    assert len((tmp_path / "o" / "rejects.jsonl").read_text().splitlines()) == 2


def test_cli_missing_text_field_is_a_usage_error(tmp_path):
    src = tmp_path / "x.csv"
    src.write_text("id,review_txt\n1,hello\n")
    result = invoke("analyze", str(src), "-o", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert (
        f"Error: [E101] Input '{src}' has no text field" in result.output
        and "Did you mean 'review_txt'?" in result.output
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["--set", "cluster.min_clustr_size=3"], 2, "Did you mean 'min_cluster_size'?"),
        (["--set", "nonsense"], 2, "[E004]"),
        (["--device", "tpu"], 2, "[E005] Unknown device 'tpu'"),
        (["--text-field", "txt"], 2, "[E106] Field 'txt' (set for 'text') is not in"),
    ],
)
def test_cli_usage_errors_exit_2(tmp_path, args, code, text):
    result = invoke("analyze", str(FIXTURES / "mixed.jsonl"), "-o", str(tmp_path / "o"), *args)
    assert result.exit_code == code and text in result.output


def test_cli_missing_input_file(tmp_path):
    result = invoke("analyze", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o"))
    assert result.exit_code == 2 and "[E102]" in result.output and "nope.jsonl" in result.output


def test_cli_csv_parquet_and_gzip_inputs(tmp_path):
    rows = [json.loads(l) for l in (FIXTURES / "mixed.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows[:4]), tmp_path / "a.parquet")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows[4:]))
    result = invoke(
        "analyze",
        str(tmp_path / "a.parquet"),
        str(tmp_path / "b.jsonl.gz"),
        str(FIXTURES / "tickets.csv"),
        "-o",
        str(tmp_path / "o"),
        "-q",
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "o" / "run.json").read_text())
    assert [f["format"] for f in manifest["inputs"]] == ["parquet", "jsonl", "csv"]
    assert manifest["counts"] == {
        "read": 12,
        "analysed": 11,
        "rejected": 1,
        "segments": manifest["counts"]["segments"],
    }


def test_cli_every_command_has_help():
    for name, command in cli.commands.items():
        assert command.help, name
        result = invoke(name, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output


def test_python_dash_m_cxnlp_is_the_same_command_line():
    proc = subprocess.run(
        [sys.executable, "-m", "cxnlp", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert all(name in proc.stdout for name in cli.commands)


def test_cli_stdin_through_the_installed_entry_point(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "cxnlp")
    data = '{"text": "The delivery was late again."}\n{"text": "Lovely staff at the help desk."}\n'
    proc = subprocess.run(
        [exe, "analyze", "-", "-o", str(tmp_path / "o"), "-q"],
        input=data,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    counts = json.loads((tmp_path / "o" / "run.json").read_text())["counts"]
    assert counts["read"] == counts["analysed"] == 2
