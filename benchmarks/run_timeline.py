"""Where a `cxnlp analyze` run's time went, from its `--log-format json` log (stderr).

    cxnlp analyze reviews.jsonl -o out --device cuda --log-format json 2> run.log
    python benchmarks/run_timeline.py run.log [--wall SECONDS]

Phases, from the log lines' timestamps: loading the models (up to the input's fields line), the first
chunk (on a GPU host: the prepare workers starting), the other chunks (the steady rate), loading the
chunks for the reduce (up to the first stage's pain points), clustering, and aggregating and writing.
``--wall``: the process's wall-clock seconds, so the imports before the first log line are shown too.
benchmarks/README.md ("GPU: end to end on one H100") has a table made with it.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path


def timeline(lines: list[dict], wall: float | None = None) -> list[tuple[str, float]]:
    def at(d: dict) -> float:
        return datetime.fromisoformat(d["time"]).timestamp()

    t0 = at(lines[0])
    fields = next(at(d) for d in lines if d.get("logger") == "cxnlp.io")
    chunks = [d for d in lines if d.get("step") == "map" and "chunk" in d]
    clusters = [at(d) for d in lines if d.get("logger") == "cxnlp.cluster"]
    wrote = next(
        at(d) for d in lines if d.get("logger") == "cxnlp.output" and d["message"].startswith("wrote")
    )
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("--wall", type=float, help="the process's wall-clock seconds")
    args = ap.parse_args()
    lines = [json.loads(l) for l in args.log.read_text(encoding="utf-8").splitlines() if l.startswith("{")]
    rows = timeline(lines, args.wall)
    print("| phase | seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} |")
    print(f"| total | {sum(s for _, s in rows):.1f} |")


if __name__ == "__main__":
    main()
