"""Regions of interest at about the same bytes: PSNR inside the region against outside it
(issue #27).  Held-out *training* images only (engine/data.py ``split(..., 20)``'s
validation names), never Kodak.

    python -m bench.roi --data ../shared/data/train --quality 2,3 --boosts 1,2 \
        --out bench/results --png bench/results/roi-example.png

The region is a fixed box in the middle of each image covering 25% of it (half the
width by half the height; no saliency).  For each image and boost k:

* ``roi``: the file of ``Codec(q).compress(img, roi=box, roi_boost=k)`` for each ROI
  rung q (``--quality``);
* ``equal bytes``: the no-ROI ladder (every encodable rung) interpolated at the ROI
  file's own size (PSNR inside and outside, each linear in log bytes between the two
  rungs around it; images whose ROI file is outside the ladder's range are left out
  and counted);
* ``closest rung``: the real no-ROI file whose size is closest to the ROI file's;
* ``max_bytes`` (with ``--fit``): the ROI file that fits in the no-ROI file of rung
  q + 1 (the target-size search over rungs, with the ROI), against that no-ROI file.

PSNR is RGB over the region's pixels (inside) or the rest (outside); the tables give
the mean over images of each image's dB.  Bytes and PSNR do not depend on the
machine's load, so nothing is timed here.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import re
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- pieces

def centre_box(h: int, w: int, area: float = 0.25) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a centred box with ``area`` of the image (same aspect)."""
    s = math.sqrt(area)
    bh, bw = round(h * s), round(w * s)
    y0, x0 = (h - bh) // 2, (w - bw) // 2
    return y0, y0 + bh, x0, x0 + bw


def box_mask(h: int, w: int, box) -> np.ndarray:
    y0, y1, x0, x1 = box
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """RGB PSNR (8-bit peak) over the pixels where ``where`` is True."""
    d = (a.astype(np.float64) - b.astype(np.float64))[where]
    mse = float((d * d).mean())
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-12))


def in_out(orig: np.ndarray, dec: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    return psnr(orig, dec, mask), psnr(orig, dec, ~mask)


def coded(codec, decoder, img, mask, **kw) -> dict:
    """One file: its bytes, quality and PSNR inside / outside the mask."""
    from engine.format import bitstream
    data = codec.compress(img, **kw)
    dec = decoder.decompress(data)
    pin, pout = in_out(img, dec, mask)
    return {"bytes": len(data), "quality": bitstream.read(data, 10 ** 9)[0].quality, "in": pin, "out": pout,
            "all": psnr(img, dec, np.ones_like(mask)), "_decoded": dec}


def at_bytes(ladder: list[dict], nbytes: int) -> dict | None:
    """The no-ROI ladder's PSNR inside / outside at ``nbytes``: linear in log bytes
    between the two rungs around it; None outside the ladder's range."""
    pts = sorted(ladder, key=lambda r: r["bytes"])
    for a, b in zip(pts, pts[1:]):
        if a["bytes"] <= nbytes <= b["bytes"]:
            t = 0.0 if b["bytes"] == a["bytes"] else \
                (math.log(nbytes) - math.log(a["bytes"])) / (math.log(b["bytes"]) - math.log(a["bytes"]))
            return {k: a[k] + t * (b[k] - a[k]) for k in ("in", "out", "all")} | {"bytes": nbytes}
    return None


def closest(ladder: list[dict], nbytes: int) -> dict:
    return min(ladder, key=lambda r: (abs(r["bytes"] - nbytes), r["bytes"]))


def public(r: dict) -> dict:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def measure_image(codecs: dict, img: np.ndarray, qualities: list[int], boosts: list[float],
                  fit: bool = False) -> dict:
    """Every comparison for one image (``codecs``: quality -> Codec); rows keyed "qQ kK"."""
    h, w = img.shape[:2]
    mask = box_mask(h, w, centre_box(h, w))
    dec = next(iter(codecs.values()))
    ladder = [coded(c, dec, img, mask) for c in codecs.values()]
    by_q = {r["quality"]: r for r in ladder}
    out = {"size": [w, h], "ladder": [public(r) for r in ladder], "rows": {}}
    for quality, k in ((q, k) for q in qualities for k in boosts):
        roi = coded(codecs[quality], dec, img, mask, roi=mask, roi_boost=k)
        row = {"roi": public(roi), "closest": public(closest(ladder, roi["bytes"])),
               "equal_bytes": at_bytes(ladder, roi["bytes"])}
        out["rows"][row_key(quality, k)] = row
        up = by_q.get(quality + 1)
        if fit and up is not None:
            try:
                fit = coded(codecs[quality], dec, img, mask, roi=mask, roi_boost=k, max_bytes=up["bytes"])
                row["max_bytes"] = {"limit": up["bytes"], "roi": public(fit), "plain": public(up)}
            except ValueError as e:          # TargetSizeError: nothing fits
                row["max_bytes"] = {"limit": up["bytes"], "error": str(e)}
    return out


def row_key(quality: int, k: float) -> str:
    return f"q{quality} k{k:g}"


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else float("nan")


def summarize(images: dict, keys: list[str]) -> dict:
    """Per ROI rung and boost: mean bytes and mean PSNR inside / outside of each comparison."""
    out = {}
    for k in keys:
        rows = [im["rows"][k] for im in images.values()]
        eq = [r for r in rows if r["equal_bytes"] is not None]
        mb = [r["max_bytes"] for r in rows if "max_bytes" in r and "roi" in r["max_bytes"]]
        s = {"images": len(rows)}
        s["equal_bytes"] = {"images": len(eq),
                            "inside_rises": sum(r["roi"]["in"] > r["equal_bytes"]["in"] for r in eq),
                            "outside_falls": sum(r["roi"]["out"] < r["equal_bytes"]["out"] for r in eq),
                            "bytes": _mean(r["roi"]["bytes"] for r in eq),
                            "roi_in": _mean(r["roi"]["in"] for r in eq), "roi_out": _mean(r["roi"]["out"] for r in eq),
                            "plain_in": _mean(r["equal_bytes"]["in"] for r in eq),
                            "plain_out": _mean(r["equal_bytes"]["out"] for r in eq),
                            "roi_all": _mean(r["roi"]["all"] for r in eq),
                            "plain_all": _mean(r["equal_bytes"]["all"] for r in eq)}
        s["closest"] = {"images": len(rows),
                        "roi_bytes": _mean(r["roi"]["bytes"] for r in rows),
                        "plain_bytes": _mean(r["closest"]["bytes"] for r in rows),
                        "roi_in": _mean(r["roi"]["in"] for r in rows), "roi_out": _mean(r["roi"]["out"] for r in rows),
                        "plain_in": _mean(r["closest"]["in"] for r in rows),
                        "plain_out": _mean(r["closest"]["out"] for r in rows)}
        s["max_bytes"] = {"images": len(mb), "limit": _mean(m["limit"] for m in mb),
                          "roi_bytes": _mean(m["roi"]["bytes"] for m in mb),
                          "plain_bytes": _mean(m["plain"]["bytes"] for m in mb),
                          "roi_in": _mean(m["roi"]["in"] for m in mb), "roi_out": _mean(m["roi"]["out"] for m in mb),
                          "plain_in": _mean(m["plain"]["in"] for m in mb),
                          "plain_out": _mean(m["plain"]["out"] for m in mb)}
        out[k] = s
    return out


def git_state() -> str:
    """HEAD's commit, and "+ uncommitted changes" when the tracked files differ from it."""
    import subprocess
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "engine", "kernels", "native"],
                               cwd=REPO).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes" if dirty else "")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine() -> dict:
    """This CPU in words: model name, family/model numbers, core count, AMX-BF16."""
    info = {"cpu": platform.processor() or platform.machine()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        first = text.split("\n\n")[0]
        fields = dict((k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in first.splitlines()))
        info.update(cpu=fields.get("model name", info["cpu"]), cpu_model=fields.get("model"),
                    logical_cpus=len(re.findall(r"^processor\s*:", text, re.M)),
                    amx_bf16="amx_bf16" in fields.get("flags", "").split(),
                    hypervisor="hypervisor" in fields.get("flags", "").split())
    except OSError:
        pass
    try:
        import subprocess
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        vendor = re.search(r"^Hypervisor vendor:\s*(.+)$", out, re.M)
        if vendor:
            info["hypervisor_vendor"] = vendor.group(1).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def markdown(summary: dict, info: dict) -> str:
    L = [f"# Regions of interest at about the same bytes ({info['model']}, effort {info['effort']})", "",
         f"Held-out training images ({info['images']}: `engine.data.split(list_images(train), 20)`'s validation "
         "names, never Kodak); region: a centred box of 25% of each image (half width x half height). "
         f"Backend {info['backend']}; CPU: {info['cpu']} (model {info.get('cpu_model')}, "
         f"{info.get('logical_cpus')} logical CPUs, AMX-bf16 {info.get('amx_bf16')}, "
         f"{('a ' + info.get('hypervisor_vendor', '') + ' VM').replace('  ', ' ') if info.get('hypervisor') else 'bare metal'}); model stream ids {info['stream_ids']}; code "
         f"{info.get('commit', 'not recorded')}.",
         "", f"`{info['command']}`", "",
         "PSNR (RGB, dB, mean over images of each image's value) inside the region and outside it.", "",
         "**Equal bytes**: the ROI file against the no-ROI ladder interpolated at the ROI file's size "
         "(linear in log bytes between the rungs around it).", "",
         "| ROI rung, boost | images | mean bytes | inside: no ROI -> ROI | outside: no ROI -> ROI | whole image "
         "| images where inside rises / outside falls |",
         "|---|---|---|---|---|---|---|"]
    for k, s in summary.items():
        e = s["equal_bytes"]
        L.append(f"| {k} | {e['images']} | {e['bytes']:.0f} | {e['plain_in']:.2f} -> {e['roi_in']:.2f} "
                 f"({e['roi_in'] - e['plain_in']:+.2f}) | {e['plain_out']:.2f} -> {e['roi_out']:.2f} "
                 f"({e['roi_out'] - e['plain_out']:+.2f}) | {e['plain_all']:.2f} -> {e['roi_all']:.2f} "
                 f"| {e['inside_rises']} / {e['outside_falls']} |")
    L += ["", "**Closest rung**: real files; the no-ROI rung whose file is closest in size to each ROI file.", "",
          "| ROI rung, boost | mean bytes no ROI / ROI | inside: no ROI -> ROI | outside: no ROI -> ROI |",
          "|---|---|---|---|"]
    for k, s in summary.items():
        c = s["closest"]
        L.append(f"| {k} | {c['plain_bytes']:.0f} / {c['roi_bytes']:.0f} | {c['plain_in']:.2f} -> {c['roi_in']:.2f} "
                 f"({c['roi_in'] - c['plain_in']:+.2f}) | {c['plain_out']:.2f} -> {c['roi_out']:.2f} "
                 f"({c['roi_out'] - c['plain_out']:+.2f}) |")
    if not any(s["max_bytes"]["images"] for s in summary.values()):
        return "\n".join(L) + "\n"
    L += ["", "**max_bytes**: `compress(img, roi=box, roi_boost=k, max_bytes=N)` with N the size of the no-ROI "
          "file of the rung above the ROI rung, against that file (the ROI file is never larger).", "",
          "| ROI rung, boost | images that fit | mean bytes no ROI / ROI | inside: no ROI -> ROI | "
          "outside: no ROI -> ROI |", "|---|---|---|---|---|"]
    for k, s in summary.items():
        m = s["max_bytes"]
        if not m["images"]:
            continue
        L.append(f"| {k} | {m['images']} | {m['plain_bytes']:.0f} / {m['roi_bytes']:.0f} | {m['plain_in']:.2f} -> "
                 f"{m['roi_in']:.2f} ({m['roi_in'] - m['plain_in']:+.2f}) | {m['plain_out']:.2f} -> "
                 f"{m['roi_out']:.2f} ({m['roi_out'] - m['plain_out']:+.2f}) |")
    return "\n".join(L) + "\n"


def outline(rgb: np.ndarray, box, colour=(255, 40, 40), width: int = 2) -> np.ndarray:
    """A copy of ``rgb`` with the box's border drawn just outside it."""
    y0, y1, x0, x1 = box
    out = rgb.copy()
    h, w = out.shape[:2]
    for d in range(1, width + 1):
        ya, yb, xa, xb = max(y0 - d, 0), min(y1 + d - 1, h - 1), max(x0 - d, 0), min(x1 + d - 1, w - 1)
        out[ya, xa:xb + 1] = colour
        out[yb, xa:xb + 1] = colour
        out[ya:yb + 1, xa] = colour
        out[ya:yb + 1, xb] = colour
    return out


def example_png(path, img: np.ndarray, plain: dict, roi: dict, k: float, caption: str = "original") -> None:
    """original | no ROI | ROI side by side at native size, the region outlined, each labelled."""
    from PIL import Image, ImageDraw
    h, w = img.shape[:2]
    box = centre_box(h, w)
    gap, top = 6, 30
    canvas = Image.new("RGB", (3 * w + 2 * gap, h + top), "white")
    draw = ImageDraw.Draw(canvas)
    panels = [(img, caption),
              (plain["_decoded"], f"no ROI q{plain['quality']}: {plain['bytes']} B, in {plain['in']:.2f} / "
                                  f"out {plain['out']:.2f} dB"),
              (roi["_decoded"], f"ROI k={k:g} q{roi['quality']}: {roi['bytes']} B, in {roi['in']:.2f} / "
                                f"out {roi['out']:.2f} dB")]
    for i, (a, label) in enumerate(panels):
        x = i * (w + gap)
        canvas.paste(Image.fromarray(outline(a, box)), (x, top))
        draw.text((x + 4, 8), label, fill="black")
    canvas.save(path)


def write(out: Path, name: str, info: dict, images: dict, keys: list[str]) -> None:
    summary = summarize(images, keys)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(markdown(summary, info))
    (out / f"{name}.json").write_text(json.dumps({"info": info, "summary": summary, "images": images}, indent=1,
                                                 default=str))


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    from engine.settings import available_backends
    ap = argparse.ArgumentParser(prog="python -m bench.roi", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "train"))
    ap.add_argument("--holdout", type=int, default=20)
    ap.add_argument("--limit", type=int, default=None, help="the first N held-out images only")
    ap.add_argument("--model", default=None)
    ap.add_argument("--backend", default="auto", choices=available_backends())
    ap.add_argument("--quality", default="2,3", help="the ROI files' rungs")
    ap.add_argument("--boosts", default="1,2")
    ap.add_argument("--fit", action="store_true", help="also the max_bytes comparison (slower)")
    ap.add_argument("--effort", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for roi-<cpu>.md / .json")
    ap.add_argument("--name", default=None, help="results name (default roi-<cpu>[-e<effort>])")
    ap.add_argument("--png", default=None, help="the example picture (original | no ROI | ROI)")
    ap.add_argument("--png-only", action="store_true", help="only the example picture, no measurement")
    ap.add_argument("--render", default=None, metavar="JSON", help="rewrite a run's .md from its .json and stop")
    ap.add_argument("--example", default=None, help="the example image's file name (default: the first)")
    ap.add_argument("--example-boost", type=float, default=None, help="(default: the last of --boosts)")
    ap.add_argument("--example-quality", type=int, default=None, help="(default: the first of --quality)")
    args = ap.parse_args(argv)

    import sys

    if args.render:
        d = json.loads(Path(args.render).read_text())
        d["summary"] = summarize(d["images"], list(d["summary"]))
        Path(args.render).write_text(json.dumps(d, indent=1, default=str))
        Path(args.render).with_suffix(".md").write_text(markdown(d["summary"], d["info"]))
        print(markdown(d["summary"], d["info"]))
        return 0

    import engine
    from engine.net import checkpoint
    from engine.data import list_images, load_rgb, split

    model = args.model or checkpoint.DEFAULT_MODEL
    boosts = [float(x) for x in args.boosts.split(",")]
    roi_qs = [int(x) for x in args.quality.split(",")]
    qs = checkpoint.qualities(model)
    codecs = {q: engine.Codec(quality=q, model=model, backend=args.backend, effort=args.effort) for q in qs}
    val = split(list_images(args.data), args.holdout)[1]
    if args.limit:
        val = val[:args.limit]
    info = machine() | {"model": model, "qualities": roi_qs, "effort": args.effort, "boosts": boosts,
                        "backend": codecs[roi_qs[0]].runner.name, "images": len(val),
                        "stream_ids": {q: c.rung.stream_id.hex() for q, c in codecs.items()},
                        "commit": git_state(),
                        "command": "python -m bench.roi " + " ".join(argv if argv is not None else sys.argv[1:])}
    keys = [row_key(q, k) for q in roi_qs for k in boosts]
    name = args.name or f"roi-{slug(info['cpu'])}-{info.get('logical_cpus')}cpu" + \
        (f"-e{args.effort}" if args.effort else "")
    images = {}
    for p in [] if args.png_only else val:
        images[p.name] = measure_image(codecs, load_rgb(p), roi_qs, boosts, args.fit)
        r = images[p.name]["rows"][keys[-1]]
        print(f"{p.name}: {keys[-1]} roi {r['roi']['bytes']} B in {r['roi']['in']:.2f} out "
              f"{r['roi']['out']:.2f} | closest q{r['closest']['quality']} {r['closest']['bytes']} B in "
              f"{r['closest']['in']:.2f} out {r['closest']['out']:.2f}", flush=True)
        if args.out:            # after every image: an interrupted run keeps what it measured
            write(Path(args.out), name, info | {"images": len(images)}, images, keys)
    if images:
        print(markdown(summarize(images, keys), info))
    if args.out and images:
        print(f"wrote {Path(args.out) / name}.md / .json")
    if args.png:
        name = args.example or val[0].name
        k = args.example_boost if args.example_boost is not None else boosts[-1]
        img = load_rgb(Path(args.data) / name)
        h, w = img.shape[:2]
        mask = box_mask(h, w, centre_box(h, w))
        dec = codecs[args.example_quality or roi_qs[0]]
        roi = coded(dec, dec, img, mask, roi=mask, roi_boost=k)
        ladder = [coded(c, dec, img, mask) for c in codecs.values()]
        example_png(args.png, img, closest(ladder, roi["bytes"]), roi, k,
                    f"original: {name} (model {model}, {dec.runner.name})")
        print(f"wrote {args.png} ({name}, k={k:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
