"""Torch eager vs ONNX Runtime on the same networks, as paired rounds:
``python -m bench.paired``.

    python -m bench.paired [--data ../shared/data/kodak] [--quality Q] [--batches 1,8]
        [--rounds 30] [--threads T] [--out bench/results]

Why paired: this project's CPU box drifts by tens of percent within a minute, so
two backends timed in separate windows (pytest-benchmark's groups, or whole
rounds of ``bench.throughput``) can differ by the drift alone.  Here each round
runs both backends back to back on the same input, in a random order, and the
statistic is the median over rounds of the per-round ratio (torch seconds / ONNX
Runtime seconds), with its quartiles: drift slower than a round cancels out.

Inputs are real: each round takes the next image(s) (cropped to ``--size``,
512x768 by default, so that every batch has one shape), encoded once by the torch runner to get the
decoder's inputs.  Network calls only: no entropy coding, no pre/post-processing.
Writes ``<out>/paired-<machine>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import random
import statistics as st
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.throughput import load_images, machine_info, write_results  # noqa: E402


def _quartiles(v: list[float]) -> tuple[float, float, float]:
    q = st.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return q[0], st.median(v), q[2]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.paired", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--model-dir", default=None, help="folder holding model folders (default: shipped)")
    ap.add_argument("--build-dir", default=None, help="artifact folder (default: ENGINE_BUILD_DIR or build/)")
    ap.add_argument("--quality", type=int, default=None)
    ap.add_argument("--size", default="512x768", help="HxW crop of every image (multiples of 16)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)

    import torch

    import engine
    from engine.build import build_quality
    from engine.io.planes import preprocess
    from engine.runners.ort_runner import OrtRunner
    from engine.runners.torch_runner import TorchRunner
    from kernels import reference

    q = engine.net.checkpoint.resolve(args.model or engine.net.checkpoint.DEFAULT_MODEL, args.quality, root=args.model_dir)
    cfg = q.config
    threads = args.threads or torch.get_num_threads()
    H, W = (int(v) for v in args.size.lower().split("x"))
    build_quality(q, "onnxruntime", out=args.build_dir, log=lambda *a: None)
    runners = {"torch": TorchRunner(q, device="cpu", threads=threads),
               "onnxruntime": OrtRunner(q, device="cpu", threads=threads, build_dir=args.build_dir)}
    crops = []
    for _, a in load_images(args.data):
        a = a if a.shape[0] <= a.shape[1] else np.ascontiguousarray(a.transpose(1, 0, 2))
        if a.shape[0] < H or a.shape[1] < W:
            raise SystemExit(f"an image of {a.shape[0]}x{a.shape[1]} is smaller than --size {args.size}")
        crops.append(preprocess(np.ascontiguousarray(a[:H, :W]), cfg.multiple))
    rng = random.Random(args.seed)
    info = machine_info(threads)
    res = {"machine": info, "model": q.model, "quality": q.quality,
           "rounds": args.rounds, "image": [H, W],
           "command": "python -m bench.paired " + " ".join(argv if argv is not None else sys.argv[1:]),
           "rows": []}
    for b in [int(x) for x in args.batches.split(",")]:
        for op in ("encode", "decode"):
            times: dict[str, list[float]] = {k: [] for k in runners}
            for rnd in range(args.rounds + 1):             # round 0 warms up
                idx = [(rnd * b + i) % len(crops) for i in range(b)]
                ycc = torch.cat([crops[i] for i in idx])
                if op == "encode":
                    call = {k: (lambda r=r: r.encode(ycc)) for k, r in runners.items()}
                else:
                    e, p, ec = runners["torch"].encode(ycc)
                    lv, bits, cbits = reference.unpack(reference.pack(e, p, ec, cfg.n, cfg.levels),
                                                       cfg.n, cfg.m, cfg.levels)
                    call = {k: (lambda r=r: r.decode(bits, lv, cbits)) for k, r in runners.items()}
                order = list(call)
                rng.shuffle(order)
                for k in order:
                    t0 = time.perf_counter()
                    call[k]()
                    if rnd:
                        times[k].append(time.perf_counter() - t0)
            ratios = [t / o for t, o in zip(times["torch"], times["onnxruntime"])]
            lo, med, hi = _quartiles(ratios)
            row = {"op": op, "batch": b, "ratio_median": med, "ratio_q1": lo, "ratio_q3": hi,
                   "rounds_at_or_above_1_5": sum(r >= 1.5 for r in ratios),
                   "torch_ms_median": 1e3 * st.median(times["torch"]) / b,
                   "onnxruntime_ms_median": 1e3 * st.median(times["onnxruntime"]) / b,
                   "ratios": ratios}
            res["rows"].append(row)
            print(f"batch {b} {op}: torch/ORT median {med:.2f}x (quartiles {lo:.2f}-{hi:.2f}), "
                  f"{row['rounds_at_or_above_1_5']}/{len(ratios)} rounds >= 1.5x", flush=True)

    lines = [f"# Torch eager vs ONNX Runtime, same networks, paired rounds: {q.model} q{q.quality}", "",
             f"Machine: {info['cpu']}, {threads} threads, torch {info['torch']}, onnxruntime "
             f"{info.get('onnxruntime')}.  Input {H}x{W} crops of {args.data}.  Command: `{res['command']}`", "",
             "| batch | op | torch ms/image | ORT ms/image | torch/ORT median | quartiles | rounds >= 1.5x |",
             "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['batch']} | {r['op']} | {r['torch_ms_median']:.1f} | {r['onnxruntime_ms_median']:.1f} | "
                     f"{r['ratio_median']:.2f}x | {r['ratio_q1']:.2f}-{r['ratio_q3']:.2f} | "
                     f"{r['rounds_at_or_above_1_5']}/{len(r['ratios'])} |")
    write_results(args.out, "paired", info, res, "\n".join(lines))
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
