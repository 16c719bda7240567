"""Encode time per image at each effort (a benchmark, never a timed test).

    python -m bench.effort_time --data ../shared/data/kodak --efforts 0,1,2,4,6,9 --limit 1 [--quality 4]
        [--search-precision fp32,bf16]

Times ``Codec.compress`` (real files; backend auto, so effort 0 runs ONNX Runtime where
built and the search runs in torch) on the first --limit images, one effort after
another, and writes a markdown table with bpp and PSNR-RGB beside each time.
Measuring time on Kodak is not tuning on it: nothing here feeds back into the codec.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from engine.data import list_images, load_rgb
from engine.eval import machine, psnr_rgb
from engine.net.search import STEPS


def main(argv=None):
    from engine.settings import available_backends, available_search_precisions
    import engine
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--efforts", default="0,1,2,4,6,9")
    ap.add_argument("--quality", type=int, default=4)
    ap.add_argument("--limit", type=int, default=1)
    ap.add_argument("--model", default=None, help="an installed model (default: the default model)")
    ap.add_argument("--backend", default="auto", choices=available_backends())
    ap.add_argument("--search-precision", default="auto",
                    help="comma list of " + "|".join(available_search_precisions()) + ": each effort > 0 runs once "
                         "per precision, image by image in turns, so their times share the machine's load")
    ap.add_argument("--out", default=None, help="results path without suffix (default bench/results/effort-time-<cpu>)")
    args = ap.parse_args(argv)
    precisions = args.search_precision.split(",")
    for p in precisions:
        if p not in available_search_precisions():
            ap.error(f"--search-precision: {p!r} is not one of {available_search_precisions()}")
    paths = list_images(args.data)[: args.limit]
    images = [load_rgb(p) for p in paths]
    rows = []
    for effort in (int(e) for e in args.efforts.split(",")):
        runs = precisions if effort else precisions[:1]
        codecs = {p: engine.Codec(quality=args.quality, model=args.model, backend=args.backend, effort=effort,
                                  search_precision=p) for p in runs}
        for c in codecs.values():
            c.compress(images[0][:64, :64])        # load the networks outside the timing
        secs, bpp, psnr = ({p: [] for p in runs} for _ in range(3))
        for rgb in images:
            for p, codec in codecs.items():
                t0 = time.perf_counter()
                data = codec.compress(rgb)
                secs[p].append(time.perf_counter() - t0)
                bpp[p].append(len(data) * 8 / (rgb.shape[0] * rgb.shape[1]))
                psnr[p].append(psnr_rgb(rgb, codec.decompress(data)))
        for p, codec in codecs.items():
            rows.append({"effort": effort, "steps": STEPS[effort], "search_precision": p if effort else "-",
                         "seconds_per_image": float(np.mean(secs[p])), "bpp": float(np.mean(bpp[p])),
                         "psnr-rgb": float(np.mean(psnr[p])), "backend": codec.runner.name})
            print(rows[-1], flush=True)
    name = machine()
    out = Path(args.out or "bench/results/effort-time-" + "".join(c if c.isalnum() else "-" for c in name.split(",")[0].lower()).strip("-"))
    out.parent.mkdir(parents=True, exist_ok=True)
    res = {"machine": name, "quality": args.quality, "images": [p.name for p in paths], "rows": rows,
           "command": "python -m bench.effort_time " + " ".join(argv if argv is not None else sys.argv[1:])}
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    lines = [f"# Encode time per image by effort, quality {args.quality}, {len(images)} image(s)", "",
             f"Machine: {name}", "", f"Command: `{res['command']}`", "",
             "| effort | search steps | search precision | encode s/image | bpp | PSNR-RGB |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['effort']} | {r['steps']} | {r['search_precision']} | {r['seconds_per_image']:.2f} | {r['bpp']:.4f} "
              f"| {r['psnr-rgb']:.2f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

if __name__ == "__main__":
    main()
