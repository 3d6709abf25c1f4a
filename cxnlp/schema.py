"""The data contract: every output table, its columns, their types and allowed values.

This module is the single source of truth. ``docs/schema.md`` is generated from it
(``python -m cxnlp.schema > docs/schema.md``) and a test checks that the two agree.
Column names are stable across versions; new columns may be added, none renamed or removed
without a major schema version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .about import SCHEMA_VERSION

DEFAULT_STAGES: tuple[str, ...] = (
    "awareness",
    "consideration",
    "purchase",
    "delivery",
    "onboarding",
    "usage",
    "support",
    "billing",
    "loyalty",
)
SENTIMENTS: tuple[str, ...] = ("negative", "neutral", "positive")
CX_EMOTIONS: tuple[str, ...] = (
    "joy",
    "gratitude",
    "satisfaction",
    "anger",
    "annoyance",
    "disappointment",
    "sadness",
    "fear",
    "confusion",
    "surprise",
    "neutral",
)
NEGATIVE_EMOTIONS: frozenset[str] = frozenset(
    {"anger", "annoyance", "disappointment", "sadness", "fear", "confusion"}
)
OTHER_PAIN_POINT = "other"
PAIN_POINT_STATUSES: tuple[str, ...] = ("new", "growing", "shrinking", "stable", "gone")
DOCUMENT_FLAGS: tuple[str, ...] = ("truncated", "created_at_unparsed", "rating_unparsed", "id_generated")

EMOTION_SCORES = pa.struct([pa.field(e, pa.float32()) for e in CX_EMOTIONS])
TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str
    allowed: str = ""
    nullable: bool = False

    def field(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable)


_STAGE_NOTE = "a stage id of the taxonomy in use (default: " + ", ".join(DEFAULT_STAGES) + ")"

TABLES: dict[str, list[Column]] = {
    "documents": [
        Column("doc_id", pa.string(), "Input id, or a stable generated one (`doc-` + hash of the text)."),
        Column("text", pa.string(), "The normalised text that was analysed; segment offsets refer to it."),
        Column("created_at", TIMESTAMP, "Input timestamp in UTC.", nullable=True),
        Column("rating", pa.float64(), "Input rating, NPS or CSAT value as given.", nullable=True),
        Column("channel", pa.string(), "Input channel (app store, email, chat, ...).", nullable=True),
        Column("n_segments", pa.int32(), "Number of segments the text was split into."),
        Column(
            "stages", pa.list_(pa.string()), "Union of the segments' stages, in journey order.", _STAGE_NOTE
        ),
        Column("primary_stage", pa.string(), "The stage with the most confident segment.", _STAGE_NOTE, True),
        Column("sentiment", pa.string(), "Document sentiment label.", " | ".join(SENTIMENTS)),
        Column(
            "sentiment_score",
            pa.float32(),
            "P(positive) - P(negative), length-weighted over segments.",
            "[-1, 1]",
        ),
        Column("emotion", pa.string(), "Most frequent non-neutral segment emotion.", " | ".join(CX_EMOTIONS)),
        Column("emotion_scores", EMOTION_SCORES, "Mean per-emotion score over segments.", "each in [0, 1]"),
        Column("flags", pa.list_(pa.string()), "What was changed on the way in.", " | ".join(DOCUMENT_FLAGS)),
        Column("source_file", pa.string(), "Input file the record came from (`-` for stdin)."),
        Column("source_line", pa.int64(), "Line (JSONL, CSV) or row (Parquet) number in that file, from 1."),
        Column(
            "language",
            pa.string(),
            "Language detected by CLD2, ISO 639-1 (`en`, `fr`, ...); `und` when not reliable.",
            nullable=True,
        ),
    ],
    "segments": [
        Column("doc_id", pa.string(), "The document the segment belongs to."),
        Column("segment_id", pa.string(), "`<doc_id>:<position>`."),
        Column("position", pa.int32(), "Segment index within the document, from 0."),
        Column("text", pa.string(), "Segment text: a sentence or a contrastive clause."),
        Column("char_start", pa.int32(), "Start offset in documents.text."),
        Column("char_end", pa.int32(), "End offset (exclusive) in documents.text."),
        Column("stages", pa.list_(pa.string()), "Stages whose score passed their threshold.", _STAGE_NOTE),
        Column("stage", pa.string(), "The most confident stage, null when none passed.", _STAGE_NOTE, True),
        Column(
            "stage_score", pa.float32(), "Probability of `stage` (of the best stage when null).", "[0, 1]"
        ),
        Column("sentiment", pa.string(), "Segment sentiment label.", " | ".join(SENTIMENTS)),
        Column("sentiment_score", pa.float32(), "P(positive) - P(negative).", "[-1, 1]"),
        Column("emotion", pa.string(), "Top CX emotion.", " | ".join(CX_EMOTIONS)),
        Column("emotion_score", pa.float32(), "Score of the top emotion.", "[0, 1]"),
        Column("emotion_scores", EMOTION_SCORES, "Score for every CX emotion.", "each in [0, 1]"),
        Column(
            "pain_point_id",
            pa.string(),
            "Pain point the segment belongs to; `<stage>-other` for unclustered negative segments; "
            "null for segments that were not clustered.",
            nullable=True,
        ),
    ],
    "pain_points": [
        Column(
            "pain_point_id",
            pa.string(),
            "`<stage>-<n>` (n from 1, largest first) or `<stage>-other`. With `--baseline`, a matched pain point "
            "keeps the earlier run's id and new ones continue that run's numbering.",
        ),
        Column("stage", pa.string(), "Stage the pain point belongs to.", _STAGE_NOTE),
        Column("label", pa.string(), "Short readable label, unique within the run."),
        Column("keyphrases", pa.list_(pa.string()), "Top keyphrases by class-based TF-IDF."),
        Column("size", pa.int32(), "Number of segments (0 on `gone` rows)."),
        Column("share_of_stage_negative", pa.float32(), "size / negative segments of the stage.", "[0, 1]"),
        Column("n_documents", pa.int32(), "Documents with at least one segment in the pain point."),
        Column("mean_sentiment_score", pa.float32(), "Mean segment sentiment score.", "[-1, 1]"),
        Column(
            "top_emotions", pa.list_(pa.string()), "Most frequent segment emotions.", " | ".join(CX_EMOTIONS)
        ),
        Column("first_seen", TIMESTAMP, "Earliest created_at among its documents.", nullable=True),
        Column("last_seen", TIMESTAMP, "Latest created_at among its documents.", nullable=True),
        Column(
            "example_segment_ids",
            pa.list_(pa.string()),
            "Segments closest to the centre, not near-duplicates.",
        ),
        Column("example_quotes", pa.list_(pa.string()), "The text of those segments."),
        Column(
            "status",
            pa.string(),
            "Against the `--baseline` run: new; growing, shrinking or stable (size relative to the run's segments, "
            "beyond `cluster.change_ratio` and 2 Poisson standard deviations); gone (an earlier pain point with no "
            "match, kept as a row with size 0). Null without a baseline.",
            " | ".join(PAIN_POINT_STATUSES),
            True,
        ),
        Column(
            "baseline_size",
            pa.int32(),
            "Size of the matched pain point in the `--baseline` run.",
            nullable=True,
        ),
        Column(
            "weekly_counts",
            pa.list_(pa.int32()),
            "Segments per week (weeks start on Monday, UTC) from the run's first to its last dated week; "
            "null without timestamps.",
            nullable=True,
        ),
        Column(
            "trend",
            pa.float32(),
            "Least-squares slope of `weekly_counts` divided by their mean: +0.1 = about +10% a week. "
            "Null with fewer than 3 weeks.",
            nullable=True,
        ),
        Column(
            "centroid",
            pa.list_(pa.float32()),
            "Unit-length mean embedding of its segments (the encoder's dimension); a later run matches on it.",
        ),
    ],
    "stage_summary": [
        Column("stage", pa.string(), "Stage id, in journey order.", _STAGE_NOTE),
        Column("position", pa.int32(), "Position of the stage in the journey, from 0."),
        Column("documents", pa.int32(), "Documents that speak of the stage."),
        Column("segments", pa.int32(), "Segments whose `stage` is this stage."),
        Column("positive", pa.int32(), "Positive segments."),
        Column("neutral", pa.int32(), "Neutral segments."),
        Column("negative", pa.int32(), "Negative segments."),
        Column(
            "net_sentiment",
            pa.float32(),
            "100 * (positive - negative) / segments; null without segments.",
            "[-100, 100]",
            True,
        ),
        Column("mean_sentiment_score", pa.float32(), "Mean segment sentiment score.", "[-1, 1]", True),
        Column(
            "top_emotions",
            pa.list_(pa.string()),
            "Up to 3 most frequent non-neutral emotions.",
            " | ".join(CX_EMOTIONS),
        ),
        Column("top_pain_points", pa.list_(pa.string()), "Labels of up to 5 largest pain points."),
    ],
}

REJECT_FIELDS: dict[str, str] = {
    "source_file": "Input file (`-` for stdin).",
    "source_line": "Line (JSONL, CSV) or row (Parquet) number, from 1.",
    "code": "Reason code from the error catalog (R001 ...).",
    "reason": "Why the record was not analysed.",
    "raw": "The raw record, truncated to 2,000 characters.",
}

SUMMARY_FIELDS: dict[str, str] = {
    "schema_version": "Schema version of this contract (string).",
    "cxnlp_version": "cxnlp version that analysed the run.",
    "generated_at": "When this file was written (ISO 8601, UTC); `cxnlp report` rewrites it.",
    "analysed_at": "When the run ended (run.json `ended_at`).",
    "period": "`{start, end}`: first and last document date (YYYY-MM-DD, UTC); null without timestamps.",
    "counts": "`{read, analysed, rejected, segments, segments_without_stage}`; read = analysed + rejected.",
    "sentiment": "`{positive, neutral, negative}` segment counts, `negative_share` (0..1) and `net_sentiment` "
    "(100 * (positive - negative) / segments; null without segments).",
    "mean_rating": "Mean input rating; null without ratings.",
    "rated_documents": "Documents with a rating.",
    "worst_stage": "Stage with the lowest net sentiment among those with at least 5 segments; null if none.",
    "stages": "One object per stage in journey order: `stage`, `position`, `documents`, `segments`, `positive`, "
    "`neutral`, `negative`, `net_sentiment`, `negative_share`, `mean_sentiment_score`, `top_emotions`, "
    "`top_pain_point` (`{pain_point_id, label, size}` or null).",
    "biggest_pain_points": "Up to 10 clustered pain points (no `-other` groups), largest first: `pain_point_id`, "
    "`stage`, `label`, `size`, `share_of_stage_negative`, `n_documents`, `mean_sentiment_score`, `status`, `trend`.",
    "drivers": "Null without at least 20 rated documents; else up to 10 stages and pain points that go with lower "
    "ratings, largest pull on the mean first: `kind` (stage | pain point), `name`, `stage`, `documents` (rated, "
    "with the issue), `mean_rating_with`, `mean_rating_without`, `impact` (with - without).",
    "churn_risk": "`{documents, share, by_stage}`: documents that speak of cancelling, switching or leaving in a "
    "segment that is not positive, their share of the analysed documents, and per stage.",
    "rising_pain_points": "Pain points whose weekly trend is +10% a week or more, with at least 10 segments, "
    "steepest first (same fields as `biggest_pain_points`).",
    "rejects_by_code": "Rejected records per reason code, most frequent first.",
    "baseline": "Null without a baseline run; else `path`, `analysed_documents`, `net_sentiment`, "
    "`net_sentiment_change`, `negative_share`, per-stage `stages` (`stage`, `segments`, `net_sentiment`, "
    "`net_sentiment_change`), `pain_point_statuses` (counts per status; null when the pain points could not "
    "be matched) and `surging_pain_points` (new and growing: `stage`, `label`, `status`, `size`, `baseline_size`).",
}


def arrow_schema(table: str, extra: pa.Schema | None = None) -> pa.Schema:
    """The Arrow schema of ``table``; ``extra`` fields (input fields kept on documents) are appended."""
    fields = [c.field() for c in TABLES[table]]
    if extra is not None:
        fields.extend(extra)
    return pa.schema(
        fields, metadata={b"cxnlp.schema_version": SCHEMA_VERSION.encode(), b"cxnlp.table": table.encode()}
    )


def snapshot() -> dict[str, Any]:
    """Every table's columns with their types, the rejects and summary.json keys, for the pinning test.

    ``tests/fixtures/schema_v<major>.json`` holds the committed copy; regenerate it after a deliberate
    addition with ``python -c "import json, cxnlp.schema as s; print(json.dumps(s.snapshot(), indent=2))"``.
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "tables": {
            name: {c.name: f"{c.type}{', nullable' if c.nullable else ''}" for c in columns}
            for name, columns in TABLES.items()
        },
        "rejects.jsonl": list(REJECT_FIELDS),
        "summary.json": list(SUMMARY_FIELDS),
    }


def _strings(values: pd.Series, whole: bool = True) -> pa.Array | pa.ChunkedArray:
    """``values`` as Arrow strings; chunks joined into one array only with ``whole`` (a copy)."""
    arr = pa.array(values.array, from_pandas=True)
    if whole and isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return (
        arr
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
        else pc.cast(arr, pa.string())
    )


def positions(values: pd.Series, keys: pd.Series) -> np.ndarray:
    """For each of ``values`` (say, the segments' doc ids), the position of its first occurrence in
    ``keys`` (the documents' doc ids), -1 where it is missing. Compared as strings, by Arrow's hash
    lookup: no Python string is made of either side, which for millions of ids is hundreds of MB."""
    if not len(values):
        return np.zeros(0, dtype=np.int64)
    found = pc.index_in(_strings(values, whole=False), value_set=_strings(keys), skip_nulls=True)
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def stage_codes(stages: pd.Series, stage_ids: list[str]) -> np.ndarray:
    """Each row's stage as its position in ``stage_ids`` (-1: missing or none of them), one or two bytes
    a row instead of a string."""
    return np.asarray(pd.Categorical(stages, categories=stage_ids).codes)


def column_names(table: str) -> list[str]:
    return [c.name for c in TABLES[table]]


def list_columns(table: str) -> tuple[str, ...]:
    """Names of ``table``'s list-typed columns (Parquet gives arrays, CSV gives JSON text for them)."""
    return tuple(c.name for c in TABLES[table] if pa.types.is_list(c.type))


def validate_table(table: str, data: pa.Table) -> list[str]:
    """Problems with ``data`` as table ``table``: missing columns, wrong types, values out of range."""
    problems: list[str] = []
    for col in TABLES[table]:
        if col.name not in data.column_names:
            problems.append(f"{table}.{col.name} is missing")
            continue
        got = data.schema.field(col.name).type
        if not got.equals(col.type):
            problems.append(f"{table}.{col.name} has type {got}, expected {col.type}")
        if not col.nullable and data.column(col.name).null_count:
            problems.append(f"{table}.{col.name} has {data.column(col.name).null_count} nulls")
    names = set(data.column_names)
    for name, allowed in (("sentiment", SENTIMENTS), ("emotion", CX_EMOTIONS)):
        if name in names:
            bad = set(data.column(name).to_pylist()) - set(allowed)
            if bad:
                problems.append(f"{table}.{name} has values outside {allowed}: {sorted(map(str, bad))[:5]}")
    if table == "pain_points" and "status" in names:
        bad = set(data.column("status").to_pylist()) - set(PAIN_POINT_STATUSES) - {None}
        if bad:
            problems.append(
                f"{table}.status has values outside {PAIN_POINT_STATUSES}: {sorted(map(str, bad))[:5]}"
            )
    for name in ("sentiment_score", "mean_sentiment_score"):
        if name in names:
            values = [v for v in data.column(name).to_pylist() if v is not None]
            if values and (min(values) < -1.0001 or max(values) > 1.0001):
                problems.append(f"{table}.{name} is outside [-1, 1]")
    return problems


def render_markdown() -> str:
    """The text of docs/schema.md."""
    out = [
        "# Output schema",
        "",
        f"Schema version **{SCHEMA_VERSION}**, recorded in `run.json` (`schema_version`) and in each Parquet",
        "file's metadata (`cxnlp.schema_version`). This page is generated from `cxnlp/schema.py`",
        "(`python -m cxnlp.schema > docs/schema.md`); a test fails when the two disagree.",
        "",
        "Column names are stable: later versions may add columns, never rename or drop them without a",
        "new major schema version. `documents` also keeps every other input field as its own column",
        "(prefixed `input_` when the name clashes with a cxnlp column; nested values as JSON text).",
        "",
        "Emotion scores are a struct with one float field per CX emotion: "
        + ", ".join(f"`{e}`" for e in CX_EMOTIONS)
        + ".",
        "",
    ]
    for table, columns in TABLES.items():
        out += [
            f"## `{table}`",
            "",
            "| column | type | nullable | description | allowed values |",
            "|---|---|---|---|---|",
        ]
        for c in columns:
            typ = "struct<emotion: float>" if c.type.equals(EMOTION_SCORES) else str(c.type)
            out.append(
                f"| `{c.name}` | `{typ}` | {'yes' if c.nullable else 'no'} | {c.description} | {c.allowed} |"
            )
        out.append("")
    out += [
        "## `rejects.jsonl`",
        "",
        "One JSON object per input record that was not analysed.",
        "",
        "| field | description |",
        "|---|---|",
    ]
    out += [f"| `{k}` | {v} |" for k, v in REJECT_FIELDS.items()]
    out.append("")
    out += [
        "## `summary.json`",
        "",
        "The headline figures for dashboards: one JSON object, written by every run and by `cxnlp report`, with",
        "the same numbers as the report. Keys are stable like column names; numbers are rounded (shares to 4",
        "decimals, net sentiment to 2).",
        "",
        "| key | description |",
        "|---|---|",
    ]
    out += [f"| `{k}` | {v} |" for k, v in SUMMARY_FIELDS.items()]
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    print(render_markdown(), end="")
