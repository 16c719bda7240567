"""Rate-distortion evaluation: ``python -m engine.eval --data DIR [--quality 1,2,3] [--json OUT] [--plot OUT.png]``.

For each image and quality: real file bytes -> bpp = bytes * 8 / pixels, PSNR-RGB
and MS-SSIM-RGB on 8-bit images (as CompressAI), encode/decode seconds.  In the
same run: Pillow JPEG, WebP and JPEG2000 across their quality settings on the
same images, and a plot of everything with the published anchors.
Results JSON follows CompressAI's schema ({"name", "description", "results":
{"psnr-rgb": [...], "ms-ssim-rgb": [...], "bpp": [...], ...}}).
"""
from __future__ import annotations

import argparse
import io
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import list_images, load_rgb


def machine() -> str:
    """CPU model, core count and OS, for results files."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import os
    return f"{cpu or platform.processor() or platform.machine()} ({os.cpu_count()} cpus), {platform.system()}, torch {torch.__version__}"


def psnr_rgb(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def ms_ssim_rgb(a: np.ndarray, b: np.ndarray) -> float:
    from pytorch_msssim import ms_ssim
    ta = torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float() / 255
    tb = torch.from_numpy(np.array(b)).permute(2, 0, 1)[None].float() / 255
    # pytorch_msssim needs sides > (win - 1) * 2**4 = 160 for 5 scales.
    if min(a.shape[:2]) <= 160:
        return float("nan")
    return float(ms_ssim(ta, tb, data_range=1.0, size_average=True))


def pillow_codec(rgb: np.ndarray, fmt: str, q: int) -> tuple[int, np.ndarray]:
    buf = io.BytesIO()
    im = Image.fromarray(rgb)
    if fmt == "JPEG":
        im.save(buf, format="JPEG", quality=q)
    elif fmt == "WEBP":
        im.save(buf, format="WEBP", quality=q)
    elif fmt == "JPEG2000":
        im.save(buf, format="JPEG2000", quality_mode="rates", quality_layers=[q], irreversible=True)
    n = buf.tell()
    buf.seek(0)
    with Image.open(buf) as im2:
        return n, np.asarray(im2.convert("RGB"))


BASELINES = {
    "JPEG (Pillow)": ("JPEG", [2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75]),
    "WebP (Pillow)": ("WEBP", [0, 5, 10, 20, 30, 40, 50, 60, 75]),
    # Pillow's JPEG2000 "rates" are compression ratios (24 bpp / ratio)
    "JPEG2000 (Pillow/OpenJPEG)": ("JPEG2000", [240, 160, 120, 96, 80, 60, 48, 40, 30]),
}


def _mean(rows, key):
    v = [r[key] for r in rows if not (isinstance(r[key], float) and math.isnan(r[key]))]
    return float(np.mean(v)) if v else float("nan")


def schema(name, desc, points):
    keys = ["psnr-rgb", "ms-ssim-rgb", "bpp", "encoding_time", "decoding_time"]
    return {"name": name, "description": desc,
            "results": {k: [p[k] for p in points] for k in keys if all(k in p for p in points)}}


def interp_at(bpp, curve, key):
    """Linear interpolation of a baseline curve (sorted by bpp) at ``bpp``; None outside."""
    xs = [p["bpp"] for p in curve]
    if not xs or bpp < min(xs) or bpp > max(xs):
        return None
    order = np.argsort(xs)
    return float(np.interp(bpp, np.array(xs)[order], np.array([p[key] for p in curve])[order]))


def _run_ours(engine, model, qs, effort, args, root, paths, images):
    """One curve: every quality at one effort -> ({quality: {mean, per_image, backend}}, points)."""
    ours, points = {}, []
    for q in qs:
        codec = engine.Codec(quality=q, model=model, backend=args.backend, entropy=args.entropy, threads=args.threads,
                             root=root, effort=effort)
        rows = []
        for p, rgb in zip(paths, images):
            t0 = time.perf_counter()
            data = codec.compress(rgb)
            t1 = time.perf_counter()
            rec = codec.decompress(data)
            t2 = time.perf_counter()
            px = rgb.shape[0] * rgb.shape[1]
            rows.append({"image": p.name, "bytes": len(data), "bpp": len(data) * 8 / px,
                         "psnr-rgb": psnr_rgb(rgb, rec), "ms-ssim-rgb": ms_ssim_rgb(rgb, rec),
                         "encoding_time": t1 - t0, "decoding_time": t2 - t1})
        pt = {k: _mean(rows, k) for k in ["bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"]}
        pt["quality"] = q
        pt["effort"] = effort
        points.append(pt)
        ours[q] = {"mean": pt, "per_image": rows, "backend": codec.runner.name}
        print(f"{model} q{q} effort {effort} [{codec.runner.name}]: {pt['bpp']:.4f} bpp  {pt['psnr-rgb']:.2f} dB  "
              f"MS-SSIM {pt['ms-ssim-rgb']:.4f}  enc {pt['encoding_time']:.2f}s dec {pt['decoding_time']:.2f}s", flush=True)
    return ours, points


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default=None)
    ap.add_argument("--model-dir", default=None, help="folder holding model folders (default: shipped)")
    ap.add_argument("--quality", default=None, help="comma list (default: all)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--entropy", default="rans", choices=["rans", "context", "none"])
    ap.add_argument("--limit", type=int, default=0, help="first N images only")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--anchors", default=None, help="folder of CompressAI-schema JSON to plot")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--effort", default="0", help="comma list of efforts 0..9 (engine/search.py): one curve each")
    ap.add_argument("--effort-quality", default=None,
                    help="comma list: run efforts > 0 at these qualities only (the search is slow on a CPU)")
    args = ap.parse_args(argv)
    import engine
    from .checkpoint import DEFAULT_MODEL, qualities
    model = args.model or DEFAULT_MODEL
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.model_dir) if args.model_dir else None
    qs = [int(q) for q in args.quality.split(",")] if args.quality else qualities(model, root)
    paths = list_images(args.data)[: args.limit or None]
    images = [load_rgb(p) for p in paths]
    out = {"machine": machine(),
           "command": "python -m engine.eval " + " ".join(argv if argv is not None else sys.argv[1:]),
           "images": [p.name for p in paths], "ours": {}, "baselines": {}}
    efforts = [int(e) for e in args.effort.split(",")]
    eq = [int(q) for q in args.effort_quality.split(",")] if args.effort_quality else qs
    out["efforts"] = {}
    for effort in efforts:
        run_qs = qs if effort == 0 else [q for q in qs if q in eq]
        ours, points = _run_ours(engine, model, run_qs, effort, args, root, paths, images)
        out["efforts"][effort] = {"ours": ours, "results": schema(f"HNLC {model} effort {effort}", "", points)["results"]}
    first = out["efforts"][efforts[0]]
    out["ours"] = first["ours"]
    points = [r["mean"] for r in first["ours"].values()]
    out["results"] = first["results"]
    out["name"] = f"HNLC {model}"
    out["description"] = f"two-stream learned codec ({model}), entropy={args.entropy}, real file bytes"
    if not args.no_baselines:
        for name, (fmt, settings) in BASELINES.items():
            curve = []
            for s in settings:
                rows = []
                for rgb in images:
                    t0 = time.perf_counter()
                    n, rec = pillow_codec(rgb, fmt, s)
                    dt = time.perf_counter() - t0
                    px = rgb.shape[0] * rgb.shape[1]
                    rows.append({"bpp": n * 8 / px, "psnr-rgb": psnr_rgb(rgb, rec), "ms-ssim-rgb": ms_ssim_rgb(rgb, rec),
                                 "encoding_time": dt, "decoding_time": 0.0})
                pt = {k: _mean(rows, k) for k in ["bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time"]}
                pt["setting"] = s
                curve.append(pt)
            curve.sort(key=lambda p: p["bpp"])
            out["baselines"][name] = curve
            print(f"{name}: {len(curve)} points, {curve[0]['bpp']:.3f}..{curve[-1]['bpp']:.3f} bpp", flush=True)
        out["matched"] = []
        for pt in points:
            row = {"quality": pt["quality"], "bpp": pt["bpp"], "psnr-rgb": pt["psnr-rgb"], "ms-ssim-rgb": pt["ms-ssim-rgb"]}
            for name, curve in out["baselines"].items():
                row[name] = {k: interp_at(pt["bpp"], curve, k) for k in ("psnr-rgb", "ms-ssim-rgb")}
                # the conservative match: the cheapest setting that spends at least our bpp
                above = [c for c in curve if c["bpp"] >= pt["bpp"]]
                row[name]["at_or_above"] = above[0] if above else None
            out["matched"].append(row)
        out["matched_efforts"] = {}
        for effort, cur in out["efforts"].items():
            rows = []
            for r in cur["ours"].values():
                pt = r["mean"]
                row = {"quality": pt["quality"], "effort": effort, "bpp": pt["bpp"], "psnr-rgb": pt["psnr-rgb"],
                       "ms-ssim-rgb": pt["ms-ssim-rgb"], "encoding_time": pt["encoding_time"]}
                for name, curve in out["baselines"].items():
                    row[name] = {k: interp_at(pt["bpp"], curve, k) for k in ("psnr-rgb", "ms-ssim-rgb")}
                rows.append(row)
            out["matched_efforts"][effort] = rows
    if args.json:
        from .checkpoint import atomic_write_bytes
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.json, json.dumps(out, indent=1).encode())
        atomic_write_bytes(str(Path(args.json).with_suffix(".md")), markdown(out).encode())
    if args.plot:
        plot(out, args.plot, args.anchors)
    return out


def markdown(out) -> str:
    lines = [f"# {out['name']}: {len(out['images'])} images", "", f"Machine: {out['machine']}", "",
             f"Command: `{out['command']}`", "",
             "| effort | quality | bpp | PSNR-RGB | MS-SSIM-RGB | enc s/image | dec s/image | JPEG PSNR @bpp | "
             "JPEG MS-SSIM @bpp | WebP PSNR @bpp | WebP MS-SSIM @bpp | JPEG2000 PSNR @bpp |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    efforts = out.get("efforts") or {0: {"ours": out["ours"]}}
    matched = {(int(m["effort"]), int(m["quality"])): m
               for rows in out.get("matched_efforts", {}).values() for m in rows}

    def f(v, d=2):
        return "—" if v is None else f"{v:.{d}f}"
    for effort, cur in efforts.items():
        for q, r in cur["ours"].items():
            mn = r["mean"]
            m = matched.get((int(effort), int(q)), {})
            j, w, k = (m.get(n, {}) for n in ("JPEG (Pillow)", "WebP (Pillow)", "JPEG2000 (Pillow/OpenJPEG)"))
            lines.append(f"| {effort} | {q} | {mn['bpp']:.4f} | {mn['psnr-rgb']:.2f} | {mn['ms-ssim-rgb']:.4f} | "
                         f"{mn['encoding_time']:.2f} | {mn['decoding_time']:.2f} | {f(j.get('psnr-rgb'))} | "
                         f"{f(j.get('ms-ssim-rgb'), 4)} | {f(w.get('psnr-rgb'))} | {f(w.get('ms-ssim-rgb'), 4)} | "
                         f"{f(k.get('psnr-rgb'))} |")
    lines += ["", "Baselines are interpolated linearly in bpp between their measured settings (— : outside their range).", ""]
    for name, curve in out.get("baselines", {}).items():
        lines.append(f"* {name}: " + ", ".join(f"{p['setting']}: {p['bpp']:.3f} bpp {p['psnr-rgb']:.2f} dB {p['ms-ssim-rgb']:.4f}"
                                              for p in curve))
    return "\n".join(lines) + "\n"


def plot(out, path, anchors_dir=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    efforts = out.get("efforts") or {0: {"results": out["results"]}}
    curves = [(f"{out['name']} effort {e}", cur["results"], "o-", 2.5) for e, cur in efforts.items()]
    for name, curve in out.get("baselines", {}).items():
        curves.append((name + " (this run)", {k: [p[k] for p in curve] for k in ("bpp", "psnr-rgb", "ms-ssim-rgb")}, "s--", 1.2))
    if anchors_dir:
        for f in sorted(Path(anchors_dir).glob("*.json")):
            d = json.loads(f.read_text())
            if "cuda" in f.name and "_cpu" not in f.name and any("cpu" in g.name and g.name.replace("cpu", "cuda") == f.name
                                                                 for g in Path(anchors_dir).glob("*.json")):
                continue  # same numbers as the _cpu file
            curves.append((d.get("name", f.stem) + " (published)", d["results"], ":", 1.0))
    for ax, key, label in ((axes[0], "psnr-rgb", "PSNR-RGB [dB]"), (axes[1], "ms-ssim-rgb", "MS-SSIM-RGB")):
        for name, r, style, lw in curves:
            if key in r and r[key]:
                pts = sorted(zip(r["bpp"], r[key]))
                pts = [p for p in pts if p[0] <= 1.0]
                if pts:
                    ax.plot(*zip(*pts), style, lw=lw, ms=3, label=name)
        ax.set_xlabel("bpp (real file bytes)")
        ax.set_ylabel(label)
        ax.set_xlim(0, 1.0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Kodak-style RD: {len(out['images'])} images")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
