#!/usr/bin/env bash
# Train (or resume) both bundled models at once on one GPU, one process each, then check their prompt following.
#   scripts/train_bundled.sh OUT_DIR [MINUTES] [TOTAL_MINUTES] [RESUME_DIR]
# OUT_DIR/<kind>/ gets the EMA checkpoint shards, log.jsonl and the exported pipeline; OUT_DIR/eval-<kind>.jsonl
# the prompt-following scores at three guidance scales, OUT_DIR/samples-<kind>.pt sixteen videos per scale.
set -euo pipefail
out=${1:?usage: scripts/train_bundled.sh OUT_DIR [MINUTES] [TOTAL_MINUTES] [RESUME_DIR]}
minutes=${2:-8}
total=${3:-$minutes}
resume=${4:-}
mkdir -p "$out"
pids=()
for kind in cogvideox latte; do
  args=(--model "$kind" --out "$out/$kind" --minutes "$minutes" --total-minutes "$total")
  if [ -n "$resume" ]; then args+=(--resume "$resume/$kind"); fi
  python -m cachelab.zoo.training "${args[@]}" > "$out/train-$kind.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
for kind in cogvideox latte; do
  python -m cachelab.zoo.evaluate "$out/$kind/pipeline" --kind "$kind" --videos 48 --guidance 1.5 3 5 \
    --save "$out/samples-$kind.pt" > "$out/eval-$kind.jsonl" 2>"$out/eval-$kind.err" &
done
wait
cat "$out"/eval-*.jsonl
