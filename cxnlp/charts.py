"""Static PNG charts for report.md, drawn with matplotlib from a built report (no per-document data).

* ``journey``: net sentiment per stage in journey order, coloured like the HTML journey map, with each
  stage's segment count under its name and the stage that hurts most marked;
* ``trend``: small multiples of segments (bars) and net sentiment (line) per week (or month, ...) for
  all segments and each stage, drawn only when the documents carry timestamps.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend switch), with a
fixed size, DPI and font and without the "Software" PNG tag, so the same report gives the same bytes.
Text is never parsed as mathtext, so stage names with ``$`` print as they are.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .report import Report

DPI = 100
_RC: dict[Any, Any] = {  # rcParams for every chart
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "text.parse_math": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9ca3af",
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "xtick.color": "#374151",
    "ytick.color": "#6b7280",
}
NEGATIVE, POSITIVE, VOLUME, LINE, GRID = "#dc2626", "#16a34a", "#cbd5e1", "#374151", "#e5e7eb"


def _png(fig: object) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # type: ignore[arg-type]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})  # type: ignore[attr-defined]
    return buf.getvalue()


def journey_png(report: Report) -> bytes:
    """Net sentiment per stage, in journey order."""
    import matplotlib
    from matplotlib.figure import Figure

    from .report import fmt_net, net_colour

    stages = report.stages
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(max(6.0, 0.95 * len(stages) + 1.2), 3.6), dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
        xs = list(range(len(stages)))
        nets = [s.net if s.net is not None else 0.0 for s in stages]
        colours = [net_colour(s.net) for s in stages]
        ax.bar(
            xs,
            nets,
            width=0.68,
            color=colours,
            edgecolor=["#111827" if s.worst else c for s, c in zip(stages, colours)],
            linewidth=[1.6 if s.worst else 0 for s in stages],
        )
        ax.axhline(0, color="#6b7280", linewidth=0.8)
        ax.set_ylim(-100, 100)
        ax.set_yticks([-100, -50, 0, 50, 100], ["−100", "−50", "0", "+50", "+100"])
        ax.yaxis.grid(True, color=GRID, linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_xlim(-0.6, len(stages) - 0.4)
        labels = []
        for x, s in zip(xs, stages):
            if s.net is None:
                ax.text(x, 4, "no data", ha="center", va="bottom", color="#9ca3af", fontsize=8)
            else:
                above = s.net >= 0
                ax.text(
                    x,
                    s.net + (3 if above else -3),
                    fmt_net(s.net),
                    ha="center",
                    va="bottom" if above else "top",
                    fontsize=9,
                    fontweight="bold",
                    color="#111827",
                )
            labels.append(f"{s.position + 1}. {s.id}\n{s.segments:,} seg" + ("\n▲ worst" if s.worst else ""))
        ax.set_xticks(xs, labels, fontsize=8)
        for tick, s in zip(ax.get_xticklabels(), stages):
            if s.worst:
                tick.set_color(NEGATIVE)
                tick.set_fontweight("bold")
        ax.set_ylabel("net sentiment")
        ax.set_title("Net sentiment by journey stage (100 × (positive − negative) / segments)")
        return _png(fig)


def trend_png(report: Report) -> bytes | None:
    """Segments and net sentiment per time bucket, one small panel per stage; None without timestamps."""
    if report.trends is None or not report.trends.panels:
        return None
    import matplotlib
    from matplotlib.figure import Figure

    panels = report.trends.panels
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    with matplotlib.rc_context(_RC):
        height = 0.45 + 2.0 * rows
        fig = Figure(figsize=(10.0, height), dpi=DPI)
        # fixed margins: constrained layout costs seconds with a dozen twin axes
        axes = fig.subplots(
            rows,
            cols,
            squeeze=False,
            gridspec_kw={
                "left": 0.045,
                "right": 0.955,
                "bottom": 0.35 / height,
                "top": 1 - 0.55 / height,
                "wspace": 0.32,
                "hspace": 0.55 * 2.0 / (2.0 - 0.55),
            },
        )
        for i, ax in enumerate(axes.flat):
            if i >= len(panels):
                ax.set_axis_off()
                continue
            panel = panels[i]
            xs = list(range(len(panel.volume)))
            ax.bar(xs, panel.volume, width=0.8, color=VOLUME)
            ax.set_ylim(0, max(panel.volume, default=0) * 1.1 or 1)
            ax.tick_params(axis="y", labelsize=7)
            ax.set_title(f"{panel.title} · {panel.total:,} segments", fontsize=9)
            line = ax.twinx()
            line.spines["right"].set_visible(True)
            line.set_ylim(-100, 100)
            line.set_yticks([-100, 0, 100], ["−100", "0", "+100"])
            line.tick_params(axis="y", labelsize=7)
            line.axhline(0, color="#9ca3af", linewidth=0.6, linestyle=(0, (3, 3)))
            values = [float("nan") if v is None else v for v in panel.net]
            line.plot(xs, values, color=LINE, linewidth=1.2, marker="o", markersize=2.5)
            if panel.buckets:
                ticks = [0, len(xs) - 1] if len(xs) > 1 else [0]
                ax.set_xticks(ticks, [panel.buckets[t].strftime("%Y-%m-%d") for t in ticks], fontsize=7)
            ax.set_xlim(-0.6, max(len(xs), 1) - 0.4)
        fig.suptitle(
            f"Segments per {report.trends.unit} (bars, left) and net sentiment (line, right)",
            x=0.01,
            y=1 - 0.08 / height,
            ha="left",
            va="top",
            fontsize=10,
            fontweight="bold",
        )
        return _png(fig)


def draw_charts(report: Report) -> dict[str, bytes]:
    """The report's PNG charts by name (``journey`` always, ``trend`` with timestamps)."""
    charts = {"journey": journey_png(report)}
    trend = trend_png(report)
    if trend is not None:
        charts["trend"] = trend
    return charts
