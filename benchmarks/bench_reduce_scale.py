"""Peak memory of `cxnlp analyze` at 100k and 1M reviews on a CPU, without running the models 1M times.

    python benchmarks/bench_reduce_scale.py --base 10000 --copies 1 10 100

A million reviews through the encoder take about four hours on this 2-core machine, and the map phase
(the per-document steps) is bounded by the chunk size whatever the input size. What grows with the input
is the reduce phase: loading every chunk's reduced columns, clustering, aggregating, streaming the final
tables and writing the reports. This measures that phase at full scale on real outputs:

1. `--base` reviews (benchmarks/make_corpus.py, seed 0) go through the real map phase once (the CLI's
   analyzer, default config), and its committed chunks are kept (the run is stopped as the reduce starts).
2. For each `--copies K`, the input is those reviews K times over, each copy with its own ids
   (`review_id` + `-rNNN`), so the file has K x base records and its own fingerprint. Its work folder is
   filled with what the map phase gives for that input: chunk i is the base run's chunk (i mod chunks)
   with the ids renamed (documents, segments, the record hashes). The models are deterministic per segment
   (fp32 ONNX is batch-independent), so these are the chunks a real map would commit.
3. The real CLI (`cxnlp analyze FILE -o OUT -q`) runs in a subprocess: it reads the whole input, finds
   every chunk committed, and runs the reduce. Peak RSS of that process (ru_maxrss of the child), seconds
   and `run.json`'s timings are recorded.

What it does not show: the texts repeat K times, so the clustering sample holds duplicates (the clusters
differ from a real corpus's; the memory does not, as the sample size is capped by `cluster.fit_sample`).
With ``--phases``, each size's reduce runs a second time in a fresh process of its own, with its resident
memory sampled every 20 ms and each sample put down to the phase running (:func:`profile_run`): what
the models, the chunks read, the cluster step, the stage summary, the drivers pass and the writing each
hold at their peak.

Results are appended to benchmarks/results.jsonl with the machine they ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_analyze import record  # noqa: E402
from bench_batch import run_cxnlp  # noqa: E402
from make_corpus import make_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class _StopAtReduce(Exception):
    pass


def base_chunks(base: Path, workdir: Path) -> Path:
    """Run the real map phase over ``base`` and keep its committed chunks (stop as the reduce starts)."""
    from cxnlp.batch import run_batch
    from cxnlp.config import load_config
    from cxnlp.pipeline import Analyzer

    out = workdir / "base-out"
    chunks = workdir / f".{out.name}.work" / "chunks"
    if chunks.is_dir() and any(chunks.iterdir()):
        shutil.rmtree(workdir / f".{out.name}.work")
    analyzer = Analyzer(load_config(None, None))

    def stop(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise _StopAtReduce

    analyzer.finish = stop  # type: ignore[method-assign]
    t = time.perf_counter()
    with contextlib.suppress(_StopAtReduce):
        run_batch(analyzer, [str(base)], out)
    print(f"map phase over {base.name}: {time.perf_counter() - t:.0f}s", flush=True)
    return chunks


def _rename(table: pa.Table, column: str, suffix: str) -> pa.Table:
    if column not in table.column_names:
        return table
    col = table[column].to_pylist()
    i = table.column_names.index(column)
    return table.set_column(i, column, pa.array([f"{v}{suffix}" for v in col], pa.string()))


def _rename_segments(table: pa.Table, suffix: str) -> pa.Table:
    table = _rename(table, "doc_id", suffix)
    if "segment_id" in table.column_names:
        ids = [f"{d}{suffix}:{p}" for d, p in (s.rsplit(":", 1) for s in table["segment_id"].to_pylist())]
        table = table.set_column(table.column_names.index("segment_id"), "segment_id", pa.array(ids))
    return table


def scaled(rows: list[dict], chunks: Path, copies: int, workdir: Path) -> tuple[Path, Path]:
    """The K-copies input file and its output folder, whose work folder holds every chunk committed."""
    from cxnlp.batch import PLAN, content_hash, fingerprint
    from cxnlp.config import load_config
    from cxnlp.io import Record
    from cxnlp.pipeline import Analyzer

    path = workdir / f"reviews-{len(rows) * copies}.jsonl"
    by_id: dict[str, dict] = {}
    with path.open("w", encoding="utf-8") as fh:
        for r in range(copies):
            for row in rows:
                new = {**row, "review_id": f"{row['review_id']}-r{r:03d}"}
                by_id[new["review_id"]] = new
                fh.write(json.dumps(new, ensure_ascii=False) + "\n")
    analyzer = Analyzer(load_config(None, None))
    chunk_size = analyzer.config.batch.chunk_size
    fp = fingerprint([str(path)], analyzer, chunk_size)
    out = workdir / f"out-{len(rows) * copies}"
    work = workdir / f".{out.name}.work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    (work / "chunks").mkdir(parents=True)
    now = datetime.now(timezone.utc)
    plan = {"fingerprint": fp, "run_date": date.today().isoformat(), "created_at": now.isoformat()}
    (work / PLAN).write_text(json.dumps(plan, indent=2) + "\n", encoding="utf-8")
    base = sorted(p for p in chunks.iterdir() if p.name.isdigit())
    if (len(rows) % chunk_size) != 0:
        raise SystemExit(f"--base must be a multiple of the chunk size ({chunk_size})")
    for i in range(copies * len(base)):
        src = base[i % len(base)]
        suffix = f"-r{i // len(base):03d}"
        dst = work / "chunks" / f"{i:06d}"
        dst.mkdir()
        pq.write_table(
            _rename(pq.read_table(src / "documents.parquet"), "doc_id", suffix), dst / "documents.parquet"
        )
        pq.write_table(
            _rename_segments(pq.read_table(src / "segments.parquet"), suffix), dst / "segments.parquet"
        )
        os.link(src / "embeddings.npy", dst / "embeddings.npy")
        shutil.copy(src / "rejects.jsonl", dst / "rejects.jsonl")
        meta = json.loads((src / "part.json").read_text(encoding="utf-8"))
        meta["index"] = i
        meta["hashes"] = [
            [d + suffix, content_hash(Record(path.name, 0, by_id[d + suffix]))] for d, _ in meta["hashes"]
        ]
        (dst / "part.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return path, out


def reduce_run(path: Path, out: Path) -> dict:
    """The real CLI over ``path``, whose chunks are all committed: only the reduce runs."""
    res = run_cxnlp(path, out, [])
    manifest = json.loads((out / "run.json").read_text())
    return {
        "seconds": round(res["seconds"], 1),
        "peak_rss_mb": res["peak_rss_mb"],
        "counts": res["counts"],
        "chunks": manifest.get("chunks"),
        "timings": {k: round(v, 2) for k, v in res["timings"].items()},
    }


PHASES = (
    ("load", "cxnlp.batch", "reduced_chunks"),
    ("cluster", "cxnlp.cluster", "find_pain_points"),
    ("aggregate", "cxnlp.aggregate", "summary_of"),
    ("drivers", "cxnlp.batch", "_add_drivers"),
    ("write", "cxnlp.output", "write_outputs"),
)


def profile_run(path: Path, out: Path) -> dict:
    """The reduce of ``path`` (every chunk committed) in this process, with its resident memory sampled
    every 20 ms and each sample put down to the phase running: the models loaded, the chunks read
    (``load``), the ``cluster`` step, the stage summary (``aggregate``), the report's ``drivers`` pass
    and the tables and reports written (``write``). Each phase starts when its function is first
    called; the peak of each is what that phase holds on top of what came before."""
    import importlib
    import threading

    from cxnlp.batch import run_batch
    from cxnlp.config import load_config
    from cxnlp.pipeline import Analyzer

    page = os.sysconf("SC_PAGE_SIZE")
    phase = ["models"]
    peaks: dict[str, float] = {}
    done = threading.Event()

    def sample() -> None:
        with open("/proc/self/statm", encoding="ascii") as fh:
            while not done.is_set():
                fh.seek(0)
                mb = int(fh.read().split()[1]) * page / 2**20
                peaks[phase[0]] = max(peaks.get(phase[0], 0.0), mb)
                done.wait(0.02)

    def marked(name: str, fn):  # type: ignore[no-untyped-def]
        def run(*args, **kwargs):  # type: ignore[no-untyped-def]
            phase[0] = name
            return fn(*args, **kwargs)

        return run

    for name, module, attr in PHASES:
        mod = importlib.import_module(module)
        setattr(mod, attr, marked(name, getattr(mod, attr)))
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    analyzer = Analyzer(load_config(None, None))
    phase[0] = "read"
    t = time.perf_counter()
    run = run_batch(analyzer, [str(path)], out)
    seconds = time.perf_counter() - t
    done.set()
    thread.join()
    return {
        "seconds": round(seconds, 1),
        "phase_peak_rss_mb": {k: round(v, 1) for k, v in peaks.items()},
        "counts": run.result.counts,
        "timings": {k: round(v, 2) for k, v in run.result.manifest["timings"].items()},
    }


def profiled(path: Path, out: Path) -> dict:
    """:func:`profile_run` in a fresh process (so that one size's peaks do not carry into the next)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--profile-run", str(path), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=10_000, help="reviews through the real map phase")
    ap.add_argument("--copies", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks/data/reduce-scale")
    ap.add_argument("--keep", action="store_true", help="keep the generated inputs and outputs")
    ap.add_argument(
        "--base-chunks",
        type=Path,
        help="committed chunks of an earlier map phase over the same --base reviews (skips the map)",
    )
    ap.add_argument(
        "--phases",
        action="store_true",
        help="also run each reduce in-process, with the peak resident memory of each phase (profile_run)",
    )
    ap.add_argument("--profile-run", nargs=2, type=Path, metavar=("INPUT", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.profile_run:
        print(json.dumps(profile_run(*args.profile_run)), flush=True)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = make_corpus(args.base, 0)
    base = args.workdir / f"base-{args.base}.jsonl"
    base.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    chunks = args.base_chunks or base_chunks(base, args.workdir)
    results = []
    for k in args.copies:
        t = time.perf_counter()
        path, out = scaled(rows, chunks, k, args.workdir)
        print(f"{k} copies: input and chunks written in {time.perf_counter() - t:.0f}s", flush=True)
        res = {"reviews": args.base * k, **reduce_run(path, out)}
        print(json.dumps(res), flush=True)
        if args.phases:
            path, out = scaled(rows, chunks, k, args.workdir)  # the run above used up its work folder
            res["in_process"] = profiled(path, out)
            print(json.dumps(res["in_process"]), flush=True)
        results.append(res)
        if not args.keep:
            path.unlink()
            shutil.rmtree(out, ignore_errors=True)
    record("reduce_scale", base_reviews=args.base, results=results)
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
