"""Tune the code search (engine/search.py) on held-out *training* images, never Kodak.

    python -m bench.search_tune --data ../shared/data/train --quality 4 --efforts 2,4,6 \
        [--lr-codes 0.02,0.05] [--lr-importance 0.05] [--slope-scale 1] [--limit 6]

For each setting: mean bpp and PSNR-RGB over the run's validation split (the
images training never saw; ``engine.data.split``), real file bytes, encode
seconds per image, and the gain at equal rate: PSNR minus the effort-0 ladder's
PSNR at the same bpp (linear between the rungs around it, measured on the same
images in the same run).  Writes a markdown table (and JSON) to --out.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from engine import search as S
from engine.checkpoint import qualities
from engine.data import list_images, load_rgb, split
from engine.eval import machine, psnr_rgb


def measure(codec, images):
    bpp, psnr, secs = [], [], []
    for rgb in images:
        t0 = time.perf_counter()
        data = codec.compress(rgb)
        secs.append(time.perf_counter() - t0)
        out = codec.decompress(data)
        bpp.append(len(data) * 8 / (rgb.shape[0] * rgb.shape[1]))
        psnr.append(psnr_rgb(rgb, out))
    return float(np.mean(bpp)), float(np.mean(psnr)), float(np.mean(secs))


def ladder_psnr_at(ladder: list[tuple[float, float]], bpp: float) -> float:
    """Effort-0 PSNR at ``bpp``, linear between rungs (extrapolated from the nearest two)."""
    pts = sorted(ladder)
    xs = [p[0] for p in pts]
    i = int(np.clip(np.searchsorted(xs, bpp), 1, len(pts) - 1))
    (x0, y0), (x1, y1) = pts[i - 1], pts[i]
    return y0 + (y1 - y0) * (bpp - x0) / (x1 - x0)


def main(argv=None):
    import engine
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the training folder (its validation split is used)")
    ap.add_argument("--quality", type=int, default=4)
    ap.add_argument("--efforts", default="2,4")
    ap.add_argument("--lr-codes", default=str(S.LR_CODES))
    ap.add_argument("--lr-importance", default=str(S.LR_IMPORTANCE))
    ap.add_argument("--slope-scale", default="1")
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--holdout", type=int, default=20)
    ap.add_argument("--out", default="bench/results/search-tune")
    args = ap.parse_args(argv)
    _, val = split(list_images(args.data), args.holdout)
    images = [load_rgb(p) for p in val[: args.limit or None]]
    q = args.quality
    ladder = []
    for qq in qualities():
        if abs(qq - q) <= 1:
            b, p, _ = measure(engine.Codec(quality=qq, backend="torch"), images)
            ladder.append((b, p))
    b0, p0, t0 = measure(engine.Codec(quality=q, backend="torch"), images)
    rows = [{"effort": 0, "lr_codes": None, "lr_importance": None, "slope_scale": None,
             "bpp": b0, "psnr": p0, "gain_equal_rate": p0 - ladder_psnr_at(ladder, b0), "seconds": t0}]
    print(rows[-1], flush=True)
    grid = itertools.product([int(x) for x in args.efforts.split(",")],
                             [float(x) for x in args.lr_codes.split(",")],
                             [float(x) for x in args.lr_importance.split(",")],
                             [float(x) for x in args.slope_scale.split(",")])
    for effort, lrc, lri, scale in grid:
        S.LR_CODES, S.LR_IMPORTANCE, S.SLOPE_SCALE = lrc, lri, scale
        codec = engine.Codec(quality=q, backend="torch", effort=effort)
        b, p, t = measure(codec, images)
        rows.append({"effort": effort, "lr_codes": lrc, "lr_importance": lri, "slope_scale": scale,
                     "bpp": b, "psnr": p, "gain_equal_rate": p - ladder_psnr_at(ladder, b), "seconds": t})
        print(rows[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res = {"machine": machine(), "quality": q, "images": [p.name for p in val[: args.limit or None]],
           "ladder_effort0": ladder, "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    lines = [f"# Code search tuning, quality {q}, {len(images)} held-out training images", "",
             f"Machine: {res['machine']}", "",
             "| effort | lr codes | lr importance | slope x | bpp | PSNR-RGB | gain at equal rate (dB) | s/image |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['effort']} | {r['lr_codes']} | {r['lr_importance']} | {r['slope_scale']} | "
                     f"{r['bpp']:.4f} | {r['psnr']:.3f} | {r['gain_equal_rate']:+.3f} | {r['seconds']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
