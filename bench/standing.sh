#!/usr/bin/env bash
# The standing training run (issue #24): every session advances it in the background.
#
#   MINUTES=120 bash bench/standing.sh            # resume (or start) under runs/standing, nice'd
#   kill -STOP $(cat runs/standing.pid)           # pause it while you benchmark ...
#   kill -CONT $(cat runs/standing.pid)           # ... and resume it after
#   python -m bench.standing_save                 # at the end of a session: the compact snapshot to commit
#   python -m bench.promotion --candidate DIR     # after engine.ship --out-root elsewhere: does it beat the shipped model?
#
# A fresh machine has no runs/standing/state.pt: the run warm-starts from the committed
# snapshot bench/standing/weights.safetensors (fp16; its precision loss is measured by
# bench.standing_save) with a fresh AdamW state and a new cosine cycle of MINUTES; on the
# same machine it resumes from state.pt.  bf16 autocast where the CPU has bf16 matrix
# units (AMX), fp32 elsewhere (python -m engine.train --precision auto); on a GPU, bench/gpu_session.sh
# continues the same run.  Config small16 (the small model with 16 colour codes), MSE plus
# a small ΔE76 (CIELAB) term, batches that mix photo crops with colour-boosted crops and
# drawn saturated shapes, a quarter each (#29: from step 53493 on; before it, no ΔE term and
# 0.15 each).  A warm-started run counts its steps from 0; bench.standing_save numbers its
# points after the snapshot's (snapshot.json "total_step").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN=${RUN:-runs/standing}
MINUTES=${MINUTES:-120}
DATA=${DATA:-../shared/data/train}
PY=${PY:-python3}
mkdir -p "$RUN"
init=()
if [ ! -f "$RUN/state.pt" ]; then init=(--init bench/standing/weights.safetensors); fi
nohup nice -n "${NICE:-10}" "$PY" -m engine.train --data "$DATA" --out "$RUN" --config small16 "${init[@]}" \
    --distortion mse --lam 0.05 --target-bpp 0.48 --rate-warmup 1 --lr "${LR:-1e-4}" --warmup 100 \
    --batch "${BATCH:-16}" --steps 100000000 --minutes "$MINUTES" --log-every 100 --save-every 500 \
    --val-every 1000 --delta-e 0.0005 --colour-boost 0.25 --colour-drawn 0.25 --threads "${THREADS:-1}" \
    --seed "$(date +%s)" \
    "$@" >> "$RUN.out" 2>&1 &
echo $! > "$RUN.pid"
echo "standing run: pid $(cat "$RUN.pid"), log $RUN.out, validation $RUN/val.jsonl"
