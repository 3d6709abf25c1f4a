#!/usr/bin/env bash
# cxnlp analyze end to end on a lent GPU host, with the kit from benchmarks/gpu_kit.sh carried as
# .gpu/kit/{site312.tar.xz,base.tar.xz,shim} (benchmarks/README.md, "GPU: 100k and 1M on one H100").
#   N=1000000 LIMIT=555 CW=8 OUT=/some/dir bash benchmarks/gpu_e2e.sh
# N reviews (make_corpus.py, seed 0), killed after LIMIT seconds, CW cluster workers. Writes into $OUT:
# machine.txt, run.log (--log-format json; python benchmarks/run_timeline.py run.log --wall S),
# wrapper.txt (exit code, seconds, peak RSS of the largest process), rss.tsv (the whole process tree's PSS
# and RSS every second, workers included: run_timeline.py run.log --rss rss.tsv), run.json, vmstat.txt and
# gpu.csv (every 5 s).
# EQ=2000: then the first 2,000 reviews on DEVICE and on the CPU, compared (compare.json, compare_runs.py).
# LOCAL=1 DEVICE=cpu: a dry run here, with this machine's packages.
set -u
X=/tmp/x; mkdir -p "$X" "$OUT"
export PYTHONPATH=$X/site312:$PWD/.gpu/kit/shim:$PWD CXNLP_GPU_BASE=$X/base HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[ -n "${LOCAL:-}" ] && export PYTHONPATH=$PWD
[ -n "${LOCAL:-}" ] || { tar -xJf .gpu/kit/site312.tar.xz -C "$X" && tar -xJf .gpu/kit/base.tar.xz -C "$X"; } &
python3 benchmarks/make_corpus.py --n "${N:-1000000}" -o /tmp/r.jsonl > /dev/null &
wait
{ nproc; lscpu | grep -E 'Model name|Thread|Core|Socket'; free -g | head -2
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c 'import torch, sys; print(sys.version, torch.__version__)'; wc -l /tmp/r.jsonl; } > "$OUT/machine.txt" 2>&1
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$OUT/gpu.csv" 2>&1 & SMI=$!
vmstat -t 5 > "$OUT/vmstat.txt" 2>&1 & VMSTAT=$!
rm -rf /tmp/out
python3 -c "import resource, subprocess, sys, time; t = time.perf_counter(); rc = subprocess.run(sys.argv[1:]).returncode; s = time.perf_counter() - t; print('rc', rc, 'seconds', s, 'peak_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)" \
  python3 benchmarks/tree_rss.py --out "$OUT/rss.tsv" -- timeout "${LIMIT:-555}" python3 -m cxnlp.cli analyze /tmp/r.jsonl -o /tmp/out --device "${DEVICE:-cuda}" \
  --log-format json --set "cluster.workers=${CW:-8}" 2> "$OUT/run.log" | tail -1 > "$OUT/wrapper.txt"
cp /tmp/out/run.json "$OUT/" 2>/dev/null
kill $SMI $VMSTAT 2>/dev/null
cat "$OUT/wrapper.txt"
# EQ=2000: the first EQ reviews again, on DEVICE and on the CPU, compared segment by segment
# (benchmarks/compare_runs.py; the travel base keeps the token rows of this corpus only, so compare on it)
if [ -n "${EQ:-}" ]; then
  head -n "$EQ" /tmp/r.jsonl > /tmp/eq.jsonl
  for d in "${DEVICE:-cuda}" cpu; do
    rm -rf "/tmp/eq-$d"; timeout 300 python3 -m cxnlp.cli analyze /tmp/eq.jsonl -o "/tmp/eq-$d" --device "$d" -q
  done
  python3 benchmarks/compare_runs.py "/tmp/eq-${DEVICE:-cuda}" /tmp/eq-cpu > "$OUT/compare.json"
  echo "compare rc $?"; cat "$OUT/compare.json"
fi
