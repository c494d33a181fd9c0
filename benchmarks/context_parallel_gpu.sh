#!/usr/bin/env bash
# Caches on diffusers' context parallelism, on two GPUs of one host (FasterCache's Table 4 form), and search
# throughput with one and two workers. Each stage fits in about 8 minutes on two H200s; each writes JSON and a
# markdown table (device, command, date, commit) under OUT_DIR and prints the table.
# usage: benchmarks/context_parallel_gpu.sh STAGE OUT_DIR   (from the repository root, with cachelab's dependencies)
#   table:  wan-1.3b (random weights, 81 frames 480x832, bf16), STEPS steps (default 50): 1 GPU uncached and 2 GPUs
#           context parallel (Ulysses) uncached -> OUT_DIR/table/
#   cached: 2 GPUs context parallel + fastercache, + pab, + fbcache (threshold FBCACHE_THRESHOLD, default 0.1: a
#           data-dependent policy; with random weights its decisions are measured, not tuned) -> OUT_DIR/table/,
#           whose table.md then holds every row with its speedup against 1 GPU uncached (run `table` first)
#   ring:   the same uncached and pab rows with Ring attention (cuDNN attention, which returns the log-sum-exp Ring
#           needs) -> OUT_DIR/ring/ (reuses the 1-GPU row of `table`)
#   search: `cachelab search` with 1 then 2 workers (cuda:0 and cuda:1), 40 trials of fastercache on tiny-cogvideox,
#           4 prompts x 50 steps: trials per hour and the accounting of every trial -> OUT_DIR/search/
# If the 1-GPU row of `table` does not finish in its time, run it with STEPS=20 (the table says the steps used).
set -uo pipefail
stage=${1:?usage: benchmarks/context_parallel_gpu.sh table|cached|ring|search OUT_DIR}
out=${2:?usage: benchmarks/context_parallel_gpu.sh table|cached|ring|search OUT_DIR}
steps=${STEPS:-50}
mkdir -p "$out"
export CACHELAB_COMMIT=${CACHELAB_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo cpu; } > "$out/device.txt"
date -u +%Y-%m-%dT%H:%M:%SZ > "$out/date-$stage.txt"
cp_bench="python3 benchmarks/context_parallel.py --nproc 2 --steps $steps"

case "$stage" in
table)
  timeout 480 $cp_bench --rows base --out "$out/table" > "$out/table.txt" 2>&1
  echo "table: exit $?"; cat "$out/table/table.md" 2>/dev/null || tail -n 30 "$out/table.txt" ;;
cached)
  timeout 480 $cp_bench --rows cached --policies fastercache,pab,fbcache \
    --param "fbcache.threshold=${FBCACHE_THRESHOLD:-0.1}" --out "$out/table" > "$out/cached.txt" 2>&1
  echo "cached: exit $?"; cat "$out/table/table.md" 2>/dev/null || tail -n 30 "$out/cached.txt" ;;
ring)
  mkdir -p "$out/ring/rows"; cp "$out/table/rows/1gpu.json" "$out/ring/rows/" 2>/dev/null
  timeout 480 $cp_bench --rows cp,pab --attention ring --backend _native_cudnn --out "$out/ring" > "$out/ring.txt" 2>&1
  echo "ring: exit $?"; cat "$out/ring/table.md" 2>/dev/null || tail -n 30 "$out/ring.txt" ;;
search)
  timeout 480 python3 benchmarks/search_workers.py --out "$out/search" --workers 1,2 --trials 40 \
    --model tiny-cogvideox --policy fastercache --prompts 4 --steps 50 > "$out/search.txt" 2>&1
  echo "search: exit $?"; cat "$out/search/workers.md" 2>/dev/null || tail -n 30 "$out/search.txt" ;;
*)
  echo "unknown stage $stage: table, cached, ring or search"; exit 2 ;;
esac
