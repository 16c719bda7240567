#!/usr/bin/env bash
# Train one config inside one device run (a lent GPU's 10 minutes), resumable:
#
#   CONFIG=medium MINUTES=8 DATA=.carry/train SPLIT=.carry/split.json OUT=/tmp/gpu_runs/B \
#       bash bench/gpu_train.sh [more engine.train arguments]
#
# GPU-sized batches of 128x128 patches, MSE distortion, from scratch (or --init ...).
# Running it again with the same OUT resumes from the last checkpoint.  CI runs it
# on the CPU with CONFIG=tiny and a few steps (tests/test_train_ship.py), so the
# script a device run depends on is tested before the device time is spent.
# Ship the result with: python -m engine.ship --run OUT --name NAME --data ../shared/data/train
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONFIG=${CONFIG:-medium}
MINUTES=${MINUTES:-8}
DATA=${DATA:-.carry/train}
OUT=${OUT:-/tmp/gpu_runs/$CONFIG}
BATCH=${BATCH:-64}
PATCH=${PATCH:-128}
STEPS=${STEPS:-1000000}
PY=${PY:-python3}
split_args=()
if [ -n "${SPLIT:-}" ]; then split_args=(--split "$SPLIT"); fi
exec "$PY" -m engine.train --data "$DATA" "${split_args[@]}" --config "$CONFIG" --distortion mse \
    --lam 0.05 --target-bpp 0.45 --batch "$BATCH" --patch "$PATCH" --steps "$STEPS" --minutes "$MINUTES" \
    --log-every 250 --save-every 1000 --bias-range 2.0 --lr 4e-4 --warmup 300 --rate-warmup 1500 --seed 2 \
    --out "$OUT" "$@"
