"""The runner: read -> normalize -> redact -> segment -> embed -> journey -> sentiment -> emotion -> cluster_space -> cluster -> aggregate.

Each step is a function over a :class:`Corpus` that declares the columns it requires and assigns;
the runner checks both, times every step and records it in the run manifest. The encoder runs once
(the embed step) and every head reads that embedding, so stages, sentiment, emotion and clustering
cost one forward pass per segment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import aggregate, cluster, emotion, journey, sentiment
from .about import SCHEMA_VERSION, __version__
from .config import Config, _merge, config_to_dict, load_config, parse_overrides
from .device import resolve_device
from .digest import Digest
from .errors import Errors, ModelError, PipelineError
from .finetune import cluster_map_for
from .io import ReadResult, Record, Reject, read_inputs
from .models import (
    Heads,
    encode,
    encode_pretokenized,
    encoder_backend,
    load_encoder,
)
from .normalize import normalize_records
from .redact import redact_corpus
from .schema import column_names
from .segment import segment_documents

if TYPE_CHECKING:
    from .output import TableStream

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
    features: dict[str, np.ndarray] = field(default_factory=dict)  # see Part.features
    phrase_stats: cluster.PhraseStats | None = None  # see Part.phrase_stats
    digest: Digest | None = None  # what the report reads of the tables, made by the aggregate step

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
    #: Tables too large to hold whole, by name: a function that yields the table's Arrow pieces in order,
    #: with the schema's types. The writers prefer these to the frames of the same name, which then hold
    #: only what the corpus-wide steps and the report read (see :func:`cxnlp.batch.run_batch`).
    streams: dict[str, TableStream] = field(default_factory=dict)
    #: What the report reads of the documents and segments (:class:`~cxnlp.digest.Digest`); without it,
    #: the report counts the frames.
    digest: Digest | None = None

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.manifest["counts"])

    def write(self, outdir: str | Path, format: str | None = None) -> Path:
        from .output import write_outputs

        return write_outputs(self, Path(outdir), format or self.config.output.format)


@dataclass
class Part:
    """What the per-document steps (normalize -> emotion) give for one chunk of input.

    Every column of ``documents`` and ``segments`` is final except those the corpus-wide steps
    (cluster, aggregate) add; ``embeddings`` holds one normalised row per segment."""

    documents: pd.DataFrame
    segments: pd.DataFrame
    embeddings: np.ndarray
    rejects: list[Reject]
    redactions: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # per-segment text features computed by a prepare worker (models.TEXT_FEATURES); read by the heads,
    # never written out
    features: dict[str, np.ndarray] = field(default_factory=dict)
    # what the batch runner's reduce took from the phrases it dropped (cluster.trim_phrases); read by the
    # cluster step
    phrase_stats: cluster.PhraseStats | None = None


def emptied(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame``'s columns with no rows, sharing no memory with it. (An empty slice, even copied, of an
    Arrow-backed column holds the whole column's buffers: pandas copies immutable Arrow data by
    reference.)"""
    return pd.DataFrame({c: pd.Series([], dtype=frame[c].dtype) for c in frame.columns})


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """``pd.concat``, keeping a column categorical where every frame has it so: their categories are
    unified first (pandas turns categoricals whose categories differ into objects)."""
    for col in frames[0].columns:
        dtypes = [f[col].dtype for f in frames if col in f.columns]
        if len(dtypes) == len(frames) and all(isinstance(d, pd.CategoricalDtype) for d in dtypes):
            categories = sorted(set().union(*(d.categories for d in dtypes)))
            frames = [f.assign(**{col: f[col].cat.set_categories(categories)}) for f in frames]
    return pd.concat(frames, ignore_index=True)


def _merge_features(parts: list[Part]) -> dict[str, np.ndarray]:
    """The parts' per-segment features (``Part.features``) in order, the token ids' offsets
    (``models.pretokenize``) shifted past the earlier parts' ids."""
    with_segments = [p for p in parts if len(p.segments)]
    merged: dict[str, np.ndarray] = {}
    for name in with_segments[0].features if with_segments else ():
        arrays = [p.features[name] for p in with_segments]
        if name == "token_offsets":
            shifts = np.cumsum([0] + [int(a[-1]) for a in arrays[:-1]])
            merged[name] = np.concatenate([arrays[0][:1]] + [a[1:] + s for a, s in zip(arrays, shifts)])
        else:
            merged[name] = np.concatenate(arrays)
    return merged


def merge_parts(parts: list[Part]) -> Part:
    """One Part from several, in order (documents, segments, embeddings, rejects and features
    concatenated)."""
    if len(parts) == 1:
        return parts[0]
    docs = [p.documents for p in parts if len(p.documents)]
    segs = [p.segments for p in parts if len(p.segments)]
    embs = [p.embeddings for p in parts if len(p.embeddings)]
    redactions: dict[str, int] = {}
    timings: dict[str, float] = {}
    for p in parts:
        for k, n in p.redactions.items():
            redactions[k] = redactions.get(k, 0) + n
        for k, sec in p.timings.items():
            timings[k] = timings.get(k, 0.0) + sec
    documents = _concat(docs) if docs else parts[0].documents.iloc[:0]
    return Part(
        documents,
        _concat(segs) if segs else parts[0].segments.iloc[:0],
        np.concatenate(embs) if embs else parts[0].embeddings[:0],
        [r for p in parts for r in p.rejects],
        redactions,
        timings,
        _merge_features(parts),
    )


class Analyzer:
    """Holds the loaded models so that several inputs can be analysed without reloading."""

    def __init__(self, config: Config | None = None, device: str = "auto") -> None:
        self.config = config or load_config()
        self.device = resolve_device(device)
        # the heads (the kNN vote and a custom taxonomy's stage head too) run next to the encoder
        self.heads = Heads.load(self.config.models.heads).on(self.device)
        self.encoder_name = self.config.models.encoder or self.heads.encoder
        models = self.config.models
        self.encoder = load_encoder(self.encoder_name, self.device, models.backend, models.quantize)
        # The heads read the tuned embedding; pain points are clustered on it mapped back towards the base
        # encoder's geometry (models/cx-encoder/cluster_map.safetensors), when the encoder has a map.
        self.cluster_map = cluster_map_for(self.encoder_name)
        self.cluster_map_hash = (
            None if self.cluster_map is None else hashlib.sha256(self.cluster_map.tobytes()).hexdigest()[:16]
        )
        self.batch_size = auto_batch_size(self.device, self.config.models.batch_size)
        self.stage_model = journey.StageModel.for_taxonomy(
            self.heads,
            self.config.journey.taxonomy,
            self.config.journey.threshold,
            self.device,
            backend=models.backend,
            quantize=models.quantize,
        )
        self.sentiment_model = sentiment.SentimentModel(self.heads)
        # Fail before any work starts (and before a batch run creates its work folder) when the
        # configured spaCy pipeline cannot be loaded; the segment step reuses the cached pipeline.
        from .segment import load_spacy

        load_spacy(self.config.segment.spacy_model)
        self.emotion_model = emotion.EmotionModel(self.heads)

    @property
    def stage_ids(self) -> list[str]:
        return self.stage_model.stage_ids

    def models_info(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        import spacy

        try:  # the installed version, without importing it (seconds) where the ONNX backend did not
            st_version: str | None = version("sentence-transformers")
        except PackageNotFoundError:
            st_version = None

        from .segment import load_spacy

        nlp = load_spacy(self.config.segment.spacy_model)
        space = self.embedding_models()
        return {
            "heads": {**space["heads"], "path": self.heads.meta.get("path")},
            "encoder": {
                **space["encoder"],
                "runtime": encoder_backend(self.encoder),
                "batch_size": self.batch_size,
                "sentence_transformers": st_version,
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
        """All steps after redaction, in order: the per-document ones, then the corpus-wide ones."""
        return self.map_steps(progress) + self.reduce_steps(progress, baseline)

    def map_steps(self, progress: Progress | None) -> list[Step]:
        """Steps that look at one document at a time (chunkable): segment, embed, journey, sentiment, emotion,
        cluster_space."""
        return [s for s in self._steps(progress, None) if s.name not in REDUCE_STEPS]

    def reduce_steps(
        self, progress: Progress | None, baseline: cluster.Baseline | None = None, counted: bool = False
    ) -> list[Step]:
        """Steps that need the whole corpus: cluster, aggregate. ``counted``: the corpus holds only the
        segments the cluster step clusters, and a digest of the whole run (a batch run's reduce)."""
        steps = [s for s in self._steps(progress, baseline) if s.name in REDUCE_STEPS]
        if counted:  # the documents are the clustered segments' only: aggregate from the digest alone
            steps = [Step(s.name, s.run) if s.name == "aggregate" else s for s in steps]
        return steps

    def _steps(self, progress: Progress | None, baseline: cluster.Baseline | None = None) -> list[Step]:
        cfg = self.config

        def tick(label: str, total: int | None) -> Callable[[int], None]:
            return progress(label, total) if progress else (lambda n: None)

        def segment_step(c: Corpus) -> None:
            c.segments = segment_documents(c.documents, cfg.segment, tick("segment", len(c.documents)))

        def embed_step(c: Corpus) -> None:
            texts = c.segments["text"].tolist()
            c.embeddings = self.embed(texts, tick("embed", len(texts)), c.features)

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
                self.sentiment_model.predict(c.embeddings, c.segments["text"].tolist(), c.features)
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

        def cluster_space_step(c: Corpus) -> None:
            c.embeddings = self.cluster_space(c.embeddings)

        def cluster_step(c: Corpus) -> None:
            c.pain_points, assignment = cluster.find_pain_points(
                c.segments,
                c.embeddings,
                c.documents,
                self.stage_ids,
                cfg.cluster,
                cfg.seed,
                self.comparable_baseline(baseline),
                c.phrase_stats,
                (c.digest.segments, c.digest.trend_span) if c.digest is not None else None,
            )
            if c.digest is None:
                c.segments["pain_point_id"] = assignment
            else:
                # A batch run's reduce: the rows clustered go here (the stage summary reads the digest);
                # what the run needs of them is each one's pain point id.
                c.segments = pd.DataFrame({"pain_point_id": assignment})
                c.documents = emptied(c.documents)

        def aggregate_step(c: Corpus) -> None:
            if c.digest is None:  # else a batch run counted its chunks (and adds n_segments as it writes)
                c.documents["n_segments"] = (
                    c.documents["doc_id"].map(c.segments.groupby("doc_id").size()).fillna(0).astype("int32")
                )
                c.digest = Digest.of(c.documents, c.segments, self.stage_ids, cfg.report.verbatims)
            live = (
                c.pain_points[c.pain_points["status"].fillna("") != "gone"]
                if "status" in c.pain_points
                else c.pain_points
            )
            c.stage_summary = aggregate.summary_of(c.digest, live, cfg.report.top_pain_points)

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
            Step("cluster_space", cluster_space_step),
            Step("cluster", cluster_step, cluster.REQUIRES, cluster.ASSIGNS),
            Step("aggregate", aggregate_step, aggregate.REQUIRES, {"documents": ["n_segments"]}),
        ]

    def prepare(self, records: list[Record], rejects: list[Reject]) -> Part:
        """normalize and redact one chunk of records: the documents table before any model runs."""
        return prepare(records, rejects, self.config)

    def annotate(
        self, part: Part, progress: Progress | None = None, steps: Iterable[str] | None = None
    ) -> Part:
        """Run the per-document steps (segment, embed, journey, sentiment, emotion, cluster_space; or those named in
        ``steps``) on a prepared chunk, in place. They look at no other chunk, so chunks can run
        anywhere (a worker process, a Ray actor) and in any order."""
        corpus = Corpus(part.documents, part.segments, part.embeddings, features=part.features)
        wanted = set(steps) if steps is not None else None
        chosen = [s for s in self.map_steps(progress) if wanted is None or s.name in wanted]
        if len(corpus.documents):
            self._run(chosen, corpus, part.timings)
        elif wanted is None or "emotion" in wanted:
            _empty_annotations(corpus)
        part.documents, part.segments = corpus.documents, corpus.segments
        part.embeddings = corpus.embeddings if len(corpus.segments) else part.embeddings[:0]
        part.features = {}  # consumed by the heads
        return part

    def embedding_models(self) -> dict[str, Any]:
        """The part of ``run.json``'s "models" block that the pain points' centroids depend on (the
        encoder's ``cluster_map``: the hash of the map clustering reads the embeddings through, None for
        the encoder's own)."""
        return {
            "heads": {"name": self.heads.meta.get("name"), "version": self.heads.version},
            "encoder": {"name": self.encoder_name, "cluster_map": self.cluster_map_hash},
        }

    def comparable_baseline(self, baseline: cluster.Baseline | None) -> cluster.Baseline | None:
        """``baseline``, marked when its centroids are in another embedding space than this run's (it was
        analysed with other models): its pain points are then matched on keyphrases and labels."""
        if baseline is None or cluster.same_space(self.embedding_models(), baseline.models):
            return baseline
        old = baseline.models
        logger.warning(
            "baseline %s was analysed with other models (heads %s, cluster map %s; now %s, %s): its pain "
            "points are matched to this run's by keyphrases and labels, not by their centroids",
            baseline.path,
            (old.get("heads") or {}).get("version"),
            (old.get("encoder") or {}).get("cluster_map"),
            self.heads.version,
            self.cluster_map_hash,
        )
        return dataclasses.replace(baseline, centres=False)

    def cluster_space(self, embeddings: np.ndarray) -> np.ndarray:
        """The segments' embeddings as clustering reads them: ``normalise(embeddings @ cluster_map)`` when
        the encoder has a cluster map, else unchanged. Applied once the heads have read them."""
        if self.cluster_map is None or not len(embeddings):
            return embeddings
        return cluster.normalize(np.asarray(embeddings, dtype=np.float32) @ self.cluster_map)

    def pretokenizer(self) -> tuple[str, int] | None:
        """(encoder name, max length) for the prepare workers when the encoder is a torch model on an
        accelerator, whose batches should not wait for the host to tokenise; else None."""
        if self.device == "cpu" or encoder_backend(self.encoder) != "torch":
            return None
        return self.encoder_name, int(self.encoder.get_max_seq_length())

    def embed(
        self,
        texts: list[str],
        progress: Callable[[int], None] | None = None,
        features: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Encode with the configured batch size (from the workers' token ids when ``features`` holds
        them); on an accelerator, a batch that runs out of memory is retried at half the size (down to
        1) before E214 is raised. The size that worked is kept."""
        tokens = features or {}
        pretokenized = "token_offsets" in tokens and len(tokens["token_offsets"]) == len(texts) + 1
        while True:
            try:
                if pretokenized and encoder_backend(self.encoder) == "torch":
                    return encode_pretokenized(
                        self.encoder, tokens["token_ids"], tokens["token_offsets"], self.batch_size, progress
                    )
                return encode(self.encoder, texts, self.batch_size, progress)
            except Exception as exc:
                if self.device == "cpu" or self.batch_size <= 1 or not _is_out_of_memory(exc):
                    raise
                _free_accelerator_memory(self.device)
                self.batch_size = max(1, self.batch_size // 2)
                logger.warning(
                    "out of memory on %s: retrying with batch size %d", self.device, self.batch_size
                )

    def _run(self, steps: list[Step], corpus: Corpus, timings: dict[str, float]) -> None:
        for step in steps:
            step.check(corpus, "requires")
            t = time.perf_counter()
            try:
                step.run(corpus)
            except Exception as exc:
                _raise_if_out_of_memory(exc, step.name, self.device, self.config.models.batch_size)
                raise
            timings[step.name] = timings.get(step.name, 0.0) + time.perf_counter() - t
            step.check(corpus, "assigns")
            logger.debug("step %s: %.2fs", step.name, timings[step.name])

    def finish(
        self,
        part: Part,
        read: ReadResult,
        started: datetime,
        baseline: cluster.Baseline | None = None,
        progress: Progress | None = None,
        failed: bool = False,
        extra_counts: dict[str, int] | None = None,
        extra_manifest: dict[str, Any] | None = None,
        digest: Digest | None = None,
    ) -> AnalysisResult:
        """The corpus-wide steps (cluster, aggregate) over the annotated documents, and the run manifest.

        Embeddings go through float16 here whatever their source, so an in-memory run, a chunked run
        (which stores them as float16 on disk) and a Ray run cluster exactly the same numbers.

        ``digest``: the run's documents and segments, counted (a batch run's, chunk by chunk); ``part``
        then holds only the segments the cluster step clusters and their documents."""
        timings = dict(part.timings)
        corpus = Corpus(part.documents, part.segments, np.asarray(part.embeddings, dtype=np.float16))
        corpus.phrase_stats = part.phrase_stats
        corpus.digest = digest
        if digest is not None:  # the corpus holds the clustered rows alone: the cluster step lets them go
            part.documents, part.segments = emptied(part.documents), emptied(part.segments)
        n_documents = digest.documents if digest is not None else len(corpus.documents)
        if n_documents and not failed:
            self._run(self.reduce_steps(progress, baseline, counted=digest is not None), corpus, timings)
        else:
            _empty_annotations(corpus)
        ended = datetime.now(timezone.utc)
        rejects = part.rejects
        counts = {
            "read": read.read,
            "analysed": n_documents,
            "rejected": len(rejects),
            "segments": digest.segments if digest is not None else len(corpus.segments),
            **(extra_counts or {}),
        }
        accounted = counts["analysed"] + counts["rejected"] + counts.get("unchanged", 0)
        if counts["read"] != accounted:  # pragma: no cover - an invariant
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
            "baseline": baseline.path if baseline is not None else None,
            "redactions": part.redactions,
            "languages": _languages(corpus.documents, digest),
            "status": "failed" if failed else "complete",
            "reject_limit": self.config.input.reject_limit(read.read),
            **(extra_manifest or {}),
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
            digest=corpus.digest,
        )

    def analyze(
        self, inputs: Iterable[Any], progress: Progress | None = None, baseline: str | Path | None = None
    ) -> AnalysisResult:
        """Analyse everything in memory (one chunk). ``baseline``: the output folder of an earlier run;
        its pain points keep their ids (``status``). For inputs larger than memory, or resumable and
        incremental runs, see :func:`cxnlp.batch.run_batch`."""
        base = cluster.load_baseline(baseline) if baseline is not None else None
        started = datetime.now(timezone.utc)
        t = time.perf_counter()
        read: ReadResult = read_inputs(list(inputs), self.config.input.fields)
        read_seconds = time.perf_counter() - t
        part = self.prepare(read.records, read.rejects)
        part.timings = {"read": read_seconds, **part.timings}
        # Too many rejects: stop before the models run; the writer keeps rejects.jsonl and run.json only.
        reject_limit = self.config.input.reject_limit(read.read)
        failed = reject_limit is not None and len(part.rejects) > reject_limit
        if not failed:
            self.annotate(part, progress)
        return self.finish(part, read, started, base, progress, failed)


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


REDUCE_STEPS = ("cluster", "aggregate")
# The per-segment model steps a batch or Ray worker runs on a prepared chunk (segmenting happened in the
# prepare workers): the encoder, the three heads, then the move to the clustering space.
MODEL_STEPS = ("embed", "journey", "sentiment", "emotion", "cluster_space")


def prepare(records: list[Record], rejects: list[Reject], config: Config) -> Part:
    """normalize and redact one chunk of records (no model needed: runs in any worker process)."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    documents, more_rejects = normalize_records(records, config.input)
    rejects = list(rejects) + more_rejects
    timings["normalize"] = time.perf_counter() - t
    t = time.perf_counter()
    redactions = redact_corpus(
        documents, rejects, config.redact, config.segment.spacy_model, config.segment.batch_size
    )
    timings["redact"] = time.perf_counter() - t
    return Part(documents, pd.DataFrame(), np.zeros((0, 0), np.float32), rejects, redactions, timings)


def auto_batch_size(device: str, configured: int) -> int:
    """The encoder batch size: as configured on the CPU; on CUDA, scaled up to what a quarter of the
    free memory holds for MiniLM-sized segments (about 1.5 MB per sequence of 128 tokens in fp16),
    capped at 1024. Out-of-memory errors halve it again at run time (:meth:`Analyzer.embed`)."""
    if not device.startswith("cuda"):
        return configured
    import torch

    try:
        free, _total = torch.cuda.mem_get_info(torch.device(device))
    except Exception:  # pragma: no cover - depends on the driver
        return configured
    fits = int(free * 0.25 // 1_500_000)
    chosen = int(min(1024, max(configured, fits)))
    logger.info("batch size on %s: %d (%.1f GB free)", device, chosen, free / 1e9)
    return chosen


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    import torch

    kinds = tuple(
        t
        for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
        if isinstance(t, type)
    )
    return isinstance(exc, kinds) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _free_accelerator_memory(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _raise_if_out_of_memory(exc: Exception, step: str, device: str, batch_size: int) -> None:
    """Turn a device out-of-memory error (CUDA, MPS or host) into E214, which says what to lower."""
    oom = _is_out_of_memory(exc)
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


def _languages(documents: pd.DataFrame, digest: Digest | None) -> dict[str, int]:
    """Documents per detected language, the most frequent first."""
    if digest is not None:
        counts = digest.languages
    elif "language" in documents:
        counts = Counter(documents["language"].dropna().astype(str).tolist())
    else:
        return {}
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


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
