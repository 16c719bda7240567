#!/usr/bin/env bash
# One call on a lent GPU machine (its time is scarce): the GPU checks, then training.
#
#   python -m bench.gpu_carry --train ../shared/data/train --kodak ../shared/data/kodak --out .carry
#   # device run, carrying .carry and .whl (constriction wheel for the machine's Python):
#   OUT=... DEADLINE=540 bash bench/gpu_session.sh
#
# Phase 1, GPU otherwise idle (timings): copy ceiling, bit-path kernel benchmarks,
#   the Triton entropy coder against the native one on Kodak (byte identity + times,
#   bench.gpu_coder), its compiled tests, bench.throughput with torch on CUDA at batch
#   1, 8, 32 -- the Triton coder (the CUDA default) and the native one side by side, fp16
#   networks (the CUDA default), nvJPEG in the same run -- torch.compile with CUDA graphs
#   against eager (bench.throughput --compile), and the stage timeline.
# Phase 2: two training runs side by side until DEADLINE seconds after the start
#   (A: the standing run, bench/standing.sh, continued from its committed snapshot; B: the larger 'medium' config from scratch,
#   bench/gpu_train.sh), while the correctness
#   checks run beside them (compiled Triton kernel tests, CUDA pipeline tests, runner
#   parity torch CPU vs CUDA fp32/fp16 and torch vs Triton bit path on Kodak files).
# Every step has its own time limit.  $OUT gets A.safetensors, B.safetensors and
# results.tar.gz (every log, JSON and training log) — the device returns at most 8 files.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
T0=$(date +%s)
DEADLINE=${DEADLINE:-540}
OUT=${OUT:-/tmp/gpu_out}
R=/tmp/gpu_res
RUNS=/tmp/gpu_runs
mkdir -p "$OUT" "$R" "$RUNS"
exec > >(tee "$R/session.log") 2>&1
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
unset TRITON_INTERPRET
PY=python3
# The native v2 entropy coder: build it here when cmake, a compiler and nanobind (a
# carried wheel in .whl/) are present; without it bitstream v2 would run on its slow
# numpy reference, so the throughput steps fall back to v1's coder and say so.
ENTROPY=rans:triton,rans:native
if command -v cmake > /dev/null && $PY -c "import nanobind" 2> /dev/null && \
   cmake -S . -B /tmp/native -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v $PY)" > /tmp/native.log 2>&1 && \
   cmake --build /tmp/native -j 8 >> /tmp/native.log 2>&1; then
    export HNLC_NATIVE_LIB="$(ls /tmp/native/rans_native*.so)"
elif ! $PY -c "import engine.rans_native" 2> /dev/null; then
    ENTROPY=rans:triton,context
    echo "native coder not built here (see /tmp/native.log): the Triton coder is compared with v1's coder"
fi
el() { echo $(( $(date +%s) - T0 )); }
step() {  # step NAME LIMIT_S command...
    local name=$1 lim=$2; shift 2
    local left=$(( DEADLINE - $(el) - 15 ))   # never run past the deadline: the weights must be packed
    [ "$lim" -gt "$left" ] && lim=$left
    if [ "$lim" -lt 5 ]; then echo "$name skipped: no time left" | tee -a "$R/steps.txt"; return; fi
    echo "=== [$(el)s] $name (limit ${lim}s): $*"
    timeout -k 5 "$lim" "$@" > "$R/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc at $(el)s" | tee -a "$R/steps.txt"
    tail -n 6 "$R/$name.log"
}
pack() {
    for run in A B; do
        [ -f "$RUNS/$run/weights.safetensors" ] && cp "$RUNS/$run/weights.safetensors" "$OUT/$run.safetensors"
        mkdir -p "$R/run$run"
        cp "$RUNS/$run"/*.json "$RUNS/$run"/*.jsonl "$RUNS/$run.log" "$R/run$run/" 2>/dev/null
    done
    tar -czf "$OUT/results.tar.gz" -C "$R" .
    echo "packed at $(el)s"
}

{ nvidia-smi; $PY -c "import sys, torch, triton, onnxruntime; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name()); print('triton', triton.__version__, 'onnxruntime', onnxruntime.__version__)"; } > "$R/env.txt" 2>&1
cat "$R/env.txt"

# ---- phase 1: timings on an idle GPU
step preflight 60 $PY -c "
import torch
from kernels import pack_triton
assert torch.cuda.is_available() and not pack_triton.interpreter_active()
print('CUDA', torch.cuda.get_device_name(), '- Triton compiled, interpreter off')"
step copy_bandwidth 30 $PY -m bench.copy_bandwidth "$R/copy_bandwidth.json"
step bench_kernels 60 env BENCH_BATCHES=1,8,32 $PY -m pytest bench/bench_kernels.py -q -rs -p no:cacheprovider \
    --benchmark-json="$R/bench_kernels.json" --benchmark-columns=min,median,rounds
step gpu_coder 60 $PY -m bench.gpu_coder --data .carry/kodak --batch 32 --out "$R"
step tests_rans_triton 90 $PY -m pytest tests/test_rans_triton.py -q -rs -p no:cacheprovider -k cuda
step throughput 150 $PY -m bench.throughput --data .carry/kodak --backends torch-cuda --batches 1,8,32 \
    --repeat 2 --no-build --entropy "$ENTROPY" --out "$R"
step pipeline_timeline 45 env PIPELINE_TIMELINE="$R/pipeline_timeline.json" $PY -m pytest \
    tests/test_pipeline_cuda.py -k timeline -q -s -rs -p no:cacheprovider
# torch.compile with CUDA graphs against eager, side by side (issue #15: where it pays); last of
# phase 1, so the checks above always run, and it shortens training rather than them
step throughput_compile 90 $PY -m bench.throughput --data .carry/kodak --backends torch-cuda --batches 8,32 \
    --repeat 2 --no-build --no-baselines --entropy rans:triton --compile off,reduce-overhead --out "$R/compile"

# ---- phase 2: training (background) + correctness checks beside it
LEFT=$(( DEADLINE - $(el) - 45 ))
MIN=$($PY -c "print(max(1.0, $LEFT / 60))")
echo "=== [$(el)s] training for $MIN minutes"
COMMON=(--data .carry/train --split .carry/split.json --config small --distortion mse --lam 0.05
        --target-bpp 0.45 --batch 64 --patch 128 --steps 1000000 --minutes "$MIN" --log-every 250
        --save-every 1000 --bias-range 2.0)
# A continues the standing run (bench/standing.sh, issue #24): its committed snapshot, its config
# (small16), its rate target, its ΔE term and colour-mixed batches (bench/standing.sh's: the later
# --target-bpp wins over COMMON's); bf16 autocast + channels_last + cudnn.benchmark on CUDA.
# Bring A.safetensors home and continue on the CPU with bench/standing.sh (RUN folder with it as --init).
$PY -m engine.train "${COMMON[@]}" --config small16 --out "$RUNS/A" --init bench/standing/weights.safetensors \
    --target-bpp 0.48 --delta-e 0.0005 --colour-boost 0.25 --colour-drawn 0.25 --val-every 2000 \
    --lr 1.5e-4 --warmup 100 --rate-warmup 1 --seed 1 > "$RUNS/A.log" 2>&1 &
PA=$!
# B: the larger config from scratch (bench/gpu_train.sh, CI-tested on the CPU with CONFIG=tiny)
CONFIG=${B_CONFIG:-medium} MINUTES="$MIN" DATA=.carry/train SPLIT=.carry/split.json OUT="$RUNS/B" PY=$PY \
    bash bench/gpu_train.sh > "$RUNS/B.log" 2>&1 &
PB=$!

step tests_kernels_compiled 150 $PY -m pytest tests/test_kernels.py -q -rs -p no:cacheprovider
step tests_pipeline_cuda 150 $PY -m pytest tests/test_pipeline_cuda.py -q -rs -p no:cacheprovider
step parity 120 $PY -m bench.kodak_checks --data .carry/kodak --only parity,kernels \
    --parity torch:cpu,torch:cuda,torch:cuda:fp16 --out "$R/kodak_checks_gpu"

wait $PA; echo "train A rc=$? at $(el)s" | tee -a "$R/steps.txt"; tail -n 3 "$RUNS/A.log"
wait $PB; echo "train B rc=$? at $(el)s" | tee -a "$R/steps.txt"; tail -n 3 "$RUNS/B.log"
pack
cat "$R/steps.txt"
