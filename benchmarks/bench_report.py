"""How long the report takes for a large run: a synthetic result of N documents, no models.

    python benchmarks/bench_report.py --n 100000

Measures, each the best of --repeat runs:

* build: the aggregates (:func:`cxnlp.report.build_report`);
* html, markdown, summary: laying the built report out;
* charts: the two matplotlib PNGs of report.md;
* write_reports: all of the above as a run writes them (one build, atomic files);
* cxnlp_report: ``cxnlp report OUTDIR`` as a library call: read the Parquet tables back, then write_reports;
* cli: the ``cxnlp report OUTDIR -q`` command in a fresh process (Python start and imports included), once;
* browser_load: with ``--browser``, opening report.html from disk in headless Chromium until "load".

Also reports the size of report.html. Results are appended to benchmarks/results.jsonl with the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
WORDS = [
    "parcel",
    "box",
    "courier",
    "driver",
    "late",
    "delivery",
    "app",
    "login",
    "password",
    "card",
    "refund",
    "charge",
    "invoice",
    "plan",
    "menu",
    "recipe",
    "portion",
    "ingredient",
    "fresh",
    "spoiled",
    "cold",
    "warm",
    "support",
    "agent",
    "chat",
    "email",
    "phone",
    "wait",
    "hour",
    "week",
    "price",
    "discount",
    "subscription",
    "cancel",
    "pause",
    "skip",
    "order",
    "checkout",
    "website",
    "coupon",
    "voucher",
    "label",
    "tracking",
    "missing",
    "broken",
]


def machine() -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_analyze import machine as _machine

    return _machine()


def synthetic_result(n: int, seed: int = 0) -> Any:
    """N documents, about 2.7 segments each, 26 weeks of timestamps, pain points per stage."""
    from cxnlp.aggregate import stage_summary
    from cxnlp.config import config_to_dict, load_config
    from cxnlp.schema import CX_EMOTIONS, DEFAULT_STAGES, column_names

    rng = np.random.default_rng(seed)
    stages = list(DEFAULT_STAGES)
    scores = {e: 0.1 for e in CX_EMOTIONS}
    pool = [" ".join(rng.choice(WORDS, size=rng.integers(5, 16))).capitalize() + "." for _ in range(20_000)]
    per_doc = rng.integers(1, 5, size=n)
    doc_ids = np.array([f"doc-{i:07d}" for i in range(n)])
    seg_doc = np.repeat(np.arange(n), per_doc)
    m = len(seg_doc)
    stage_idx = rng.integers(-1, len(stages), size=m)  # -1: no stage
    score = np.clip(rng.normal(0, 0.55, size=m) - 0.04 * (stage_idx == 3), -1, 1).astype(np.float32)
    sentiment = np.where(score < -0.2, "negative", np.where(score > 0.2, "positive", "neutral"))
    emotion = rng.choice(list(CX_EMOTIONS), size=m)
    seg_stage = np.array([stages[i] if i >= 0 else None for i in stage_idx], dtype=object)
    pain = np.array([None] * m, dtype=object)
    neg = sentiment == "negative"
    cluster = rng.integers(0, 16, size=m)
    for s in stages:
        sel = neg & (seg_stage == s)
        pain[sel] = [f"{s}-{c}" if c else f"{s}-other" for c in cluster[sel]]
    position = np.concatenate([np.arange(k) for k in per_doc])
    segments = pd.DataFrame(
        {
            "doc_id": doc_ids[seg_doc],
            "segment_id": [f"{d}:{p}" for d, p in zip(doc_ids[seg_doc], position)],
            "position": position,
            "text": np.array(pool, dtype=object)[rng.integers(0, len(pool), size=m)],
            "char_start": 0,
            "char_end": 10,
            "stage_score": 0.8,
            "emotion_score": 0.6,
            "emotion_scores": [scores] * m,
            "stage": seg_stage,
            "stages": [[s] if s else [] for s in seg_stage],
            "sentiment": sentiment,
            "sentiment_score": score,
            "emotion": emotion,
            "pain_point_id": pain,
        }
    )
    start = pd.Timestamp("2026-01-05", tz="UTC")
    created = start + pd.to_timedelta(rng.integers(0, 26 * 7 * 24 * 3600, size=n), unit="s")
    doc_stages = (
        segments.dropna(subset=["stage"])
        .groupby("doc_id")["stage"]
        .agg(lambda v: sorted(set(v), key=stages.index))
    )
    documents = pd.DataFrame(
        {
            "doc_id": doc_ids,
            "text": "...",
            "created_at": created,
            "rating": rng.integers(1, 6, size=n).astype(float),
            "channel": rng.choice(
                ["app_store", "google_play", "trustpilot", "email_survey", "website"], size=n
            ),
            "n_segments": per_doc.astype(np.int32),
            "sentiment": "neutral",
            "sentiment_score": 0.0,
            "emotion": "neutral",
            "emotion_scores": [scores] * n,
            "flags": [[] for _ in range(n)],
            "source_file": "synthetic.jsonl",
            "source_line": np.arange(1, n + 1),
        }
    )
    documents["stages"] = (
        documents["doc_id"].map(doc_stages).apply(lambda v: v if isinstance(v, list) else [])
    )
    documents["primary_stage"] = documents["stages"].map(lambda v: v[0] if v else None)
    rows = []
    negatives = segments[segments["pain_point_id"].notna()]
    for pid, group in negatives.groupby("pain_point_id"):
        stage = str(pid).rsplit("-", 1)[0]
        stage_neg = int(((segments["stage"] == stage) & (segments["sentiment"] == "negative")).sum())
        rows.append(
            {
                "pain_point_id": pid,
                "stage": stage,
                "label": f"{' '.join(rng.choice(WORDS, size=2))} ({pid})",
                "keyphrases": list(rng.choice(WORDS, size=5)),
                "size": len(group),
                "share_of_stage_negative": len(group) / max(stage_neg, 1),
                "n_documents": group["doc_id"].nunique(),
                "mean_sentiment_score": float(group["sentiment_score"].mean()),
                "top_emotions": ["anger", "annoyance"],
                "first_seen": start,
                "last_seen": start + pd.Timedelta(weeks=26),
                "example_segment_ids": group["segment_id"].head(3).tolist(),
                "example_quotes": group["text"].head(3).tolist(),
                "weekly_counts": [int(x) for x in rng.integers(0, 40, size=26)],
                "trend": float(rng.normal(0, 0.05)),
                "centroid": [],
            }
        )
    pain_points = pd.DataFrame(rows, columns=column_names("pain_points"))
    config = load_config()
    summary = stage_summary(documents, segments, pain_points, stages, config.report.top_pain_points)
    counts = {"read": n, "analysed": n, "rejected": 0, "segments": m}
    manifest = {
        "cxnlp_version": "bench",
        "schema_version": "1.0",
        "ended_at": "2026-07-06T00:00:00+00:00",
        "counts": counts,
        "stages": stages,
        "config": config_to_dict(config),
        "inputs": [{"path": "synthetic.jsonl", "format": "jsonl", "records": n}],
    }
    return SimpleNamespace(
        documents=documents,
        segments=segments,
        pain_points=pain_points,
        stage_summary=summary,
        rejects=[],
        manifest=manifest,
        stage_ids=stages,
        config=config,
    )


def browser_load(report: Path, repeat: int) -> float:
    from playwright.sync_api import sync_playwright

    from cxnlp.report import CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=list(CHROMIUM_ARGS))
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            page.goto(report.resolve().as_uri(), wait_until="load")
            times.append(time.perf_counter() - t)
        browser.close()
    return round(min(times), 3)


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return round(min(times), 3), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-save", action="store_true", help="do not append to benchmarks/results.jsonl")
    ap.add_argument(
        "--browser", action="store_true", help="also time opening report.html in /usr/bin/chromium"
    )
    args = ap.parse_args()

    from cxnlp.charts import draw_charts
    from cxnlp.output import TABLE_NAMES, to_arrow, write_table
    from cxnlp.report import _summary_json, build_report, html_page, markdown_page, rerender, write_reports

    t = time.perf_counter()
    result = synthetic_result(args.n)
    made = time.perf_counter() - t
    draw_charts(build_report(result))  # warm up: imports, fonts
    seconds: dict[str, float] = {}
    seconds["build"], report = best(lambda: build_report(result), args.repeat)
    seconds["html"], html = best(lambda: html_page(report), args.repeat)
    seconds["markdown"], _ = best(lambda: markdown_page(report), args.repeat)
    seconds["summary"], _ = best(lambda: _summary_json(report), args.repeat)
    seconds["charts"], _ = best(lambda: draw_charts(report), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        out.mkdir()
        seconds["write_reports"], _ = best(lambda: write_reports(result, out), args.repeat)
        for name in TABLE_NAMES:
            write_table(to_arrow(name, getattr(result, name)), out / name, "parquet")
        (out / "run.json").write_text(json.dumps(result.manifest), encoding="utf-8")
        (out / "rejects.jsonl").write_text("", encoding="utf-8")
        seconds["cxnlp_report"], _ = best(lambda: rerender(out), args.repeat)
        cmd = [sys.executable, "-m", "cxnlp.cli", "report", str(out), "-q"]
        seconds["cli"], _ = best(lambda: subprocess.run(cmd, check=True), 1)
        if args.browser:
            seconds["browser_load"] = browser_load(out / "report.html", args.repeat)
    record = {
        "benchmark": "report_rendering",
        "date": time.strftime("%Y-%m-%d"),
        "n_documents": args.n,
        "n_segments": len(result.segments),
        "n_pain_points": len(result.pain_points),
        "seconds": seconds,
        "report_html_kb": round(len(html.encode("utf-8")) / 1024, 1),
        "synthetic_data_seconds": round(made, 1),
        "machine": machine(),
    }
    if not args.no_save:
        with (ROOT / "benchmarks" / "results.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
