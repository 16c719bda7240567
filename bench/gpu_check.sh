#!/usr/bin/env bash
# One command for a GPU machine: the Triton bit path, compiled, checked and timed.
#
#   bash bench/gpu_check.sh            # results in ./bench/results/gpu
#   OUT=/some/dir bash bench/gpu_check.sh
#
# 1. tests/test_kernels.py with TRITON_INTERPRET unset -> compiled kernels on CUDA
#    (the conftest only turns the interpreter on when there is no CUDA; the CPU
#    rows skip in this run);
# 2. the same tests with TRITON_INTERPRET=1 (CPU path through the interpreter);
# 3. device-to-device copy bandwidth (a large tensor copy_), the ceiling;
# 4. bench/bench_kernels.py at batch 1, 8, 32 of 768x512 images (n=60, h=64, w=96);
# 5. tests/test_pipeline_cuda.py: the CUDA batch pipeline (bytes, memory estimate,
#    a per-stage timeline with stream overlap in pipeline_timeline.json);
# 6. summary.json: every benchmark's GB/s next to the copy ceiling.
# Every step's log lands in $OUT; the exit status is non-zero if any step failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-./bench/results/gpu}"
mkdir -p "$OUT"
: > "$OUT/steps.txt"
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
PY="${PYTHON:-python}"
export TRITON_DEFAULT_FP_FUSION="${TRITON_DEFAULT_FP_FUSION:-1}"
STATUS=0

step() {  # step NAME command...: run, tee the log, record the exit status
    local name=$1; shift
    echo "=== $name: $*"
    "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "$name rc=$rc" | tee -a "$OUT/steps.txt"
    [ "$rc" -eq 0 ] || STATUS=1
}

{ nvidia-smi || true; "$PY" -c "import sys, torch, triton; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda); print('triton', triton.__version__)"; } > "$OUT/env.txt" 2>&1

step preflight env -u TRITON_INTERPRET "$PY" -c "
import torch
assert torch.cuda.is_available(), 'no CUDA device: this script is for a GPU machine'
from kernels import pack_triton
assert not pack_triton.interpreter_active(), 'kernels were decorated in interpreter mode'
print('CUDA', torch.cuda.get_device_name(), '- Triton kernels compiled (interpreter off)')
"
if [ "$STATUS" -ne 0 ]; then echo "preflight failed, see $OUT/preflight.log"; exit 1; fi

step tests_compiled env -u TRITON_INTERPRET "$PY" -m pytest tests/test_kernels.py -v -rs \
    -p no:cacheprovider --junitxml="$OUT/tests_compiled.xml"

step tests_interpreter env TRITON_INTERPRET=1 "$PY" -m pytest tests/test_kernels.py -q -rs \
    -p no:cacheprovider --junitxml="$OUT/tests_interpreter.xml"

step copy_bandwidth env -u TRITON_INTERPRET "$PY" -m bench.copy_bandwidth "$OUT/copy_bandwidth.json"

step bench env -u TRITON_INTERPRET BENCH_BATCHES="${BENCH_BATCHES:-1,8,32}" "$PY" -m pytest \
    bench/bench_kernels.py -rs -p no:cacheprovider --benchmark-json="$OUT/bench_kernels.json" \
    --benchmark-columns=min,mean,median,rounds

# the CUDA batch pipeline: bytes == single-image API, memory estimate, per-stage timeline
step pipeline env -u TRITON_INTERPRET PIPELINE_TIMELINE="$OUT/pipeline_timeline.json" "$PY" -m pytest \
    tests/test_pipeline_cuda.py -v -s -rs -p no:cacheprovider --junitxml="$OUT/pipeline.xml"

step summary "$PY" - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
ceil = json.load(open(os.path.join(out, "copy_bandwidth.json")))["GBps_best"]
rows = []
for b in json.load(open(os.path.join(out, "bench_kernels.json")))["benchmarks"]:
    x = b["extra_info"]
    rows.append(dict(name=b["name"], batch=x.get("batch"), min_ms=b["stats"]["min"] * 1e3,
                     bytes_total=x.get("bytes_total"), GBps_best=x.get("GBps_best"),
                     frac_of_copy=(x.get("GBps_best") or 0) / ceil))
json.dump(dict(copy_GBps=ceil, rows=rows), open(os.path.join(out, "summary.json"), "w"), indent=1)
print(f"copy ceiling {ceil:.0f} GB/s")
for r in rows:
    print(f"{r['name']:45s} {r['min_ms']:9.3f} ms {r['GBps_best'] or 0:9.2f} GB/s {100 * r['frac_of_copy']:6.1f}% of copy")
EOF

echo "results in $OUT (steps.txt: per-step exit status)"
exit "$STATUS"
