"""Rate-distortion evaluation: ``python -m engine.eval --data DIR [--quality 1,2,3] [--json OUT] [--plot OUT.png] [--html DIR]``.

For each image and quality: real file bytes -> bpp = bytes * 8 / pixels, PSNR-RGB
and MS-SSIM-RGB on 8-bit images (as CompressAI), the mean CIEDE2000 colour
difference (scikit-image), the PSNR of the Y, Cb and Cr planes (BT.601 full range,
engine/io/color.py's matrix), encode/decode seconds.  In the same run: Pillow JPEG,
WebP and JPEG2000 across their quality settings on the same images, a plot of
everything with the published anchors, and two comparisons with each baseline:
its curve interpolated at our mean bpp, and the stricter per-image match (each
image against the baseline's best setting whose file is no larger than ours,
then averaged; the README's claims rest on this one).  ``--html DIR`` writes a
comparison page (engine/eval_page.py).
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import list_images, load_rgb
from .settings import available_entropy_modes, available_metrics

# Per image and per curve point: what is averaged (CompressAI's names where it has one).
QUALITY_KEYS = ["psnr-rgb", "ms-ssim-rgb", "delta-e00", "psnr-y", "psnr-cb", "psnr-cr"]
MEAN_KEYS = ["bytes", "bpp", *QUALITY_KEYS, "encoding_time", "decoding_time"]


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


def _psnr(mse: float, peak: float = 255.0) -> float:
    return float("inf") if mse == 0 else 10 * math.log10(peak ** 2 / mse)


def psnr_rgb(a: np.ndarray, b: np.ndarray) -> float:
    return _psnr(float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def ms_ssim_rgb(a: np.ndarray, b: np.ndarray) -> float:
    from pytorch_msssim import ms_ssim
    ta = torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float() / 255
    tb = torch.from_numpy(np.array(b)).permute(2, 0, 1)[None].float() / 255
    # pytorch_msssim needs sides > (win - 1) * 2**4 = 160 for 5 scales.
    if min(a.shape[:2]) <= 160:
        return float("nan")
    return float(ms_ssim(ta, tb, data_range=1.0, size_average=True))


def ycbcr(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> float32 Y, Cb, Cr on the 0..255 scale, unrounded (the codec's own matrix)."""
    from .io.color import RGB2YCC
    m = RGB2YCC.numpy().astype(np.float32)
    return rgb.astype(np.float32) @ m.T + np.array([0, 128, 128], np.float32)


def lab(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab
    return rgb2lab(rgb).astype(np.float32)


def delta_e00(lab_a: np.ndarray, rgb_b: np.ndarray) -> float:
    """Mean CIEDE2000 difference over the pixels (scikit-image's, on sRGB D65)."""
    from skimage.color import deltaE_ciede2000
    return float(np.mean(deltaE_ciede2000(lab_a, lab(rgb_b))))


class Reference:
    """An original image and what every comparison with it reuses (its Lab and YCbCr)."""

    def __init__(self, name: str, rgb: np.ndarray):
        self.name, self.rgb = name, rgb
        self.pixels = rgb.shape[0] * rgb.shape[1]
        self.lab, self.ycc = lab(rgb), ycbcr(rgb)

    def quality(self, rec: np.ndarray) -> dict:
        """A reconstruction's distortion against this image: every key of QUALITY_KEYS."""
        d = {"psnr-rgb": psnr_rgb(self.rgb, rec), "ms-ssim-rgb": ms_ssim_rgb(self.rgb, rec),
             "delta-e00": delta_e00(self.lab, rec)}
        err = (ycbcr(rec) - self.ycc).astype(np.float64) ** 2
        for i, k in enumerate(("psnr-y", "psnr-cb", "psnr-cr")):
            d[k] = _psnr(float(err[..., i].mean()))
        return d


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


# Settings from the lowest quality to the highest (the per-image match takes the last
# one that fits).  Dense below ~0.4 bpp, where our rungs are: a coarse grid would hand a
# baseline a much smaller file in the per-image match.
BASELINES = {
    "JPEG (Pillow)": ("JPEG", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75]),
    "WebP (Pillow)": ("WEBP", [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75]),
    # Pillow's JPEG2000 "rates" are compression ratios (24 bpp / ratio)
    "JPEG2000 (Pillow/OpenJPEG)": ("JPEG2000", [240, 200, 160, 140, 120, 110, 96, 88, 80, 60, 48, 40, 30]),
}


def _mean(rows, key):
    v = [r[key] for r in rows if key in r and not (isinstance(r[key], float) and math.isnan(r[key]))]
    return float(np.mean(v)) if v else float("nan")


def mean_point(rows) -> dict:
    return {k: _mean(rows, k) for k in MEAN_KEYS if any(k in r for r in rows)}


def schema(name, desc, points):
    keys = ["psnr-rgb", "ms-ssim-rgb", "delta-e00", "psnr-y", "psnr-cb", "psnr-cr", "bpp", "encoding_time",
            "decoding_time"]
    return {"name": name, "description": desc,
            "results": {k: [p[k] for p in points] for k in keys if all(k in p for p in points)}}


def interp_at(bpp, curve, key):
    """Linear interpolation of a baseline curve at ``bpp``; None outside it."""
    xs = [p["bpp"] for p in curve]
    if not xs or bpp < min(xs) or bpp > max(xs):
        return None
    order = np.argsort(xs)
    return float(np.interp(bpp, np.array(xs)[order], np.array([p[key] for p in curve])[order]))


def best_fitting(budget: int, options: list[dict]) -> dict | None:
    """The last option (settings in quality order) whose file is at most ``budget`` bytes."""
    fits = [o for o in options if o["bytes"] <= budget]
    return fits[-1] if fits else None


def per_image_match(ours_rows: list[dict], curve: list[dict]) -> dict:
    """Each image against the baseline's best setting whose file is no larger than ours;
    both sides averaged over the images where one fits (``n`` of ``of``)."""
    pairs = []
    for i, mine in enumerate(ours_rows):
        theirs = best_fitting(mine["bytes"], [dict(p["per_image"][i], setting=p["setting"]) for p in curve])
        if theirs is not None:
            pairs.append((mine, theirs))
    keys = ["bytes", "bpp", *QUALITY_KEYS]
    return {"n": len(pairs), "of": len(ours_rows),
            "ours": {k: _mean([m for m, _ in pairs], k) for k in keys},
            "theirs": {k: _mean([t for _, t in pairs], k) for k in keys},
            "settings": [t["setting"] for _, t in pairs]}


@dataclass(frozen=True)
class Curve:
    """One of our curves: a model (the one for ``metric``) at one effort; a point per quality."""
    metric: str
    model: str
    effort: int


def model_metric(model: str, root: Path | None) -> str:
    from .net.checkpoint import CHECKPOINT_DIR
    meta = json.loads((Path(root or CHECKPOINT_DIR) / model / "model.json").read_text())
    return meta.get("metric", "mse")


def metric_models(metrics: list[str], model: str | None, root: Path | None) -> dict[str, str]:
    """The model drawing each metric's curves (as CompressAI's ``metric=``): ``model`` for
    its own metric, else the first model whose model.json says ``"metric": m`` (mse when
    unsaid).  A metric no model is trained for is an error naming what there is."""
    from .net.checkpoint import CHECKPOINT_DIR, DEFAULT_MODEL
    base = Path(root or CHECKPOINT_DIR)
    here = sorted(p.name for p in base.iterdir() if (p / "model.json").exists())
    if model and model not in here:
        raise SystemExit(f"unknown model {model!r} in {base}; there are: {', '.join(here)}")
    names = [model or DEFAULT_MODEL] if model or DEFAULT_MODEL in here else []
    names += here
    found: dict[str, str] = {}
    for name in names:
        found.setdefault(model_metric(name, root), name)
    missing = [m for m in metrics if m not in found]
    if missing:
        have = ", ".join(f"{m} ({n})" for m, n in found.items())
        raise SystemExit(f"no model for metric {', '.join(missing)} in {base}; there are: {have}")
    return {m: found[m] for m in metrics}


def _ours_row(codec, ref: Reference) -> tuple[dict, np.ndarray]:
    t0 = time.perf_counter()
    data = codec.compress(ref.rgb)
    t1 = time.perf_counter()
    rec = codec.decompress(data)
    t2 = time.perf_counter()
    row = {"image": ref.name, "bytes": len(data), "bpp": len(data) * 8 / ref.pixels, **ref.quality(rec),
           "encoding_time": t1 - t0, "decoding_time": t2 - t1}
    return row, rec


def _baseline_row(ref: Reference, fmt: str, setting: int) -> dict:
    t0 = time.perf_counter()
    n, rec = pillow_codec(ref.rgb, fmt, setting)
    return {"image": ref.name, "bytes": n, "bpp": n * 8 / ref.pixels, **ref.quality(rec),
            "encoding_time": time.perf_counter() - t0, "decoding_time": 0.0}


def _args(argv):
    ap = argparse.ArgumentParser(prog="python -m engine.eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default=None, help="the model for its metric's curve (default: the shipped one)")
    ap.add_argument("--model-dir", default=None, help="folder holding model folders (default: shipped)")
    ap.add_argument("--metric", default="mse",
                    help="comma list of metrics, a curve each, from the model trained for it (" + ", ".join(available_metrics()) + ")")
    ap.add_argument("--quality", default=None, help="comma list (default: all)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--entropy", default="rans", choices=available_entropy_modes())
    ap.add_argument("--limit", type=int, default=0, help="first N images only")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--anchors", default=None, help="folder of CompressAI-schema JSON to plot")
    ap.add_argument("--json", default=None, help="results JSON (and a .md table beside it)")
    ap.add_argument("--plot", default=None)
    ap.add_argument("--html", default=None, metavar="DIR", help="write a comparison page to DIR (DIR/index.html)")
    ap.add_argument("--html-extra", action="append", default=[], metavar="FILE[=CAPTION]",
                    help="a figure for the page's 'more figures' section (repeatable)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--effort", default="0", help="comma list of efforts 0..9 (engine/net/search.py): one curve each")
    ap.add_argument("--effort-quality", default=None,
                    help="comma list: run efforts > 0 at these qualities only (the search is slow on a CPU)")
    args = ap.parse_args(argv)
    bad = [m for m in args.metric.split(",") if m not in available_metrics()]
    if bad:
        ap.error(f"--metric: unknown {bad}; one of {list(available_metrics())}")
    return args


def _codecs(args, root, models: dict[str, str]) -> dict[tuple[Curve, int], object]:
    """(curve, quality) -> a Codec, for every point to measure."""
    import engine
    from .net.checkpoint import qualities
    efforts = [int(e) for e in args.effort.split(",")]
    eq = [int(q) for q in args.effort_quality.split(",")] if args.effort_quality else None
    codecs = {}
    for metric, model in models.items():
        qs = [int(q) for q in args.quality.split(",")] if args.quality else qualities(model, root)
        for effort in efforts:
            curve = Curve(metric, model, effort)
            for q in qs if effort == 0 or eq is None else [q for q in qs if q in eq]:
                codecs[curve, q] = engine.Codec(quality=q, model=model, backend=args.backend, entropy=args.entropy,
                                                threads=args.threads, root=root, effort=effort)
    return codecs


def _measure(args, refs_iter, codecs, keep):
    """Every image through every codec and baseline setting, an image at a time (its
    Lab and YCbCr computed once).  -> (our rows per (curve, q), baseline rows per
    (name, setting), our reconstructions for ``keep(curve, q)``)."""
    ours = {key: [] for key in codecs}
    base = {(name, s): [] for name, (_, settings) in BASELINES.items() for s in settings}
    recs: dict[tuple, np.ndarray] = {}
    for i, ref in enumerate(refs_iter):
        t0 = time.perf_counter()
        for key, codec in codecs.items():
            row, rec = _ours_row(codec, ref)
            ours[key].append(row)
            if keep(*key):
                recs[key + (ref.name,)] = rec
        if not args.no_baselines:
            for name, (fmt, settings) in BASELINES.items():
                for s in settings:
                    base[name, s].append(_baseline_row(ref, fmt, s))
        print(f"image {i + 1}: {ref.name} {time.perf_counter() - t0:.1f} s", flush=True)
    return ours, base, recs


def _baseline_curves(base) -> dict[str, list[dict]]:
    """Each baseline's points in settings order (quality order), each with its per-image rows."""
    curves = {}
    for name, (_, settings) in BASELINES.items():
        curves[name] = [dict(mean_point(base[name, s]), setting=s, per_image=base[name, s]) for s in settings]
        lo, hi = min(p["bpp"] for p in curves[name]), max(p["bpp"] for p in curves[name])
        print(f"{name}: {len(settings)} points, {lo:.3f}..{hi:.3f} bpp", flush=True)
    return curves


def _comparisons(points_rows, baselines) -> tuple[list, list]:
    """(interpolated, per-image matched) rows, one per our point."""
    interpolated, matched = [], []
    for key, pt, rows in points_rows:
        head = {"metric": key.metric, "model": key.model, "effort": key.effort, "quality": pt["quality"],
                "bpp": pt["bpp"], **{k: pt[k] for k in QUALITY_KEYS}, "encoding_time": pt["encoding_time"]}
        interpolated.append(dict(head, **{name: {k: interp_at(pt["bpp"], c, k) for k in QUALITY_KEYS}
                                          for name, c in baselines.items()}))
        matched.append(dict(head, **{name: per_image_match(rows, c) for name, c in baselines.items()}))
    return interpolated, matched


def main(argv=None):
    args = _args(argv)
    from .io.atomic import atomic_write_bytes
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.model_dir) if args.model_dir else None
    metrics = args.metric.split(",")
    models = metric_models(metrics, args.model, root)
    paths = list_images(args.data)[: args.limit or None]
    codecs = _codecs(args, root, models)
    page_rung = None
    if args.html:
        from . import eval_page
        page_rung = eval_page.pick_rung(list(codecs), metrics[0], root)
    refs = (Reference(p.name, load_rgb(p)) for p in paths)
    ours, base, recs = _measure(args, refs, codecs, lambda curve, q: page_rung is not None and
                                (curve, q) in page_rung)
    out = {"machine": machine(),
           "command": "python -m engine.eval " + " ".join(argv if argv is not None else sys.argv[1:]),
           "images": [p.name for p in paths], "metrics": {}, "baselines": {}}
    points_rows = []
    for (curve, q), rows in ours.items():
        pt = dict(mean_point(rows), quality=q, effort=curve.effort, metric=curve.metric)
        m = out["metrics"].setdefault(curve.metric, {"model": curve.model, "efforts": {}})
        cur = m["efforts"].setdefault(curve.effort, {"ours": {}})
        cur["ours"][q] = {"mean": pt, "per_image": rows, "backend": codecs[curve, q].runner.name}
        points_rows.append((curve, pt, rows))
        print(f"{curve.model} ({curve.metric}) q{q} effort {curve.effort} [{codecs[curve, q].runner.name}]: "
              f"{pt['bpp']:.4f} bpp  {pt['psnr-rgb']:.2f} dB  MS-SSIM {pt['ms-ssim-rgb']:.4f}  "
              f"dE00 {pt['delta-e00']:.2f}  enc {pt['encoding_time']:.2f}s dec {pt['decoding_time']:.2f}s", flush=True)
    for metric, m in out["metrics"].items():
        for effort, cur in m["efforts"].items():
            cur["results"] = schema("", "", [r["mean"] for r in cur["ours"].values()])["results"]
    for codec in codecs.values():
        codec.close()
    # The first metric's curves under the keys earlier results files have.
    first = out["metrics"][metrics[0]]
    model = first["model"]
    out["efforts"] = first["efforts"]
    e0 = first["efforts"][min(first["efforts"])]
    out["ours"], out["results"] = e0["ours"], e0["results"]
    out["name"] = f"HNLC {model}"
    out["description"] = f"two-stream learned codec ({model}), entropy={args.entropy}, real file bytes"
    if not args.no_baselines:
        out["baselines"] = _baseline_curves(base)
        out["interpolated"], out["per_image_matched"] = _comparisons(points_rows, out["baselines"])
        out["matched_efforts"] = {}
        for row in out["interpolated"]:
            if row["metric"] == metrics[0]:
                out["matched_efforts"].setdefault(row["effort"], []).append(row)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.json, json.dumps(out, indent=1).encode())
        atomic_write_bytes(str(Path(args.json).with_suffix(".md")), markdown(out).encode())
    if args.plot:
        plot(out, args.plot, args.anchors)
    if args.html:
        eval_page.write(sys.modules[__name__], out, args.html, paths, recs, page_rung, anchors=args.anchors, extras=args.html_extra)
    return out


# ---------------------------------------------------------------------------
# Tables: one model for the markdown file and the comparison page
# ---------------------------------------------------------------------------

BASELINE_SHORT = {"JPEG (Pillow)": "JPEG", "WebP (Pillow)": "WebP", "JPEG2000 (Pillow/OpenJPEG)": "JPEG2000"}


def fmt(v, d=2):
    """A number for a table: — for none or NaN."""
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"


def tables(out) -> list[tuple[str, list[str], list[list[str]], str]]:
    """The results as (title, header, rows, note) tables."""
    metrics = out.get("metrics") or {"mse": {"efforts": out.get("efforts") or {0: {"ours": out["ours"]}}}}
    head = ["metric", "effort", "quality", "bpp", "PSNR-RGB", "MS-SSIM", "ΔE00", "PSNR-Y", "PSNR-Cb", "PSNR-Cr",
            "enc s/image", "dec s/image"]
    rows = []
    for metric, m in metrics.items():
        for effort, cur in m["efforts"].items():
            for q, r in cur["ours"].items():
                p = r["mean"]
                rows.append([metric, str(effort), str(q), fmt(p["bpp"], 4), fmt(p["psnr-rgb"]),
                             fmt(p["ms-ssim-rgb"], 4), fmt(p.get("delta-e00")), fmt(p.get("psnr-y")),
                             fmt(p.get("psnr-cb")), fmt(p.get("psnr-cr")), fmt(p["encoding_time"]),
                             fmt(p["decoding_time"])])
    out_tables = [("Ours (mean over the images)", head, rows, "ΔE00: mean CIEDE2000 colour difference, lower is better.")]
    if out.get("per_image_matched"):
        out_tables.append(_matched_table(out["per_image_matched"]))
    if out.get("interpolated"):
        out_tables.append(_interpolated_table(out["interpolated"]))
    if out.get("baselines"):
        out_tables.append(_baselines_table(out["baselines"]))
    return out_tables


def _matched_table(matched):
    head = ["metric", "effort", "quality", "baseline", "images", "bpp ours / theirs", "PSNR ours / theirs",
            "MS-SSIM ours / theirs", "ΔE00 ours / theirs", "PSNR-Cb/Cr ours / theirs"]
    rows = []
    for r in matched:
        for name, short in BASELINE_SHORT.items():
            m = r.get(name)
            if not m:
                continue
            o, t = m["ours"], m["theirs"]
            rows.append([r["metric"], str(r["effort"]), str(r["quality"]), short, f"{m['n']}/{m['of']}",
                         f"{fmt(o['bpp'], 4)} / {fmt(t['bpp'], 4)}", f"{fmt(o['psnr-rgb'])} / {fmt(t['psnr-rgb'])}",
                         f"{fmt(o['ms-ssim-rgb'], 4)} / {fmt(t['ms-ssim-rgb'], 4)}",
                         f"{fmt(o['delta-e00'])} / {fmt(t['delta-e00'])}",
                         f"{fmt(o['psnr-cb'])}, {fmt(o['psnr-cr'])} / {fmt(t['psnr-cb'])}, {fmt(t['psnr-cr'])}"])
    note = ("Per image, each baseline at its best setting whose file is no larger than ours; both sides averaged "
            "over the images where one fits (images: how many). The stricter comparison: the claims rest on it.")
    return "Matched per image (file no larger than ours)", head, rows, note


def _interpolated_table(interpolated):
    head = ["metric", "effort", "quality", "bpp", "PSNR-RGB", "MS-SSIM", "ΔE00"]
    for short in BASELINE_SHORT.values():
        head += [f"{short} PSNR", f"{short} MS-SSIM", f"{short} ΔE00"]
    rows = []
    for r in interpolated:
        row = [r["metric"], str(r["effort"]), str(r["quality"]), fmt(r["bpp"], 4), fmt(r["psnr-rgb"]),
               fmt(r["ms-ssim-rgb"], 4), fmt(r["delta-e00"])]
        for name in BASELINE_SHORT:
            b = r.get(name, {})
            row += [fmt(b.get("psnr-rgb")), fmt(b.get("ms-ssim-rgb"), 4), fmt(b.get("delta-e00"))]
        rows.append(row)
    return ("Baselines interpolated at our mean bpp", head, rows,
            "Linear in bpp between the baseline's measured settings (— : outside their range).")


def _baselines_table(baselines):
    head = ["baseline", "setting", "bpp", "PSNR-RGB", "MS-SSIM", "ΔE00", "PSNR-Y", "PSNR-Cb", "PSNR-Cr", "enc s/image"]
    rows = [[BASELINE_SHORT.get(name, name), str(p["setting"]), fmt(p["bpp"], 4), fmt(p["psnr-rgb"]),
             fmt(p["ms-ssim-rgb"], 4), fmt(p.get("delta-e00")), fmt(p.get("psnr-y")), fmt(p.get("psnr-cb")),
             fmt(p.get("psnr-cr")), fmt(p["encoding_time"], 3)]
            for name, curve in baselines.items() for p in curve]
    return "Baselines at each setting (this run)", head, rows, ""


def markdown(out) -> str:
    lines = [f"# {out['name']}: {len(out['images'])} images", "", f"Machine: {out['machine']}", "",
             f"Command: `{out['command']}`", ""]
    for title, head, rows, note in tables(out):
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += ["", note, ""] if note else [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The plot
# ---------------------------------------------------------------------------

PANELS = (("psnr-rgb", "PSNR-RGB [dB]"), ("ms-ssim-rgb", "MS-SSIM-RGB"), ("delta-e00", "mean ΔE00 (lower is better)"),
          ("psnr-y", "PSNR-Y [dB]"), ("psnr-cb", "PSNR-Cb [dB]"), ("psnr-cr", "PSNR-Cr [dB]"))


def _plot_curves(out, anchors_dir):
    metrics = out.get("metrics") or {"mse": {"efforts": out.get("efforts") or {0: {"results": out["results"]}}}}
    curves = [(f"{out['name']} ({metric}) effort {e}", cur["results"], "o-", 2.5)
              for metric, m in metrics.items() for e, cur in m["efforts"].items()]
    for name, curve in out.get("baselines", {}).items():
        keys = [k for k, _ in PANELS if all(k in p for p in curve)]
        curves.append((name + " (this run)", {k: [p[k] for p in curve] for k in ["bpp", *keys]}, "s--", 1.2))
    if anchors_dir:
        for f in sorted(Path(anchors_dir).glob("*.json")):
            d = json.loads(f.read_text())
            if "cuda" in f.name and "_cpu" not in f.name and any("cpu" in g.name and g.name.replace("cpu", "cuda") == f.name
                                                                 for g in Path(anchors_dir).glob("*.json")):
                continue  # same numbers as the _cpu file
            curves.append((d.get("name", f.stem) + " (published)", d["results"], ":", 1.0))
    return curves


def plot(out, path, anchors_dir=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    curves = _plot_curves(out, anchors_dir)
    for ax, (key, label) in zip(axes.flat, PANELS):
        for name, r, style, lw in curves:
            if key in r and r[key]:
                pts = sorted((x, y) for x, y in zip(r["bpp"], r[key]) if x <= 1.0 and y is not None and math.isfinite(y))
                if pts:
                    ax.plot(*zip(*pts), style, lw=lw, ms=3, label=name)
        ax.set_xlabel("bpp (real file bytes)")
        ax.set_ylabel(label)
        ax.set_xlim(0, 1.0)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"RD: {len(out['images'])} images")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
