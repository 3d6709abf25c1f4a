"""The runner: read -> normalize -> redact -> segment -> embed -> journey -> sentiment -> emotion -> cluster -> aggregate.

Each step is a function over a :class:`Corpus` that declares the columns it requires and assigns;
the runner checks both, times every step and records it in the run manifest. The encoder runs once
(the embed step) and every head reads that embedding, so stages, sentiment, emotion and clustering
cost one forward pass per segment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import aggregate, cluster, emotion, journey, sentiment
from .about import SCHEMA_VERSION, __version__
from .config import Config, _merge, config_to_dict, load_config, parse_overrides
from .device import resolve_device
from .errors import Errors, ModelError, PipelineError
from .io import ReadResult, Reject, read_inputs
from .models import Heads, encode, load_encoder
from .normalize import normalize_records
from .redact import redact_corpus
from .schema import column_names
from .segment import segment_documents

logger = logging.getLogger(__name__)

Progress = Callable[[str, int | None], Callable[[int], None]]


@dataclass
class Corpus:
    documents: pd.DataFrame
    segments: pd.DataFrame = field(default_factory=pd.DataFrame)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    pain_points: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=cluster.PAIN_POINT_COLUMNS)
    )
    stage_summary: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=aggregate.STAGE_SUMMARY_COLUMNS)
    )

    def table(self, name: str) -> pd.DataFrame:
        return getattr(self, name)


@dataclass
class Step:
    name: str
    run: Callable[[Corpus], None]
    requires: dict[str, list[str]] = field(default_factory=dict)
    assigns: dict[str, list[str]] = field(default_factory=dict)

    def check(self, corpus: Corpus, which: str) -> None:
        spec = self.requires if which == "requires" else self.assigns
        for table, columns in spec.items():
            have = corpus.table(table).columns
            for column in columns:
                if column not in have:
                    raise PipelineError(
                        Errors.E205 if which == "requires" else Errors.E206,
                        step=self.name,
                        column=column,
                        table=table,
                    )


@dataclass
class AnalysisResult:
    documents: pd.DataFrame
    segments: pd.DataFrame
    pain_points: pd.DataFrame
    stage_summary: pd.DataFrame
    rejects: list[Reject]
    manifest: dict[str, Any]
    stage_ids: list[str]
    config: Config

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.manifest["counts"])

    def write(self, outdir: str | Path, format: str | None = None) -> Path:
        from .output import write_outputs

        return write_outputs(self, Path(outdir), format or self.config.output.format)


class Analyzer:
    """Holds the loaded models so that several inputs can be analysed without reloading."""

    def __init__(self, config: Config | None = None, device: str = "auto") -> None:
        self.config = config or load_config()
        self.device = resolve_device(device)
        self.heads = Heads.load(self.config.models.heads)
        self.encoder_name = self.config.models.encoder or self.heads.encoder
        self.encoder = load_encoder(self.encoder_name, self.device)
        self.stage_model = journey.StageModel.for_taxonomy(
            self.heads, self.config.journey.taxonomy, self.config.journey.threshold, self.device
        )
        self.sentiment_model = sentiment.SentimentModel(self.heads)
        self.emotion_model = emotion.EmotionModel(self.heads)

    @property
    def stage_ids(self) -> list[str]:
        return self.stage_model.stage_ids

    def models_info(self) -> dict[str, Any]:
        import sentence_transformers
        import spacy

        from .segment import load_spacy

        nlp = load_spacy(self.config.segment.spacy_model)
        return {
            "heads": {
                "name": self.heads.meta.get("name"),
                "version": self.heads.version,
                "path": self.heads.meta.get("path"),
            },
            "encoder": {
                "name": self.encoder_name,
                "sentence_transformers": sentence_transformers.__version__,
            },
            "stage_head": {
                "taxonomy_hash": self.stage_model.taxonomy_hash,
                "shipped": self.stage_model.module is self.heads.modules["stage"],
            },
            "spacy": {
                "pipeline": f"{nlp.meta.get('lang')}_{nlp.meta.get('name')}",
                "version": nlp.meta.get("version"),
                "spacy": spacy.__version__,
            },
        }

    def steps(self, progress: Progress | None, baseline: cluster.Baseline | None = None) -> list[Step]:
        cfg = self.config

        def tick(label: str, total: int | None) -> Callable[[int], None]:
            return progress(label, total) if progress else (lambda n: None)

        def segment_step(c: Corpus) -> None:
            c.segments = segment_documents(c.documents, cfg.segment, tick("segment", len(c.documents)))

        def embed_step(c: Corpus) -> None:
            texts = c.segments["text"].tolist()
            c.embeddings = encode(self.encoder, texts, cfg.models.batch_size, tick("embed", len(texts)))

        def journey_step(c: Corpus) -> None:
            probs = (
                self.stage_model.predict(c.embeddings, c.segments["text"].tolist())
                if len(c.segments)
                else np.zeros((0, len(self.stage_model.names)), np.float32)
            )
            journey.annotate_segments(c.segments, self.stage_model, probs)
            journey.annotate_documents(c.documents, c.segments, self.stage_ids)

        def sentiment_step(c: Corpus) -> None:
            probs = (
                self.sentiment_model.predict(c.embeddings, c.segments["text"].tolist())
                if len(c.segments)
                else np.zeros((0, 3), np.float32)
            )
            sentiment.annotate_segments(c.segments, self.sentiment_model, probs)
            sentiment.annotate_documents(c.documents, c.segments, self.sentiment_model)

        def emotion_step(c: Corpus) -> None:
            n = len(self.emotion_model.labels)
            probs = (
                self.emotion_model.predict(c.embeddings, c.segments["text"].tolist())
                if len(c.segments)
                else np.zeros((0, n), np.float32)
            )
            emotion.annotate_segments(c.segments, self.emotion_model, probs)
            emotion.annotate_documents(c.documents, c.segments)

        def cluster_step(c: Corpus) -> None:
            c.pain_points, assignment = cluster.find_pain_points(
                c.segments, c.embeddings, c.documents, self.stage_ids, cfg.cluster, cfg.seed, baseline
            )
            c.segments["pain_point_id"] = assignment

        def aggregate_step(c: Corpus) -> None:
            c.documents["n_segments"] = (
                c.documents["doc_id"].map(c.segments.groupby("doc_id").size()).fillna(0).astype("int32")
            )
            live = (
                c.pain_points[c.pain_points["status"].fillna("") != "gone"]
                if "status" in c.pain_points
                else c.pain_points
            )
            c.stage_summary = aggregate.stage_summary(
                c.documents, c.segments, live, self.stage_ids, cfg.report.top_pain_points
            )

        return [
            Step(
                "segment",
                segment_step,
                {"documents": ["doc_id", "text"]},
                {
                    "segments": [
                        "doc_id",
                        "segment_id",
                        "position",
                        "text",
                        "char_start",
                        "char_end",
                        "phrases",
                    ]
                },
            ),
            Step("embed", embed_step, {"segments": ["text"]}),
            Step("journey", journey_step, journey.REQUIRES, journey.ASSIGNS),
            Step("sentiment", sentiment_step, sentiment.REQUIRES, sentiment.ASSIGNS),
            Step("emotion", emotion_step, emotion.REQUIRES, emotion.ASSIGNS),
            Step("cluster", cluster_step, cluster.REQUIRES, cluster.ASSIGNS),
            Step("aggregate", aggregate_step, aggregate.REQUIRES, {"documents": ["n_segments"]}),
        ]

    def analyze(
        self, inputs: Iterable[Any], progress: Progress | None = None, baseline: str | Path | None = None
    ) -> AnalysisResult:
        """``baseline``: the output folder of an earlier run; its pain points keep their ids (``status``)."""
        base = cluster.load_baseline(baseline) if baseline is not None else None
        started = datetime.now(timezone.utc)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        read: ReadResult = read_inputs(list(inputs), self.config.input.fields)
        timings["read"] = time.perf_counter() - t
        t = time.perf_counter()
        documents, more_rejects = normalize_records(read.records, self.config.input)
        rejects = read.rejects + more_rejects
        timings["normalize"] = time.perf_counter() - t
        t = time.perf_counter()
        redactions = redact_corpus(
            documents,
            rejects,
            self.config.redact,
            self.config.segment.spacy_model,
            self.config.segment.batch_size,
        )
        timings["redact"] = time.perf_counter() - t
        # Too many rejects: stop before the models run; the writer keeps rejects.jsonl and run.json only.
        reject_limit = self.config.input.reject_limit(read.read)
        failed = reject_limit is not None and len(rejects) > reject_limit
        corpus = Corpus(documents)
        if len(documents) and not failed:
            for step in self.steps(progress, base):
                step.check(corpus, "requires")
                t = time.perf_counter()
                try:
                    step.run(corpus)
                except Exception as exc:
                    _raise_if_out_of_memory(exc, step.name, self.device, self.config.models.batch_size)
                    raise
                timings[step.name] = time.perf_counter() - t
                step.check(corpus, "assigns")
                logger.debug("step %s: %.2fs", step.name, timings[step.name])
        else:
            _empty_annotations(corpus)
        ended = datetime.now(timezone.utc)
        counts = {
            "read": read.read,
            "analysed": len(corpus.documents),
            "rejected": len(rejects),
            "segments": len(corpus.segments),
        }
        if counts["read"] != counts["analysed"] + counts["rejected"]:  # pragma: no cover - an invariant
            raise PipelineError(
                Errors.E207, count=counts["read"], rejects="rejects.jsonl", reason="internal count mismatch"
            )
        reasons: dict[str, int] = {}
        for r in rejects:
            reasons[r.code] = reasons.get(r.code, 0) + 1
        manifest = {
            "cxnlp_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "started_at": started.isoformat(),
            "ended_at": ended.isoformat(),
            "seconds": round((ended - started).total_seconds(), 3),
            "device": self.device,
            "config": config_to_dict(self.config),
            "inputs": [f.to_dict() for f in read.files],
            "fields": read.roles,
            "counts": counts,
            "rejects_by_code": reasons,
            "models": self.models_info(),
            "stages": self.stage_ids,
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "baseline": base.path if base is not None else None,
            "redactions": redactions,
            "languages": {str(k): int(v) for k, v in corpus.documents["language"].value_counts().items()}
            if "language" in corpus.documents
            else {},
            "status": "failed" if failed else "complete",
            "reject_limit": reject_limit,
        }
        return AnalysisResult(
            corpus.documents,
            corpus.segments,
            corpus.pain_points,
            corpus.stage_summary,
            rejects,
            manifest,
            self.stage_ids,
            self.config,
        )


def reject_limit_error(result: AnalysisResult, rejects_path: str | Path) -> PipelineError | None:
    """The E212 error of a run stopped by ``input.max_rejects``; None for a complete run."""
    if result.manifest.get("status") != "failed":
        return None
    c = result.counts
    reason = result.rejects[0].reason if result.rejects else "(none)"
    return PipelineError(
        Errors.E212,
        rejected=c["rejected"],
        read=c["read"],
        limit=result.manifest.get("reject_limit"),
        rejects=str(rejects_path),
        reason=reason,
    )


def _raise_if_out_of_memory(exc: Exception, step: str, device: str, batch_size: int) -> None:
    """Turn a device out-of-memory error (CUDA, MPS or host) into E214, which says what to lower."""
    oom = isinstance(exc, MemoryError)
    if not oom:
        import torch

        kinds = tuple(
            t
            for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
            if isinstance(t, type)
        )
        oom = isinstance(exc, kinds) or (
            isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
        )
    if oom:
        problem = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        cpu_hint = "" if device == "cpu" else ", or run on the CPU with --device cpu"
        raise ModelError(
            Errors.E214,
            step=step,
            device=device,
            problem=problem,
            batch_size=batch_size,
            smaller=max(1, batch_size // 4),
            cpu_hint=cpu_hint,
        ) from exc


def _empty_annotations(corpus: Corpus) -> None:
    d = corpus.documents
    for col, default in (
        ("n_segments", 0),
        ("stages", None),
        ("primary_stage", None),
        ("sentiment", None),
        ("sentiment_score", None),
        ("emotion", None),
        ("emotion_scores", None),
    ):
        d[col] = pd.Series([default] * len(d), dtype=object)
    corpus.segments = pd.DataFrame(columns=column_names("segments"))


def analyze(
    inputs: Any,
    config: Config | str | Path | None = None,
    device: str = "auto",
    overrides: dict[str, Any] | list[str] | None = None,
    progress: Progress | None = None,
    baseline: str | Path | None = None,
) -> AnalysisResult:
    """Analyse files, globs, ``-`` (stdin) or a list of record dicts; returns the tables and manifest.

    ``baseline``: an earlier run's output folder; pain points are matched to its own (ids, ``status``).

    >>> result = cxnlp.analyze([{"text": "My parcel arrived broken and two weeks late."}])
    >>> result.segments[["text", "stage", "sentiment"]]
    """
    if not isinstance(config, Config):
        config = load_config(config, overrides)
    elif overrides:
        extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        config = load_config(None, _merge(config_to_dict(config), extra))
    if isinstance(inputs, (str, Path, dict)):
        inputs = [inputs]
    return Analyzer(config, device).analyze(inputs, progress, baseline)
