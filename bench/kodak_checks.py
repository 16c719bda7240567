"""Checks on real images that the tests cannot afford: ``python -m bench.kodak_checks --data ../shared/data/kodak``.

1. entropy: per quality, file bytes with context coding vs raw packing (same
   reconstruction, checked), and the entropy stage's encode/decode seconds.
2. kernels: ENGINE_KERNELS=torch vs triton (interpreter on the CPU) files byte-identical.
3. parity: ONNX Runtime vs torch eager: encoder bit flips (and how many bits had
   |e - 0.5| < 1e-4), level differences, and decoder outputs on the same bits.
Writes JSON + markdown to bench/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import engine
from engine import importance
from engine.net.checkpoint import DEFAULT_MODEL, qualities, resolve
from engine.format import registry
from engine.format.base import bitpath
from engine.io.planes import postprocess, preprocess
from engine.data import list_images, load_rgb
from engine.eval import machine
from engine.runners import make_runner


def check_entropy(model, qs, images, root):
    rows = []
    for q in qs:
        raw = engine.Codec(quality=q, model=model, entropy="none", backend="torch", root=root)
        ctx = engine.Codec(quality=q, model=model, entropy="context", backend="torch", root=root)
        mdl, cfg = ctx.rung, ctx.config
        tot_raw = tot_ctx = 0
        t_enc = t_dec = 0.0
        same = True
        for name, rgb in images:
            ycc = preprocess(rgb, cfg.multiple)
            e, p, ec = mdl.runner.encode(ycc)
            pk = bitpath(ctx.kernels, e.device).pack(e, p, ec, cfg.n, cfg.levels)[0]
            h, w = rgb.shape[:2]
            fr = registry.serialize(raw.rung.coding, pk, h, w, 0, raw.entropy_mode)
            t0 = time.perf_counter()
            fc = registry.serialize(mdl.coding, pk, h, w, 0, ctx.entropy_mode)
            t_enc += time.perf_counter() - t0
            t0 = time.perf_counter()
            _, _, dec = ctx.parse(fc)
            t_dec += time.perf_counter() - t0
            _, _, pr = raw.parse(fr)
            from kernels import reference
            lv, yb, cb = reference.unpack([pr], cfg.n, cfg.m, cfg.levels, dtype=torch.uint8)
            same &= bool(np.array_equal(dec[0], lv[0, 0].numpy()) and np.array_equal(dec[1], yb[0].numpy())
                         and np.array_equal(dec[2], cb[0].numpy()))
            tot_raw += len(fr)
            tot_ctx += len(fc)
        px = sum(r.shape[0] * r.shape[1] for _, r in images)
        rows.append({"quality": q, "bpp_raw": tot_raw * 8 / px, "bpp_context": tot_ctx * 8 / px,
                     "saving": 1 - tot_ctx / tot_raw, "decoded_identical": same,
                     "entropy_encode_s_per_image": t_enc / len(images), "entropy_decode_s_per_image": t_dec / len(images)})
        print(f"entropy q{q}: raw {rows[-1]['bpp_raw']:.4f} bpp, context {rows[-1]['bpp_context']:.4f} bpp "
              f"({100 * rows[-1]['saving']:.1f}% smaller), identical={same}, "
              f"enc {rows[-1]['entropy_encode_s_per_image'] * 1e3:.0f} ms dec {rows[-1]['entropy_decode_s_per_image'] * 1e3:.0f} ms",
              flush=True)
    return rows


def check_kernels(model, q, images, root, backend):
    a = engine.Codec(quality=q, model=model, backend=backend, kernels="torch", root=root)
    b = engine.Codec(quality=q, model=model, backend=backend, kernels="triton", root=root)
    same, t_b = [], 0.0
    for name, rgb in images:
        t0 = time.perf_counter()
        fb = b.compress(rgb)
        t_b += time.perf_counter() - t0
        same.append(a.compress(rgb) == fb)
    print(f"kernels q{q}: {sum(same)}/{len(same)} files byte-identical torch vs triton", flush=True)
    return {"quality": q, "identical": int(sum(same)), "images": len(same), "backend": backend,
            "triton_interpreter": os.environ.get("TRITON_INTERPRET") == "1"}


def parse_runner_spec(spec: str) -> tuple[str, str, str]:
    """'backend:device[:precision]', e.g. 'torch:cpu', 'onnxruntime:cpu', 'torch:cuda:fp16'."""
    parts = spec.split(":")
    if not 2 <= len(parts) <= 3:
        raise ValueError(f"runner spec must be backend:device[:precision], got {spec!r}")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else "fp32"


def check_parity(model, q, images, root, ref: str = "torch:cpu", test: str = "onnxruntime:cpu"):
    """Runner `test` against runner `ref` on the same inputs: encoder bit flips (and how
    many bits sit within 1e-4 of the 0.5 threshold), level differences, decoder output."""
    qq = resolve(model, q, root=root)
    ra, rb = (make_runner(qq, b, d, precision=prec) for b, d, prec in map(parse_runner_spec, (ref, test)))
    cfg = qq.config
    flips = near = total = lvl = 0
    max_e = max_dec = 0.0
    max_px = 0
    for name, rgb in images:
        ycc = preprocess(rgb, cfg.multiple)
        e1, p1, c1 = (t.cpu() for t in ra.encode(ycc.to(ra.device)))
        e2, p2, c2 = (t.cpu() for t in rb.encode(ycc.to(rb.device)))
        max_e = max(max_e, float((e1 - e2).abs().max()), float((p1 - p2).abs().max()), float((c1 - c2).abs().max()))
        for a, b in ((e1, e2), (c1, c2)):
            flips += int(((a > 0.5) != (b > 0.5)).sum())
            near += int(((a - 0.5).abs() < 1e-4).sum())
            total += a.numel()
        q1 = importance.quantize_levels(p1, cfg.levels)
        q2 = importance.quantize_levels(p2, cfg.levels)
        lvl += int((q1 != q2).sum())
        bits, lv, cb = (e1 > 0.5).float(), q1.float(), (c1 > 0.5).float()
        d1 = ra.decode(*(t.to(ra.device) for t in (bits, lv, cb))).cpu()
        d2 = rb.decode(*(t.to(rb.device) for t in (bits, lv, cb))).cpu()
        max_dec = max(max_dec, float((d1 - d2).abs().max()))
        h, w = rgb.shape[:2]
        max_px = max(max_px, int(np.abs(postprocess(d1, h, w).astype(int) - postprocess(d2, h, w).astype(int)).max()))
    res = {"quality": q, "reference": ref, "tested": test, "bits": total, "bit_flips": flips, "bits_within_1e-4_of_0.5": near, "level_differences": lvl,
           "max_abs_encoder_output_diff": max_e, "max_abs_decoder_output_diff": max_dec,
           "max_8bit_pixel_diff": max_px}
    print(f"parity q{q} {test} vs {ref}: {flips} bit flips of {total} ({near} bits within 1e-4 of 0.5), {lvl} level diffs, "
          f"max |enc diff| {max_e:.2e}, max |dec diff| {max_dec:.2e} (x255 = {max_dec * 255:.3f}), max 8-bit diff {max_px}",
          flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--quality", type=int, default=None, help="quality for the kernel and parity checks")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--only", default="entropy,kernels,parity")
    ap.add_argument("--out", default="bench/results/kodak_checks")
    ap.add_argument("--parity", default="torch:cpu,onnxruntime:cpu",
                    help="reference,tested[,tested...] runners as backend:device[:precision] "
                    "(e.g. torch:cpu,torch:cuda,torch:cuda:fp16)")
    args = ap.parse_args(argv)
    root = Path(args.model_dir) if args.model_dir else None
    paths = list_images(args.data)[: args.limit or None]
    images = [(p.name, load_rgb(p)) for p in paths]
    qs = qualities(args.model, root)
    q = args.quality or resolve(args.model, None, root=root).quality
    out = {"machine": machine(), "torch": torch.__version__, "images": len(images),
           "command": "python -m bench.kodak_checks " + " ".join(argv if argv is not None else __import__("sys").argv[1:])}
    only = set(args.only.split(","))
    if "entropy" in only:
        out["entropy"] = check_entropy(args.model, qs, images, root)
    if "parity" in only:
        ref, *tested = args.parity.split(",")
        res = [check_parity(args.model, q, images, root, ref, t) for t in tested]
        out["parity"] = res[0] if len(res) == 1 else res
    if "kernels" in only:
        out["kernels"] = check_kernels(args.model, q, images, root, "torch")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(out, indent=1))
    md = [f"# Kodak checks ({len(images)} images)", "", f"Machine: {out['machine']}", "", f"Command: `{out['command']}`", ""]
    if "entropy" in out:
        md += ["## Entropy coding vs raw packing", "", "| quality | raw bpp | context bpp | saving | decoded identical | entropy enc ms/img | entropy dec ms/img |",
               "|---|---|---|---|---|---|---|"]
        md += [f"| {r['quality']} | {r['bpp_raw']:.4f} | {r['bpp_context']:.4f} | {100 * r['saving']:.1f}% | {r['decoded_identical']} | "
               f"{1e3 * r['entropy_encode_s_per_image']:.0f} | {1e3 * r['entropy_decode_s_per_image']:.0f} |" for r in out["entropy"]]
        md.append("")
    if "parity" in out:
        md += ["## Runner parity (" + args.parity + ")", "", "```", json.dumps(out["parity"], indent=1), "```", ""]
    if "kernels" in out:
        k = out["kernels"]
        md += ["## Bit path: torch vs Triton", "", f"{k['identical']}/{k['images']} files byte-identical at quality {k['quality']} "
               f"(Triton {'interpreter' if k['triton_interpreter'] else 'compiled'}).", ""]
    Path(args.out + ".md").write_text("\n".join(md))
    return out


if __name__ == "__main__":
    main()
