"""Does a candidate beat the shipped model at every rung? (issue #24's promotion rule):
``python -m bench.promotion --candidate DIR [--shipped small16]``.

The candidate is a model folder written by ``python -m engine.ship`` (with the shipped
model's --biases, say, and --out-root somewhere outside the checkout): both model.json
ladders carry each rung's held-out rate (``val_bpp_context``, real context-coded bits)
and PSNR-RGB on the same held-out training images (the run's split), never Kodak.  Each
rung of either ladder is compared at its own rate, against the other ladder's PSNR
interpolated linearly in bpp between its two neighbouring rungs; a rate outside the other
ladder's range is not compared (no extrapolation).  The candidate beats the shipped model
when every compared rung gains.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def ladder(model_dir: Path) -> list[tuple[float, float]]:
    """[(held-out bpp, PSNR-RGB)] of a model folder's rungs, in rate order."""
    qs = json.loads((Path(model_dir) / "model.json").read_text())["qualities"]
    return sorted((v["val_bpp_context"], v["val_psnr_rgb"]) for v in qs.values())


def compare(candidate: list, shipped: list) -> list[dict]:
    """Each rung of both ladders at its own rate: candidate PSNR − shipped PSNR there."""
    rows = []
    for who, own, other in (("candidate", candidate, shipped), ("shipped", shipped, candidate)):
        xs, ys = zip(*other)
        for i, (bpp, psnr) in enumerate(own, 1):
            if not xs[0] <= bpp <= xs[-1]:
                rows.append({"ladder": who, "rung": i, "bpp": bpp, "gain_db": None})
                continue
            there = float(np.interp(bpp, xs, ys))
            gain = psnr - there if who == "candidate" else there - psnr
            rows.append({"ladder": who, "rung": i, "bpp": bpp, "gain_db": round(gain, 3)})
    return rows


def verdict(rows: list[dict]) -> bool:
    gains = [r["gain_db"] for r in rows if r["gain_db"] is not None]
    return bool(gains) and all(g > 0 for g in gains)


def main(argv=None):
    from engine.net.checkpoint import CHECKPOINT_DIR, DEFAULT_MODEL
    ap = argparse.ArgumentParser(prog="python -m bench.promotion", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", required=True, help="a model folder written by engine.ship")
    ap.add_argument("--shipped", default=DEFAULT_MODEL, help="an installed model's name")
    args = ap.parse_args(argv)
    rows = compare(ladder(Path(args.candidate)), ladder(CHECKPOINT_DIR / args.shipped))
    print("| ladder | rung | held-out bpp | candidate − shipped at that rate |\n|---|---|---|---|")
    for r in rows:
        g = "outside the other ladder" if r["gain_db"] is None else f"{r['gain_db']:+.3f} dB"
        print(f"| {r['ladder']} | q{r['rung']} | {r['bpp']:.4f} | {g} |")
    ok = verdict(rows)
    print(f"\nbeats {args.shipped} at every compared rung: {'yes' if ok else 'no'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
