"""Tests for cxnlp.warehouse: ``--format duckdb`` writes one database that can be queried, no models."""

from __future__ import annotations

import json

import duckdb
import pytest

from cxnlp.output import read_outputs
from cxnlp.schema import TABLES, arrow_schema
from tests.test_report import STAGES, make_analysis


def one(con, sql: str) -> tuple:
    return con.sql(sql).fetchall()[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = make_analysis().write(tmp_path_factory.mktemp("duck") / "run", "duckdb")
    return out


@pytest.fixture()
def con(run):
    con = duckdb.connect(str(run / "cxnlp.duckdb"), read_only=True)
    yield con
    con.close()


def test_warehouse_writes_one_database_and_no_table_files(run) -> None:
    names = sorted(p.name for p in run.iterdir())
    assert "cxnlp.duckdb" in names and not [n for n in names if n.endswith((".parquet", ".csv", ".wal"))]
    assert json.loads((run / "run.json").read_text())["outputs"]["database"] == "cxnlp.duckdb"


def test_warehouse_tables_keep_the_schema(con) -> None:
    tables = {r[0] for r in con.sql("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert tables == {*TABLES, "rejects", "cxnlp_run"}
    for name, columns in TABLES.items():
        got = [
            r[0]
            for r in con.sql(
                f"SELECT column_name FROM duckdb_columns() WHERE table_name = '{name}' ORDER BY column_index"
            ).fetchall()
        ]
        assert got[: len(columns)] == [c.name for c in columns], name
    comment = one(
        con, "SELECT comment FROM duckdb_columns() WHERE table_name = 'segments' AND column_name = 'char_end'"
    )
    assert comment == ("End offset (exclusive) in documents.text.",)
    assert one(con, "SELECT schema_version FROM cxnlp_run") == ("1.0",)
    assert one(con, "SELECT count(*) FROM rejects") == (2,)
    assert one(con, "SELECT emotion_scores.anger FROM documents WHERE doc_id = 'd1'") == (0.5,)


def test_warehouse_views_answer_the_first_questions(con) -> None:
    overview = con.sql(
        "SELECT stage, segments, negative_share, top_pain_point FROM stage_overview"
    ).fetchall()
    assert [r[0] for r in overview] == STAGES
    delivery = overview[STAGES.index("delivery")]
    assert delivery[1] == 6 and delivery[2] == pytest.approx(4 / 6) and delivery[3].startswith("late parcel")
    quotes = con.sql(
        "SELECT pain_point_id, quote_rank, segment_id FROM pain_point_quotes ORDER BY pain_point_id, quote_rank"
    ).fetchall()
    assert [(q[0], q[1]) for q in quotes] == [
        ("delivery-1", 1),
        ("delivery-1", 2),
        ("delivery-other", 1),
        ("delivery-other", 2),
    ]
    negative = one(con, "SELECT count(*), count(created_at), count(pain_point_label) FROM negative_segments")
    assert negative == (7, 7, 4)  # every negative segment with its document's date; 4 are in a pain point
    weekly = con.sql(
        "SELECT stage, week, segments FROM stage_weekly WHERE stage = 'delivery' ORDER BY week"
    ).fetchall()
    assert [(str(w.date()), n) for _, w, n in weekly] == [("2024-03-04", 4), ("2024-03-11", 2)]


def test_warehouse_reads_back_like_parquet(run, tmp_path) -> None:
    duck = read_outputs(run)
    parquet = read_outputs(make_analysis().write(tmp_path / "pq"))
    for name in TABLES:
        base = arrow_schema(name)
        assert duck[name].schema.metadata[b"cxnlp.schema_version"] == b"1.0"
        for field in base:
            assert duck[name].schema.field(field.name).type.equals(field.type), (name, field.name)
        assert duck[name].num_rows == parquet[name].num_rows
    assert duck["segments"].column("text").to_pylist() == parquet["segments"].column("text").to_pylist()
