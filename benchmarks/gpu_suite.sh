#!/usr/bin/env bash
# The GPU benchmark suite behind benchmarks/results/ (one GPU, about six minutes):
#   1. both bundled models, 60 prompts x 50 steps at their default guidance: uncached, hooks that never reuse,
#      every policy, and diffusers' own PAB / FasterCache beside cachelab's at the same schedule;
#   2. CogVideoX-2b with random weights (latency only): 50 steps, batched CFG, bf16, 49 frames at 480x720;
#   3. a short schedule search with measured latency as the cost.
# usage: benchmarks/gpu_suite.sh OUT_DIR [ARCHIVE]   (from the repository root, with cachelab's dependencies)
# With ARCHIVE, OUT_DIR is packed into that .tgz after every stage. SMALL=1 runs the same stages on tiny random
# models in seconds (to check the script on a CPU).
set -uo pipefail
out=${1:?usage: benchmarks/gpu_suite.sh OUT_DIR [ARCHIVE]}
archive=${2:-}
mkdir -p "$out"
cl="python3 -m cachelab.cli"
if [ "${SMALL:-0}" = 1 ]; then
  first=tiny-random-cogvideox; second=tiny-random-latte; big=tiny-random-cogvideox; search_model=tiny-random-latte
  steps=4; prompts=2; trials=3
else
  first=tiny-cogvideox; second=tiny-latte; big=cogvideox-2b; search_model=tiny-cogvideox
  steps=50; prompts=60; trials=20
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo cpu; } > "$out/device.txt"
git rev-parse HEAD > "$out/commit.txt" 2>/dev/null || true
date -u +%Y-%m-%dT%H:%M:%SZ > "$out/date.txt"

pack() { if [ -n "$archive" ]; then tar czf "$archive" -C "$out" .; fi; }

bench_model() {  # model limit
  timeout "$2" $cl bench --model "$1" --diffusers --steps $steps --prompts $prompts --repeats 2 \
    --json "$out/$1.json" --out-dir "$out" > "$out/$1.txt" 2>&1
  echo "$1: exit $?"; grep -E "│" "$out/$1.txt" | tail -n 13
  pack
}

bench_model $first 110

timeout 220 $cl bench --model $big --policies none --diffusers --steps $steps --prompts 1 --repeats 1 \
  --no-samples --json "$out/$big.json" --out-dir "$out" > "$out/$big.txt" 2>&1
echo "$big: exit $?"; grep -E "│" "$out/$big.txt" | tail -n 7
pack

bench_model $second 200

timeout 80 $cl search --model $search_model --policy fastercache --trials $trials --objectives latency,psnr \
  --prompts 4 --steps $steps --storage "sqlite:///$out/search/latency.db" --study latency-cost \
  --out "$out/search" > "$out/search.txt" 2>&1
echo "search: exit $?"; tail -n 25 "$out/search.txt"
pack
