#!/usr/bin/env bash
# The GPU host's side of an encoder sweep (benchmarks/gpu_train_sweep.py), with the kit that
# benchmarks/gpu_train_kit.sh built carried (KIT/site.tar.xz, KIT/base/, KIT/shim/, KIT/data.tar.xz):
#   KIT=.gpu/train-kit OUT=$OUT bash benchmarks/gpu_train_run.sh '{"A": ["epochs=6"], "B": [...]}'
# Carry this kit's base, not the analyze benchmarks' travel copy (benchmarks/gpu_base.py,
# .gpu/kit/base.tar.xz): its layers are zeroed, and each encoder run stops on it with E216 (the check in
# cxnlp train, finetune.check_base_embeddings). DEADLINES (default "385,548") as in gpu_train_sweep.py.
set -euo pipefail
KIT=$(realpath "${KIT:-.gpu/train-kit}")
mkdir -p /tmp/x ../shared
tar -xJf "$KIT/site.tar.xz" -C /tmp/x
tar -xJf "$KIT/data.tar.xz" -C ../shared
export PYTHONPATH=/tmp/x/site:$KIT/shim:$PWD CXNLP_GPU_BASE=$KIT/base
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c 'import sys, torch, transformers; print(sys.version, torch.__version__, transformers.__version__)'; } \
  > "$OUT/machine.txt" 2>&1
DEADLINES=${DEADLINES:-385,548} python3 benchmarks/gpu_train_sweep.py "$1"
