"""Run a command and sample the memory of its whole process tree, for runs with worker processes.

    python benchmarks/tree_rss.py --out rss.tsv -- cxnlp analyze reviews.jsonl -o out --log-format json

A wrapper's ``ru_maxrss`` is the largest single child's peak: right for a run in one process, blind to
prepare workers and loader processes beside the main one. This samples, every
``--every`` seconds, each process of the tree from ``/proc``: its resident set (RSS) and its
proportional set (PSS, from ``smaps_rollup``: a page shared by k processes counts 1/k in each, so the
sum over the tree is what the tree holds; the sum of RSS counts forked, shared pages once per process).
Rows: unix time, processes, PSS of the tree (MB), RSS of the tree (MB), RSS of the root process (MB).

The command's exit status is returned. ``run_timeline.py LOG --rss rss.tsv`` splits the peaks by phase;
``bench_batch.py`` samples its runs with :func:`watch`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            kids += [int(k) for k in text.split()]
    except OSError:
        pass
    return kids


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from ``/proc/PID/task/TID/children``."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def _kb(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass  # the process ended between listing and reading
    return 0


def sample(root: int, skip_root: bool = False) -> tuple[int, float, float, float]:
    """(processes, tree PSS MB, tree RSS MB, RSS MB of the first process) of ``root``'s tree; with
    ``skip_root``, of its descendants only (``root`` a wrapper whose memory is not the run's)."""
    pids = tree(root)[1:] if skip_root else tree(root)
    if not pids:
        return 0, 0.0, 0.0, 0.0
    pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
    rss = [_kb(f"/proc/{p}/status", "VmRSS:") for p in pids]
    return len(pids), pss / 1024, sum(rss) / 1024, rss[0] / 1024


HEADER = "time\tprocesses\tpss_mb\trss_mb\troot_rss_mb\n"


def watch(
    proc: subprocess.Popen, out: Path, every: float = 1.0, skip_root: bool = False
) -> tuple[float, float]:
    """Sample ``proc``'s tree into ``out`` (TSV) until it ends; its peak (tree PSS MB, tree RSS MB)."""
    peak = (0.0, 0.0)
    with out.open("w") as f:
        f.write(HEADER)
        while proc.poll() is None:
            n, pss, rss, root = sample(proc.pid, skip_root)
            if n and rss:
                f.write(f"{time.time():.2f}\t{n}\t{pss:.1f}\t{rss:.1f}\t{root:.1f}\n")
                f.flush()
                peak = (max(peak[0], pss), max(peak[1], rss))
            time.sleep(every)
    return peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="TSV of samples")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between samples")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("no command given (put it after --)")
    proc = subprocess.Popen(cmd)
    pss, rss = watch(proc, args.out, args.every)
    print(f"peak tree PSS {pss:.0f} MB, peak tree RSS {rss:.0f} MB", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
