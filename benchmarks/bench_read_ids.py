"""What the duplicate-id check costs when reading N reviews: every id in a dict, or spilled to SQLite.

    python benchmarks/bench_read_ids.py --n 1000000 --rounds 2

`cxnlp.io.iter_inputs` checks each record's id against every id read before it. In memory that is a
dict of every id with where it was first read (about 190 bytes an id as Python strings). A batch run
passes a `cxnlp.io.SeenIds` that moves them, 100,000 at a time, to an SQLite file in its work folder,
behind a 16 MiB filter. This reads the same JSONL file with each, alternated `--rounds` times, each
read in a fresh process, and reports seconds and the process's peak RSS (ru_maxrss, which includes the
interpreter, pandas and pyarrow). The input is the benchmark corpus (make_corpus.py, seed 0) repeated
to N records with distinct ids.

Results are appended to benchmarks/results.jsonl with the machine they ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze import record  # noqa: E402
from make_corpus import make_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def read_once(path: Path, mode: str) -> dict:
    """Read ``path`` through iter_inputs in this process (``mode``: dict or spill)."""
    from cxnlp.io import ReadResult, SeenIds, iter_inputs

    with tempfile.TemporaryDirectory(dir=path.parent) as work:
        seen = SeenIds(spill=(lambda: Path(work)) if mode == "spill" else None)
        t = time.perf_counter()
        n = sum(1 for _ in iter_inputs([str(path)], None, ReadResult(), seen))
        seconds = time.perf_counter() - t
        spilled = seen.spilled
        seen.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": mode,
        "records": n,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak, 1),
        "spilled": spilled,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks/data/read-ids")
    ap.add_argument("--read-once", nargs=2, metavar=("INPUT", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.read_once:
        print(json.dumps(read_once(Path(args.read_once[0]), args.read_once[1])), flush=True)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    base = make_corpus(min(args.n, 10_000), 0)
    path = args.workdir / f"reviews-{args.n}.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(args.n):
            row = base[i % len(base)]
            fh.write(json.dumps({**row, "review_id": f"{row['review_id']}-r{i // len(base):03d}"}) + "\n")
    results = []
    for r in range(args.rounds):
        for mode in ("dict", "spill"):
            out = subprocess.run(
                [sys.executable, __file__, "--read-once", str(path), mode],
                check=True,
                capture_output=True,
                text=True,
            )
            res = {"round": r + 1, **json.loads(out.stdout.strip().splitlines()[-1])}
            print(json.dumps(res), flush=True)
            results.append(res)
    path.unlink()
    with contextlib.suppress(OSError):  # the default folder, if nothing else is in it
        args.workdir.rmdir()
    record("read_ids", n=args.n, results=results)


if __name__ == "__main__":
    main()
