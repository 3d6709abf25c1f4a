#!/usr/bin/env bash
# The GPU host's side of an encoder sweep (benchmarks/gpu_train_sweep.py), with the kit that
# benchmarks/gpu_train_kit.sh built carried (KIT/site.tar.xz, KIT/base/, KIT/shim/, KIT/data.tar.xz):
#   KIT=.gpu/train-kit OUT=$OUT bash benchmarks/gpu_train_run.sh '{"A": ["epochs=6"], "B": [...]}'
# It refuses a base folder that is not the full model: the analyze benchmarks' travel copy
# (benchmarks/gpu_base.py, .gpu/kit/base.tar.xz) has its layers zeroed, and a session-13 sweep trained four
# void encoders from it. DEADLINES (default "385,548") as in gpu_train_sweep.py.
set -euo pipefail
KIT=$(realpath "${KIT:-.gpu/train-kit}")
mkdir -p /tmp/x ../shared
tar -xJf "$KIT/site.tar.xz" -C /tmp/x
tar -xJf "$KIT/data.tar.xz" -C ../shared
export PYTHONPATH=/tmp/x/site:$KIT/shim:$PWD CXNLP_GPU_BASE=$KIT/base
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 - "$KIT/base" <<'PY'
import sys
from safetensors.torch import load_file
w = load_file(sys.argv[1] + "/model.safetensors")
zero = [k for k, v in w.items() if ".layer." in k and k.endswith("weight") and not v.float().abs().sum()]
if zero or len(w) < 100:
    sys.exit(f"{sys.argv[1]}: not the full base encoder ({len(zero)} zeroed layer weights, {len(w)} tensors)")
PY
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c 'import sys, torch, transformers; print(sys.version, torch.__version__, transformers.__version__)'; } \
  > "$OUT/machine.txt" 2>&1
DEADLINES=${DEADLINES:-385,548} python3 benchmarks/gpu_train_sweep.py "$1"
