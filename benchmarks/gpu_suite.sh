#!/usr/bin/env bash
# The GPU benchmark suite behind benchmarks/results/ (one GPU, a few minutes):
#   1. both bundled models, 60 prompts x 50 steps at their default guidance: uncached, hooks that never reuse,
#      every policy, and diffusers' own PAB / FasterCache beside cachelab's at the same schedule;
#   2. CogVideoX-2b with random weights (latency only): 50 steps, batched CFG, bf16, 49 frames at 480x720;
#   3. a short schedule search with measured latency as the cost.
# usage: benchmarks/gpu_suite.sh OUT_DIR      (run from the repository root; needs cachelab's dependencies)
set -uo pipefail
out=${1:?usage: benchmarks/gpu_suite.sh OUT_DIR}
mkdir -p "$out"
cl="python3 -m cachelab.cli"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/device.txt"
git rev-parse HEAD > "$out/commit.txt" 2>/dev/null || true
date -u +%Y-%m-%dT%H:%M:%SZ > "$out/date.txt"

for model in tiny-cogvideox tiny-latte; do
  timeout 200 $cl bench --model "$model" --diffusers --steps 50 --prompts 60 --repeats 2 \
    --json "$out/$model.json" --out-dir "$out" > "$out/$model.txt" 2>&1
  echo "$model: exit $?"; tail -n 22 "$out/$model.txt"
done

timeout 330 $cl bench --model cogvideox-2b --policies none --diffusers --steps 50 --prompts 1 --repeats 1 \
  --no-samples --json "$out/cogvideox-2b.json" --out-dir "$out" > "$out/cogvideox-2b.txt" 2>&1
echo "cogvideox-2b: exit $?"; tail -n 14 "$out/cogvideox-2b.txt"
