"""Torch eager vs ONNX Runtime: encode and decode latency (pytest-benchmark).

Not part of the default test run (pytest only collects tests/ and test_*.py);
run it explicitly on an otherwise idle machine:

    OMP_NUM_THREADS=2 python -m pytest bench/bench_runners.py -q

Models: ``tiny`` (random weights, exported into a temporary build dir) and, when
``engine/checkpoints/small`` exists, ``small`` (built into the regular build dir,
so a second run reuses the artifacts).  Both backends use the same thread count.

Environment:
  BENCH_SIZE     HxW of the input image (default 512x768)
  BENCH_BATCH    batch size (default 1)
  BENCH_THREADS  threads for torch and ONNX Runtime (default: os.cpu_count())
  BENCH_RESULTS  JSON file for medians and torch/ORT ratios
                 (default bench/results/bench_runners.json; "" to skip writing)
"""
from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine import build as B  # noqa: E402
from engine.net.checkpoint import CHECKPOINT_DIR, resolve, write_model_dir  # noqa: E402
from engine.net.export import example_inputs  # noqa: E402
from engine.net.model import CONFIGS, CodecNet  # noqa: E402
from engine.runners.ort_runner import OrtRunner  # noqa: E402
from engine.runners.torch_runner import TorchRunner  # noqa: E402

H, W = (int(v) for v in os.environ.get("BENCH_SIZE", "512x768").lower().split("x"))
BATCH = int(os.environ.get("BENCH_BATCH", "1"))
THREADS = int(os.environ.get("BENCH_THREADS", "0")) or os.cpu_count() or 1
RESULTS_FILE = os.environ.get("BENCH_RESULTS", str(REPO / "bench" / "results" / "bench_runners.json"))

MODELS = ["tiny", "small"]
MEDIANS: dict[str, dict[str, dict[str, float]]] = {}


def _setup(model: str, tmp_root: Path):
    if model == "tiny":
        torch.manual_seed(0)
        write_model_dir(tmp_root / "models" / "tiny", CodecNet(CONFIGS["tiny"]), {1: 0.0})
        q = resolve("tiny", 1, root=tmp_root / "models")
        out = tmp_root / "build"
    else:
        if not (CHECKPOINT_DIR / model / "model.json").exists():
            pytest.skip(f"engine/checkpoints/{model} is not there (yet)")
        q = resolve(model)
        out = None
    B.build_quality(q, "onnxruntime", "fp32", out, log=lambda *_: None)
    runners = {
        "torch": TorchRunner(q, device="cpu", threads=THREADS),
        "onnxruntime": OrtRunner(q, device="cpu", threads=THREADS, build_dir=out),
    }
    ycc = example_inputs("encoder", q.config, BATCH, H, W, seed=0)
    dec = example_inputs("decoder", q.config, BATCH, H, W, seed=0)
    return q, runners, ycc, dec


@pytest.fixture(scope="module", params=MODELS)
def setup(request, tmp_path_factory):
    return request.param, *_setup(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    rows = {}
    for key, per in sorted(MEDIANS.items()):
        if {"torch", "onnxruntime"} <= per.keys():
            rows[key] = {**per, "torch_over_onnxruntime": per["torch"] / per["onnxruntime"]}
            print(f"\n{key}: torch {per['torch'] * 1e3:.2f} ms, onnxruntime {per['onnxruntime'] * 1e3:.2f} ms, "
                  f"ratio torch/ORT {rows[key]['torch_over_onnxruntime']:.2f}")
    if rows and RESULTS_FILE:
        import onnxruntime

        out = Path(RESULTS_FILE)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "input": [BATCH, 3, H, W], "threads": THREADS, "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "median_seconds": rows,
        }, indent=1) + "\n")


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("op", ["encode", "decode"])
def test_runner(benchmark, setup, op, backend):
    model, q, runners, ycc, dec = setup
    r = runners[backend]
    fn = (lambda: r.encode(*ycc)) if op == "encode" else (lambda: r.decode(*dec))
    benchmark.group = f"{model} {op} {BATCH}x{H}x{W}"
    benchmark.extra_info.update(model=model, backend=backend, threads=THREADS)
    fn()  # warm up (first-run allocations, ORT arena)
    benchmark(fn)
    if benchmark.stats is not None:   # None under --benchmark-disable
        MEDIANS.setdefault(f"{model} {op}", {})[backend] = benchmark.stats.stats.median
