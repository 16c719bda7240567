"""The colour suite (issue #29): does every colour survive?

    python -m bench.colour_suite [--model NAME[,NAME]] [--effort 0[,2]] [--backend torch] [--json out.json]

Two kinds of test image, generated here (nothing from the test set):

* **flat patches** across the sRGB gamut: every colour of a 5x5x5 grid of the RGB cube
  (0, 64, 128, 191, 255 per channel) as its own 64x64 image;
* **saturated shapes on white**: a disc of each primary, secondary and a few in-between
  hues on a 128x128 white image, scored on the disc's interior (eroded by 6 pixels, so a
  codec's edge is not counted: chroma is coded at a sixteenth of the resolution).

Each is scored by CIEDE2000 (scikit-image's ``deltaE_ciede2000``): a patch's mean ΔE00
over its pixels (a disc: over its interior), then the mean and the worst over the patches.
Baselines in the same run: Pillow JPEG at quality 10 (4:2:0) and WebP at quality 0.
The tests (tests/test_colour.py) hold every rung of every installed model to THRESHOLDS.
"""
from __future__ import annotations

import argparse
import io
import itertools
import json

import numpy as np
from PIL import Image

GRID = (0, 64, 128, 191, 255)
DISC_COLOURS = [(0, 0, 255), (255, 0, 0), (0, 200, 0), (0, 255, 255), (255, 0, 255), (255, 255, 0),
                (255, 128, 0), (128, 0, 255), (0, 128, 255), (255, 0, 128), (20, 40, 230), (0, 100, 0)]
PATCH, DISC_SIDE, DISC_RADIUS, ERODE = 64, 128, 40, 6
# What tests/test_colour.py holds every rung of each metric's model to at effort 0 (mean /
# worst ΔE00).  Stated from the worst rungs measured (small16v2 q1: flat 1.43 / 3.61, discs
# 1.23 / 4.03; small16-msssim q1: flat 1.47 / 3.61, q2: flat worst 4.08) with a little room;
# small16, the default before, measured up to 2.54 / 7.02 and 2.46 / 6.09, and small, the
# model before it, 8.2-9.3 / 30-33 and 14-17 / 35-37.  The flat worst is now about JPEG
# quality 10's (4.04); the means are NOT yet (1.10 flat, 0.64 discs), nor the discs' worst
# (1.52): the target of issue #29.
THRESHOLDS = {"flat": {"mean": 1.6, "worst": 4.5}, "discs": {"mean": 1.4, "worst": 4.5}}


def flat_patches() -> list[np.ndarray]:
    return [np.full((PATCH, PATCH, 3), c, np.uint8) for c in itertools.product(GRID, repeat=3)]


def disc_mask(erode: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:DISC_SIDE, 0:DISC_SIDE]
    c = (DISC_SIDE - 1) / 2
    return (yy - c) ** 2 + (xx - c) ** 2 <= (DISC_RADIUS - erode) ** 2


def discs() -> list[np.ndarray]:
    out = []
    for col in DISC_COLOURS:
        im = np.full((DISC_SIDE, DISC_SIDE, 3), 255, np.uint8)
        im[disc_mask()] = col
        out.append(im)
    return out


def delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel CIEDE2000 between two uint8 sRGB images."""
    from skimage.color import deltaE_ciede2000, rgb2lab
    return deltaE_ciede2000(rgb2lab(a), rgb2lab(b))


def score(originals, decoded, mask=None) -> dict:
    """Mean ΔE00 per image (over ``mask`` where given), then mean and worst over images."""
    per = []
    for o, d in zip(originals, decoded):
        de = delta_e(o, d)
        per.append(float(de[mask].mean() if mask is not None else de.mean()))
    worst = int(np.argmax(per))
    return {"mean": round(float(np.mean(per)), 3), "worst": round(per[worst], 3),
            "worst_colour": [int(v) for v in originals[worst][originals[worst].shape[0] // 2,
                                                             originals[worst].shape[1] // 2]]}


def pillow_roundtrip(images, fmt: str, quality: int) -> list[np.ndarray]:
    out = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, fmt, quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return out


def codec_roundtrip(codec, images) -> list[np.ndarray]:
    return codec.decompress_batch(codec.compress_batch(images))


def suite(roundtrip) -> dict:
    """Score one codec (a function: list of images -> list of decoded images)."""
    return {"flat": score(flat_patches(), roundtrip(flat_patches())),
            "discs": score(discs(), roundtrip(discs()), disc_mask(ERODE))}


def baselines() -> dict:
    return {"JPEG q10": suite(lambda ims: pillow_roundtrip(ims, "JPEG", 10)),
            "WebP q0": suite(lambda ims: pillow_roundtrip(ims, "WEBP", 0))}


def ours(model: str | None = None, backend: str = "torch", qualities=None, effort: int = 0) -> dict:
    import engine
    from engine.net import checkpoint
    model = model or checkpoint.DEFAULT_MODEL
    res = {}
    for q in qualities or checkpoint.qualities(model):
        with engine.Codec(quality=q, model=model, backend=backend, effort=effort) as codec:
            res[f"{model} q{q}" + (f" effort {effort}" if effort else "")] = suite(
                lambda ims: codec_roundtrip(codec, ims))
    return res


def table(results: dict) -> str:
    lines = ["| codec | flat: mean ΔE00 | flat: worst (colour) | discs: mean ΔE00 | discs: worst (colour) |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        f, d = r["flat"], r["discs"]
        lines.append(f"| {name} | {f['mean']:.2f} | {f['worst']:.2f} {tuple(f['worst_colour'])} | "
                     f"{d['mean']:.2f} | {d['worst']:.2f} {tuple(d['worst_colour'])} |")
    return "\n".join(lines)


def main(argv=None):
    from engine.settings import available_backends
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="comma list of installed models (default: the default model)")
    ap.add_argument("--backend", default="torch", choices=available_backends())
    ap.add_argument("--effort", default="0", help="comma list of efforts (engine/net/search.py)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    results = baselines()
    for model in (args.model or "").split(",") if args.model else [None]:
        for effort in (int(e) for e in args.effort.split(",")):
            results.update(ours(model, args.backend, effort=effort))
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
