#!/usr/bin/env bash
# The current-generation policies on one GPU, beside diffusers' and cache-dit's implementations of the same methods.
# usage: benchmarks/policies_gpu.sh STAGE OUT_DIR   (from the repository root, with cachelab's dependencies and,
#        for the cache-dit rows, cache-dit installed)
#   a:      on tiny-cogvideox (60 prompts, 50 steps): the sweeps of fbcache, dbcache and magcache beside diffusers'
#           FirstBlockCache and MagCache and cache-dit's DBCache; about 5 minutes on an H200.
#   b:      the same for teacache, taylorseer (beside diffusers' TaylorSeer), easycache, pab and fastercache; about
#           2 minutes.
#   2b:     CogVideoX-2b (random weights, bf16, 49 frames 480x720, 50 steps, 1 prompt): latency of the schedules
#           whose decisions do not depend on trained features (with random weights a data-dependent policy never
#           skips) beside diffusers'; about 3 minutes.
#   search: a MACs/PSNR search of magcache+cfg_cache on 8 prompts (TRIALS, default 80, about 4 minutes), packed
#           into search.tgz; then every Pareto config measured on 60 prompts beside magcache and diffusers' MagCache
#           (about 6 s a config on an H200: 80 trials gave 31, so allow 5 minutes or more).
#   forecast-search: a MACs/PSNR search of magcache with the stack residual's forecast
#           (examples/search/magcache-forecast.yaml) on 8 prompts, TRIALS (default 80) trials; about 5 minutes.
#   forecast-front: in one run on 60 prompts, every peer (fbcache, dbcache, magcache sweeps beside diffusers'
#           FirstBlockCache and MagCache and cache-dit's DBCache; pab and fastercache beside diffusers' PAB and
#           FasterCache) and the forecast search's Pareto configs at MIN_PSNR (default 35) dB or more; run
#           forecast-search into the same OUT_DIR first. About 8 minutes.
set -uo pipefail
stages="a|b|2b|search|forecast-search|forecast-front"
stage=${1:?usage: benchmarks/policies_gpu.sh $stages OUT_DIR}
out=${2:?usage: benchmarks/policies_gpu.sh $stages OUT_DIR}
mkdir -p "$out"
cl="python3 -m cachelab.cli"
frontier="python3 benchmarks/policy_frontier.py"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo cpu; } > "$out/device.txt"
date -u +%Y-%m-%dT%H:%M:%SZ > "$out/date-$stage.txt"

case "$stage" in
a)
  timeout 380 $frontier --model tiny-cogvideox --prompts 60 --steps 50 --repeats 3 \
    --families fbcache,dbcache,magcache --sweep dbcache=0.08,0.12,0.2 --out "$out/frontier-a" > "$out/frontier-a.txt" 2>&1
  echo "frontier-a: exit $?"; tail -n 30 "$out/frontier-a.txt" ;;
b)
  timeout 230 $frontier --model tiny-cogvideox --prompts 60 --steps 50 --repeats 3 \
    --families teacache,taylorseer,easycache,pab,fastercache --sweep taylorseer=3,5 \
    --out "$out/frontier-b" > "$out/frontier-b.txt" 2>&1
  echo "frontier-b: exit $?"; tail -n 25 "$out/frontier-b.txt" ;;
2b)
  timeout 330 $frontier --model cogvideox-2b --prompts 1 --steps 50 --repeats 1 \
    --families taylorseer,pab,fastercache --sweep taylorseer=3 --out "$out/frontier-2b" > "$out/frontier-2b.txt" 2>&1
  echo "frontier-2b: exit $?"; tail -n 12 "$out/frontier-2b.txt" ;;
search)
  timeout 280 $cl search --model tiny-cogvideox --policy magcache --policy cfg_cache --trials "${TRIALS:-80}" \
    --objectives macs,psnr --prompts 8 --steps 50 --seed 0 --no-progress --out "$out/search" > "$out/search.txt" 2>&1
  echo "search: exit $?"; grep -E "│|dominated" "$out/search.txt" | tail -n 24
  tar czf "$out/search.tgz" -C "$out" search/pareto.png search/trials.csv $(cd "$out" && ls search/pareto_*.yaml)
  timeout 900 $frontier --model tiny-cogvideox --prompts 60 --steps 50 --repeats 3 --families magcache \
    --configs $(ls -v "$out"/search/pareto_*.yaml) --out "$out/frontier-search" > "$out/frontier-search.txt" 2>&1
  echo "frontier-search: exit $?"; tail -n 30 "$out/frontier-search.txt" ;;
forecast-search)
  timeout 330 $cl search --model tiny-cogvideox --policy magcache --space examples/search/magcache-forecast.yaml \
    --trials "${TRIALS:-80}" --objectives macs,psnr --prompts 8 --steps 50 --seed 0 --no-wandb --no-progress \
    --out "$out/search" > "$out/search.txt" 2>&1
  echo "search: exit $?"; grep -E "│|dominated" "$out/search.txt" | tail -n 30
  tar czf "$out/search.tgz" -C "$out" search/pareto.png search/trials.csv $(cd "$out" && ls search/pareto_*.yaml) ;;
forecast-front)
  configs=()
  for f in $(ls -v "$out"/search/pareto_*.yaml); do  # each file's first line: "... psnr=45.11 dB"
    psnr=$(head -n 1 "$f" | sed -n 's/.*psnr=\([0-9.]*\) dB.*/\1/p')
    awk -v p="$psnr" -v m="${MIN_PSNR:-35}" 'BEGIN { exit !(p >= m) }' && configs+=("$f")
  done
  timeout 590 $frontier --model tiny-cogvideox --prompts 60 --steps 50 --repeats 3 \
    --families fbcache,dbcache,magcache,pab,fastercache --sweep dbcache=0.08,0.12,0.2,0.3 \
    --configs "${configs[@]}" --out "$out/frontier-forecast" > "$out/frontier-forecast.txt" 2>&1
  echo "frontier-forecast: exit $?"; tail -n 45 "$out/frontier-forecast.txt" ;;
esac
