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
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from .schema import CX_EMOTIONS, DEFAULT_STAGES, OTHER_PAIN_POINT

TEMPLATES = Path(__file__).resolve().parent / "templates"
TITLE = "Customer experience report"
QUOTE_CHARS = 300  # longer quotes and verbatims are cut with an ellipsis
PAIN_POINT_QUOTES = 3  # example quotes shown per pain point
PAIN_POINT_TABLE_ROWS = 300  # rows of the all-stages pain point table; the rest are counted
REJECT_EXAMPLES = 3  # reasons shown per reject code
MIN_SEGMENTS_FOR_WORST = 5  # a stage needs this many segments to be called the one that hurts most
MAX_BUCKETS = 78  # trend buckets: weeks, else months, quarters or years, whichever first fits
NET_SATURATION = 60.0  # |net sentiment| at which the diverging colour is at full strength

NEGATIVE_COLOUR, NEUTRAL_COLOUR, POSITIVE_COLOUR = "#dc2626", "#cbd5e1", "#16a34a"
_RED, _GREY, _GREEN = (185, 28, 28), (107, 114, 128), (21, 128, 61)

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


@dataclass
class Trends:
    unit: str  # week, month, quarter, year
    start: str
    end: str
    panels: list[TrendPanel]


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
    n_channels: int
    timings: list[tuple[str, float, float]]  # step, seconds, share of the slowest
    seconds: float | None
    models: list[tuple[str, str]]
    device: str
    verbatims: int
    top_pain_points: int

    @property
    def negative_share(self) -> float | None:
        total = self.positive + self.neutral + self.negative
        return self.negative / total if total else None

    @property
    def identity_holds(self) -> bool:
        return self.read == self.analysed + self.rejected


# -- value helpers -----------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    """A list cell as a list: Python lists, NumPy arrays (Parquet) and JSON text (CSV) all work."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                return [value]
            return list(parsed) if isinstance(parsed, list) else [parsed]
        return [value] if text else []
    if isinstance(value, (list, tuple)):
        return list(value)
    if hasattr(value, "tolist"):
        out = value.tolist()
        return out if isinstance(out, list) else [out]
    return [] if _missing(value) else [value]


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or math.isinf(number) else number


def _int(value: Any, default: int = 0) -> int:
    number = _num(value)
    return default if number is None else int(round(number))


def _text(value: Any) -> str:
    return "" if value is None or _missing(value) else str(value)


def _clip(value: Any, limit: int = QUOTE_CHARS) -> str:
    text = " ".join(_text(value).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", value.lower()).strip("-") or "stage"


def _utc(values: Any) -> pd.Series:
    return pd.to_datetime(pd.Series(values), utc=True, errors="coerce")


def _day(value: Any) -> str:
    stamp = pd.to_datetime(value, utc=True, errors="coerce") if not _missing(value) else pd.NaT
    return "" if pd.isna(stamp) else stamp.strftime("%Y-%m-%d")


def _when(value: Any) -> str:
    stamp = pd.to_datetime(value, utc=True, errors="coerce") if value else pd.NaT
    return _text(value) if pd.isna(stamp) else stamp.strftime("%Y-%m-%d %H:%M UTC")


def _frame(result: Any, name: str) -> pd.DataFrame:
    frame = getattr(result, name, None)
    return frame if isinstance(frame, pd.DataFrame) else pd.DataFrame()


def _col(frame: pd.DataFrame, name: str) -> pd.Series:
    return (
        frame[name]
        if name in frame.columns
        else pd.Series([None] * len(frame), index=frame.index, dtype=object)
    )


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


def build_report(result: Any) -> Report:
    """All the aggregates the renderers show, from a result's attributes only."""
    documents, segments = _frame(result, "documents"), _frame(result, "segments")
    manifest: dict[str, Any] = getattr(result, "manifest", None) or {}
    report_cfg = getattr(getattr(result, "config", None), "report", None)
    verbatims = _int(getattr(report_cfg, "verbatims", 3), 3)
    top_n = max(1, _int(getattr(report_cfg, "top_pain_points", 5), 5))
    stage_ids = [
        str(s) for s in (getattr(result, "stage_ids", None) or manifest.get("stages") or DEFAULT_STAGES)
    ]
    counts = manifest.get("counts") or {}
    rejects = list(getattr(result, "rejects", None) or [])

    pain_points = _pain_points(_frame(result, "pain_points"), stage_ids)
    stages = _stages(result, documents, segments, stage_ids, pain_points, verbatims, top_n)
    sentiment = _col(segments, "sentiment").value_counts()
    pos, neu, neg = (int(sentiment.get(k, 0)) for k in ("positive", "neutral", "negative"))
    n_segments = len(segments)
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
    created = _utc(_col(documents, "created_at"))
    period = (_day(created.min()), _day(created.max())) if created.notna().any() else None
    ratings = pd.to_numeric(_col(documents, "rating"), errors="coerce")
    channels = _col(documents, "channel").dropna().astype(str).value_counts()
    channels = channels[channels.index != ""]
    timings = {str(k): v for k, v in (manifest.get("timings") or {}).items() if _num(v) is not None}
    slowest = max((float(v) for v in timings.values()), default=0.0) or 1.0
    return Report(
        title=TITLE,
        version=_text(manifest.get("cxnlp_version")) or "unknown",
        schema_version=_text(manifest.get("schema_version")),
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        analysed_at=_when(manifest.get("ended_at") or manifest.get("started_at")),
        inputs=[_input(i) for i in manifest.get("inputs") or []],
        period=period,
        read=_int(counts.get("read"), len(documents) + len(rejects)),
        analysed=_int(counts.get("analysed"), len(documents)),
        rejected=_int(counts.get("rejected"), len(rejects)),
        segments=_int(counts.get("segments"), n_segments),
        unassigned=int(_col(segments, "stage").isna().sum()) if n_segments else 0,
        positive=pos,
        neutral=neu,
        negative=neg,
        net=net,
        net_colour=net_colour(net),
        worst=worst,
        biggest=biggest,
        mean_rating=float(ratings.mean()) if ratings.notna().any() else None,
        n_rated=int(ratings.notna().sum()),
        stages=stages,
        pain_points=pain_points[:PAIN_POINT_TABLE_ROWS],
        pain_points_hidden=max(0, len(pain_points) - PAIN_POINT_TABLE_ROWS),
        trends=_trends(documents, segments, stage_ids, created),
        rejects=_rejects(rejects, manifest.get("rejects_by_code") or {}),
        flags=sorted(
            Counter(_text(f) for v in _col(documents, "flags") for f in _as_list(v)).items(),
            key=lambda kv: (-kv[1], kv[0]),
        ),
        channels=sorted(((str(k), int(v)) for k, v in channels.items()), key=lambda kv: (-kv[1], kv[0]))[:10],
        n_channels=len(channels),
        timings=[(k, float(v), float(v) / slowest) for k, v in timings.items()],
        seconds=_num(manifest.get("seconds")),
        models=_models(manifest.get("models") or {}),
        device=_text(manifest.get("device")) or "unknown",
        verbatims=verbatims,
        top_pain_points=top_n,
    )


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
            )
        )
    order = {s: i for i, s in enumerate(stage_ids)}
    return sorted(out, key=lambda p: (order.get(p.stage, len(order)), p.stage, p.is_other, -p.size, p.id))


def _stages(
    result: Any,
    documents: pd.DataFrame,
    segments: pd.DataFrame,
    stage_ids: list[str],
    pain_points: list[PainPoint],
    verbatims: int,
    top_n: int,
) -> list[Stage]:
    summary = {_text(r.get("stage")): r for r in _frame(result, "stage_summary").to_dict("records")}
    groups: dict[str, pd.DataFrame] = {}
    if len(segments) and "stage" in segments.columns:
        groups = {str(k): g for k, g in segments.groupby("stage", sort=False)}
    doc_stages = (
        Counter(s for v in _col(documents, "stages") for s in set(_as_list(v)))
        if len(documents)
        else Counter()
    )
    ratings = _stage_ratings(documents)
    stages = []
    for position, stage_id in enumerate(stage_ids):
        seg = groups.get(stage_id, segments.iloc[0:0])
        row = summary.get(stage_id)
        if len(seg) or row is None:  # the segments are the finer source; the summary stands in without them
            sentiment = _col(seg, "sentiment").value_counts()
            pos, neu, neg = (int(sentiment.get(k, 0)) for k in ("positive", "neutral", "negative"))
            n = len(seg)
            documents_n = (
                doc_stages.get(stage_id, 0)
                if len(documents)
                else seg["doc_id"].nunique()
                if "doc_id" in seg
                else 0
            )
            if row is not None:
                documents_n = _int(row.get("documents"), documents_n)
            scores = pd.to_numeric(_col(seg, "sentiment_score"), errors="coerce")
            mean_score = float(scores.mean()) if scores.notna().any() else None
        else:
            pos, neu, neg = (_int(row.get(k)) for k in ("positive", "neutral", "negative"))
            n = _int(row.get("segments"), pos + neu + neg)
            documents_n = _int(row.get("documents"))
            mean_score = _num(row.get("mean_sentiment_score"))
        emotions: list[tuple[str, int | None]] = list(_top_emotions(_col(seg, "emotion")))
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
                most_negative=_verbatims(seg, "negative", verbatims),
                most_positive=_verbatims(seg, "positive", verbatims),
                mean_rating=ratings.get(stage_id),
                colour=net_colour(net),
                bar=split_bar(neg, neu, pos, stage_id),
            )
        )
    return stages


def _top_emotions(emotions: pd.Series, k: int = 3) -> list[tuple[str, int]]:
    """The most frequent non-neutral emotions; ties in the schema's emotion order, as in aggregate."""
    counts = emotions.dropna().astype(str).value_counts()
    counts = counts[(counts.index != "neutral") & (counts.index != "")]
    order = {e: i for i, e in enumerate(CX_EMOTIONS)}
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], order.get(str(kv[0]), len(order)), str(kv[0])))
    return [(str(e), int(n)) for e, n in ranked[:k]]


def _verbatims(seg: pd.DataFrame, kind: str, k: int) -> list[Quote]:
    """Up to ``k`` distinct segment texts of one sentiment, the most extreme first."""
    if k <= 0 or seg.empty or "text" not in seg.columns:
        return []
    scores = pd.to_numeric(_col(seg, "sentiment_score"), errors="coerce")
    labels = _col(seg, "sentiment")
    mask = (labels == kind) if labels.notna().any() else (scores < 0 if kind == "negative" else scores > 0)
    pool = seg.assign(_score=scores)[mask & scores.notna()]
    pool = pool.nsmallest(4 * k, "_score") if kind == "negative" else pool.nlargest(4 * k, "_score")
    out: list[Quote] = []
    seen: set[str] = set()
    for text, score, sid in zip(pool["text"], pool["_score"], _col(pool, "segment_id")):
        clipped = _clip(text)
        if clipped and clipped.casefold() not in seen:
            seen.add(clipped.casefold())
            out.append(Quote(clipped, float(score), _text(sid)))
        if len(out) == k:
            break
    return out


def _stage_ratings(documents: pd.DataFrame) -> dict[str, float]:
    if "rating" not in documents.columns or "stages" not in documents.columns:
        return {}
    rating = pd.to_numeric(documents["rating"], errors="coerce")
    if not rating.notna().any():
        return {}
    frame = (
        pd.DataFrame({"stage": [_as_list(v) for v in documents["stages"]], "rating": rating.to_numpy()})
        .explode("stage")
        .dropna()
    )
    return {str(k): float(v) for k, v in frame.groupby("stage")["rating"].mean().items()}


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


# -- charts (inline SVG; any text is escaped here, then the whole is Markup) -------------------------


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


def _trends(
    documents: pd.DataFrame, segments: pd.DataFrame, stage_ids: list[str], created: pd.Series
) -> Trends | None:
    """Segment volume and net sentiment per week (or coarser) per stage, as small multiples."""
    if segments.empty or "doc_id" not in segments.columns or not created.notna().any():
        return None
    by_doc = pd.Series(created.array, index=_col(documents, "doc_id").to_numpy())
    by_doc = by_doc[~by_doc.index.duplicated()]
    when = pd.to_datetime(segments["doc_id"].map(by_doc), utc=True, errors="coerce").dt.tz_convert(None)
    if not when.notna().any():
        return None
    span = (when.max() - when.min()).days
    unit, period = next(
        ((u, p) for u, p, days in _BUCKETS if span / days + 2 <= MAX_BUCKETS), _BUCKETS[-1][:2]
    )
    frame = pd.DataFrame(
        {
            "stage": _col(segments, "stage").to_numpy(),
            "bucket": when.dt.to_period(period).dt.start_time,
            "neg": (_col(segments, "sentiment") == "negative").to_numpy(),
            "pos": (_col(segments, "sentiment") == "positive").to_numpy(),
        }
    ).dropna(subset=["bucket"])
    buckets = list(pd.period_range(frame["bucket"].min(), frame["bucket"].max(), freq=period).start_time)
    panels = [_panel("all segments", frame, buckets, unit)]
    for stage in stage_ids:
        part = frame[frame["stage"] == stage]
        if len(part):
            panels.append(_panel(stage, part, buckets, unit))
    return Trends(unit, _day(buckets[0]), _day(buckets[-1]), panels)


def _panel(title: str, frame: pd.DataFrame, buckets: list[pd.Timestamp], unit: str) -> TrendPanel:
    agg = (
        frame.groupby("bucket")
        .agg(n=("neg", "size"), neg=("neg", "sum"), pos=("pos", "sum"))
        .reindex(buckets, fill_value=0)
    )
    n = agg["n"].astype(int).tolist()
    net = [100.0 * (p - q) / c if c else None for p, q, c in zip(agg["pos"], agg["neg"], n)]
    return TrendPanel(title, int(sum(n)), trend_chart(buckets, n, net, title, unit))


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
    env.filters.update(num=fmt_num, pct=fmt_pct, net=fmt_net, score=fmt_score, bytes=fmt_bytes)
    return env


def render_html(result: Any) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no external resources)."""
    report = build_report(result)
    template = _environment().get_template("report.html.j2")
    return template.render(r=report, csp=Markup(CSP), script=Markup(_SCRIPT), saturation=int(NET_SATURATION))


# -- Markdown ----------------------------------------------------------------------------------------

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
    r = build_report(result)
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
    out += ["", "## Pain points by stage", ""]
    if not any(s.pain_points for s in r.stages):
        out += ["No pain points were found.", ""]
    for s in r.stages:
        if not s.pain_points:
            continue
        out += [f"### {md_text(s.id, 80)}", ""]
        for p in s.pain_points:
            tag = " _(other)_" if p.is_other else ""
            out.append(
                f"- **{md_text(p.label, 120)}**{tag}: {fmt_num(p.size)} segments "
                f"({fmt_pct(p.share)} of the stage's negative), {fmt_num(p.n_documents)} documents"
            )
            if p.quotes:
                out.append(f"  > “{md_text(p.quotes[0])}”")
        if s.more_pain_points:
            out.append(f"- … and {s.more_pain_points} more (see report.html)")
        out.append("")
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
    for i in r.inputs:
        out.append(
            f"- Input {md_text(i['name'], 120)}: records {fmt_num(i['records'])}, {fmt_bytes(i['bytes'])}, sha256 {md_text(i['sha_short'], 20)}"
        )
    seconds = f" in {r.seconds:.1f} s" if r.seconds is not None else ""
    out.append(
        f"- cxnlp {md_text(r.version, 40)}, schema {md_text(r.schema_version, 20)}, device {md_text(r.device, 40)}{seconds}"
    )
    return "\n".join(out) + "\n"
