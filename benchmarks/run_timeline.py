"""Where a `cxnlp analyze` run's time went, from its `--log-format json` log (stderr).

    cxnlp analyze reviews.jsonl -o out --device cuda --log-format json 2> run.log
    python benchmarks/run_timeline.py run.log [--wall SECONDS]

Phases, from the log lines' timestamps: loading the models (up to the input's fields line), the first
chunk (on a GPU host: the prepare workers starting), the other chunks (the steady rate), loading the
chunks for the reduce (up to the first stage's pain points), clustering, and aggregating and writing.
``--wall``: the process's wall-clock seconds, so the imports before the first log line are shown too.
``--rss``: a sample file from ``tree_rss.py`` taken over the same run; each phase then shows the peak
memory of the whole process tree (PSS and RSS, MB) within it.
benchmarks/README.md ("GPU: end to end on one H100") has a table made with it.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path


def at(d: dict) -> float:
    return datetime.fromisoformat(d["time"]).timestamp()


def wrote_at(lines: list[dict]) -> float:
    """When the run wrote its outputs (the output step's "wrote" line), where the last phase ends."""
    return next(
        at(d) for d in lines if d.get("logger") == "cxnlp.output" and d["message"].startswith("wrote")
    )


def timeline(lines: list[dict], wall: float | None = None) -> list[tuple[str, float]]:

    t0 = at(lines[0])
    fields = next(at(d) for d in lines if d.get("logger") == "cxnlp.io")
    chunks = [d for d in lines if d.get("step") == "map" and "chunk" in d]
    clusters = [at(d) for d in lines if d.get("logger") == "cxnlp.cluster"]
    wrote = wrote_at(lines)
    first, last = at(chunks[0]), at(chunks[-1])
    docs = sum(int(d.get("documents", 0)) for d in chunks[1:])
    rows = []
    if wall is not None:
        rows.append(("imports, before the first log line", wall - (wrote - t0)))
    rows += [
        ("loading the models and spaCy", fields - t0),
        ("chunk 0 (on a GPU host: the prepare workers starting)", first - fields),
    ]
    if len(chunks) > 1:
        rows.append(
            (f"chunks 1-{len(chunks) - 1}: {docs / max(last - first, 1e-9):,.0f} reviews/s", last - first)
        )
    if clusters:
        rows += [
            ("reduce: loading the chunks, then the first stage's pain points", clusters[0] - last),
            ("the other stages' pain points", clusters[-1] - clusters[0]),
            ("aggregate, final tables, report", wrote - clusters[-1]),
        ]
    else:
        rows.append(("reduce: loading, aggregate, tables, report", wrote - last))
    return rows


def read_rss(path: Path) -> list[tuple[float, float, float]]:
    """(unix time, tree PSS MB, tree RSS MB) rows of a ``tree_rss.py`` sample file."""
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line]
    return [(float(r[0]), float(r[2]), float(r[3])) for r in rows]


def phase_peaks(
    rows: list[tuple[str, float]], end: float, samples: list[tuple[float, float, float]]
) -> list[tuple[float, float] | None]:
    """Each phase's peak (PSS, RSS) among the samples inside it; the phases are laid back to back so
    that the last one ends at ``end`` (the "wrote" line), or None where no sample fell inside."""
    bounds, t = [], end
    for _, seconds in reversed(rows):
        bounds.append((t - seconds, t))
        t -= seconds
    bounds.reverse()
    peaks: list[tuple[float, float] | None] = []
    for i, (lo, hi) in enumerate(bounds):
        last = i == len(bounds) - 1
        inside = [(p, r) for when, p, r in samples if lo <= when < hi or (last and when >= hi)]
        peaks.append((max(p for p, _ in inside), max(r for _, r in inside)) if inside else None)
    return peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("--wall", type=float, help="the process's wall-clock seconds")
    ap.add_argument("--rss", type=Path, help="tree_rss.py samples of the same run")
    args = ap.parse_args()
    lines = [json.loads(l) for l in args.log.read_text(encoding="utf-8").splitlines() if l.startswith("{")]
    rows = timeline(lines, args.wall)
    if args.rss is None:
        print("| phase | seconds |\n|---|---|")
        for name, seconds in rows:
            print(f"| {name} | {seconds:.1f} |")
        print(f"| total | {sum(s for _, s in rows):.1f} |")
        return
    samples = read_rss(args.rss)
    peaks = phase_peaks(rows, wrote_at(lines), samples)
    print("| phase | seconds | peak tree PSS (MB) | peak tree RSS (MB) |\n|---|---|---|---|")
    for (name, seconds), peak in zip(rows, peaks):
        pss, rss = (f"{peak[0]:,.0f}", f"{peak[1]:,.0f}") if peak else ("-", "-")
        print(f"| {name} | {seconds:.1f} | {pss} | {rss} |")
    total = sum(s for _, s in rows)
    print(
        f"| total | {total:.1f} | {max(p for _, p, _ in samples):,.0f} | {max(r for _, _, r in samples):,.0f} |"
    )


if __name__ == "__main__":
    main()
