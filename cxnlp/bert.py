"""A BERT encoder's forward pass in plain torch, for the CPU bfloat16 runtime (``models.Bf16Encoder``).

all-MiniLM-L6-v2 and cx-encoder are BERT models. Loading them through transformers costs about 4 s of
every ``cxnlp analyze`` run on a 2-core CPU (importing transformers and its model registry, then
``AutoModel.from_pretrained``), more than a 2,000-review run spends in the encoder's own forward passes
of some chunks. This module reads the same ``config.json`` and ``model.safetensors`` and runs the same
operations as transformers' ``BertModel`` with its default ``sdpa`` attention, in 0.1-0.2 s.

Only what a sentence encoder uses is implemented: absolute position embeddings, token type 0, GELU
(erf), no pooler, no cross-attention, inference only. :func:`load` answers ``None`` for any other
configuration, and the caller falls back to transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# Checkpoint prefixes of the same weights: sentence-transformers folders store the bare BertModel, some
# exports keep BertForX's "bert." prefix.
_PREFIXES = ("", "bert.", "model.")


def supported(config: dict[str, Any]) -> bool:
    """Whether :class:`Bert` computes what transformers' ``BertModel`` does for this ``config.json``."""
    return (
        config.get("model_type") == "bert"
        and config.get("hidden_act", "gelu") == "gelu"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and not config.get("is_decoder", False)
        and not config.get("add_cross_attention", False)
    )


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.out_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, h // self.heads).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(b, t, h)
        x = self.attn_norm(self.attn_out(ctx) + x)
        return self.out_norm(self.output(F.gelu(self.intermediate(x))) + x)


class Bert(nn.Module):
    """The encoder stack: ``forward(input_ids, attention_mask)`` gives the last hidden states."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        hidden, eps = int(config["hidden_size"]), float(config.get("layer_norm_eps", 1e-12))
        self.word_embeddings = nn.Embedding(int(config["vocab_size"]), hidden)
        self.position_embeddings = nn.Embedding(int(config["max_position_embeddings"]), hidden)
        self.token_type_embeddings = nn.Embedding(int(config.get("type_vocab_size", 2)), hidden)
        self.embed_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            _Layer(hidden, int(config["num_attention_heads"]), int(config["intermediate_size"]), eps)
            for _ in range(int(config["num_hidden_layers"]))
        )
        self.hidden_size = hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        x = (
            self.word_embeddings(input_ids)
            + self.token_type_embeddings.weight[0]
            + self.position_embeddings.weight[:t]
        )
        x = self.embed_norm(x)
        mask = attention_mask.bool()[:, None, None, :]  # True = attend, as sdpa reads a boolean mask
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def load_checkpoint(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy a BertModel state dict's tensors in (float32), checking that every one is there."""
        names = {
            "embeddings.word_embeddings.weight": "word_embeddings.weight",
            "embeddings.position_embeddings.weight": "position_embeddings.weight",
            "embeddings.token_type_embeddings.weight": "token_type_embeddings.weight",
            "embeddings.LayerNorm.weight": "embed_norm.weight",
            "embeddings.LayerNorm.bias": "embed_norm.bias",
        }
        parts = {
            "attention.self.query": "query",
            "attention.self.key": "key",
            "attention.self.value": "value",
            "attention.output.dense": "attn_out",
            "attention.output.LayerNorm": "attn_norm",
            "intermediate.dense": "intermediate",
            "output.dense": "output",
            "output.LayerNorm": "out_norm",
        }
        for i in range(len(self.layers)):
            for src, dst in parts.items():
                for p in ("weight", "bias"):
                    names[f"encoder.layer.{i}.{src}.{p}"] = f"layers.{i}.{dst}.{p}"
        prefix = next((p for p in _PREFIXES if f"{p}embeddings.word_embeddings.weight" in weights), None)
        missing = [k for k in names if prefix is None or prefix + k not in weights]
        if missing:
            raise ValueError(f"not a BERT checkpoint: missing {', '.join(missing[:3])}")
        state = {dst: weights[f"{prefix}{src}"].float() for src, dst in names.items()}
        self.load_state_dict(state, strict=True)


def load(location: str | Path) -> Bert | None:
    """The model in a transformers folder (``config.json``, ``model.safetensors``), or ``None`` when it is
    not a plain BERT encoder or its weights are not in one safetensors file."""
    from safetensors.torch import load_file

    folder = Path(location)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    weights_file = folder / "model.safetensors"
    if not supported(config) or not weights_file.is_file():
        return None
    model = Bert(config)
    model.load_checkpoint(load_file(str(weights_file)))
    return model.eval()
