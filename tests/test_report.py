"""Tests for cxnlp.report: a small hand-built result, no models."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pandas as pd
import pytest

from cxnlp.report import render_html, render_markdown
from cxnlp.schema import DEFAULT_STAGES, column_names

XSS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", '"><svg onload=alert(1)>']
RAW_TAGS = ["<script>alert", "<img src=x", "<svg onload", "onload=alert(1)>"]
SECTIONS = [
    "Customer experience report",
    "Headline numbers",
    "Journey map",
    "Stages",
    "Alerts",
    "Pain points",
    "Trends",
    "Data quality",
]
STAGES = list(DEFAULT_STAGES)
START = pd.Timestamp("2024-03-04", tz="UTC")

# doc_id, stage, sentiment, score, emotion, text, days after START
SEGMENTS = [
    ("d1", "delivery", "negative", -0.9, "anger", "The parcel arrived two weeks late.", 0),
    ("d1", "delivery", "negative", -0.8, "annoyance", "Nobody told me where my parcel was. " + XSS[0], 0),
    ("d2", "delivery", "negative", -0.7, "disappointment", "Box was crushed on arrival.", 3),
    ("d2", "delivery", "positive", 0.6, "joy", "The courier was friendly though.", 3),
    ("d3", "delivery", "negative", -0.6, "anger", "Late again, third time this month.", 9),
    ("d3", "delivery", "neutral", 0.0, "neutral", "It came on a Tuesday.", 9),
    ("d4", "support", "negative", -0.95, "anger", "Support never answered my emails. " + XSS[1], 10),
    ("d4", "support", "negative", -0.5, "confusion", "The help pages contradict each other.", 10),
    ("d5", "support", "positive", 0.9, "gratitude", "Anna on chat fixed it in five minutes!", 16),
    ("d5", "support", "positive", 0.8, "satisfaction", "Great follow-up email.", 16),
    ("d5", "usage", "positive", 0.7, "joy", "The app is fast and easy. " + XSS[2], 17),
    ("d6", "usage", "negative", -0.4, "annoyance", "Crashes when I open settings.", 20),
    ("d6", None, "neutral", 0.0, "neutral", "Anyway.", 20),
]


def _segments() -> pd.DataFrame:
    rows = []
    for i, (doc, stage, sentiment, score, emotion, text, _) in enumerate(SEGMENTS):
        rows.append(
            {
                "doc_id": doc,
                "segment_id": f"{doc}:{i}",
                "position": i,
                "text": text,
                "char_start": 0,
                "char_end": len(text),
                "stages": [stage] if stage else [],
                "stage": stage,
                "stage_score": 0.8,
                "sentiment": sentiment,
                "sentiment_score": score,
                "emotion": emotion,
                "emotion_score": 0.7,
                "emotion_scores": {emotion: 0.7},
                "pain_point_id": None,
                "_embedding_row": i,
            }
        )
    frame = pd.DataFrame(rows)
    frame.loc[[0, 4], "pain_point_id"] = "delivery-1"
    frame.loc[[1, 2], "pain_point_id"] = "delivery-other"
    return frame


def _documents(timestamps: bool = True, ratings: bool = True) -> pd.DataFrame:
    days = {doc: day for doc, *_, day in SEGMENTS}
    rows = []
    for doc, day in days.items():
        stages = [s for d, s, *_ in SEGMENTS if d == doc and s]
        rows.append(
            {
                "doc_id": doc,
                "text": "...",
                "created_at": START + pd.Timedelta(days=day) if timestamps else pd.NaT,
                "rating": float(day % 5 + 1) if ratings else None,
                "channel": XSS[1] if doc == "d4" else "app store",
                "n_segments": sum(1 for d, *_ in SEGMENTS if d == doc),
                "stages": sorted(set(stages), key=STAGES.index),
                "primary_stage": stages[0] if stages else None,
                "sentiment": "negative",
                "sentiment_score": -0.2,
                "emotion": "anger",
                "emotion_scores": {"anger": 0.5},
                "flags": ["truncated"] if doc == "d1" else [],
                "source_file": "reviews.jsonl",
                "source_line": len(rows) + 1,
                "input_store": "nl",
            }
        )
    frame = pd.DataFrame(rows)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


def _pain_points() -> pd.DataFrame:
    rows = [
        {
            "pain_point_id": "delivery-other",
            "stage": "delivery",
            "label": "other delivery issues",
            "keyphrases": ["parcel"],
            "size": 2,
            "share_of_stage_negative": 0.5,
            "n_documents": 2,
            "mean_sentiment_score": -0.75,
            "top_emotions": ["annoyance"],
            "first_seen": START,
            "last_seen": START + pd.Timedelta(days=3),
            "example_segment_ids": ["d1:1"],
            "example_quotes": [
                "Nobody told me where my parcel was. " + XSS[0],
                "Box was crushed on arrival.",
            ],
        },
        {
            "pain_point_id": "delivery-1",
            "stage": "delivery",
            "label": "late parcel | " + XSS[2],
            "keyphrases": ["late parcel"],
            "size": 2,
            "share_of_stage_negative": 0.5,
            "n_documents": 2,
            "mean_sentiment_score": -0.75,
            "top_emotions": ["anger"],
            "first_seen": START,
            "last_seen": START + pd.Timedelta(days=9),
            "example_segment_ids": ["d1:0", "d3:4"],
            "example_quotes": [
                "# Late again | third time " + XSS[1] + "\n> not a quote",
                "The parcel arrived two weeks late.",
            ],
        },
    ]
    return pd.DataFrame(rows, columns=column_names("pain_points"))


def _stage_summary(
    segments: pd.DataFrame, documents: pd.DataFrame, pain_points: pd.DataFrame
) -> pd.DataFrame:
    from cxnlp.aggregate import stage_summary

    return stage_summary(documents, segments, pain_points, STAGES, 5)


def make_result(timestamps: bool = True, ratings: bool = True, pain_points: bool = True) -> SimpleNamespace:
    segments, documents = _segments(), _documents(timestamps, ratings)
    pp = _pain_points() if pain_points else pd.DataFrame(columns=column_names("pain_points"))
    if not pain_points:
        segments["pain_point_id"] = None
    rejects = [
        SimpleNamespace(
            source_file=XSS[0] + ".jsonl", source_line=7, code="R001", reason="empty text " + XSS[2], raw="{}"
        ),
        SimpleNamespace(source_file="reviews.jsonl", source_line=9, code="R002", reason="not JSON", raw="{"),
    ]
    manifest = {
        "cxnlp_version": "0.1.0",
        "schema_version": "1.0",
        "started_at": "2024-04-01T10:00:00+00:00",
        "ended_at": "2024-04-01T10:00:05+00:00",
        "seconds": 5.0,
        "device": "cpu",
        "inputs": [
            {
                "path": "data/reviews.jsonl",
                "format": "jsonl",
                "bytes": 2048,
                "sha256": "ab" * 32,
                "records": 7,
            },
            {
                "path": "in/" + XSS[1] + ".csv",
                "format": "csv",
                "bytes": 10,
                "sha256": "cd" * 32,
                "records": 1,
            },
        ],
        "counts": {"read": 8, "analysed": 6, "rejected": 2, "segments": len(segments)},
        "rejects_by_code": {"R001": 1, "R002": 1},
        "models": {"heads": {"name": "cx-heads", "version": "1"}, "encoder": {"name": "all-MiniLM-L6-v2"}},
        "stages": STAGES,
        "timings": {"read": 0.01, "segment": 0.4, "embed": 2.5},
    }
    config = SimpleNamespace(report=SimpleNamespace(verbatims=2, top_pain_points=3))
    return SimpleNamespace(
        documents=documents,
        segments=segments,
        pain_points=pp,
        stage_summary=_stage_summary(segments, documents, pp),
        manifest=manifest,
        stage_ids=STAGES,
        rejects=rejects,
        config=config,
    )


@pytest.fixture(autouse=True)
def _fixed_clock(monkeypatch):  # type: ignore[no-untyped-def]
    """A report's header says when it was generated, to the minute: two renders that a test compares
    must not straddle a minute (they did, now and then, in a slow full run)."""
    from datetime import datetime, timezone

    from cxnlp import report

    monkeypatch.setattr(report, "_now", lambda: datetime(2026, 11, 26, 12, 0, 30, tzinfo=timezone.utc))


@pytest.fixture(scope="module")
def result() -> SimpleNamespace:
    return make_result()


@pytest.fixture(scope="module")
def html(result: SimpleNamespace) -> str:
    return render_html(result)


@pytest.fixture(scope="module")
def markdown(result: SimpleNamespace) -> str:
    return render_markdown(result)


def _h2(html: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", html)


def test_report_html_has_every_section_in_order(html: str) -> None:
    assert "<h1>Customer experience report</h1>" in html
    assert _h2(html) == SECTIONS[1:]


def test_report_header_names_inputs_period_and_version(html: str) -> None:
    header = html.split('<section id="headline">')[0]
    assert "reviews.jsonl" in header
    assert "2024-03-04" in header and "2024-03-24" in header
    assert "cxnlp 0.1.0" in header


def test_report_stages_appear_in_journey_order(html: str) -> None:
    for section in ("journey", "stages"):
        body = html.split(f'<section id="{section}">')[1].split("</section>")[0]
        found = re.findall(r'id="stage-([a-z]+)"' if section == "stages" else r'href="#stage-([a-z]+)"', body)
        assert found == STAGES


def test_report_empty_stage_is_greyed_and_worst_stage_marked(html: str) -> None:
    journey = html.split('<section id="journey">')[1].split("</section>")[0]
    cards = re.findall(r'<div class="jstage([^"]*)"', journey)
    assert len(cards) == len(STAGES)
    by_stage = dict(zip(STAGES, cards))
    assert "empty" in by_stage["awareness"]
    assert "worst" in by_stage["delivery"] and "empty" not in by_stage["delivery"]
    assert sum("worst" in c for c in cards) == 1


def test_report_headline_numbers(html: str) -> None:
    headline = html.split('<section id="headline">')[1].split("</section>")[0]
    # 13 segments: 7 negative, 4 positive -> 54% negative, net 100 * (4 - 7) / 13 = -23
    assert "54%" in headline
    assert "−23" in headline
    assert "delivery" in headline  # the stage that hurts most (support has only 4 segments)
    assert "late parcel" in headline  # the biggest clustered pain point, not the "other" group


def test_report_other_pain_point_is_last_and_labelled(html: str) -> None:
    card = html.split('id="stage-delivery"')[1].split("</details>")[0]
    assert card.index("late parcel") < card.index("other delivery issues")
    assert '<span class="badge other">other</span>' in card
    assert card.count("<blockquote>") == 4  # the quotes of both groups


def test_report_verbatims_follow_config(html: str) -> None:
    card = html.split('id="stage-delivery"')[1].split("</details>")[0]
    assert card.count('<blockquote class="neg">') == 2
    assert card.count('<blockquote class="pos">') == 1  # only one positive delivery segment
    assert card.index("The parcel arrived two weeks late.", card.index("Most negative")) > 0


def test_report_has_no_external_resources(html: str) -> None:
    lowered = html.lower()
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", lowered)
    assert "http://" not in lowered and "https://" not in lowered
    assert "<link" not in lowered
    assert not re.search(r"<script[^>]*\bsrc\s*=", lowered)
    assert "@import" not in lowered and "url(" not in lowered
    assert "default-src 'none'" in html


def test_report_escapes_xss_in_html(html: str) -> None:
    for payload in XSS + RAW_TAGS:
        assert payload not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the segment text is shown, escaped
    assert html.count("<script") == 1  # only the report's own inline script


def test_report_escapes_xss_in_markdown(markdown: str) -> None:
    for payload in XSS + RAW_TAGS:
        assert payload not in markdown
    assert "<" not in markdown and ">" not in markdown.replace("\n  > ", "\n")


def test_report_markdown_neutralises_quotes(markdown: str) -> None:
    quote_lines = [line for line in markdown.splitlines() if line.startswith("  > ")]
    assert quote_lines
    late_quote = next(line for line in quote_lines if "Late again" in line)
    assert (
        "\n" not in late_quote
        and "\\# Late again \\| third" in late_quote
        and "&gt; not a quote" in late_quote
    )
    late = next(line for line in markdown.splitlines() if "late parcel" in line and line.startswith("|"))
    assert late.count("|") - late.count("\\|") == 9  # the label's pipes never split the table row


def test_report_markdown_journey_table_has_all_stages(markdown: str) -> None:
    assert markdown.startswith("# Customer experience report")
    rows = [line for line in markdown.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [row.split("|")[2].strip().split(" ")[0] for row in rows] == STAGES
    assert "## Headline numbers" in markdown and "## Data quality" in markdown
    assert "Read 8 = analysed 6 + rejected 2" in markdown


def test_report_data_quality_shows_identity_and_rejects(html: str) -> None:
    quality = html.split('<section id="data-quality">')[1]
    assert "8 = 6 + 2" in quality and "✓ holds" in quality
    assert "R001" in quality and "R002" in quality
    assert "abababababab…" in quality  # sha256 shortened
    assert "embed" in quality and "cpu" in quality


def test_report_trends_chart_weekly_svg(html: str) -> None:
    trends = html.split('<section id="trends">')[1].split("</section>")[0]
    assert "per week" in trends
    assert trends.count("<svg") == 1 + 3  # all segments + the three stages with segments


def test_report_renders_without_pain_points() -> None:
    result = make_result(pain_points=False)
    html, markdown = render_html(result), render_markdown(result)
    assert "No pain points were found" in html
    assert _h2(html) == SECTIONS[1:]
    assert "No pain points were found" in markdown


def test_report_renders_without_timestamps_or_ratings() -> None:
    result = make_result(timestamps=False, ratings=False)
    html, markdown = render_html(result), render_markdown(result)
    trends = html.split('<section id="trends">')[1].split("</section>")[0]
    assert "No trends" in trends and "<svg" not in trends
    assert "Mean rating" not in html and "Mean rating" not in markdown
    assert "unknown (no timestamps)" in html


def test_report_renders_empty_run() -> None:
    empty = {
        name: pd.DataFrame(columns=column_names(name))
        for name in ("documents", "segments", "pain_points", "stage_summary")
    }
    result = SimpleNamespace(
        **empty,
        manifest={"counts": {"read": 0, "analysed": 0, "rejected": 0, "segments": 0}},
        stage_ids=STAGES,
        rejects=[],
        config=SimpleNamespace(report=SimpleNamespace(verbatims=3, top_pain_points=5)),
    )
    html, markdown = render_html(result), render_markdown(result)
    assert _h2(html) == SECTIONS[1:]
    assert html.count('class="jstage empty"') == len(STAGES)
    assert "no stage has 5 or more segments" in html
    assert len([line for line in markdown.splitlines() if re.match(r"\| \d+ \|", line)]) == len(STAGES)


def test_report_reads_tables_as_loaded_from_parquet(result: SimpleNamespace, tmp_path) -> None:
    """List cells come back as NumPy arrays after a Parquet round trip; the report reads them alike."""
    from cxnlp.output import to_arrow

    loaded = SimpleNamespace(**vars(result))
    for name in ("documents", "segments", "pain_points", "stage_summary"):
        setattr(loaded, name, to_arrow(name, getattr(result, name)).to_pandas())
    assert render_html(loaded).count("<blockquote>") == render_html(result).count("<blockquote>")
    assert (
        render_markdown(loaded).split("## Data quality")[0]
        == render_markdown(result).split("## Data quality")[0]
    )


def test_report_trends_switch_to_months_for_long_periods() -> None:
    result = make_result()
    documents = result.documents.copy()
    documents["created_at"] = [START + pd.Timedelta(days=200 * i) for i in range(len(documents))]
    html = render_html(SimpleNamespace(**{**vars(result), "documents": documents}))
    trends = html.split('<section id="trends">')[1].split("</section>")[0]
    assert "per month" in trends and "<svg" in trends


def test_report_reads_csv_style_cells_and_any_index(result: SimpleNamespace) -> None:
    """CSV outputs hold list cells as JSON text; frames may carry any index."""
    import json

    loaded = SimpleNamespace(**vars(result))
    for name in ("documents", "segments", "pain_points", "stage_summary"):
        frame = getattr(result, name).copy()
        for col in frame.columns:
            if frame[col].map(lambda v: isinstance(v, list)).any():
                frame[col] = frame[col].map(json.dumps)
        frame.index = frame.index + 100
        setattr(loaded, name, frame)
    html, expected = render_html(loaded), render_html(result)
    assert html.count("<blockquote>") == expected.count("<blockquote>") == 4
    assert "mean rating 3.33" in html.split('id="stage-delivery"')[1].split("</summary>")[0]
    assert (
        render_markdown(loaded).split("## Data quality")[0]
        == render_markdown(result).split("## Data quality")[0]
    )


# -- writing, re-rendering from disk (cxnlp report), summary.json, charts, baseline ------------------


def make_analysis(**kwargs):
    """The hand-built result as a real AnalysisResult, so ``write`` and ``cxnlp report`` run on it."""
    from cxnlp.config import config_to_dict, load_config
    from cxnlp.io import Reject
    from cxnlp.pipeline import AnalysisResult

    r = make_result(**kwargs)
    config = load_config(None, {"report": {"verbatims": 2, "top_pain_points": 3}})
    rejects = [Reject(x.source_file, x.source_line, x.code, x.reason, x.raw) for x in r.rejects]
    manifest = {**r.manifest, "config": config_to_dict(config)}
    return AnalysisResult(
        r.documents, r.segments, r.pain_points, r.stage_summary, rejects, manifest, STAGES, config
    )


def _stable(text: str) -> str:
    """A report without its generation time."""
    return re.sub(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", "Generated <time>", text)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "duckdb"])
def test_report_rerender_from_disk_matches_the_run(tmp_path, fmt: str) -> None:
    from cxnlp.report import rerender

    out = make_analysis().write(tmp_path / "run", fmt)
    written = {name: (out / name).read_text(encoding="utf-8") for name in ("report.html", "report.md")}
    tables = {
        p.name: p.stat().st_mtime_ns
        for p in out.iterdir()
        if p.suffix in (".parquet", ".csv", ".duckdb", ".jsonl")
    }
    files = rerender(out)
    assert files["report_html"] == "report.html" and files["summary"] == "summary.json"
    for name, before in written.items():
        assert _stable((out / name).read_text(encoding="utf-8")) == _stable(before), (fmt, name)
    assert {
        p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name in tables
    } == tables  # tables untouched
    assert not [p for p in out.rglob(".*")]  # no temporary files left


def test_report_summary_json_holds_the_headline_figures(tmp_path) -> None:
    import json

    from cxnlp.schema import SUMMARY_FIELDS

    out = make_analysis().write(tmp_path / "run")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert list(summary) == list(SUMMARY_FIELDS)
    assert summary["schema_version"] == "1.0" and summary["generated_at"].endswith("+00:00")
    assert summary["counts"] == {
        "read": 8,
        "analysed": 6,
        "rejected": 2,
        "segments": 13,
        "segments_without_stage": 1,
    }
    assert summary["sentiment"]["negative"] == 7 and summary["sentiment"]["net_sentiment"] == round(
        -300 / 13, 2
    )
    assert summary["worst_stage"] == "delivery" and summary["period"] == {
        "start": "2024-03-04",
        "end": "2024-03-24",
    }
    assert [s["stage"] for s in summary["stages"]] == STAGES
    delivery = summary["stages"][STAGES.index("delivery")]
    assert delivery["segments"] == 6 and delivery["negative_share"] == 0.6667
    assert delivery["top_pain_point"]["label"].startswith("late parcel")
    assert [p["pain_point_id"] for p in summary["biggest_pain_points"]] == [
        "delivery-1"
    ]  # "other" is no pain point
    assert summary["rejects_by_code"] == {"R001": 1, "R002": 1} and summary["baseline"] is None
    assert json.loads((out / "run.json").read_text())["outputs"]["summary"] == "summary.json"


def test_report_markdown_charts_are_small_deterministic_pngs(tmp_path) -> None:
    from cxnlp.charts import draw_charts
    from cxnlp.report import build_report

    out = make_analysis().write(tmp_path / "run")
    markdown = (out / "report.md").read_text(encoding="utf-8")
    for name in ("journey", "trend"):
        png = (out / "charts" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and 5_000 < len(png) < 300_000, name
        assert f"](charts/{name}.png)" in markdown
    first, second = draw_charts(build_report(make_result())), draw_charts(build_report(make_result()))
    assert first == second


def test_report_without_timestamps_has_no_trend_chart(tmp_path) -> None:
    out = make_analysis(timestamps=False).write(tmp_path / "run")
    assert (out / "charts" / "journey.png").is_file() and not (out / "charts" / "trend.png").exists()
    assert "trend.png" not in (out / "report.md").read_text(encoding="utf-8")


def test_report_cli_rerenders_and_reports_errors(tmp_path) -> None:
    from click.testing import CliRunner

    from cxnlp.cli import cli

    out = make_analysis().write(tmp_path / "run")
    (out / "report.html").unlink()
    (out / "summary.json").unlink()
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output and (out / "report.html").is_file() and (out / "summary.json").is_file()
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "[E209]" in result.output and "run.json is missing" in result.output
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output


def _worse_delivery() -> SimpleNamespace:
    """The same run a week later: two more negative delivery segments."""
    result = make_analysis()
    extra = result.segments.iloc[[0, 4]].copy()
    extra["segment_id"] = ["d1:90", "d3:91"]
    result.segments = pd.concat([result.segments, extra], ignore_index=True)
    result.stage_summary = _stage_summary(result.segments, result.documents, result.pain_points)
    result.manifest = {
        **result.manifest,
        "counts": {**result.manifest["counts"], "segments": len(result.segments)},
    }
    return result


def test_report_baseline_compares_stages_and_headline(tmp_path) -> None:
    import json

    from cxnlp.report import rerender

    before = make_analysis().write(tmp_path / "before")
    out = _worse_delivery().write(tmp_path / "now")
    rerender(out, baseline=before)
    html = (out / "report.html").read_text(encoding="utf-8")
    section = html.split('<section id="baseline">')[1].split("</section>")[0]
    assert "Compared with the baseline" in section and "before" in section
    delivery = section.split('href="#stage-delivery"')[1].split("</tr>")[0]
    # delivery: net 100 * (1 - 4) / 6 = -50 before, 100 * (1 - 6) / 8 = -62.5 now
    assert "−50" in delivery and "−62" in delivery and "−12" in delivery  # round half to even
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    stages = {s["stage"]: s for s in summary["baseline"]["stages"]}
    assert (
        stages["delivery"]["net_sentiment_change"] == -12.5 and stages["usage"]["net_sentiment_change"] == 0
    )
    assert "## Compared with the baseline (before)" in (out / "report.md").read_text(encoding="utf-8")
    rerender(out)  # without --baseline the comparison goes away again
    assert '<section id="baseline">' not in (out / "report.html").read_text(encoding="utf-8")


def test_report_shows_pain_point_statuses_from_an_analysis_against_a_baseline(tmp_path) -> None:
    import json

    before = make_analysis().write(tmp_path / "before")
    result = _worse_delivery()
    pp = result.pain_points.copy()
    pp["status"], pp["baseline_size"] = ["stable", "growing"], [2, 1]
    pp["trend"] = [None, 0.25]
    pp["weekly_counts"] = [None, [1, 0, 1]]
    gone = pp.iloc[[1]].assign(
        pain_point_id="delivery-2", label="lost parcels", size=0, status="gone", baseline_size=4
    )
    result.pain_points = pd.concat([pp, gone], ignore_index=True)
    result.manifest = {**result.manifest, "baseline": str(before)}
    out = result.write(tmp_path / "now")
    html = (out / "report.html").read_text(encoding="utf-8")
    section = html.split('<section id="baseline">')[1].split("</section>")[0]
    assert '<span class="badge growing">growing</span>' in section and "lost parcels" in section
    card = html.split('id="stage-delivery"')[1].split("</details>")[0]
    assert "lost parcels" not in card  # gone pain points are no longer in the stage
    assert "trend +25%/wk" in card and '<svg class="spark"' in card
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    statuses = summary["baseline"]["pain_point_statuses"]
    assert statuses == {"new": 0, "growing": 1, "shrinking": 0, "gone": 1, "stable": 0}
    assert [p["status"] for p in summary["baseline"]["surging_pain_points"]] == ["growing"]


# -- drivers and alerts ------------------------------------------------------------------------------


def _rated_run(n: int = 40) -> SimpleNamespace:
    """n rated documents: those with a negative delivery segment rate 1, the others 5; a few mention leaving."""
    docs, segs = [], []
    for i in range(n):
        doc, late = f"r{i}", i % 4 == 0
        texts = [("delivery", "negative", -0.8, "The box came late again.")] if late else []
        texts.append(("usage", "positive", 0.7, "The recipes are lovely."))
        if i in (1, 2):
            texts.append(("billing", "negative", -0.9, "I am cancelling my subscription today."))
        if i == 3:
            texts.append(("loyalty", "positive", 0.9, "Would never cancel, love it."))
        for j, (stage, label, score, text) in enumerate(texts):
            segs.append(
                {
                    "doc_id": doc,
                    "segment_id": f"{doc}:{j}",
                    "position": j,
                    "text": text,
                    "stage": stage,
                    "stages": [stage],
                    "sentiment": label,
                    "sentiment_score": score,
                    "emotion": "neutral",
                    "pain_point_id": "delivery-1" if stage == "delivery" else None,
                }
            )
        docs.append(
            {
                "doc_id": doc,
                "text": "...",
                "created_at": START + pd.Timedelta(days=i),
                "rating": 1.0 if late else 5.0,
                "stages": sorted({t[0] for t in texts}, key=STAGES.index),
            }
        )
    documents, segments = pd.DataFrame(docs), pd.DataFrame(segs)
    pp = pd.DataFrame(
        [
            {
                "pain_point_id": "delivery-1",
                "stage": "delivery",
                "label": "late box",
                "size": n // 4,
                "share_of_stage_negative": 1.0,
                "n_documents": n // 4,
                "example_quotes": ["The box came late again."],
                "trend": 0.3,
                "weekly_counts": [1, 2, 3, 4, 0, 0],
            }
        ]
    )
    return SimpleNamespace(
        documents=documents,
        segments=segments,
        pain_points=pp,
        stage_summary=_stage_summary(segments, documents, pp),
        manifest={"counts": {"read": n, "analysed": n, "rejected": 0}},
        stage_ids=STAGES,
        rejects=[],
        config=SimpleNamespace(report=SimpleNamespace(verbatims=2, top_pain_points=3)),
    )


def test_report_drivers_compare_ratings_with_and_without_the_issue() -> None:
    from cxnlp.report import build_report, build_summary

    report = build_report(_rated_run())
    assert report.drivers is not None and report.drivers.rated == 40
    first = report.drivers.rows[0]
    assert (first.name, first.documents, first.mean_with, first.mean_without) == ("delivery", 10, 1.0, 5.0)
    assert [(d.kind, d.name, d.impact) for d in report.drivers.rows] == [
        ("stage", "delivery", -4.0),
        ("pain point", "late box", -4.0),
    ]
    html = render_html(_rated_run())
    assert _h2(html) == SECTIONS[1:4] + ["Drivers"] + SECTIONS[4:]
    assert "−4.00" in html.split('<section id="drivers">')[1].split("</section>")[0]
    assert build_summary(report)["drivers"][0]["impact"] == -4.0
    assert "Drivers" not in render_html(make_result())  # 6 rated documents are too few


def test_report_churn_rows_are_matched_a_block_at_a_time_with_the_same_result() -> None:
    from cxnlp.digest import CHURN_PATTERN, _churn_rows

    texts = [
        "I am cancelling my subscription.",
        "Cancelled, switched to another bank.",
        None,
        "never cancel, love it",
        "going elsewhere next time",
        "Fine.",
        "We will not be ordering again",
    ] * 5
    sentiment = ["negative", "neutral", "negative", "positive", None, "negative", "negative"] * 5
    segments = pd.DataFrame({"text": texts, "sentiment": sentiment})
    expected = [
        i
        for i, (t, s) in enumerate(zip(texts, sentiment))
        if t is not None and s != "positive" and CHURN_PATTERN.search(t)
    ]
    assert _churn_rows(segments).tolist() == expected and len(expected) == 20
    assert _churn_rows(segments, block=3).tolist() == expected
    as_category = segments.assign(sentiment=segments["sentiment"].astype("category"))
    assert _churn_rows(as_category, block=2).tolist() == expected


def test_report_from_arrow_backed_tables_equals_the_report_from_python_objects() -> None:
    """A batch run's reduce holds its tables Arrow-backed (strings, lists of strings), and the report
    finds documents by Arrow lookups there: every figure is the same as from Python objects."""
    import pyarrow as pa

    from cxnlp.batch import REDUCE_ARROW, REDUCE_CATEGORICAL, _frame
    from cxnlp.digest import _stage_ratings
    from cxnlp.report import build_report, build_summary

    run = _rated_run()
    churn = run.segments.index[run.segments["text"].str.contains("cancelling", na=False)]
    run.segments.loc[churn[0], "stage"] = None  # a churn segment without a stage: "no stage" in the alerts
    arrow = SimpleNamespace(**vars(run))
    for name in ("documents", "segments"):
        frame = _frame(pa.Table.from_pandas(getattr(run, name), preserve_index=False), REDUCE_ARROW)
        for col in REDUCE_CATEGORICAL:  # as the reduce reads them
            if col in frame.columns:
                frame[col] = frame[col].astype("category")
        setattr(arrow, name, frame)
    assert isinstance(arrow.documents["stages"].dtype, pd.ArrowDtype)
    assert isinstance(arrow.segments["stage"].dtype, pd.CategoricalDtype)
    assert arrow.segments["stage"].isna().any()  # the churn panel's "no stage" from a categorical
    before, after = build_report(run), build_report(arrow)
    expected, got = build_summary(before), build_summary(after)
    for key in ("generated_at", "analysed_at"):
        expected.pop(key, None)
        got.pop(key, None)
    assert got == expected and got["drivers"] and got["churn_risk"]["documents"] == 2
    assert after.alerts.churn_by_stage == [("billing", 1), ("no stage", 1)]
    assert before.trends is not None and after.trends is not None
    panels = [
        [(p.title, p.total, p.buckets, p.volume, p.net) for p in r.trends.panels] for r in (before, after)
    ]
    assert panels[0] == panels[1] and len(panels[0]) > 2
    as_json = run.documents.assign(stages=run.documents["stages"].map(json.dumps))  # a CSV output's cells
    assert _stage_ratings(arrow.documents) == _stage_ratings(run.documents) == _stage_ratings(as_json)
    assert _stage_ratings(run.documents)["delivery"] == 1.0


def test_report_alerts_churn_risk_and_rising_pain_points() -> None:
    from cxnlp.report import build_report

    report = build_report(_rated_run())
    alerts = report.alerts
    assert alerts.churn_documents == 2 and alerts.churn_by_stage == [
        ("billing", 2)
    ]  # "never cancel, love it" is positive
    assert [q.text for q in alerts.churn_quotes] == ["I am cancelling my subscription today."]
    assert [p.label for p in alerts.rising] == ["late box"]
    section = render_html(_rated_run()).split('<section id="alerts">')[1].split("</section>")[0]
    assert "I am cancelling my subscription today." in section and "+30%/wk" in section
    assert "## Alerts" in render_markdown(_rated_run())
    quiet = render_html(make_result()).split('<section id="alerts">')[1].split("</section>")[0]
    assert "No document speaks of cancelling" in quiet
