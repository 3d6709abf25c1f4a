"""Journey stages: which stages of the taxonomy a segment speaks of (several or none).

The shipped head was trained for the default taxonomy. For a user's own taxonomy (a different content
hash) a head is trained at run start from the taxonomy's examples, on the embeddings of the encoder
runtime the pipeline runs (``models.backend``/``models.quantize``), and cached under
``~/.cache/cxnlp/stage-heads/<hash>`` keyed on that runtime too, so later runs load it instantly.

A stage is assigned when its probability passes its tuned threshold, unless "none" is both above its
own threshold and more likely than every passing stage. A document's stages are the union of its
segments' (in journey order); its primary stage is the stage of its most confident segment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .models import Heads, TaskSpec, build_features, encoder_input_form, make_head, runtime_key
from .taxonomy import Taxonomy, load_taxonomy

if TYPE_CHECKING:
    from .corpora import Labelled
    from .train import StageTrainConfig

logger = logging.getLogger(__name__)

REQUIRES = {"segments": ["text"]}
ASSIGNS = {"segments": ["stages", "stage", "stage_score"], "documents": ["stages", "primary_stage"]}


def decide(
    probs: np.ndarray, thresholds: np.ndarray, names: list[str], fallback: bool = False
) -> list[list[str]]:
    """Active stages per row; ``names[-1]`` is "none" (an empty list). With ``fallback``, a row where no
    stage passes its threshold takes its most likely label instead, which may be "none"."""
    out: list[list[str]] = []
    n_stages = len(names) - 1
    for row in probs:
        active = [j for j in range(n_stages) if row[j] >= thresholds[j]]
        if active and row[n_stages] >= thresholds[n_stages] and row[n_stages] > max(row[j] for j in active):
            active = []
        elif not active and fallback and (top := int(row.argmax())) < n_stages:
            active = [top]
        out.append([names[j] for j in sorted(active, key=lambda j: -row[j])])
    return out


class StageModel:
    def __init__(
        self, heads: Heads, spec: TaskSpec | None = None, module: Any = None, threshold: float | None = None
    ) -> None:
        self.heads = heads
        self.spec = spec or heads.tasks["stage"]
        self.module = module if module is not None else heads.modules["stage"]
        self.names = list(self.spec.labels)
        self.stage_ids = self.names[:-1]
        thresholds = self.spec.thresholds or [0.5] * len(self.names)
        if threshold is not None:
            thresholds = [threshold] * (len(self.names) - 1) + [thresholds[-1]]
        self.thresholds = np.array(thresholds, dtype=np.float32)
        # Heads trained with stage.fallback: a segment no stage passes takes its most likely label. A
        # threshold the user sets (journey.threshold) decides alone.
        self.fallback = bool(self.spec.extra.get("fallback", False)) and threshold is None

    @property
    def taxonomy_hash(self) -> str:
        return str(self.spec.extra.get("taxonomy_hash", ""))

    @classmethod
    def for_taxonomy(
        cls,
        heads: Heads,
        taxonomy: str | Taxonomy = "default",
        threshold: float | None = None,
        device: str = "cpu",
        backend: str = "auto",
        quantize: str = "none",
    ) -> StageModel:
        """The shipped head for the default taxonomy, else a head trained (or cached) for ``taxonomy``
        on the encoder ``load_encoder(heads.encoder, device, backend, quantize)``; either runs where
        ``heads`` run (``Heads.on``)."""
        tax = load_taxonomy(taxonomy) if isinstance(taxonomy, str) else taxonomy
        shipped = heads.tasks["stage"]
        if shipped.extra.get("taxonomy_hash") == tax.hash:
            return cls(heads, threshold=threshold)
        spec, module = _custom_head(heads, tax, device, backend, quantize)
        return cls(heads, spec, module.to(heads.device), threshold)

    def predict(self, embeddings: np.ndarray, texts: list[str]) -> np.ndarray:
        import torch

        x = build_features(self.spec.features, embeddings, texts)
        device = next(self.module.parameters()).device
        with torch.inference_mode():
            return torch.sigmoid(self.module(torch.from_numpy(x).to(device))).float().cpu().numpy()

    def active_stages(self, probs: np.ndarray) -> list[list[str]]:
        return decide(probs, self.thresholds, self.names, self.fallback)


def _custom_head(
    heads: Heads, tax: Taxonomy, device: str, backend: str = "auto", quantize: str = "none"
) -> tuple[TaskSpec, Any]:
    from safetensors.torch import load_file, save_file

    from .emoji import cache_key_part
    from .train import CACHE_DIR, train_stage_head

    runtime = runtime_key(backend, quantize, device)
    form = cache_key_part(encoder_input_form(heads.encoder), "|")
    recipe = f"{tax.hash}|{heads.encoder}|{heads.version}|{runtime}{form}|{CUSTOM_HEAD_RECIPE}"
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    folder = CACHE_DIR / "stage-heads" / key
    if (folder / "spec.json").is_file() and (folder / "head.safetensors").is_file():
        spec = TaskSpec.from_dict("stage", json.loads((folder / "spec.json").read_text()))
        module = make_head(spec, heads.embedding_dim)
        module.load_state_dict(load_file(str(folder / "head.safetensors")))
        module.eval()
        logger.info("stage head for taxonomy %s loaded from cache %s", tax.name, folder)
        return spec, module
    n = sum(len(s.examples) for s in tax.stages)
    logger.info(
        "training a stage head for taxonomy %s (%d stages, %d examples)", tax.name, len(tax.stages), n
    )
    tax = with_none_examples(tax)
    from .models import encode, load_encoder

    encoder = load_encoder(heads.encoder, device, backend, quantize)
    spec, module, info = train_stage_head(
        tax,
        heads.encoder,
        custom_head_config(tax),
        seed=0,
        embed=lambda t: encode(encoder, t),
        weak=description_examples(tax),
    )
    spec.extra["cv_macro_f1"] = info["cv"]["macro_f1"]
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / "head.safetensors"))
    (folder / "spec.json").write_text(json.dumps(spec.to_dict(), indent=2))
    logger.info(
        "stage head for %s: cross-validated macro-F1 %.3f; cached in %s",
        tax.name,
        info["cv"]["macro_f1"],
        folder,
    )
    return spec, module


# Part of a custom head's cache key: a change in how the head is trained must not reuse old heads.
# 2: the stages' description phrases train with the examples, and the head falls back to the most
# likely label (session 24).
CUSTOM_HEAD_RECIPE = "custom-head-2"


def custom_head_config(tax: Taxonomy) -> StageTrainConfig:
    """The training settings of a custom taxonomy's head: linear with few examples, the MLP with more
    (measured in benchmarks/bench_fewshot.py)."""
    from .train import StageTrainConfig

    n = sum(len(s.examples) for s in tax.stages)
    per_stage = n / len(tax.stages)
    return StageTrainConfig(
        hidden=0 if per_stage < 50 else 256,
        epochs=100 if per_stage < 50 else 40,
        lr=0.01 if per_stage < 50 else 0.002,
        batch_size=16 if n < 500 else 64,
        folds=5,
        fallback=True,
    )


def description_examples(tax: Taxonomy) -> Labelled | None:
    """Each stage's description phrases (:attr:`cxnlp.taxonomy.Stage.description_phrases`) as examples of
    that stage that only ever train (never cross-validated or scored). On the second written stage set they
    alone add 8.6, 4.6 and 0.7 points of macro-F1 at 5, 10 and 25 examples per stage (docs/taxonomy.md)."""
    from .corpora import Labelled

    pairs = [(p, [s.id]) for s in tax.stages for p in s.description_phrases]
    return Labelled([p for p, _ in pairs], [l for _, l in pairs], "stage descriptions") if pairs else None


def with_none_examples(tax: Taxonomy, seed: int = 0) -> Taxonomy:
    """The "none" examples a custom head trains on: the taxonomy's own, else the default taxonomy's,
    capped at twice the mean examples per stage so that a few-shot taxonomy is not drowned by them."""
    import random

    pool = list(tax.none_examples or load_taxonomy("default").none_examples)
    cap = max(10, int(2 * sum(len(s.examples) for s in tax.stages) / len(tax.stages)))
    if len(pool) > cap:
        pool = random.Random(seed).sample(pool, cap)
    return dataclasses.replace(tax, none_examples=tuple(pool))


def annotate_segments(segments: pd.DataFrame, model: StageModel, probs: np.ndarray) -> None:
    active = model.active_stages(probs)
    order = {s: i for i, s in enumerate(model.stage_ids)}
    segments["stages"] = [sorted(a, key=order.__getitem__) for a in active]
    segments["stage"] = [a[0] if a else None for a in active]
    best = probs[:, : len(model.stage_ids)].max(1) if len(probs) else np.zeros(0)
    segments["stage_score"] = [
        float(probs[i, order[a[0]]]) if a else float(best[i]) for i, a in enumerate(active)
    ]
    segments["stage_score"] = segments["stage_score"].astype("float32")


def annotate_documents(documents: pd.DataFrame, segments: pd.DataFrame, stage_ids: list[str]) -> None:
    order = {s: i for i, s in enumerate(stage_ids)}
    union: dict[str, set[str]] = {}
    best: dict[str, tuple[float, str]] = {}
    for doc_id, stages, stage, score in zip(
        segments["doc_id"], segments["stages"], segments["stage"], segments["stage_score"]
    ):
        union.setdefault(doc_id, set()).update(stages)
        if stage is not None and (doc_id not in best or score > best[doc_id][0]):
            best[doc_id] = (float(score), stage)
    documents["stages"] = [sorted(union.get(d, ()), key=order.__getitem__) for d in documents["doc_id"]]
    documents["primary_stage"] = [best[d][1] if d in best else None for d in documents["doc_id"]]
