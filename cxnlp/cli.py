"""The ``cxnlp`` command line: a thin click layer over the library.

Library errors (``CxnlpError``) become click errors here, at the boundary, with their exit code:
0 success, 1 failure (models, outputs, every record rejected), 2 usage or configuration errors.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from .about import __version__
from .errors import CxnlpError, Errors, Interrupted, PipelineError
from .models import BACKENDS

logger = logging.getLogger("cxnlp")


class CliError(click.ClickException):
    def __init__(self, exc: CxnlpError) -> None:
        super().__init__(str(exc))
        self.exit_code = exc.exit_code  # type: ignore[misc]


class JsonFormatter(logging.Formatter):
    """One JSON object per line on stderr (``--log-format json``), for log shippers in nightly jobs."""

    def format(self, record: logging.LogRecord) -> str:
        from datetime import datetime, timezone

        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("step", "chunk", "seconds", "documents", "segments", "run_id", "code"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _setup_logging(quiet: bool, verbose: bool, log_format: str = "text") -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler: logging.Handler
    if log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        handler = RichHandler(show_path=False, show_time=verbose, markup=False, rich_tracebacks=verbose)
        handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("cxnlp").setLevel(level)
    for noisy in ("sentence_transformers", "transformers", "huggingface_hub", "urllib3", "numba", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _quiet_libraries() -> None:
    import os
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    # transformers reads the two variables above when it is imported. Importing it here only to quiet it
    # cost every run about a second, and the CPU runtimes never load it.
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def verbosity(f: Callable[..., Any]) -> Callable[..., Any]:
    @click.option("-q", "--quiet", is_flag=True, help="Only print warnings and errors.")
    @click.option("-v", "--verbose", is_flag=True, help="Print debug logs.")
    @click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="Log lines on stderr: text for people, json (one object per line) for log collectors.",
    )
    @functools.wraps(f)
    def wrapper(*args: Any, quiet: bool, verbose: bool, log_format: str, **kwargs: Any) -> Any:
        _setup_logging(quiet, verbose, log_format)
        _quiet_libraries()
        try:
            return f(*args, quiet=quiet, **kwargs)
        except CxnlpError as exc:
            if log_format == "json":
                logging.getLogger("cxnlp").error(str(exc), extra={"code": _code(str(exc))})
            raise CliError(exc) from exc
        except KeyboardInterrupt:
            if log_format == "json":
                logging.getLogger("cxnlp").error("interrupted", extra={"code": "E215"})
            raise CliError(Interrupted(Errors.E215)) from None

    return wrapper


def _code(message: str) -> str | None:
    return message[1:5] if message.startswith("[") and message[5:6] == "]" else None


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
        console=_stderr_console(),
    ) as bar:
        tasks: dict[str, Any] = {}
        totals: dict[str, int] = {}

        def start(label: str, total: int | None) -> Callable[[int], None]:
            # One bar per step; a chunked run calls this once per chunk and the bar's total grows.
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            elif total is not None:
                bar.update(tasks[label], total=totals.get(label, 0) + total)
            if total is not None:
                totals[label] = totals.get(label, 0) + total
            task_id = tasks[label]
            return lambda n: bar.advance(task_id, n)

        yield start


def _stderr_console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cxnlp")
def cli() -> None:
    """cxnlp: customer-journey stages, sentiment, emotion and pain points from reviews and tickets."""


@cli.command("analyze")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    "outdir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output directory (replaced atomically).",
)
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Pipeline config YAML (default: pipelines/default.yaml).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set cluster.scope=all.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["parquet", "csv", "duckdb"]),
    help="Table format (default: output.format, parquet); duckdb writes one cxnlp.duckdb with tables and views.",
)
@click.option("--taxonomy", help="Journey taxonomy YAML (same as --set journey.taxonomy=PATH).")
@click.option("--text-field", help="Input field holding the text (default: auto-detected).")
@click.option("--id-field", help="Input field holding the record id.")
@click.option("--timestamp-field", help="Input field holding the date or time.")
@click.option("--rating-field", help="Input field holding a rating, NPS or CSAT value.")
@click.option("--channel-field", help="Input field holding the channel.")
@click.option(
    "--no-redact",
    is_flag=True,
    help="Keep personal data (emails, phones, cards, IBANs, IPs, token URLs, names) in the outputs; same as --set redact.enabled=false.",
)
@click.option(
    "--max-rejects",
    type=float,
    metavar="N",
    help="Fail (exit 1, after writing rejects.jsonl) when more records than this are rejected: a count, or a fraction below 1 such as 0.05.",
)
@click.option(
    "--baseline",
    type=click.Path(file_okay=False),
    help="Output folder of an earlier run: pain points keep its ids and get a status (new, growing, shrinking, stable, gone).",
)
@click.option(
    "--state",
    type=click.Path(file_okay=False),
    help="State folder for incremental runs: only new or changed records are analysed; their tables are added to STATE/tables, partitioned by run date.",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    help="Records per chunk (default: batch.chunk_size, 5000). Each chunk is committed as it finishes, so a killed run resumes.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    help="Where the per-document steps run: local (this process) or ray (Ray Data; local Ray unless --ray-address).",
)
@click.option("--ray-address", help="Ray cluster to join with --engine ray (e.g. ray://head:10001 or auto).")
@verbosity
def analyze_cli(
    inputs: tuple[str, ...],
    outdir: str,
    config_path: str | None,
    device: str,
    overrides: tuple[str, ...],
    fmt: str | None,
    taxonomy: str | None,
    quiet: bool,
    baseline: str | None,
    state: str | None,
    chunk_size: int | None,
    engine: str | None,
    ray_address: str | None,
    **fields: str | None,
) -> None:
    """Analyse INPUT files (JSONL, CSV, TSV, Parquet, optionally .gz; globs; - for JSONL on stdin).

    \b
    Example:
      cxnlp analyze data/samples/reviews.jsonl -o out/demo
      cxnlp analyze 'exports/*.csv.gz' -o out/nightly --set cluster.scope=all
    """
    from . import processes
    from .batch import may_use_workers, preload_worker_pipelines, run_batch
    from .config import _merge, load_config, parse_overrides
    from .pipeline import Analyzer, reject_limit_error

    extra: dict[str, Any] = parse_overrides(list(overrides))
    no_redact, max_rejects = fields.pop("no_redact", False), fields.pop("max_rejects", None)
    field_map = {k.removesuffix("_field"): v for k, v in fields.items() if v}
    if field_map:
        extra = _merge(extra, {"input": {"fields": field_map}})
    if taxonomy:
        extra = _merge(extra, {"journey": {"taxonomy": taxonomy}})
    if fmt:
        extra = _merge(extra, {"output": {"format": fmt}})
    if no_redact:
        extra = _merge(extra, {"redact": {"enabled": False}})
    if max_rejects is not None:
        extra = _merge(extra, {"input": {"max_rejects": max_rejects}})
    batch = {
        k: v for k, v in (("chunk_size", chunk_size), ("engine", engine), ("ray_address", ray_address)) if v
    }
    if batch:
        extra = _merge(extra, {"batch": batch})
    config = load_config(config_path, extra or None)
    if may_use_workers(config, list(inputs)):
        # the workers' fork server imports cxnlp and loads spaCy's pipelines while the models load
        preload_worker_pipelines(config)
        processes.warm_up()
    analyzer = Analyzer(config, device)
    with _progress(not quiet and sys.stderr.isatty()) as progress:
        run = run_batch(analyzer, list(inputs), outdir, state=state, baseline=baseline, progress=progress)
    result, out = run.result, run.outdir
    if run.already_committed:
        if not quiet:
            click.echo(f"This run was already complete in {out}; only its cleanup was left.")
        return
    if (failure := reject_limit_error(result, out / "rejects.jsonl")) is not None:
        raise failure
    counts = result.counts
    if not quiet:
        _summary(result, out)
    if counts["analysed"] == 0 and not counts.get("unchanged"):
        first = result.rejects[0].reason if result.rejects else "no records in the input"
        raise PipelineError(
            Errors.E207, count=counts["read"], rejects=str(out / "rejects.jsonl"), reason=first
        )


def _summary(result: Any, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    c = result.counts
    unchanged = f", {c['unchanged']} unchanged since the last run" if c.get("unchanged") else ""
    console.print(
        f"[bold]cxnlp[/bold] read {c['read']} records: {c['analysed']} analysed, {c['rejected']} rejected{unchanged}; {c['segments']} segments."
    )
    table = Table(title="Journey", show_lines=False)
    for col in ("stage", "docs", "segments", "negative", "net", "top pain point"):
        table.add_column(col, justify="left" if col in ("stage", "top pain point") else "right")
    for row in result.stage_summary.itertuples():
        net = (
            ""
            if row.net_sentiment is None or row.net_sentiment != row.net_sentiment
            else f"{row.net_sentiment:+.0f}"
        )
        neg = f"{100 * row.negative / row.segments:.0f}%" if row.segments else ""
        table.add_row(
            row.stage, str(row.documents), str(row.segments), neg, net, (row.top_pain_points or [""])[0]
        )
    console.print(table)
    console.print(f"Outputs: {out}")
    if (out / "report.html").is_file():
        console.print(f"Report:  {out / 'report.html'}")
    if c["rejected"]:
        console.print(f"Rejects: {out / 'rejects.jsonl'} ({c['rejected']})")


@cli.command("train")
@click.argument("config_path", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    "outdir",
    required=True,
    type=click.Path(file_okay=False),
    help="Model folder to write, e.g. models/cx-heads.",
)
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a training config key."
)
@click.option(
    "--task",
    "tasks",
    multiple=True,
    type=click.Choice(["sentiment", "emotion", "stage"]),
    help="Train only these heads (default: all).",
)
@verbosity
def train_cli(
    config_path: str, outdir: str, overrides: tuple[str, ...], tasks: tuple[str, ...], quiet: bool
) -> None:
    """Train cxnlp's heads from a training config (see pipelines/train-heads.yaml)."""
    from .config import parse_overrides
    from .finetune import finetune, is_encoder_config, load_encoder_train_config
    from .train import load_train_config, train

    if is_encoder_config(config_path):  # kind: encoder (pipelines/train-encoder.yaml)
        enc_config = load_encoder_train_config(
            config_path, parse_overrides(list(overrides)) if overrides else None
        )
        out = finetune(enc_config, outdir)
        if not quiet:
            click.echo(f"Encoder written to {out} (card: {out / 'README.md'})")
        return
    config = load_train_config(config_path, parse_overrides(list(overrides)) if overrides else None)
    out = train(config, outdir, tasks or ("sentiment", "emotion", "stage"))
    if not quiet:
        click.echo(f"Model written to {out} (card: {out / 'README.md'})")


@cli.command("eval")
@click.argument("path", type=click.Path())  # a file, or a TweetEval task folder
@click.option(
    "--task",
    required=True,
    type=click.Choice(["sentiment", "emotion", "stage"]),
    help="Which judgement to score.",
)
@click.option("--model", "heads", default="cx-heads", show_default=True, help="Heads model name or folder.")
@click.option("--taxonomy", default="default", show_default=True, help="Taxonomy for the stage task.")
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--backend",
    type=click.Choice(list(BACKENDS)),
    default="auto",
    show_default=True,
    help="Encoder runtime (as models.backend).",
)
@click.option(
    "--quantize",
    type=click.Choice(["none", "int8", "int8-static"]),
    default="none",
    show_default=True,
    help="ONNX weights (as models.quantize).",
)
@click.option("--vader", is_flag=True, help="Sentiment: also score VADER on the same rows.")
@click.option(
    "--unit",
    type=click.Choice(["text", "segments"]),
    default="text",
    show_default=True,
    help="Stage: run the head on each whole text, or on its segments and take their union as "
    "`cxnlp analyze` does for a document.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False),
    help="Also write the metrics as JSON here (default: PATH's name + .metrics.json in the current folder).",
)
@verbosity
def eval_cli(
    path: str,
    task: str,
    heads: str,
    taxonomy: str,
    device: str,
    backend: str,
    quantize: str,
    vader: bool,
    unit: str,
    json_out: str | None,
    quiet: bool,
) -> None:
    """Score a model on a labelled JSONL, CSV or TSV file (GoEmotions TSV accepted as is) or a TweetEval
    task folder or split (`<split>_text.txt` with its `_labels.txt` and `mapping.txt`)."""
    from .device import resolve_device
    from .evaluate import evaluate_file, format_metrics

    result = evaluate_file(
        path, task, heads, resolve_device(device), taxonomy, backend, quantize, vader, unit
    )
    click.echo(format_metrics(result))
    target = Path(json_out or f"{Path(path).stem}.{task}.metrics.json")
    target.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if not quiet:
        click.echo(f"\nJSON: {target}")


@cli.command("report")
@click.argument("outdir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--baseline",
    type=click.Path(exists=True, file_okay=False),
    help="Output folder of an earlier run to compare with: stage changes and pain points that are new, growing, shrinking or gone.",
)
@verbosity
def report_cli(outdir: str, baseline: str | None, quiet: bool) -> None:
    """Re-render report.html, report.md, its charts and summary.json from OUTDIR's tables; runs no model.

    \b
    Example:
      cxnlp report out/demo
      cxnlp report out/this-week --baseline out/last-week
    """
    from .report import rerender

    files = rerender(outdir, baseline)
    if not quiet:
        for key in ("report_html", "report_md", "summary"):
            if key in files:
                click.echo(f"Wrote {Path(outdir) / files[key]}")


def main() -> None:
    cli(prog_name="cxnlp")


if __name__ == "__main__":  # pragma: no cover
    main()
