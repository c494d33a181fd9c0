#!/usr/bin/env bash
# The current-generation policies on one GPU, beside diffusers' and cache-dit's implementations of the same methods.
# usage: benchmarks/policies_gpu.sh STAGE OUT_DIR   (from the repository root, with cachelab's dependencies and,
#        for the cache-dit rows, cache-dit installed)
#   STAGE=a: a MACs/PSNR search of magcache+cfg_cache on 8 prompts (40 trials), then on tiny-cogvideox (60 prompts,
#            50 steps) the sweeps of fbcache, dbcache and magcache beside diffusers' FirstBlockCache and MagCache and
#            cache-dit's DBCache, and the search's Pareto configs; about 8 minutes on an H200.
#   STAGE=b: the same for teacache, taylorseer (beside diffusers' TaylorSeer), easycache, pab and fastercache; then
#            CogVideoX-2b (random weights, bf16, 49 frames 480x720, 50 steps, 1 prompt): latency of the schedules
#            whose decisions do not depend on trained features (with random weights a data-dependent policy never
#            skips) beside diffusers'; about 9 minutes.
set -uo pipefail
stage=${1:?usage: benchmarks/policies_gpu.sh a|b OUT_DIR}
out=${2:?usage: benchmarks/policies_gpu.sh a|b OUT_DIR}
mkdir -p "$out"
cl="python3 -m cachelab.cli"
frontier="python3 benchmarks/policy_frontier.py"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo cpu; } > "$out/device.txt"
date -u +%Y-%m-%dT%H:%M:%SZ > "$out/date-$stage.txt"

if [ "$stage" = a ]; then
  timeout 160 $cl search --model tiny-cogvideox --policy magcache --policy cfg_cache --trials 40 \
    --objectives macs,psnr --prompts 8 --steps 50 --seed 0 --no-progress --out "$out/search" \
    > "$out/search.txt" 2>&1
  echo "search: exit $?"; grep -E "│|dominated" "$out/search.txt" | tail -n 16
  configs=$(ls "$out"/search/pareto_*.yaml 2>/dev/null | head -n 6)
  timeout 380 $frontier --model tiny-cogvideox --prompts 60 --steps 50 --repeats 3 \
    --families fbcache,dbcache,magcache --sweep dbcache=0.08,0.12,0.2 --configs $configs \
    --out "$out/frontier-a" > "$out/frontier-a.txt" 2>&1
  echo "frontier-a: exit $?"; tail -n 40 "$out/frontier-a.txt"
elif [ "$stage" = b ]; then
  timeout 230 $frontier --model tiny-cogvideox --prompts 60 --steps 50 --repeats 3 \
    --families teacache,taylorseer,easycache,pab,fastercache --sweep taylorseer=3,5 \
    --out "$out/frontier-b" > "$out/frontier-b.txt" 2>&1
  echo "frontier-b: exit $?"; tail -n 25 "$out/frontier-b.txt"
  timeout 330 $frontier --model cogvideox-2b --prompts 1 --steps 50 --repeats 1 \
    --families taylorseer,pab,fastercache --sweep taylorseer=3 --out "$out/frontier-2b" > "$out/frontier-2b.txt" 2>&1
  echo "frontier-2b: exit $?"; tail -n 12 "$out/frontier-2b.txt"
fi
