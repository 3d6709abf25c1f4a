"""``--format duckdb``: one ``cxnlp.duckdb`` database holding a run's tables and views over them.

The four tables keep the schema's column names and types (lists as ``LIST``, emotion scores as
``STRUCT``, timestamps as ``TIMESTAMPTZ``), every table and column carries its description from
:mod:`cxnlp.schema` as a DuckDB comment, and ``cxnlp_run`` records the schema version and the run
manifest. The views are the queries a data team writes first:

* ``stage_overview``: one row per stage in journey order with its negative share and top pain point;
* ``pain_point_quotes``: one row per example quote of each pain point (unnested, ranked);
* ``negative_segments``: negative segments with their document's date, rating, channel and source
  line, and their pain point's label;
* ``stage_weekly``: segments, negative and positive counts and net sentiment per stage and UTC week.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from .about import SCHEMA_VERSION
from .schema import REJECT_FIELDS, TABLES, arrow_schema

DUCKDB_FILE = "cxnlp.duckdb"

VIEWS: dict[str, tuple[str, str]] = {
    "stage_overview": (
        "One row per stage in journey order: volume, sentiment split, net sentiment, negative share, top pain point.",
        """
        SELECT stage, position, documents, segments, positive, neutral, negative, net_sentiment,
               CASE WHEN segments > 0 THEN negative::DOUBLE / segments END AS negative_share,
               mean_sentiment_score, top_emotions, top_pain_points[1] AS top_pain_point, top_pain_points
        FROM stage_summary
        ORDER BY position
        """,
    ),
    "pain_point_quotes": (
        "One row per example quote of each pain point, rank 1 closest to the pain point's centre.",
        """
        SELECT pain_point_id, stage, label, size,
               generate_subscripts(example_quotes, 1) AS quote_rank,
               unnest(example_quotes) AS quote,
               unnest(example_segment_ids) AS segment_id
        FROM pain_points
        """,
    ),
    "negative_segments": (
        "Negative segments with their document's date, rating, channel and source, and their pain point.",
        """
        SELECT s.segment_id, s.doc_id, s.position, s.stage, s.text, s.sentiment_score, s.emotion,
               s.pain_point_id, p.label AS pain_point_label,
               d.created_at, d.rating, d.channel, d.source_file, d.source_line
        FROM segments AS s
        JOIN documents AS d ON d.doc_id = s.doc_id
        LEFT JOIN pain_points AS p ON p.pain_point_id = s.pain_point_id
        WHERE s.sentiment = 'negative'
        """,
    ),
    "stage_weekly": (
        "Segments per stage and UTC week (weeks start on Monday) with their sentiment split and net sentiment.",
        """
        SELECT s.stage, date_trunc('week', timezone('UTC', d.created_at)) AS week,
               count(*) AS segments,
               count(*) FILTER (WHERE s.sentiment = 'negative') AS negative,
               count(*) FILTER (WHERE s.sentiment = 'positive') AS positive,
               100.0 * (count(*) FILTER (WHERE s.sentiment = 'positive')
                        - count(*) FILTER (WHERE s.sentiment = 'negative')) / count(*) AS net_sentiment
        FROM segments AS s
        JOIN documents AS d ON d.doc_id = s.doc_id
        WHERE s.stage IS NOT NULL AND d.created_at IS NOT NULL
        GROUP BY ALL
        ORDER BY week, s.stage
        """,
    ),
}
REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source_file", pa.string()),
        pa.field("source_line", pa.int64()),
        pa.field("code", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("raw", pa.string()),
    ]
)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _arrow(relation: Any) -> pa.Table:
    """A relation as an Arrow table, across DuckDB versions."""
    for method in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        if hasattr(relation, method):
            table = getattr(relation, method)()
            return table if isinstance(table, pa.Table) else table.read_all()
    raise RuntimeError("this DuckDB version cannot return Arrow tables")  # pragma: no cover


def write_duckdb(
    tables: dict[str, pa.Table],
    path: Path,
    rejects: Iterable[dict[str, Any]] = (),
    manifest: dict[str, Any] | None = None,
) -> Path:
    """Write ``tables`` (schema-typed Arrow tables), the rejects and the manifest into a new database."""
    import duckdb

    path = Path(path)
    con = duckdb.connect(str(path))
    try:
        con.execute("SET TimeZone = 'UTC'")
        for name, table in tables.items():
            con.register("_cxnlp_src", table)
            con.execute(f"CREATE TABLE {_ident(name)} AS SELECT * FROM _cxnlp_src")
            con.unregister("_cxnlp_src")
        reject_rows = pa.Table.from_pylist(
            [{k: r.get(k) for k in REJECT_FIELDS} for r in rejects], schema=REJECTS_SCHEMA
        )
        con.register("_cxnlp_src", reject_rows)
        con.execute("CREATE TABLE rejects AS SELECT * FROM _cxnlp_src")
        con.unregister("_cxnlp_src")
        info = manifest or {}
        run = pa.table(
            {
                "schema_version": [str(info.get("schema_version") or SCHEMA_VERSION)],
                "cxnlp_version": [str(info.get("cxnlp_version") or "")],
                "started_at": [str(info.get("started_at") or "")],
                "ended_at": [str(info.get("ended_at") or "")],
                "manifest": [json.dumps(info, default=str)],
            }
        )
        con.register("_cxnlp_src", run)
        con.execute("CREATE TABLE cxnlp_run AS SELECT * FROM _cxnlp_src")
        con.unregister("_cxnlp_src")
        _comment(con)
        for view, (description, sql) in VIEWS.items():
            con.execute(f"CREATE VIEW {_ident(view)} AS {sql}")
            con.execute(f"COMMENT ON VIEW {_ident(view)} IS {_literal(description)}")
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return path


def _comment(con: Any) -> None:
    for name, columns in TABLES.items():
        con.execute(
            f"COMMENT ON TABLE {_ident(name)} IS {_literal(f'cxnlp {name} (schema {SCHEMA_VERSION}); see docs/schema.md')}"
        )
        for c in columns:
            con.execute(f"COMMENT ON COLUMN {_ident(name)}.{_ident(c.name)} IS {_literal(c.description)}")
    con.execute("COMMENT ON TABLE rejects IS 'Every input record that was not analysed (rejects.jsonl).'")
    for field, description in REJECT_FIELDS.items():
        con.execute(f"COMMENT ON COLUMN rejects.{_ident(field)} IS {_literal(description)}")
    con.execute(
        "COMMENT ON TABLE cxnlp_run IS 'The run: schema version, cxnlp version, times and the run.json manifest (JSON text).'"
    )


def read_duckdb(path: Path, names: Iterable[str]) -> dict[str, pa.Table | None]:
    """The named tables of a ``cxnlp.duckdb``, cast back to the schema's Arrow types (with its metadata)."""
    import duckdb

    out: dict[str, pa.Table | None] = {}
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        present = {row[0] for row in con.sql("SELECT table_name FROM duckdb_tables()").fetchall()}
        for name in names:
            if name not in present:
                out[name] = None
                continue
            table = _arrow(con.sql(f"SELECT * FROM {_ident(name)}"))
            out[name] = _cast(name, table) if name in TABLES else table
    finally:
        con.close()
    return out


def _cast(name: str, table: pa.Table) -> pa.Table:
    """Schema types column by column (DuckDB gives ``tz=Etc/UTC``, ``list<l: ...>``), then the metadata."""
    base = arrow_schema(name)
    known = {f.name: f.type for f in base}
    for i, column in enumerate(table.column_names):
        target = known.get(column)
        if target is not None and not table.schema.field(i).type.equals(target):
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):  # foreign db: as is
                table = table.set_column(i, column, table.column(i).cast(target))
    return table.replace_schema_metadata(base.metadata)
