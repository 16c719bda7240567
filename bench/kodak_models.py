"""Two shipped models side by side on a folder of images, effort 0, real file bytes:
``python -m bench.kodak_models --models small16,small16v2 --data ../shared/data/kodak``.

Per rung: bpp, PSNR-RGB, PSNR of Y/Cb/Cr, MS-SSIM and mean CIEDE2000 (engine.eval's own
metric functions), averaged over the images.  A lighter companion to ``engine.eval`` (no
baselines: those are in bench/results/kodak-rd.json, Pillow's deterministic outputs) for
comparing a new model with the one it replaces.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def evaluate(model: str, paths, backend: str) -> dict:
    import engine
    from engine.net import checkpoint
    from engine import eval as ev
    from engine.data import load_rgb
    images = [load_rgb(p) for p in paths]
    refs = [ev.Reference(p.name, im) for p, im in zip(paths, images)]
    out = {}
    for q in checkpoint.qualities(model):
        with engine.Codec(quality=q, model=model, backend=backend) as codec:
            blobs = codec.compress_batch(images)
            decoded = codec.decompress_batch(blobs)
        rows = [{"bpp": len(b) * 8 / r.pixels, **r.quality(d)} for r, d, b in zip(refs, decoded, blobs)]
        out[q] = {k: round(float(np.mean([row[k] for row in rows])), 4) for k in rows[0]}
        print(model, q, out[q], flush=True)
    return out


def main(argv=None):
    from engine.settings import available_backends
    ap = argparse.ArgumentParser(prog="python -m bench.kodak_models", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="small16,small16v2")
    ap.add_argument("--data", default="../shared/data/kodak")
    ap.add_argument("--backend", default="torch", choices=available_backends())
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    from engine.data import list_images
    paths = list_images(args.data)
    res = {m: evaluate(m, paths, args.backend) for m in args.models.split(",")}
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
