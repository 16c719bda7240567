"""ONNX Runtime variants against each other and torch eager, end to end, in one run:
``python -m bench.ort_variants``.

    python -m bench.ort_variants --data ../shared/data/kodak [--quality Q] [--batch 1]
        [--rounds 8] [--limit N] [--out bench/results]

Why: the CPU box's speed drifts by tens of percent within minutes, so a choice
between two ways of running the ONNX graphs is only settled by running them in
the same process, taking turns image set by image set, best round kept (the same
protocol as ``bench.throughput``), in a random order each round, and each
variant is also compared with ``conv`` round by round (the median of the
per-round time ratios, which drift slower than a round cancels).  Variants:

* ``conv``: the shipped artifacts (pixel shuffles as one-hot convolutions,
  ``engine.build.GRAPH_SHUFFLES``), intra-op threads not spinning (the default);
* ``conv+spin``: the same graphs, ORT's default spin-waiting threads;
* ``native``: DepthToSpace / Reshape-Transpose graphs (built into a scratch
  folder), not spinning;
* ``torch``: torch eager, the reference.

Every variant's decoded images are compared with the ``conv`` variant's (they
must be bit-identical: the shuffle rewrite is exact).  Writes
``<out>/ort-variants-<machine>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.throughput import load_images, machine_info, time_codec, write_results  # noqa: E402

VARIANTS = ("conv", "conv+spin", "native", "torch")


def _median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def _codec(engine, variant: str, q, root, build_dir: Path):
    """A Codec for ``variant``; the runner reads the spin setting (ENGINE_ORT_SPIN, no
    Codec argument) when it is made, so it is set only for the construction."""
    spin = "on" if variant == "conv+spin" else "off"
    env = {"ENGINE_ORT_SPIN": spin}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return engine.Codec(quality=q.quality, model=q.model, root=root,
                            backend="torch" if variant == "torch" else "onnxruntime", build_dir=build_dir)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.ort_variants", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--model-dir", default=None, help="folder holding model folders (default: shipped)")
    ap.add_argument("--build-dir", default=None, help="artifact folder (default: ENGINE_BUILD_DIR or build/)")
    ap.add_argument("--quality", type=int, default=None)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)

    import torch

    import engine
    from engine.build import build_quality, default_build_dir
    from engine.net.checkpoint import resolve

    q = resolve(args.model or engine.net.checkpoint.DEFAULT_MODEL, args.quality, root=args.model_dir)
    images = load_images(args.data, args.limit)
    build_dir = Path(args.build_dir) if args.build_dir else default_build_dir()
    build_quality(q, "onnxruntime", out=build_dir, log=lambda *a: None)
    scratch = tempfile.TemporaryDirectory(prefix="ort-native-")
    build_quality(q, "onnxruntime", out=scratch.name, shuffles="native", log=lambda *a: None)
    codecs = {v: _codec(engine, v, q, args.model_dir, Path(scratch.name) if v == "native" else build_dir)
              for v in VARIANTS}

    best: dict = {}
    per_round: dict = {}            # (variant, op) -> seconds of each round
    rng = random.Random(args.seed)
    for rnd in range(args.rounds):
        order = list(codecs)
        rng.shuffle(order)          # no variant always runs right after another
        for name in order:
            for r in time_codec(codecs[name], images, args.batch):
                print(f"round {rnd + 1}/{args.rounds} {name:10s} {r['op']}: {r['ms_per_image']:.1f} ms/image",
                      flush=True)
                key = (name, r["op"])
                per_round.setdefault(key, []).append(r["seconds"])
                if key not in best or r["seconds"] < best[key]["seconds"]:
                    best[key] = r

    # exactness: decoded images of every ONNX variant equal the default's
    blobs = codecs["conv"].compress_batch([a for _, a in images[:4]], batch_size=args.batch)
    ref = codecs["conv"].decompress_batch(blobs, batch_size=args.batch)
    identical = {v: all(np.array_equal(a, b) for a, b in zip(ref, codecs[v].decompress_batch(blobs)))
                 for v in ("conv+spin", "native")}
    for c in codecs.values():
        c.close()
    scratch.cleanup()

    info = machine_info(torch.get_num_threads())
    res = {"machine": info, "model": q.model, "quality": q.quality, "batch": args.batch, "rounds": args.rounds,
           "images": len(images), "identical_to_conv": identical,
           "command": "python -m bench.ort_variants " + " ".join(argv if argv is not None else sys.argv[1:]),
           "rows": [{"variant": v, "op": op, "ms_per_image": r["ms_per_image"],
                     "network_ms_per_image": r["stages_ms_per_image"].get("network"),
                     "torch_over_this": best[("torch", op)]["seconds"] / r["seconds"],
                     "paired_this_over_conv": _median_ratio(per_round[(v, op)], per_round[("conv", op)])}
                    for (v, op), r in sorted(best.items())]}
    lines = [f"# ONNX Runtime variants: {q.model} q{q.quality}, batch {args.batch}", "",
             f"Machine: {info.get('cpu')}, {info.get('threads')} threads; {args.rounds} rounds over {len(images)} "
             f"images, variants in a random order each round.  Command: `{res['command']}`", "",
             "ms/image and the torch ratio: best round.  time vs conv: median over rounds of this variant's time "
             "/ conv's time in the same round (above 1: slower than conv).", "",
             "| variant | op | ms/image | network ms/image | torch eager / variant | time vs conv (paired) |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['variant']} | {r['op']} | {r['ms_per_image']:.1f} | {r['network_ms_per_image']:.1f} "
                     f"| {r['torch_over_this']:.2f}x | {r['paired_this_over_conv']:.3f} |")
    lines += ["", "Decoded images bit-identical to `conv`: " +
              ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in identical.items())]
    write_results(args.out, "ort-variants", info, res, "\n".join(lines))
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
