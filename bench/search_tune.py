"""Tune the code search (engine/net/search.py) on held-out *training* images, never Kodak.

    python -m bench.search_tune --data ../shared/data/train --quality 4 --efforts 2,4,6 \
        [--lr-codes 0.02,0.05] [--lr-importance 0.05] [--slope-scale 1] \
        [--lr-final 1,0.1] [--ms-ssim-weight 0,0.3] [--limit 6]

For each setting (the grid of all the comma lists): mean bpp, PSNR-RGB and
MS-SSIM-RGB over the run's validation split (the images training never saw;
``engine.data.split``), real file bytes, encode seconds per image, and the gains at
equal rate: PSNR (and MS-SSIM) minus the effort-0 ladder's at the same bpp (linear
between the rungs around it, measured on the same images in the same run).
``--lr-final``: engine.net.search.LR_FINAL (the last step's lr over the first's);
``--ms-ssim-weight``: engine.net.search.MS_SSIM_WEIGHT (b in the search's J).
Writes a markdown table (and JSON) to --out.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from engine.net import search as S
from engine.net.checkpoint import qualities
from engine.data import list_images, load_rgb, split
from engine.eval import machine, ms_ssim_rgb, psnr_rgb


def measure(codec, images):
    """Mean bpp, PSNR-RGB, seconds per image and MS-SSIM-RGB (nan where an image is too
    small for 5 scales; the mean skips those)."""
    bpp, psnr, secs, msssim = [], [], [], []
    for rgb in images:
        t0 = time.perf_counter()
        data = codec.compress(rgb)
        secs.append(time.perf_counter() - t0)
        out = codec.decompress(data)
        bpp.append(len(data) * 8 / (rgb.shape[0] * rgb.shape[1]))
        psnr.append(psnr_rgb(rgb, out))
        msssim.append(ms_ssim_rgb(rgb, out))
    ms = [m for m in msssim if np.isfinite(m)]
    return float(np.mean(bpp)), float(np.mean(psnr)), float(np.mean(secs)), float(np.mean(ms)) if ms else float("nan")


def ladder_psnr_at(ladder: list[tuple[float, float]], bpp: float) -> float:
    """Effort-0 PSNR (or whatever the second coordinate is) at ``bpp``, linear between
    rungs (extrapolated from the nearest two)."""
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
    ap.add_argument("--slope-scale", default=str(S.SLOPE_SCALE))
    ap.add_argument("--lr-final", default=str(S.LR_FINAL))
    ap.add_argument("--ms-ssim-weight", default=str(S.MS_SSIM_WEIGHT))
    ap.add_argument("--lr-period", default=str(S.LR_PERIOD))
    ap.add_argument("--lr-restart", default=str(S.LR_RESTART))
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--holdout", type=int, default=20)
    ap.add_argument("--out", default="bench/results/search-tune")
    args = ap.parse_args(argv)
    _, val = split(list_images(args.data), args.holdout)
    images = [load_rgb(p) for p in val[: args.limit or None]]
    q = args.quality
    ladder, ladder_ms = [], []
    for qq in qualities():
        if abs(qq - q) <= 1:
            b, p, _, m = measure(engine.Codec(quality=qq, backend="torch"), images)
            ladder.append((b, p))
            ladder_ms.append((b, m))

    def row(effort, knobs, b, p, t, m):
        return {"effort": effort, **knobs, "bpp": b, "psnr": p, "ms_ssim": m,
                "gain_equal_rate": p - ladder_psnr_at(ladder, b),
                "ms_ssim_gain_equal_rate": m - ladder_psnr_at(ladder_ms, b), "seconds": t}

    none = dict.fromkeys(["lr_codes", "lr_importance", "slope_scale", "lr_final", "ms_ssim_weight", "lr_period",
                          "lr_restart"])
    rows = [row(0, none, *measure(engine.Codec(quality=q, backend="torch"), images))]
    print(rows[-1], flush=True)
    grid = itertools.product([int(x) for x in args.efforts.split(",")],
                             [float(x) for x in args.lr_codes.split(",")],
                             [float(x) for x in args.lr_importance.split(",")],
                             [float(x) for x in args.slope_scale.split(",")],
                             [float(x) for x in args.lr_final.split(",")],
                             [float(x) for x in args.ms_ssim_weight.split(",")],
                             [int(x) for x in args.lr_period.split(",")],
                             [float(x) for x in args.lr_restart.split(",")])
    for effort, lrc, lri, scale, final, beta, period, restart in grid:
        S.LR_CODES, S.LR_IMPORTANCE, S.SLOPE_SCALE, S.LR_FINAL, S.MS_SSIM_WEIGHT = lrc, lri, scale, final, beta
        S.LR_PERIOD, S.LR_RESTART = period, restart
        codec = engine.Codec(quality=q, backend="torch", effort=effort)
        knobs = {"lr_codes": lrc, "lr_importance": lri, "slope_scale": scale, "lr_final": final,
                 "ms_ssim_weight": beta, "lr_period": period, "lr_restart": restart}
        rows.append(row(effort, knobs, *measure(codec, images)))
        print(rows[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res = {"machine": machine(), "quality": q, "images": [p.name for p in val[: args.limit or None]],
           "ladder_effort0": ladder, "ladder_effort0_ms_ssim": ladder_ms, "rows": rows,
           "command": "python -m bench.search_tune " + " ".join(argv if argv is not None else sys.argv[1:])}
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    lines = [f"# Code search tuning, quality {q}, {len(images)} held-out training images", "",
             f"Machine: {res['machine']}", "",
             f"Command: `{res['command']}`", "",
             "| effort | lr codes | lr importance | slope x | lr final | lr period | lr restart | MS-SSIM weight | bpp "
             "| PSNR-RGB | MS-SSIM-RGB | gain at equal rate (dB) | MS-SSIM gain at equal rate | s/image |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['effort']} | {r['lr_codes']} | {r['lr_importance']} | {r['slope_scale']} | "
                     f"{r['lr_final']} | {r['lr_period']} | {r['lr_restart']} | {r['ms_ssim_weight']} | {r['bpp']:.4f} | {r['psnr']:.3f} | "
                     f"{r['ms_ssim']:.4f} | {r['gain_equal_rate']:+.3f} | {r['ms_ssim_gain_equal_rate']:+.4f} | "
                     f"{r['seconds']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
