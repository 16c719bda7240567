"""Where a rung loses colour (issue #29): ``python -m bench.colour_probe [--model M] [--qualities 1,4]``.

On the colour suite's images (bench/colour_suite.py), the effort-0 decode is scored in
CIEDE2000 three ways: as decoded; with the true Y plane put back (what is left is the
colour stream's error); and with the true CbCr planes put back (the Y stream's).  Then
the colour codes alone are refined per image, K Adam steps through the colour decoder
with the Y codes and the decoder fixed (straight-through binarization, RGB MSE, the best
hard codes kept): how far an encoder-only colour fix could go with today's decoder.
This is a probe, not a codec path: files made this way would decode with the same model.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench import colour_suite as cs
from engine import importance
from engine.net import checkpoint
from engine.io.color import rgb_to_ycbcr, ycbcr_to_rgb
from engine.net.model import binarize


def _u8(ycc: torch.Tensor) -> list[np.ndarray]:
    rgb = ycbcr_to_rgb(ycc).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return list((rgb * 255).round().astype(np.uint8))


def _colour_decoder(dec, f8, f4, cbits):
    """The CbCr half of Decoder.decode_signed, from the Y decoder's features."""
    c = dec.c16(2 * cbits - 1)
    c = dec.c8(torch.cat([c, F.relu(dec.f8(f8))], 1))
    c = dec.c4(torch.cat([c, F.relu(dec.f4(f4))], 1))
    return dec.c1(c) + 0.5


def probe(net, images, steps=(0, 4, 16), lr=0.05) -> dict:
    """{name: list of decoded uint8 images} for one batch of same-size images."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    ycc = rgb_to_ycbcr(x)
    cfg, dec = net.cfg, net.decoder
    with torch.no_grad():
        e, logit, ec0 = net.encoder.features(ycc)
        q = importance.quantize_levels(torch.sigmoid(logit), cfg.levels).float()
        sy = (2 * (e > 0.5).float() - 1) * (q >= dec.req).float()
        f8 = dec.y8(torch.cat([sy, q * (2.0 / (cfg.levels - 1)) - 1], 1))
        f4 = dec.y4(f8)
        y = dec.y1(dec.y2(f4)) + 0.5
        rec = torch.cat([y, _colour_decoder(dec, f8, f4, (ec0 > 0.5).float())], 1)
    out = {"decoded": _u8(rec), "true Y": _u8(torch.cat([ycc[:, :1], rec[:, 1:]], 1)),
           "true CbCr": _u8(torch.cat([rec[:, :1], ycc[:, 1:]], 1))}

    def mse(cbits):
        return ((ycbcr_to_rgb(torch.cat([y, _colour_decoder(dec, f8, f4, cbits)], 1)).clamp(0, 1) - x) ** 2
                ).flatten(1).mean(1)

    for k in (s for s in steps if s):
        best = (ec0 > 0.5).float()
        with torch.no_grad():
            best_d = mse(best)
        ec = ec0.clone().requires_grad_(True)
        opt = torch.optim.Adam([ec], lr=lr)
        for step in range(1, k + 1):
            opt.zero_grad()
            mse(binarize(ec)).sum().backward()
            opt.step()
            with torch.no_grad():
                ec.clamp_(0, 1)
                if step % 2 == 0 or step == k:
                    cand = (ec > 0.5).float()
                    d = mse(cand)
                    best = torch.where((d < best_d).view(-1, 1, 1, 1), cand, best)
                    best_d = torch.minimum(d, best_d)
        with torch.no_grad():
            out[f"colour codes refined, {k} steps"] = _u8(torch.cat([y, _colour_decoder(dec, f8, f4, best)], 1))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.colour_probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=checkpoint.DEFAULT_MODEL)
    ap.add_argument("--qualities", default=None, help="comma list (default: every encodable rung)")
    ap.add_argument("--steps", default="4,16", help="refinement steps to try (comma list)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",") if s]
    qs = [int(q) for q in args.qualities.split(",")] if args.qualities else checkpoint.qualities(args.model)
    res = {}
    lines = ["| rung | view | flat mean / worst ΔE00 | discs mean / worst ΔE00 |", "|---|---|---|---|"]
    for q in qs:
        net = checkpoint.load_net(checkpoint.resolve(args.model, q))
        for prm in net.parameters():
            prm.requires_grad_(False)
        t = time.time()
        flat, discs = cs.flat_patches(), cs.discs()
        pf, pd = probe(net, flat, steps), probe(net, discs, steps)
        for view in pf:
            r = {"flat": cs.score(flat, pf[view]), "discs": cs.score(discs, pd[view], cs.disc_mask(cs.ERODE))}
            res[f"{args.model} q{q} {view}"] = r
            lines.append(f"| q{q} | {view} | {r['flat']['mean']:.2f} / {r['flat']['worst']:.2f} | "
                         f"{r['discs']['mean']:.2f} / {r['discs']['worst']:.2f} |")
        print(f"q{q}: {time.time() - t:.0f} s", flush=True)
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
