#!/usr/bin/env bash
# The native coder under AddressSanitizer + UndefinedBehaviorSanitizer: builds
# native/rans.cpp and native/pixels.cpp with -DHNLC_SANITIZE=ON (plain CMake, beside the
# installed extension), then runs the native tests, the pixel conversions' tests and the
# lane fuzz cases against that build (engine/native.py loads it from HNLC_NATIVE_LIB).  Any ASan/UBSan report aborts the
# run, so a pass means no out-of-bounds access and no undefined behaviour was hit.
#
#   bash native/sanitize.sh [pytest args...]      (default: the native, pixel and fuzz tests, slow included)
#
# Needs the project's venv active (nanobind comes with .[test]).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${HNLC_ASAN_BUILD:-build/asan}"
mkdir -p "$out"
cmake -S . -B "$out" -DHNLC_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DPython_EXECUTABLE="$(command -v python)" > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
cmake --build "$out" -j 2 >> "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
lib="$(ls "$out"/rans_native*.so)"
# Python itself is not instrumented: the ASan runtime has to be loaded first, and
# libstdc++ with it (ASan intercepts __cxa_throw and must find the real one).
export LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so)"
# Python's own small-object allocator is invisible to ASan: use malloc for everything,
# so a read past a bytes object or an array is caught.
export PYTHONMALLOC=malloc
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export HNLC_NATIVE_LIB="$(realpath "$lib")"
if [ "$#" -eq 0 ]; then
  # (not the memory-bomb test: it measures RSS, which ASan inflates, and runs no new native code)
  set -- tests/test_lanes.py tests/test_fuzz.py tests/test_pixels.py -m "slow or not slow" -k "not 10k and not bomb"
fi
python -m pytest -q -p no:cacheprovider "$@"
