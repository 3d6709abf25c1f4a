"""The report step: a run's tables as one self-contained HTML page and as Markdown.

Both renderers work from a result's attributes only (``documents``, ``segments``, ``pain_points``,
``stage_summary``, ``manifest``, ``stage_ids``, ``rejects``, ``config.report``), so ``cxnlp report`` can
re-render a finished run from its tables on disk. :func:`build_report` turns those into one plain
:class:`Report` of aggregates; :func:`render_html` and :func:`render_markdown` only lay it out.

The HTML page loads nothing: CSS and SVG charts are inline, and its Content-Security-Policy allows no
network request and only the one inline script (by hash) that opens/closes the collapsible sections.
Every piece of input text goes through Jinja's autoescaping, and SVG built here escapes its text. The
page embeds aggregates plus a bounded number of quotes, never per-document data, so it stays small for
100,000 documents. Missing tables, timestamps or ratings drop the parts that need them, not the page.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from .about import SCHEMA_VERSION
from .digest import QUOTE_CHARS, Digest, _as_list, _clip, _missing, _num, _text
from .schema import DEFAULT_STAGES, OTHER_PAIN_POINT, list_columns

logger = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"
TITLE = "Customer experience report"
PAIN_POINT_QUOTES = 3  # example quotes shown per pain point
PAIN_POINT_TABLE_ROWS = 300  # rows of the all-stages pain point table; the rest are counted
REJECT_EXAMPLES = 3  # reasons shown per reject code
MIN_SEGMENTS_FOR_WORST = 5  # a stage needs this many segments to be called the one that hurts most
MAX_BUCKETS = 78  # trend buckets: weeks, else months, quarters or years, whichever first fits
NET_SATURATION = 60.0  # |net sentiment| at which the diverging colour is at full strength
MIN_RATED_FOR_DRIVERS = 20  # rated documents needed before drivers are computed
MIN_DRIVER_DOCUMENTS = 5  # rated documents with an issue (and without it) for it to be a driver
DRIVER_ROWS = 10  # drivers shown, the largest pull on the mean rating first
RISING_TREND = 0.1  # a pain point whose weekly trend is at least +10% a week ...
RISING_MIN_SIZE = 10  # ... with at least this many segments is "rising" even without a baseline
NEGATIVE_COLOUR, NEUTRAL_COLOUR, POSITIVE_COLOUR = "#dc2626", "#cbd5e1", "#16a34a"
_RED, _GREY, _GREEN = (185, 28, 28), (107, 114, 128), (21, 128, 61)

# How to open report.html in headless Chromium on a machine without network access: the browser tests,
# the screenshots and the report benchmark all launch it with these flags.
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
)

_SCRIPT = (
    "(function(){var d=document;function all(o){d.querySelectorAll('details').forEach(function(e){e.open=o;});}"
    "d.querySelectorAll('[data-toggle]').forEach(function(b){b.hidden=false;"
    "b.addEventListener('click',function(){all(b.getAttribute('data-toggle')==='open');});});"
    "window.addEventListener('beforeprint',function(){all(true);});})();"
)
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)


# -- the report model -------------------------------------------------------------------------------


@dataclass
class Quote:
    text: str
    score: float | None = None
    segment_id: str = ""


@dataclass
class PainPoint:
    id: str
    stage: str
    label: str
    is_other: bool
    size: int
    share: float | None  # of the stage's negative segments, 0..1
    n_documents: int
    mean_score: float | None
    first_seen: str
    last_seen: str
    top_emotions: list[str]
    keyphrases: list[str]
    quotes: list[str]
    status: str = ""  # against the baseline: new, growing, shrinking, stable, gone; "" without one
    baseline_size: int | None = None
    trend: float | None = None  # least-squares weekly slope / mean: +0.1 = about +10% a week
    weekly: list[int] = field(default_factory=list)

    @property
    def spark(self) -> Markup:
        return sparkline(self.weekly)


@dataclass
class Stage:
    id: str
    slug: str
    position: int
    documents: int
    segments: int
    positive: int
    neutral: int
    negative: int
    net: float | None
    mean_score: float | None
    emotions: list[tuple[str, int | None]]  # (emotion, segments) most frequent first; None when unknown
    pain_points: list[PainPoint] = field(default_factory=list)  # top N, then the "other" group
    more_pain_points: int = 0  # clustered pain points beyond the top N
    most_negative: list[Quote] = field(default_factory=list)
    most_positive: list[Quote] = field(default_factory=list)
    mean_rating: float | None = None
    worst: bool = False
    colour: str = "#e5e7eb"
    bar: Markup = field(default_factory=Markup)

    def share(self, kind: str) -> float | None:
        return getattr(self, kind) / self.segments if self.segments else None


@dataclass
class TrendPanel:
    title: str
    total: int
    svg: Markup
    buckets: list[pd.Timestamp] = field(default_factory=list)
    volume: list[int] = field(default_factory=list)
    net: list[float | None] = field(default_factory=list)


@dataclass
class Trends:
    unit: str  # week, month, quarter, year
    start: str
    end: str
    panels: list[TrendPanel]


@dataclass
class Driver:
    """Mean rating of the rated documents with an issue against those without it (key-driver style)."""

    kind: str  # stage (a negative segment in the stage) or pain point (a segment in the pain point)
    name: str
    stage: str
    documents: int  # rated documents with the issue
    mean_with: float
    mean_without: float

    @property
    def impact(self) -> float:
        return self.mean_with - self.mean_without


@dataclass
class Drivers:
    rated: int
    mean: float
    low: float  # lowest and highest rating seen, for the scale
    high: float
    rows: list[Driver]  # the largest pull on the mean first (impact x documents)


@dataclass
class ChurnQuote:
    text: str
    stage: str
    score: float | None


@dataclass
class Alerts:
    churn_documents: int
    churn_share: float | None  # of analysed documents
    churn_by_stage: list[tuple[str, int]]  # documents per stage (of the matching segment), most first
    churn_quotes: list[ChurnQuote]
    rising: list[PainPoint]  # trend >= RISING_TREND and size >= RISING_MIN_SIZE, steepest first


@dataclass
class StageChange:
    id: str
    slug: str
    segments: int
    before_segments: int | None
    net: float | None
    before_net: float | None
    negative_share: float | None
    before_negative_share: float | None

    @property
    def net_change(self) -> float | None:
        return None if self.net is None or self.before_net is None else self.net - self.before_net


@dataclass
class PainPointChange:
    label: str
    stage: str
    status: str  # new, growing, shrinking, gone
    size: int
    before: int | None


@dataclass
class Comparison:
    """This run against a baseline run: headline and per-stage changes, pain points that moved."""

    name: str
    path: str
    analysed_at: str
    analysed: int
    before_analysed: int
    segments: int
    before_segments: int
    net: float | None
    before_net: float | None
    negative_share: float | None
    before_negative_share: float | None
    stages: list[StageChange]
    changes: list[PainPointChange]  # new and growing first (the alerts), then shrinking and gone
    stable: int
    statuses: bool  # whether pain point statuses are known

    @property
    def net_change(self) -> float | None:
        return None if self.net is None or self.before_net is None else self.net - self.before_net

    @property
    def surging(self) -> list[PainPointChange]:
        return [c for c in self.changes if c.status in ("new", "growing")]


@dataclass
class Report:
    title: str
    version: str
    schema_version: str
    generated: str
    analysed_at: str
    inputs: list[dict[str, Any]]
    period: tuple[str, str] | None
    read: int
    analysed: int
    rejected: int
    segments: int
    unassigned: int  # segments without a stage
    positive: int
    neutral: int
    negative: int
    net: float | None
    net_colour: str
    worst: Stage | None
    biggest: PainPoint | None
    mean_rating: float | None
    n_rated: int
    stages: list[Stage]
    pain_points: list[PainPoint]
    pain_points_hidden: int
    trends: Trends | None
    rejects: list[dict[str, Any]]
    flags: list[tuple[str, int]]
    channels: list[tuple[str, int]]
    languages: list[tuple[str, int]]
    n_channels: int
    timings: list[tuple[str, float, float]]  # step, seconds, share of the slowest
    seconds: float | None
    models: list[tuple[str, str]]
    device: str
    verbatims: int
    top_pain_points: int
    generated_at: str = ""  # ISO 8601, UTC
    ended_at: str = ""  # when the run ended, as run.json has it
    comparison: Comparison | None = None
    drivers: Drivers | None = None
    alerts: Alerts | None = None

    @property
    def negative_share(self) -> float | None:
        total = self.positive + self.neutral + self.negative
        return self.negative / total if total else None

    @property
    def identity_holds(self) -> bool:
        return self.read == self.analysed + self.rejected


# -- value helpers -----------------------------------------------------------------------------------


def _int(value: Any, default: int = 0) -> int:
    number = _num(value)
    return default if number is None else int(round(number))


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", value.lower()).strip("-") or "stage"


def _day(value: Any) -> str:
    stamp = pd.to_datetime(value, utc=True, errors="coerce") if not _missing(value) else pd.NaT
    return "" if pd.isna(stamp) else stamp.strftime("%Y-%m-%d")


def _now() -> datetime:
    """When a report is generated (its header says so, to the minute)."""
    return datetime.now(timezone.utc)


def _when(value: Any) -> str:
    stamp = pd.to_datetime(value, utc=True, errors="coerce") if value else pd.NaT
    return _text(value) if pd.isna(stamp) else stamp.strftime("%Y-%m-%d %H:%M UTC")


def _frame(result: Any, name: str) -> pd.DataFrame:
    frame = getattr(result, name, None)
    return frame if isinstance(frame, pd.DataFrame) else pd.DataFrame()


def net_colour(net: float | None) -> str:
    """Diverging red-grey-green for a net sentiment in [-100, 100]; light grey without data."""
    if net is None:
        return "#e5e7eb"
    t = max(-1.0, min(1.0, net / NET_SATURATION))
    end = _RED if t < 0 else _GREEN
    rgb = (round(a + (b - a) * abs(t)) for a, b in zip(_GREY, end))
    return "#" + "".join(f"{c:02x}" for c in rgb)


# -- formatting (shared by both renderers and registered as Jinja filters) ---------------------------


def fmt_num(value: Any) -> str:
    number = _num(value)
    if number is None:
        return "—"
    return f"{int(number):,}" if number == int(number) else f"{number:,.1f}"


def fmt_pct(value: Any) -> str:
    number = _num(value)
    if number is None:
        return "—"
    if 0 < number < 0.005:
        return "<1%"
    return f"{100 * number:.0f}%"


def fmt_net(value: Any) -> str:
    number = _num(value)
    if number is None:
        return "—"
    rounded = int(round(number))
    return f"+{rounded}" if rounded > 0 else f"−{-rounded}" if rounded < 0 else "0"


def fmt_score(value: Any) -> str:
    number = _num(value)
    if number is None:
        return "—"
    number = round(number, 2)
    return f"+{number:.2f}" if number > 0 else f"−{-number:.2f}" if number < 0 else "0.00"


def fmt_trend(value: Any) -> str:
    """A weekly trend (slope / mean) as a signed percentage a week: "+12%/wk"."""
    number = _num(value)
    if number is None:
        return "—"
    rounded = int(round(100 * number))
    return (f"+{rounded}" if rounded > 0 else f"−{-rounded}" if rounded < 0 else "0") + "%/wk"


def fmt_change(value: Any, points: bool = False) -> str:
    """A signed change: net sentiment points, or percentage points of a share with ``points``."""
    number = _num(value)
    if number is None:
        return "—"
    if points:
        number *= 100
    rounded = int(round(number))
    sign = f"+{rounded}" if rounded > 0 else f"−{-rounded}" if rounded < 0 else "±0"
    return sign + (" pp" if points else "")


def fmt_bytes(value: Any) -> str:
    number = _num(value)
    if number is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if number < 1024 or unit == "GB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return "—"  # pragma: no cover


# -- building the report -----------------------------------------------------------------------------


def digest_of(result: Any, stage_ids: list[str], verbatims: int) -> Digest:
    """The result's :class:`~cxnlp.digest.Digest` (a batch run builds one from its chunks), else one of
    its documents and segments tables."""
    digest = getattr(result, "digest", None)
    if isinstance(digest, Digest) and digest.stage_ids == stage_ids and digest.verbatims == verbatims:
        return digest
    return Digest.of(_frame(result, "documents"), _frame(result, "segments"), stage_ids, verbatims)


def build_report(result: Any, compare: bool = True) -> Report:
    """All the aggregates the renderers show, from a result's attributes only.

    A ``baseline`` attribute (a run loaded with :func:`load_run`) adds the comparison with that run;
    without one, the baseline named in the manifest (``cxnlp analyze --baseline``) is loaded when it
    still exists.
    """
    manifest: dict[str, Any] = getattr(result, "manifest", None) or {}
    report_cfg = getattr(getattr(result, "config", None), "report", None)
    verbatims = _int(getattr(report_cfg, "verbatims", 3), 3)
    top_n = max(1, _int(getattr(report_cfg, "top_pain_points", 5), 5))
    stage_ids = [
        str(s) for s in (getattr(result, "stage_ids", None) or manifest.get("stages") or DEFAULT_STAGES)
    ]
    digest = digest_of(result, stage_ids, verbatims)
    counts = manifest.get("counts") or {}
    rejects = list(getattr(result, "rejects", None) or [])

    every_pain_point = _pain_points(_frame(result, "pain_points"), stage_ids)
    pain_points = [p for p in every_pain_point if p.status != "gone"]  # gone: the baseline's, size 0
    stages = _stages(result, digest, pain_points, top_n)
    pos, neu, neg = (int(digest.sentiment.get(k, 0)) for k in ("positive", "neutral", "negative"))
    n_segments = digest.segments
    net = 100.0 * (pos - neg) / n_segments if n_segments else None
    eligible = [s for s in stages if s.net is not None and s.segments >= MIN_SEGMENTS_FOR_WORST]
    worst = min(eligible, key=lambda s: (s.net, s.position)) if eligible else None
    if worst is not None:
        worst.worst = True
    clustered = [p for p in pain_points if not p.is_other]
    biggest = (
        max(clustered, key=lambda p: (p.size, -stage_ids.index(p.stage) if p.stage in stage_ids else 0))
        if clustered
        else None
    )
    period = (_day(digest.created[0]), _day(digest.created[1])) if digest.created else None
    channels = sorted(digest.channels.items(), key=lambda kv: (-kv[1], kv[0]))
    timings = {str(k): v for k, v in (manifest.get("timings") or {}).items() if _num(v) is not None}
    slowest = max((float(v) for v in timings.values()), default=0.0) or 1.0
    now = _now()
    report = Report(
        title=TITLE,
        version=_text(manifest.get("cxnlp_version")) or "unknown",
        schema_version=_text(manifest.get("schema_version")),
        generated=now.strftime("%Y-%m-%d %H:%M UTC"),
        generated_at=now.isoformat(timespec="seconds"),
        ended_at=_text(manifest.get("ended_at")),
        analysed_at=_when(manifest.get("ended_at") or manifest.get("started_at")),
        inputs=[_input(i) for i in manifest.get("inputs") or []],
        period=period,
        read=_int(counts.get("read"), digest.documents + len(rejects)),
        analysed=_int(counts.get("analysed"), digest.documents),
        rejected=_int(counts.get("rejected"), len(rejects)),
        segments=_int(counts.get("segments"), n_segments),
        unassigned=digest.unassigned if n_segments else 0,
        positive=pos,
        neutral=neu,
        negative=neg,
        net=net,
        net_colour=net_colour(net),
        worst=worst,
        biggest=biggest,
        mean_rating=digest.rating_sum / digest.rated if digest.rated else None,
        n_rated=digest.rated,
        stages=stages,
        pain_points=pain_points[:PAIN_POINT_TABLE_ROWS],
        pain_points_hidden=max(0, len(pain_points) - PAIN_POINT_TABLE_ROWS),
        trends=_trends(digest),
        rejects=_rejects(rejects, manifest.get("rejects_by_code") or {}),
        flags=sorted(digest.flags.items(), key=lambda kv: (-kv[1], kv[0])),
        channels=channels[:10],
        n_channels=len(channels),
        languages=sorted(digest.languages.items(), key=lambda kv: (-kv[1], kv[0])),
        timings=[(k, float(v), float(v) / slowest) for k, v in timings.items()],
        seconds=_num(manifest.get("seconds")),
        models=_models(manifest.get("models") or {}),
        device=_text(manifest.get("device")) or "unknown",
        verbatims=verbatims,
        top_pain_points=top_n,
    )
    baseline = getattr(result, "baseline", None) if compare else None
    if compare and baseline is None and manifest.get("baseline"):
        baseline = _manifest_baseline(str(manifest["baseline"]))
    if baseline is not None:
        report.comparison = _compare(report, result, every_pain_point, baseline)
    report.drivers = _drivers(digest, pain_points)
    report.alerts = _alerts(report, digest, pain_points)
    return report


def _input(info: Any) -> dict[str, Any]:
    info = info if isinstance(info, dict) else {"path": info}
    path = _text(info.get("path")) or "-"
    sha = _text(info.get("sha256"))
    return {
        "path": path,
        "name": path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or path,
        "format": _text(info.get("format")),
        "bytes": info.get("bytes", info.get("size")),
        "records": info.get("records"),
        "sha256": sha,
        "sha_short": sha[:12] + "…" if len(sha) > 12 else sha,
    }


def _pain_points(table: pd.DataFrame, stage_ids: list[str]) -> list[PainPoint]:
    """Every pain point, in journey order; within a stage largest first and the ``other`` group last."""
    out = []
    for row in table.to_dict("records"):
        pid, stage = _text(row.get("pain_point_id")), _text(row.get("stage"))
        out.append(
            PainPoint(
                id=pid,
                stage=stage,
                label=_clip(row.get("label"), 120) or pid,
                is_other=pid.endswith(f"-{OTHER_PAIN_POINT}"),
                size=_int(row.get("size")),
                share=_num(row.get("share_of_stage_negative")),
                n_documents=_int(row.get("n_documents")),
                mean_score=_num(row.get("mean_sentiment_score")),
                first_seen=_day(row.get("first_seen")),
                last_seen=_day(row.get("last_seen")),
                top_emotions=[_text(e) for e in _as_list(row.get("top_emotions"))][:3],
                keyphrases=[_clip(k, 60) for k in _as_list(row.get("keyphrases"))][:5],
                quotes=[_clip(q) for q in _as_list(row.get("example_quotes")) if _text(q).strip()][
                    :PAIN_POINT_QUOTES
                ],
                status=_text(row.get("status")),
                baseline_size=None
                if _num(row.get("baseline_size")) is None
                else _int(row.get("baseline_size")),
                trend=_num(row.get("trend")),
                weekly=[_int(v) for v in _as_list(row.get("weekly_counts"))],
            )
        )
    order = {s: i for i, s in enumerate(stage_ids)}
    return sorted(out, key=lambda p: (order.get(p.stage, len(order)), p.stage, p.is_other, -p.size, p.id))


def _stages(result: Any, digest: Digest, pain_points: list[PainPoint], top_n: int) -> list[Stage]:
    summary = {_text(r.get("stage")): r for r in _frame(result, "stage_summary").to_dict("records")}
    stages = []
    for position, stage_id in enumerate(digest.stage_ids):
        sd = digest.stages[position]
        row = summary.get(stage_id)
        if (
            sd.segments or row is None
        ):  # the segments are the finer source; the summary stands in without them
            pos, neu, neg, n = sd.positive, sd.neutral, sd.negative, sd.segments
            documents_n = _int(row.get("documents"), sd.documents) if row is not None else sd.documents
            mean_score = sd.mean_score
        else:
            pos, neu, neg = (_int(row.get(k)) for k in ("positive", "neutral", "negative"))
            n = _int(row.get("segments"), pos + neu + neg)
            documents_n = _int(row.get("documents"))
            mean_score = _num(row.get("mean_sentiment_score"))
        emotions: list[tuple[str, int | None]] = list(digest.top_emotions(position))
        if not emotions and row is not None:
            emotions = [(_text(e), None) for e in _as_list(row.get("top_emotions"))[:3]]
        own = [p for p in pain_points if p.stage == stage_id]
        clustered = [p for p in own if not p.is_other]
        net = 100.0 * (pos - neg) / n if n else None
        stages.append(
            Stage(
                id=stage_id,
                slug=_slug(stage_id),
                position=position,
                documents=documents_n,
                segments=n,
                positive=pos,
                neutral=neu,
                negative=neg,
                net=net,
                mean_score=mean_score,
                emotions=emotions,
                pain_points=clustered[:top_n] + [p for p in own if p.is_other],
                more_pain_points=max(0, len(clustered) - top_n),
                most_negative=[Quote(*q) for q in digest.verbatims_of(position, "negative")],
                most_positive=[Quote(*q) for q in digest.verbatims_of(position, "positive")],
                mean_rating=sd.mean_rating,
                colour=net_colour(net),
                bar=split_bar(neg, neu, pos, stage_id),
            )
        )
    return stages


def _rejects(rejects: list[Any], by_code: dict[str, Any]) -> list[dict[str, Any]]:
    counts: Counter[str] = Counter({str(k): _int(v) for k, v in by_code.items()})
    examples: dict[str, list[str]] = {}
    seen: Counter[str] = Counter()
    for r in rejects:
        code = _text(getattr(r, "code", "")) or "?"
        seen[code] += 1
        found = examples.setdefault(code, [])
        if len(found) < REJECT_EXAMPLES:
            where = f"{_text(getattr(r, 'source_file', ''))}:{_text(getattr(r, 'source_line', ''))}"
            found.append(f"{where}: {_clip(getattr(r, 'reason', ''), 200)}")
    for code, n in seen.items():
        counts[code] = max(counts[code], n)
    return [
        {"code": c, "count": n, "examples": examples.get(c, [])}
        for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def _models(models: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for name, info in models.items():
        if isinstance(info, dict):
            parts = [f"{k}: {_text(v)}" for k, v in info.items() if _text(v)]
            out.append((str(name), " · ".join(parts)))
        else:
            out.append((str(name), _text(info)))
    return out


# -- drivers and alerts ------------------------------------------------------------------------------


def _drivers(digest: Digest, pain_points: list[PainPoint]) -> Drivers | None:
    """Which stages and pain points go with lower ratings: mean rating with the issue vs without it."""
    found = digest.drivers
    if found is None or not digest.segments or found.rated < MIN_RATED_FOR_DRIVERS:
        return None
    total, count = found.total, found.rated
    issues: list[tuple[str, str, str, tuple[int, float] | None]] = [
        ("stage", s, s, stats if stats[0] else None) for s, stats in zip(digest.stage_ids, found.stages)
    ]
    issues += [
        ("pain point", p.label, p.stage, found.pain_points.get(p.id)) for p in pain_points if not p.is_other
    ]
    rows = []
    for kind, name, stage, stats in issues:
        if stats is None:
            continue
        n, with_sum = stats
        if n < MIN_DRIVER_DOCUMENTS or count - n < MIN_DRIVER_DOCUMENTS:
            continue
        rows.append(Driver(kind, name, stage, n, with_sum / n, (total - with_sum) / (count - n)))
    rows.sort(key=lambda d: (d.impact * d.documents, d.kind != "stage", d.name))  # ties: stages first
    return Drivers(count, total / count, found.low, found.high, rows[:DRIVER_ROWS])


def _alerts(report: Report, digest: Digest, pain_points: list[PainPoint]) -> Alerts:
    """Documents at churn risk (words of leaving in a non-positive segment) and pain points on the rise."""
    rising = sorted(
        (
            p
            for p in pain_points
            if not p.is_other
            and p.trend is not None
            and p.trend >= RISING_TREND
            and p.size >= RISING_MIN_SIZE
        ),
        key=lambda p: (-(p.trend or 0.0), p.stage, p.label),
    )
    if not digest.segments or not digest.has_text:
        return Alerts(0, None, [], [], rising)
    order = {s.id: s.position for s in report.stages}
    by_stage = sorted(digest.churn_by_stage.items(), key=lambda kv: (-kv[1], order.get(kv[0], 99), kv[0]))
    quotes = [ChurnQuote(*q) for q in digest.churn_quotes()]
    n_docs = digest.churn_documents
    share = n_docs / report.analysed if report.analysed else None
    return Alerts(n_docs, share, by_stage, quotes, rising)


# -- comparison with a baseline run ----------------------------------------------------------------

STATUS_ORDER = ("new", "growing", "shrinking", "gone")


def _manifest_baseline(path: str) -> Any:
    """The baseline a run was analysed against, when its folder still holds a run; else None."""
    try:
        return load_run(path, baseline=True)
    except Exception as exc:  # noqa: BLE001 - a vanished or broken baseline drops the comparison only
        logger.warning("baseline %s could not be read (%s); the report has no comparison", path, exc)
        return None


def _same_path(a: Any, b: Any) -> bool:
    try:
        return bool(a) and bool(b) and Path(str(a)).resolve() == Path(str(b)).resolve()
    except OSError:  # pragma: no cover
        return False


def _compare(report: Report, result: Any, pain_points: list[PainPoint], baseline: Any) -> Comparison:
    before = build_report(baseline, compare=False)
    summary = getattr(baseline, "summary", None) or {}
    sentiment = summary.get("sentiment") if isinstance(summary.get("sentiment"), dict) else None
    before_net = _num(sentiment.get("net_sentiment")) if sentiment else before.net
    before_neg = _num(sentiment.get("negative_share")) if sentiment else before.negative_share
    by_id = {s.id: s for s in before.stages}
    stages = []
    for s in report.stages:
        b = by_id.get(s.id)
        stages.append(
            StageChange(
                s.id,
                s.slug,
                s.segments,
                b.segments if b else None,
                s.net,
                b.net if b else None,
                s.share("negative"),
                b.share("negative") if b else None,
            )
        )
    manifest = getattr(result, "manifest", None) or {}
    path = _text(getattr(baseline, "path", ""))
    changes: list[PainPointChange] | None
    if any(p.status for p in pain_points) and (
        getattr(result, "baseline", None) is None or _same_path(manifest.get("baseline"), path)
    ):
        changes = [
            PainPointChange(p.label, p.stage, p.status, p.size, p.baseline_size)
            for p in pain_points
            if p.status and not p.is_other
        ]
    else:
        changes = _match_pain_points(result, baseline)
    stable = sum(1 for c in changes or [] if c.status == "stable")
    moved = [c for c in changes or [] if c.status in STATUS_ORDER]
    moved.sort(key=lambda c: (STATUS_ORDER.index(c.status), -max(c.size, c.before or 0), c.stage, c.label))
    return Comparison(
        name=path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or path,
        path=path,
        analysed_at=before.analysed_at,
        analysed=report.analysed,
        before_analysed=before.analysed,
        segments=report.segments,
        before_segments=before.segments,
        net=report.net,
        before_net=before_net,
        negative_share=report.negative_share,
        before_negative_share=before_neg,
        stages=stages,
        changes=moved,
        stable=stable,
        statuses=changes is not None,
    )


def _match_pain_points(result: Any, baseline: Any) -> list[PainPointChange] | None:
    """Statuses of this run's pain points against ``baseline``'s, by the cluster step's own matching."""
    now, old = _frame(result, "pain_points"), _frame(baseline, "pain_points")
    if now.empty and old.empty:
        return []
    try:
        from .cluster import Baseline, match_baseline, same_space
        from .config import ClusterConfig

        def plain(frame: pd.DataFrame) -> pd.DataFrame:  # list cells as lists (Parquet: arrays; CSV: JSON)
            frame = frame.reset_index(drop=True).copy()
            for col in list_columns("pain_points"):
                if col in frame.columns:
                    frame[col] = [None if v is None or _missing(v) else _as_list(v) for v in frame[col]]
            return frame

        if "status" in now.columns:
            now = now[now["status"].fillna("") != "gone"]
        now = plain(now.drop(columns=["status", "baseline_size"], errors="ignore"))
        manifest = getattr(result, "manifest", None) or {}
        cfg = (
            ((manifest.get("config") or {}).get("cluster") or {})
            if isinstance(manifest.get("config"), dict)
            else {}
        )
        config = ClusterConfig(**{k: cfg[k] for k in ("match_threshold", "change_ratio") if k in cfg})
        base_manifest = getattr(baseline, "manifest", None) or {}
        counts = base_manifest.get("counts") or {}
        models = base_manifest.get("models") or {}
        models = models if isinstance(models, dict) else {}
        now_models = manifest.get("models") or {}
        now_models = now_models if isinstance(now_models, dict) else {}
        base = Baseline(
            plain(old),
            _int(counts.get("segments")),
            _text(getattr(baseline, "path", "")),
            models,
            centres=same_space(now_models, models),
        )
        n_segments = _int((manifest.get("counts") or {}).get("segments"), len(_frame(result, "segments")))
        table, renames = match_baseline(now, base, n_segments, config)
    except Exception as exc:  # noqa: BLE001 - the stage comparison stands without pain point statuses
        logger.warning(
            "pain points could not be matched to the baseline's (%s); showing stage changes only", exc
        )
        return None
    current = {_text(k): _text(v) for k, v in zip(now["pain_point_id"], now["label"])}
    inverse = {new: old_id for old_id, new in renames.items()}
    out = []
    for row in table.to_dict("records"):
        pid, status = _text(row.get("pain_point_id")), _text(row.get("status"))
        if pid.endswith(f"-{OTHER_PAIN_POINT}") or not status:
            continue
        label = (
            current.get(inverse.get(pid, pid), _text(row.get("label")))
            if status != "gone"
            else _text(row.get("label"))
        )
        before = _num(row.get("baseline_size"))
        out.append(
            PainPointChange(
                _clip(label, 120),
                _text(row.get("stage")),
                status,
                _int(row.get("size")),
                None if before is None else int(before),
            )
        )
    return out


# -- charts (inline SVG; any text is escaped here, then the whole is Markup) -------------------------


def sparkline(counts: list[int], width: int = 72, height: int = 16) -> Markup:
    """A tiny line of weekly counts (numbers only, nothing to escape); empty with fewer than 2 weeks."""
    if len(counts) < 2:
        return Markup("")
    peak = max(counts) or 1
    step = (width - 2) / (len(counts) - 1)
    points = " ".join(
        f"{1 + i * step:.1f},{height - 1.5 - (height - 3) * c / peak:.1f}" for i, c in enumerate(counts)
    )
    return Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="segments per week, {len(counts)} weeks"><polyline points="{points}"/></svg>'
    )


def split_bar(negative: int, neutral: int, positive: int, label: str = "") -> Markup:
    """A stacked negative/neutral/positive bar that stretches to its container."""
    total = negative + neutral + positive
    aria = escape(f"{label}: {negative} negative, {neutral} neutral, {positive} positive".lstrip(": "))
    head = f'<svg class="split" viewBox="0 0 100 10" preserveAspectRatio="none" width="100%" height="10" role="img" aria-label="{aria}">'
    if not total:
        return Markup(head + '<rect width="100" height="10" fill="#e5e7eb"/></svg>')
    parts, x = [], 0.0
    for kind, n, colour in (
        ("negative", negative, NEGATIVE_COLOUR),
        ("neutral", neutral, NEUTRAL_COLOUR),
        ("positive", positive, POSITIVE_COLOUR),
    ):
        if n:
            width = 100.0 * n / total
            tip = escape(f"{kind}: {n:,} ({fmt_pct(n / total)})")
            parts.append(
                f'<rect x="{x:.3f}" width="{width:.3f}" height="10" fill="{colour}"><title>{tip}</title></rect>'
            )
            x += width
    return Markup(head + "".join(parts) + "</svg>")


_BUCKETS = (("week", "W-SUN", 7.0), ("month", "M", 30.4), ("quarter", "Q", 91.3), ("year", "Y", 365.25))


def _trends(digest: Digest) -> Trends | None:
    """Segment volume and net sentiment per week (or coarser) per stage, as small multiples.

    The digest counts the segments per day of their document (a doc id seen twice: its first row); the
    days fall into buckets here, so a run of millions of segments is a few thousand counts."""
    if digest.trend_span is None or not digest.trend_counts:
        return None
    low, high = digest.trend_span
    span = (high - low).days
    unit, period = next(
        ((u, p) for u, p, days in _BUCKETS if span / days + 2 <= MAX_BUCKETS), _BUCKETS[-1][:2]
    )
    first, last = low.to_period(period), high.to_period(period)
    n_buckets = last.ordinal - first.ordinal + 1
    buckets = list(pd.period_range(first, last, freq=period).start_time)
    keys = np.array(list(digest.trend_counts), dtype=np.int64).reshape(-1, 2)
    counts = np.array(list(digest.trend_counts.values()), dtype=np.int64).reshape(-1, 3)
    days = pd.DatetimeIndex(keys[:, 0].astype("datetime64[D]"))
    bucket = days.to_period(period).asi8 - first.ordinal
    code = keys[:, 1]
    panels = [
        _panel("all segments", bucket, np.ones(len(code), dtype=bool), counts, n_buckets, buckets, unit)
    ]
    for position, name in enumerate(digest.stage_ids):
        rows = code == position
        if counts[rows, 0].sum():
            panels.append(_panel(name, bucket, rows, counts, n_buckets, buckets, unit))
    return Trends(unit, _day(buckets[0]), _day(buckets[-1]), panels)


def _panel(
    title: str,
    bucket: np.ndarray,
    rows: np.ndarray,
    counts: np.ndarray,
    n_buckets: int,
    buckets: list[pd.Timestamp],
    unit: str,
) -> TrendPanel:
    """One panel: the day counts of ``rows`` (segments, negative, positive) summed per bucket."""

    def count(column: int) -> list[int]:
        return (
            np.bincount(bucket[rows], weights=counts[rows, column], minlength=n_buckets).astype(int).tolist()
        )

    n, negative, positive = count(0), count(1), count(2)
    net = [100.0 * (p - q) / c if c else None for p, q, c in zip(positive, negative, n)]
    return TrendPanel(title, int(sum(n)), trend_chart(buckets, n, net, title, unit), buckets, n, net)


def trend_chart(
    buckets: list[pd.Timestamp],
    volume: list[int],
    net: list[float | None],
    title: str = "",
    unit: str = "week",
) -> Markup:
    """Bars of segment volume (left scale) and a line of net sentiment (right scale, -100..+100)."""
    w, h, left, right, top, bottom = 320, 120, 30, 30, 8, 18
    pw, ph = w - left - right, h - top - bottom
    peak = max(volume, default=0) or 1
    step = pw / max(len(buckets), 1)

    def y_net(v: float) -> float:
        return top + ph * (100 - v) / 200

    out = [
        f'<svg class="trend" viewBox="0 0 {w} {h}" width="100%" role="img" aria-label="{escape(f"{title}: segments and net sentiment per {unit}")}">',
        f'<line x1="{left}" x2="{w - right}" y1="{y_net(0):.1f}" y2="{y_net(0):.1f}" class="zero"/>',
        f'<line x1="{left}" x2="{w - right}" y1="{top + ph}" y2="{top + ph}" class="axis"/>',
    ]
    for i, (start, n) in enumerate(zip(buckets, volume)):
        if n:
            bh = ph * n / peak
            tip = escape(f"{unit} of {_day(start)}: {n:,} segments, net {fmt_net(net[i])}")
            out.append(
                f'<rect x="{left + i * step + step * 0.12:.1f}" y="{top + ph - bh:.1f}" width="{step * 0.76:.1f}" height="{bh:.1f}" class="vol"><title>{tip}</title></rect>'
            )
    points = [(left + (i + 0.5) * step, y_net(v), v, volume[i]) for i, v in enumerate(net) if v is not None]
    if len(points) > 1:
        out.append(
            '<polyline class="net" points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in points) + '"/>'
        )
    for x, y, v, n in points:
        colour = NEGATIVE_COLOUR if v < 0 else POSITIVE_COLOUR if v > 0 else "#6b7280"
        fill = colour if n >= MIN_SEGMENTS_FOR_WORST else "#ffffff"
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.4" fill="{fill}" stroke="{colour}"/>')
    labels = [
        (left - 4, top + 8, "end", fmt_num(peak)),
        (left - 4, top + ph, "end", "0"),
        (w - right + 4, top + 8, "start", "+100"),
        (w - right + 4, y_net(0) + 3, "start", "0"),
        (w - right + 4, top + ph, "start", "−100"),
        (left, h - 4, "start", _day(buckets[0]) if buckets else ""),
        (w - right, h - 4, "end", _day(buckets[-1]) if len(buckets) > 1 else ""),
    ]
    for x, y, anchor, text in labels:
        out.append(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(text)}</text>')
    return Markup("".join(out) + "</svg>")


# -- HTML --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(enabled_extensions=("html", "j2"), default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        num=fmt_num,
        pct=fmt_pct,
        net=fmt_net,
        score=fmt_score,
        bytes=fmt_bytes,
        trend=fmt_trend,
        change=fmt_change,
    )
    return env


def render_html(result: Any) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no external resources)."""
    return html_page(build_report(result))


def html_page(report: Report) -> str:
    """Lay out a built report as HTML."""
    template = _environment().get_template("report.html.j2")
    return template.render(
        r=report,
        csp=Markup(CSP),
        script=Markup(_SCRIPT),
        saturation=int(NET_SATURATION),
        min_driver=MIN_DRIVER_DOCUMENTS,
        rising_size=RISING_MIN_SIZE,
        rising_pct=int(round(100 * RISING_TREND)),
    )


# -- Markdown ----------------------------------------------------------------------------------------


def _markdown_drivers_and_alerts(r: Report) -> list[str]:
    out: list[str] = []
    if r.drivers is not None:
        d = r.drivers
        out += [
            "## Drivers",
            "",
            f"Mean rating {d.mean:.2f} over {fmt_num(d.rated)} rated documents. Rating of the documents with each "
            "issue against those without it, largest pull on the mean first (an association, not a cause).",
            "",
        ]
        if d.rows:
            out += [
                "| Issue | Stage | Documents | Rating with | Without | Impact |",
                "|---|---|---:|---:|---:|---:|",
            ]
            for x in d.rows:
                kind = " (stage)" if x.kind == "stage" else ""
                impact = f"{x.impact:+.2f}".replace("-", "−")
                out.append(
                    f"| {md_text(x.name, 120)}{kind} | {md_text(x.stage, 80)} | {fmt_num(x.documents)} | "
                    f"{x.mean_with:.2f} | {x.mean_without:.2f} | {impact} |"
                )
        else:
            out.append(
                f"No stage or pain point has {MIN_DRIVER_DOCUMENTS} or more rated documents with and without it."
            )
        out.append("")
    if r.alerts is not None:
        a = r.alerts
        out += ["## Alerts", ""]
        if a.churn_documents:
            stages = ", ".join(f"{md_text(s, 80)} {fmt_num(n)}" for s, n in a.churn_by_stage)
            out.append(
                f"- Churn risk: **{fmt_num(a.churn_documents)}** documents ({fmt_pct(a.churn_share)}) speak of "
                f"cancelling, switching or leaving ({stages})"
            )
            out += [f"  > “{md_text(q.text)}”" for q in a.churn_quotes[:3]]
        else:
            out.append("- Churn risk: no document speaks of cancelling, switching or leaving")
        if a.rising:
            out.append("- Pain points on the rise:")
            out += [
                f"  - **{md_text(p.label, 120)}** ({md_text(p.stage, 80)}; {fmt_num(p.size)} segments, {fmt_trend(p.trend)})"
                for p in a.rising[:10]
            ]
        else:
            out.append("- Pain points on the rise: none")
        out.append("")
    return out


def _markdown_comparison(c: Comparison) -> list[str]:
    out = [f"## Compared with the baseline ({md_text(c.name, 120)})", ""]
    if c.analysed_at:
        out.append(f"Baseline analysed {md_text(c.analysed_at, 40)}.")
        out.append("")
    out.append(
        f"- Documents analysed: {fmt_num(c.analysed)} (baseline {fmt_num(c.before_analysed)}); "
        f"net sentiment {fmt_net(c.net)} (baseline {fmt_net(c.before_net)}, {fmt_change(c.net_change)}); "
        f"negative {fmt_pct(c.negative_share)} (baseline {fmt_pct(c.before_negative_share)})"
    )
    moved = [s for s in c.stages if s.net_change is not None]
    moved.sort(key=lambda s: (s.net_change or 0.0, s.id))
    if moved:
        worse = [s for s in moved if (s.net_change or 0) < 0][:3]
        better = [s for s in reversed(moved) if (s.net_change or 0) > 0][:3]
        if worse:
            out.append(
                "- Stages that got worse: "
                + ", ".join(f"{md_text(s.id, 80)} {fmt_change(s.net_change)}" for s in worse)
            )
        if better:
            out.append(
                "- Stages that got better: "
                + ", ".join(f"{md_text(s.id, 80)} {fmt_change(s.net_change)}" for s in better)
            )
    if not c.statuses:
        out.append("- Pain points could not be matched to the baseline's.")
    elif c.surging:
        out.append("- Surging pain points:")
        for p in c.surging[:10]:
            was = "" if p.before is None else f", was {fmt_num(p.before)}"
            out.append(
                f"  - **{md_text(p.label, 120)}** ({md_text(p.stage, 80)}; {p.status}: {fmt_num(p.size)} segments{was})"
            )
    else:
        out.append("- No pain point is new or growing.")
    return out


_ENTITY = re.compile(r"&(?=#?\w+;)")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|])")
_MD_LEAD = re.compile(r"^(#|[+\-=](?=\s|$)|\d{1,9}[.)](?=\s|$))")  # headings, list items, setext lines


def md_text(value: Any, limit: int = QUOTE_CHARS) -> str:
    """Input text made inert for Markdown: one line, no HTML, no links/images, no table breaks."""
    text = _clip(value, limit)
    text = _ENTITY.sub("&amp;", text).replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return _MD_LEAD.sub(r"\\\1", text)


def render_markdown(result: Any) -> str:
    """The same story in Markdown for email and chat: headline, journey table, pain points, data quality."""
    return markdown_page(build_report(result))


def markdown_page(r: Report, charts: dict[str, str] | None = None) -> str:
    """Lay out a built report as Markdown; ``charts`` (name -> relative PNG path) are shown as images."""
    charts = charts or {}
    out = [f"# {r.title}", ""]
    meta = []
    if r.inputs:
        meta.append("Inputs: " + ", ".join(md_text(i["name"], 120) for i in r.inputs))
    if r.period:
        meta.append(f"Period: {r.period[0]} to {r.period[1]}")
    meta.append(f"Generated {r.generated} by cxnlp {md_text(r.version, 40)}")
    out += ["  \n".join(meta), "", "## Headline numbers", ""]
    out.append(
        f"- Documents analysed: **{fmt_num(r.analysed)}** (read {fmt_num(r.read)}, rejected {fmt_num(r.rejected)})"
    )
    out.append(f"- Segments: **{fmt_num(r.segments)}**, of which negative: **{fmt_pct(r.negative_share)}**")
    out.append(f"- Net sentiment: **{fmt_net(r.net)}** (100 × (positive − negative) / segments)")
    if r.worst is not None:
        out.append(
            f"- Stage that hurts most: **{md_text(r.worst.id, 80)}** (net {fmt_net(r.worst.net)}, {fmt_num(r.worst.segments)} segments)"
        )
    else:
        out.append(f"- Stage that hurts most: none (no stage has {MIN_SEGMENTS_FOR_WORST} or more segments)")
    if r.biggest is not None:
        b = r.biggest
        out.append(
            f"- Biggest pain point: **{md_text(b.label, 120)}** ({md_text(b.stage, 80)}; {fmt_num(b.size)} segments, {fmt_num(b.n_documents)} documents)"
        )
    else:
        out.append("- Biggest pain point: none found")
    if r.mean_rating is not None:
        out.append(f"- Mean rating: **{r.mean_rating:.2f}** ({fmt_num(r.n_rated)} rated documents)")
    if r.comparison is not None:
        out += [""] + _markdown_comparison(r.comparison)
    out += ["", "## Journey", ""]
    out.append(
        "| # | Stage | Segments | Documents | Negative % | Net sentiment | Top emotions | Top pain point |"
    )
    out.append("|---:|---|---:|---:|---:|---:|---|---|")
    for s in r.stages:
        top = next((p for p in s.pain_points if not p.is_other), None)
        emotions = ", ".join(md_text(e, 40) for e, _ in s.emotions[:2]) or "—"
        flag = " (worst)" if s.worst else ""
        out.append(
            f"| {s.position + 1} | {md_text(s.id, 80)}{flag} | {fmt_num(s.segments)} | {fmt_num(s.documents)} | "
            f"{fmt_pct(s.share('negative'))} | {fmt_net(s.net)} | {emotions} | {md_text(top.label, 120) if top else '—'} |"
        )
    if charts.get("journey"):
        out += ["", f"![Net sentiment by journey stage]({charts['journey']})"]
    out += ["", "## Pain points by stage", ""]
    if not any(s.pain_points for s in r.stages):
        out += ["No pain points were found.", ""]
    for s in r.stages:
        if not s.pain_points:
            continue
        out += [f"### {md_text(s.id, 80)}", ""]
        for p in s.pain_points:
            tag = " _(other)_" if p.is_other else ""
            if p.status:
                tag += f" _({md_text(p.status, 20)}{'' if p.baseline_size is None else ', was ' + fmt_num(p.baseline_size)})_"
            trend = f", trend {fmt_trend(p.trend)}" if p.trend is not None else ""
            out.append(
                f"- **{md_text(p.label, 120)}**{tag}: {fmt_num(p.size)} segments "
                f"({fmt_pct(p.share)} of the stage's negative), {fmt_num(p.n_documents)} documents{trend}"
            )
            if p.quotes:
                out.append(f"  > “{md_text(p.quotes[0])}”")
        if s.more_pain_points:
            out.append(f"- … and {s.more_pain_points} more (see report.html)")
        out.append("")
    out += _markdown_drivers_and_alerts(r)
    if r.trends is not None and charts.get("trend"):
        out += [
            "## Trends",
            "",
            f"Segments per {r.trends.unit} (grey bars) and net sentiment (line, −100 to +100), "
            f"{r.trends.start} to {r.trends.end}, by the documents' created_at (UTC).",
            "",
            f"![Segments and net sentiment per {r.trends.unit} and stage]({charts['trend']})",
            "",
        ]
    out += ["## Data quality", ""]
    mark = "" if r.identity_holds else " (**mismatch**)"
    out.append(
        f"- Read {fmt_num(r.read)} = analysed {fmt_num(r.analysed)} + rejected {fmt_num(r.rejected)}{mark}"
    )
    if r.rejects:
        out.append(
            "- Rejects by code: "
            + ", ".join(f"{md_text(x['code'], 20)} × {fmt_num(x['count'])}" for x in r.rejects)
        )
    out.append(f"- Segments: {fmt_num(r.segments)}; without a stage: {fmt_num(r.unassigned)}")
    if r.languages:
        out.append(
            "- Languages seen: " + ", ".join(f"{md_text(code, 10)} {fmt_num(n)}" for code, n in r.languages)
        )
    for i in r.inputs:
        out.append(
            f"- Input {md_text(i['name'], 120)}: records {fmt_num(i['records'])}, {fmt_bytes(i['bytes'])}, sha256 {md_text(i['sha_short'], 20)}"
        )
    seconds = f" in {r.seconds:.1f} s" if r.seconds is not None else ""
    out.append(
        f"- cxnlp {md_text(r.version, 40)}, schema {md_text(r.schema_version, 20)}, device {md_text(r.device, 40)}{seconds}"
    )
    return "\n".join(out) + "\n"


# -- summary.json ------------------------------------------------------------------------------------

BIGGEST_PAIN_POINTS = 10  # clustered pain points listed in summary.json


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _pain_point_summary(p: PainPoint) -> dict[str, Any]:
    return {
        "pain_point_id": p.id,
        "stage": p.stage,
        "label": p.label,
        "size": p.size,
        "share_of_stage_negative": _round(p.share, 4),
        "n_documents": p.n_documents,
        "mean_sentiment_score": _round(p.mean_score, 4),
        "status": p.status or None,
        "trend": _round(p.trend, 4),
    }


def build_summary(r: Report) -> dict[str, Any]:
    """The headline figures for dashboards (``summary.json``; fields in :data:`cxnlp.schema.SUMMARY_FIELDS`)."""
    stages = []
    for s in r.stages:
        top = next((p for p in s.pain_points if not p.is_other), None)
        stages.append(
            {
                "stage": s.id,
                "position": s.position,
                "documents": s.documents,
                "segments": s.segments,
                "positive": s.positive,
                "neutral": s.neutral,
                "negative": s.negative,
                "net_sentiment": _round(s.net, 2),
                "negative_share": _round(s.share("negative"), 4),
                "mean_sentiment_score": _round(s.mean_score, 4),
                "top_emotions": [e for e, _ in s.emotions],
                "top_pain_point": None
                if top is None
                else {"pain_point_id": top.id, "label": top.label, "size": top.size},
            }
        )
    clustered = sorted((p for p in r.pain_points if not p.is_other), key=lambda p: (-p.size, p.stage, p.id))
    c = r.comparison
    return {
        "schema_version": SCHEMA_VERSION,
        "cxnlp_version": r.version,
        "generated_at": r.generated_at,
        "analysed_at": r.ended_at or None,
        "period": None if r.period is None else {"start": r.period[0], "end": r.period[1]},
        "counts": {
            "read": r.read,
            "analysed": r.analysed,
            "rejected": r.rejected,
            "segments": r.segments,
            "segments_without_stage": r.unassigned,
        },
        "sentiment": {
            "positive": r.positive,
            "neutral": r.neutral,
            "negative": r.negative,
            "negative_share": _round(r.negative_share, 4),
            "net_sentiment": _round(r.net, 2),
        },
        "mean_rating": _round(r.mean_rating, 4),
        "rated_documents": r.n_rated,
        "worst_stage": r.worst.id if r.worst is not None else None,
        "stages": stages,
        "biggest_pain_points": [_pain_point_summary(p) for p in clustered[:BIGGEST_PAIN_POINTS]],
        "drivers": None
        if r.drivers is None
        else [
            {
                "kind": x.kind,
                "name": x.name,
                "stage": x.stage,
                "documents": x.documents,
                "mean_rating_with": _round(x.mean_with, 4),
                "mean_rating_without": _round(x.mean_without, 4),
                "impact": _round(x.impact, 4),
            }
            for x in r.drivers.rows
        ],
        "churn_risk": None
        if r.alerts is None
        else {
            "documents": r.alerts.churn_documents,
            "share": _round(r.alerts.churn_share, 4),
            "by_stage": dict(r.alerts.churn_by_stage),
        },
        "rising_pain_points": [] if r.alerts is None else [_pain_point_summary(p) for p in r.alerts.rising],
        "rejects_by_code": {x["code"]: x["count"] for x in r.rejects},
        "baseline": None
        if c is None
        else {
            "path": c.path,
            "analysed_documents": c.before_analysed,
            "net_sentiment": _round(c.before_net, 2),
            "net_sentiment_change": _round(c.net_change, 2),
            "negative_share": _round(c.before_negative_share, 4),
            "stages": [
                {
                    "stage": s.id,
                    "segments": s.before_segments,
                    "net_sentiment": _round(s.before_net, 2),
                    "net_sentiment_change": _round(s.net_change, 2),
                }
                for s in c.stages
            ],
            "pain_point_statuses": None
            if not c.statuses
            else {k: sum(1 for x in c.changes if x.status == k) for k in STATUS_ORDER} | {"stable": c.stable},
            "surging_pain_points": [
                {
                    "stage": x.stage,
                    "label": x.label,
                    "status": x.status,
                    "size": x.size,
                    "baseline_size": x.before,
                }
                for x in c.surging
            ],
        },
    }


def render_summary(result: Any) -> str:
    """``summary.json`` for a result."""
    return _summary_json(build_report(result))


def _summary_json(report: Report) -> str:
    return json.dumps(build_summary(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# -- files: writing a run's reports, and re-rendering them from the tables on disk -------------------

CHARTS_DIR = "charts"


def _write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_reports(
    result: Any, outdir: str | Path, html: bool = True, markdown: bool = True
) -> dict[str, Any]:
    """Write report.html, report.md with its charts/*.png, and summary.json into ``outdir``, each atomically.

    The report is built once for all of them. Returns what was written, as run.json's ``outputs`` names it.
    """
    outdir = Path(outdir)
    report = build_report(result)
    files: dict[str, Any] = {}
    charts: dict[str, str] = {}
    if markdown:
        from .charts import draw_charts

        for name, png in draw_charts(report).items():
            relative = f"{CHARTS_DIR}/{name}.png"
            _write_atomic(outdir / relative, png)
            charts[name] = relative
        files["charts"] = list(charts.values())
    if html:
        _write_atomic(outdir / "report.html", html_page(report))
        files["report_html"] = "report.html"
    if markdown:
        _write_atomic(outdir / "report.md", markdown_page(report, charts))
        files["report_md"] = "report.md"
    _write_atomic(outdir / "summary.json", _summary_json(report))
    files["summary"] = "summary.json"
    return files


@dataclass
class LoadedRun:
    """A finished run read back from its output folder, with the attributes the renderers read."""

    path: str
    manifest: dict[str, Any]
    documents: pd.DataFrame
    segments: pd.DataFrame
    pain_points: pd.DataFrame
    stage_summary: pd.DataFrame
    stage_ids: list[str]
    rejects: list[Any]
    config: Any
    summary: dict[str, Any] | None = None
    baseline: Any = None


_SKIP_COLUMNS = {
    "documents": ["emotion_scores"],
    "segments": ["emotion_scores"],
}  # not shown; slow to convert


def load_run(outdir: str | Path, baseline: bool = False) -> LoadedRun:
    """Read a run's tables (Parquet, CSV or DuckDB), run.json, rejects.jsonl and summary.json.

    With ``baseline``, only what a comparison needs: the stage summary and pain points (and the
    segments' sentiment when the run has no summary.json).
    """
    from .config import ReportConfig
    from .io import Reject
    from .output import TABLE_NAMES, read_outputs
    from .schema import column_names

    path = Path(outdir)
    summary: dict[str, Any] | None = None
    try:
        loaded = json.loads((path / "summary.json").read_text(encoding="utf-8"))
        summary = loaded if isinstance(loaded, dict) else None
    except (OSError, ValueError):
        summary = None
    names: tuple[str, ...] = TABLE_NAMES
    if baseline:
        names = ("stage_summary", "pain_points") + (
            () if summary and "sentiment" in summary else ("segments",)
        )
    tables = read_outputs(path, names)
    manifest: dict[str, Any] = dict(tables["manifest"])
    frames: dict[str, pd.DataFrame] = {}
    for name in TABLE_NAMES:
        table = tables.get(name)
        if table is None:
            frames[name] = pd.DataFrame(columns=column_names(name))
            continue
        keep = [c for c in table.column_names if c not in _SKIP_COLUMNS.get(name, [])]
        frames[name] = table.select(keep).to_pandas()
    rejects: list[Any] = []
    counts: Counter[str] = Counter()
    try:
        with (path / "rejects.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(row, dict):
                    continue
                code = _text(row.get("code")) or "?"
                counts[code] += 1
                if counts[code] <= REJECT_EXAMPLES:  # the report shows a few reasons per code
                    rejects.append(
                        Reject(
                            _text(row.get("source_file")),
                            _int(row.get("source_line")),
                            code,
                            _text(row.get("reason")),
                            _text(row.get("raw")),
                        )
                    )
    except OSError:
        pass
    if counts and not manifest.get("rejects_by_code"):
        manifest["rejects_by_code"] = dict(counts)
    settings = (
        ((manifest.get("config") or {}).get("report") or {})
        if isinstance(manifest.get("config"), dict)
        else {}
    )
    try:
        report_config = ReportConfig(**{k: v for k, v in settings.items() if k in ReportConfig.model_fields})
    except ValueError:
        report_config = ReportConfig()
    stage_ids = (
        [str(s) for s in manifest.get("stages") or []]
        or [_text(s) for s in frames["stage_summary"].get("stage", pd.Series(dtype=object))]
        or list(DEFAULT_STAGES)
    )
    return LoadedRun(
        path=str(path),
        manifest=manifest,
        documents=frames["documents"],
        segments=frames["segments"],
        pain_points=frames["pain_points"],
        stage_summary=frames["stage_summary"],
        stage_ids=stage_ids,
        rejects=rejects,
        config=SimpleNamespace(report=report_config),
        summary=summary,
    )


def rerender(outdir: str | Path, baseline: str | Path | None = None) -> dict[str, Any]:
    """Re-render report.html, report.md, its charts and summary.json from OUTDIR's tables; no model runs.

    ``baseline``: another run's output folder to compare with (default: the one the run was analysed
    against, if any). Each file is replaced atomically. Returns what was written.
    """
    from .errors import Errors, PipelineError

    run = load_run(outdir)
    if baseline is not None:
        run.baseline = load_run(baseline, baseline=True)
    try:
        files = write_reports(run, Path(outdir))
    except OSError as exc:
        raise PipelineError(Errors.E208, path=str(outdir), problem=exc.strerror or str(exc)) from exc
    logger.info("re-rendered the report in %s", outdir)
    return files
