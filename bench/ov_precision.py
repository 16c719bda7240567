"""OpenVINO bf16 against fp32, bytes and pixels: ``python -m bench.ov_precision``.

    python -m bench.ov_precision [--data ../shared/data/train] [--holdout 20] [--model M]
        [--qualities 1,2,3,4,5] [--build-dir DIR] [--out bench/results]

On the held-out *training* images (``engine.data.split``, the split the rungs and the
search were tuned on; never Kodak), at every encodable rung, four policies, each the
encoder's precision + the decoder's (OpenVINO, ``precision="fp32"`` / ``"bf16"``), with
ONNX Runtime fp32 (the CPU default before OpenVINO) as the reference:

* bytes: how often a bf16 encoder's file differs from fp32's, and how many of the
  coded symbols differ (importance levels, kept Y bits, CbCr bits);
* rate and quality: mean bpp and PSNR (RGB, dB, mean over images) of each policy, and
  their change against ONNX Runtime fp32;
* pixels: a bf16 decode against the fp32 decode of the same file: the largest level
  difference, the fraction of values that differ at all, and the PSNR between them
  (the tolerance stated in the README, "Precision").

Writes ``<out>/ov-precision-<machine>.json`` and ``.md`` (with the CPU and whether it
has bf16 matrix units).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.throughput import machine_info, write_results  # noqa: E402

POLICIES = (("fp32", "fp32"), ("fp32", "bf16"), ("bf16", "bf16"), ("bf16", "fp32"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def symbols(codec, data: bytes):
    """A file's decoded symbols: (levels, Y bits, CbCr bits) as numpy arrays."""
    from engine.format import registry
    _, _, dec = registry.parse(data, codec.rungs.codings.for_header, codec.max_pixels)
    if isinstance(dec, tuple):
        return tuple(np.asarray(x) for x in dec)
    from kernels import reference
    cfg = codec.config
    lv, yd, cd = reference.unpack([dec], cfg.n, cfg.m, cfg.levels)
    return lv[0].numpy(), yd[0].numpy(), cd[0].numpy()


def pixel_diff(a: np.ndarray, b: np.ndarray) -> dict:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return {"max": int(d.max()), "frac_off": float(np.count_nonzero(d) / d.size),
            "frac_over_1": float(np.count_nonzero(d > 1) / d.size), "psnr": psnr(a, b)}


def run_quality(q: int, model: str, images: list, log, build_dir: Path | None = None) -> dict:
    import engine
    ort = engine.Codec(quality=q, model=model, backend="onnxruntime", build_dir=build_dir)
    ov = {p: engine.Codec(quality=q, model=model, backend="openvino", precision=p, build_dir=build_dir) for p in ("fp32", "bf16")}
    per = {f"{e}+{d}": {"bpp": [], "psnr": []} for e, d in POLICIES}
    per["onnxruntime fp32"] = {"bpp": [], "psnr": []}
    files_differ, sym = 0, {"levels": [0, 0], "ybits": [0, 0], "cbits": [0, 0]}
    dec_max, dec_off, dec_over, dec_psnr = 0, [], [], []
    for name, rgb in images:
        px = rgb.shape[0] * rgb.shape[1]
        ref = ort.compress(rgb)
        out = ort.decompress(ref)
        per["onnxruntime fp32"]["bpp"].append(len(ref) * 8 / px)
        per["onnxruntime fp32"]["psnr"].append(psnr(out, rgb))
        files = {p: ov[p].compress(rgb) for p in ("fp32", "bf16")}
        if files["fp32"] != ref:
            log(f"  note: {name}: OpenVINO fp32's file differs from ONNX Runtime's")
        decoded = {}
        for e, d in POLICIES:
            img = ov[d].decompress(files[e])
            decoded[(e, d)] = img
            per[f"{e}+{d}"]["bpp"].append(len(files[e]) * 8 / px)
            per[f"{e}+{d}"]["psnr"].append(psnr(img, rgb))
        files_differ += files["fp32"] != files["bf16"]
        a, b = symbols(ort, files["fp32"]), symbols(ort, files["bf16"])
        for key, x, y in zip(("levels", "ybits", "cbits"), a, b):
            sym[key][0] += int(np.count_nonzero(x != y))
            sym[key][1] += int(x.size)
        pd = pixel_diff(decoded[("fp32", "bf16")], decoded[("fp32", "fp32")])
        dec_max = max(dec_max, pd["max"])
        dec_off.append(pd["frac_off"])
        dec_over.append(pd["frac_over_1"])
        dec_psnr.append(pd["psnr"])
    base = per["onnxruntime fp32"]
    means = {k: {"bpp": float(np.mean(v["bpp"])), "psnr": float(np.mean(v["psnr"]))} for k, v in per.items()}
    for k, v in means.items():
        v["d_bpp_pct"] = 100 * (v["bpp"] / means["onnxruntime fp32"]["bpp"] - 1)
        v["d_psnr_db"] = v["psnr"] - means["onnxruntime fp32"]["psnr"]
        v["worst_image_d_psnr_db"] = float(min(np.array(per[k]["psnr"]) - np.array(base["psnr"])))
    return {"quality": q, "images": len(images), "policies": means,
            "encoder_bf16": {"files_differ": files_differ,
                             "symbols_differ": {k: {"count": c, "of": n, "frac": c / max(n, 1)} for k, (c, n) in sym.items()}},
            "decoder_bf16_vs_fp32": {"max_levels": dec_max, "max_frac_off": float(max(dec_off)),
                                     "mean_frac_off": float(np.mean(dec_off)),
                                     "max_frac_over_1": float(max(dec_over)), "min_psnr_db": float(min(dec_psnr))}}


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# OpenVINO bf16 against fp32: {res['model']}, {res['images']} held-out training images", "",
             f"CPU: {res['cpu']} ({m['threads']} threads).  OpenVINO {res['openvino']}.  "
             f"Images: `{res['data']}`, `engine.data.split(..., {res['holdout']})`'s held-out part (not Kodak).  "
             f"Command: `{res['command']}`", "",
             "Policies are encoder + decoder precision in OpenVINO; deltas are against ONNX Runtime fp32 "
             "(bpp in %, PSNR in dB, means over the images; 'worst' is the worst single image's PSNR change).", "",
             "| q | policy | bpp | PSNR | d bpp | d PSNR | worst image d PSNR |", "|---|---|---|---|---|---|---|"]
    for r in res["rungs"]:
        for k, v in r["policies"].items():
            lines.append(f"| {r['quality']} | {k} | {v['bpp']:.4f} | {v['psnr']:.3f} | {v['d_bpp_pct']:+.2f}% | "
                         f"{v['d_psnr_db']:+.3f} | {v['worst_image_d_psnr_db']:+.3f} |")
    lines += ["", "bf16 encoder against fp32 encoder (same images): files that differ, and coded symbols that differ:",
              "", "| q | files differ | levels | Y bits | CbCr bits |", "|---|---|---|---|---|"]
    for r in res["rungs"]:
        e, s = r["encoder_bf16"], r["encoder_bf16"]["symbols_differ"]
        lines.append(f"| {r['quality']} | {e['files_differ']} / {r['images']} | "
                     + " | ".join(f"{s[k]['count']} ({s[k]['frac']:.3%})" for k in ("levels", "ybits", "cbits")) + " |")
    lines += ["", "bf16 decoder against fp32 decoder, the same (fp32-encoded) files: worst image over the set:", "",
              "| q | max level diff | max fraction of values off | mean fraction off | max fraction off by > 1 | "
              "min PSNR between |", "|---|---|---|---|---|---|"]
    for r in res["rungs"]:
        d = r["decoder_bf16_vs_fp32"]
        lines.append(f"| {r['quality']} | {d['max_levels']} | {d['max_frac_off']:.2%} | {d['mean_frac_off']:.2%} | "
                     f"{d['max_frac_over_1']:.4%} | {d['min_psnr_db']:.1f} dB |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.ov_precision", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "train"))
    ap.add_argument("--holdout", type=int, default=20)
    ap.add_argument("--model", default=None)
    ap.add_argument("--qualities", default=None, help="comma list (default: every encodable rung)")
    ap.add_argument("--build-dir", default=None, help="artifact folder (default: ENGINE_BUILD_DIR or build/)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)
    build_dir = Path(args.build_dir).resolve() if args.build_dir else None

    import openvino

    from engine.net.checkpoint import DEFAULT_MODEL, qualities
    from engine.cpu import describe
    from engine.data import list_images, load_rgb, split

    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    model = args.model or DEFAULT_MODEL
    qs = [int(x) for x in args.qualities.split(",")] if args.qualities else qualities(model)
    _, val = split(list_images(args.data), args.holdout)
    images = [(p.name, load_rgb(p)) for p in val]
    res = {"command": "python -m bench.ov_precision " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": machine_info(os.cpu_count() or 1), "cpu": describe(), "openvino": openvino.get_version(),
           "model": model, "data": args.data, "holdout": args.holdout, "images": len(images), "rungs": []}
    for q in qs:
        log(f"quality {q} ...")
        res["rungs"].append(run_quality(q, model, images, log, build_dir))
    stem = write_results(args.out, "ov-precision", res["machine"], res, markdown(res))
    log(f"wrote {stem}.json/.md")
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
