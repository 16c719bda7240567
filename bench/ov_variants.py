"""OpenVINO runner settings against each other, end to end, in one run:
``python -m bench.ov_variants``.

    python -m bench.ov_variants [--data ../shared/data/kodak] [--quality Q] [--batches 1,8]
        [--rounds 6] [--limit N] [--build-dir DIR] [--out bench/results]

The same protocol as ``bench.ort_variants``: every variant codes the same images in
each round (compress_batch + decompress_batch, the round trip), in a random order, and
is compared with the first (the shipped settings) round by round: the median of the
per-round time ratios.  Speed only (the settings do not change a value, except the
precision).  Variants, all bf16 unless named:

* ``shipped``: the runner's defaults (engine/runners/ov_runner.py: all CPUs' threads,
  no CPU pinning, the IR with native DepthToSpace);
* ``pinned``: OpenVINO's default CPU pinning;
* ``1 thread``: one inference thread (the other core left to the entropy threads);
* ``conv shuffles``: the IR made from ONNX Runtime's graphs (pixel shuffles as
  one-hot convolutions), built into a scratch folder;
* ``fp32``: the shipped settings in fp32, and ``onnxruntime`` fp32 for scale.

Writes ``<out>/ov-variants-<machine>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.throughput import load_images, machine_info, time_codec, write_results  # noqa: E402

VARIANTS = ("shipped", "pinned", "1 thread", "conv shuffles", "fp32", "onnxruntime")


def _codec(engine, variant: str, q, build_dir: Path, conv_dir: Path):
    from engine.runners import ov_runner
    pin = ov_runner.PIN_THREADS
    ov_runner.PIN_THREADS = True if variant == "pinned" else pin
    try:
        backend = "onnxruntime" if variant == "onnxruntime" else "openvino"
        precision = "fp32" if variant in ("fp32", "onnxruntime") else "bf16"
        return engine.Codec(quality=q.quality, model=q.model, backend=backend, precision=precision,
                            threads=1 if variant == "1 thread" else None,
                            build_dir=conv_dir if variant == "conv shuffles" else build_dir)
    finally:
        ov_runner.PIN_THREADS = pin


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.ov_variants", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    ap.add_argument("--model", default=None)
    ap.add_argument("--quality", type=int, default=None)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--build-dir", default=None, help="artifact folder (default: ENGINE_BUILD_DIR or build/)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)

    import engine
    from engine import build as B
    from engine.net.checkpoint import DEFAULT_MODEL, resolve
    from engine.cpu import describe

    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    q = resolve(args.model or DEFAULT_MODEL, args.quality)
    build_dir = Path(args.build_dir or B.default_build_dir()).resolve()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for be in ("openvino", "onnxruntime"):
        B.build_quality(q, be, "fp32", build_dir, log=lambda *a: None)
    with tempfile.TemporaryDirectory() as tmp:
        conv_dir = Path(tmp)
        if "conv shuffles" in variants:
            log("building the IR from convolution shuffles ...")
            B.build_quality(q, "openvino", "fp32", conv_dir, shuffles="conv", log=lambda *a: None)
        codecs = {v: _codec(engine, v, q, build_dir, conv_dir) for v in variants}
        images = load_images(args.data, args.limit)
        batches = [int(b) for b in args.batches.split(",")]
        res = {"command": "python -m bench.ov_variants " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": machine_info(os.cpu_count() or 1), "cpu": describe(), "model": q.model,
               "quality": q.quality, "images": len(images), "rounds": args.rounds, "results": []}
        rng = random.Random(0)
        for b in batches:
            times = {v: [] for v in variants}
            psnr = {}
            for rnd in range(args.rounds):
                order = list(variants)
                rng.shuffle(order)
                for v in order:
                    t0 = time.perf_counter()
                    rows = time_codec(codecs[v], images, b)
                    times[v].append(sum(r["seconds"] for r in rows) / rows[0]["images"])
                    psnr[v] = rows[0]["mean_psnr"]
                    log(f"batch {b} round {rnd + 1}: {v} {1e3 * times[v][-1]:.0f} ms/img "
                        f"({time.perf_counter() - t0:.1f}s)")
            ref = variants[0]
            for v in variants:
                ratios = [a / c for a, c in zip(times[ref], times[v])]
                res["results"].append({"batch": b, "variant": v, "ms_per_image_best": 1e3 * min(times[v]),
                                       "median_ratio_vs_first": statistics.median(ratios),
                                       "ratios": ratios, "mean_psnr": psnr[v]})
        codecs.clear()
    lines = [f"# OpenVINO runner variants: {q.model} q{q.quality}, round trips end to end", "",
             f"CPU: {res['cpu']}.  {len(images)} images from `{args.data}`, {args.rounds} rounds, variants in a "
             f"random order each round.  Command: `{res['command']}`", "",
             f"Ratio = the first variant's ({variants[0]}) round-trip time / this variant's, median over rounds "
             "(> 1: faster than the first).", "",
             "| batch | variant | best ms/img | median ratio vs first | PSNR |", "|---|---|---|---|---|"]
    for r in res["results"]:
        lines.append(f"| {r['batch']} | {r['variant']} | {r['ms_per_image_best']:.1f} | "
                     f"{r['median_ratio_vs_first']:.2f}x | {r['mean_psnr']:.3f} |")
    md = "\n".join(lines) + "\n"
    stem = write_results(args.out, "ov-variants", res["machine"], res, md)
    log(f"wrote {stem}.json/.md")
    print(md)
    return res


if __name__ == "__main__":
    main()
