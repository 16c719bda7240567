"""The comparison page of ``python -m engine.eval ... --html DIR``: DIR/index.html.

Self-contained: inline CSS and script, images as files beside it (nothing from a
network).  The RD plot and the eval's tables, then for each image one crop, side
by side, of the original, ours at effort 0, ours at the highest effort run, JPEG,
WebP and JPEG 2000 at matched bytes: every baseline at its best setting whose
file is no larger than the largest of ours shown (the per-image match of
engine/eval.py).  The crop is where the codecs' local errors differ most.  A
flip panel shows two of them at the same spot (click, or keys: space / f flips,
a / b pick a side).  Images are shown at native resolution, pixelated: one image
pixel per CSS pixel, no smoothing to hide the artifacts.

More figures: files passed as ``extras`` are copied to DIR/extras/, and every
image in DIR/extras/ is listed at the end (with DIR/extras/NAME.txt as its caption
when present), so other tools can add theirs (e.g. a region-of-interest example).
"""
from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image


CROP = 256
EXTRA_EXTS = {".png", ".jpg", ".jpeg", ".svg", ".webp", ".gif"}


def pick_rung(keys, metric: str, root=None) -> set:
    """The points the page shows: ``metric``'s curve at effort 0 and at its highest
    effort, at the quality run at that effort nearest the model's default."""
    from .net.checkpoint import resolve
    curves = {c for c, _ in keys if c.metric == metric}
    top = max(curves, key=lambda c: c.effort)
    zero = min(curves, key=lambda c: c.effort)
    qs = sorted(q for c, q in keys if c == top)
    default = resolve(top.model, None, root).quality
    q = min(qs, key=lambda q: (abs(q - default), -q))
    return {(zero, q), (top, q)}


def box_means(err: np.ndarray, ch: int, cw: int) -> np.ndarray:
    """Mean of ``err`` over every ch x cw window (integral image): one value per top-left corner."""
    s = np.zeros((err.shape[0] + 1, err.shape[1] + 1))
    s[1:, 1:] = err.cumsum(0).cumsum(1)
    return (s[ch:, cw:] - s[:-ch, cw:] - s[ch:, :-cw] + s[:-ch, :-cw]) / (ch * cw)


def pick_crop(orig: np.ndarray, recs: list[np.ndarray], size: int = CROP) -> tuple[int, int, int, int]:
    """(y, x, h, w) of the window where the reconstructions' mean squared errors spread
    the most (with one reconstruction: where its error is largest)."""
    ch, cw = min(size, orig.shape[0]), min(size, orig.shape[1])
    o = orig.astype(np.float32)
    wins = np.stack([box_means(((r.astype(np.float32) - o) ** 2).mean(-1), ch, cw) for r in recs])
    score = wins.max(0) - wins.min(0) if len(recs) > 1 else wins[0]
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(y), int(x), ch, cw


def _row_of(rows, name):
    return next(r for r in rows if r["image"] == name)


def _panels(ev, out, rung, i, name, rgb, recs):
    """The codecs shown for one image: [(label, detail, rec, row)], ours first."""
    panels = []
    for curve, q in sorted(rung, key=lambda k: k[0].effort):
        row = _row_of(out["metrics"][curve.metric]["efforts"][curve.effort]["ours"][q]["per_image"], name)
        panels.append((f"ours e{curve.effort}", f"{curve.model} q{q}, effort {curve.effort}",
                       recs[(curve, q, name)], row))
    budget = max(p[3]["bytes"] for p in panels)
    missing = []
    for bname, curve in out.get("baselines", {}).items():
        short = ev.BASELINE_SHORT.get(bname, bname)
        best = ev.best_fitting(budget, [dict(p["per_image"][i], setting=p["setting"]) for p in curve])
        if best is None:
            missing.append(short)
            continue
        fmt = ev.BASELINES[bname][0]
        n, rec = ev.pillow_codec(rgb, fmt, best["setting"])
        assert n == best["bytes"], (bname, best["setting"], n, best["bytes"])   # the file the eval measured
        panels.append((short, f"{bname}, setting {best['setting']}", rec, best))
    return panels, budget, missing


def _caption(ev, label, detail, row, crop_psnr):
    if label == "original":
        return f"<b>original</b> <span class=detail>{html.escape(detail)}, source file {row['bytes']:,} B</span>"
    return (f"<b>{html.escape(label)}</b> <span class=detail>{html.escape(detail)}</span><br>"
            f"{row['bytes']:,} B · {row['bpp']:.4f} bpp<br>"
            f"PSNR {ev.fmt(row['psnr-rgb'])} dB · MS-SSIM {ev.fmt(row['ms-ssim-rgb'], 4)}<br>"
            f"ΔE00 {ev.fmt(row.get('delta-e00'))} · crop PSNR {ev.fmt(crop_psnr)} dB")


def _image_section(ev, out, rung, i, path, recs, folder: Path, rel: str) -> str:
    from .data import load_rgb
    rgb = load_rgb(path)
    panels, budget, missing = _panels(ev, out, rung, i, path.name, rgb, recs)
    y, x, h, w = pick_crop(rgb, [p[2] for p in panels])
    stem = f"{i:03d}"
    figs, slots = [], []
    original = {"bytes": path.stat().st_size}
    for k, (label, detail, rec, row) in enumerate([("original", path.name, rgb, original)] + panels):
        crop = np.ascontiguousarray(rec[y:y + h, x:x + w])
        src = f"{rel}/{stem}-{k}.png"
        Image.fromarray(crop).save(folder / f"{stem}-{k}.png")
        cap = _caption(ev, label, detail, row, ev.psnr_rgb(rgb[y:y + h, x:x + w], crop))
        img = f'<img class=px src="{src}" width={w} height={h} alt="{html.escape(label)}">'
        figs.append(f"<figure>{img}<figcaption>{cap}</figcaption></figure>")
        slots.append((label, src))
    note = f" No setting of {', '.join(missing)} makes a file that small." if missing else ""
    return (f'<article class=image id="img-{stem}"><h3>{html.escape(path.name)} '
            f'<span class=detail>crop {w}x{h} at ({x}, {y}) of {rgb.shape[1]}x{rgb.shape[0]}; '
            f'baselines at most {budget:,} B.{html.escape(note)}</span></h3>'
            f"{_flip(stem, slots, w, h)}<div class=grid>{''.join(figs)}</div></article>")


def _flip(stem, slots, w, h) -> str:
    """Two codecs at the same spot: A (ours at the highest effort) and B (the first baseline) by default."""
    a = len([s for s in slots if s[0].startswith("ours")])          # slots: original, ours..., baselines...
    b = a + 1 if a + 1 < len(slots) else 0
    opts = "".join(f"<option value={k}>{html.escape(lab)}</option>" for k, (lab, _) in enumerate(slots))
    imgs = "".join(f'<img class=px data-slot={k} src="{src}" width={w} height={h} alt="{html.escape(lab)}"'
                   f'{"" if k == a else " hidden"}>' for k, (lab, src) in enumerate(slots))
    return (f'<div class=flip id="flip-{stem}" tabindex=0 data-a={a} data-b={b} data-showing=a '
            f'title="click, or space / f: flip; a / b: show A / B">'
            f'<div class=stack style="width:{w}px;height:{h}px">{imgs}</div>'
            f'<div class=flipbar>A <select class=pick-a>{opts}</select> B <select class=pick-b>{opts}</select> '
            f'<span class=showing></span> <span class=detail>click the image, or space / f to flip; '
            f'a / b</span></div></div>')


def _table_html(title, head, rows, note) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (f"<h3>{html.escape(title)}</h3><div class=scroll><table><thead><tr>{th}</tr></thead>"
            f"<tbody>{trs}</tbody></table></div>" + (f"<p class=detail>{html.escape(note)}</p>" if note else ""))


def add_extra(folder: str | Path, path: str | Path, caption: str = "") -> Path:
    """Copy a figure into the page's 'more figures' section (DIR/extras/), with a caption."""
    extras = Path(folder) / "extras"
    extras.mkdir(parents=True, exist_ok=True)
    dst = extras / Path(path).name
    shutil.copyfile(path, dst)
    if caption:
        dst.with_suffix(".txt").write_text(caption)
    return dst


def _extras_section(folder: Path) -> str:
    extras = folder / "extras"
    figs = []
    for f in sorted(extras.iterdir()) if extras.is_dir() else []:
        if f.suffix.lower() in EXTRA_EXTS:
            cap = f.with_suffix(".txt").read_text() if f.with_suffix(".txt").exists() else f.name
            figs.append(f'<figure><img src="extras/{html.escape(f.name)}" alt="{html.escape(f.name)}">'
                        f"<figcaption>{html.escape(cap)}</figcaption></figure>")
    if not figs:
        return ""
    return f'<section id=extras><h2>More figures</h2><div class=grid>{"".join(figs)}</div></section>'


def write(ev, out: dict, folder, paths, recs: dict, rung: set, anchors=None, extras=()) -> Path:
    """Write the page to folder/index.html (plot, crops and extras beside it); returns its path.
    ``ev``: engine.eval, which calls this: its metrics, baselines, plot and tables are passed
    in rather than imported, so the two modules do not import each other."""
    folder = Path(folder)
    crops = folder / "crops"
    crops.mkdir(parents=True, exist_ok=True)
    ev.plot(out, folder / "rd.png", anchors)
    for spec in extras:
        path, _, caption = spec.partition("=")
        add_extra(folder, path, caption)
    tables = "".join(_table_html(*t) for t in ev.tables(out))
    images = "".join(_image_section(ev, out, rung, i, p, recs, crops, "crops") for i, p in enumerate(paths))
    page = PAGE.format(title=html.escape(f"{out['name']}: {len(out['images'])} images"),
                       machine=html.escape(out["machine"]), command=html.escape(out["command"]),
                       tables=tables, images=images, extras=_extras_section(folder), script=SCRIPT,
                       data=html.escape(json.dumps({"images": out["images"]})))
    index = folder / "index.html"
    from .io.atomic import atomic_write_bytes
    atomic_write_bytes(index, page.encode())
    return index


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }}
.detail {{ color: #666; font-weight: normal; font-size: 12px; }}
table {{ border-collapse: collapse; font-size: 12px; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; white-space: nowrap; }}
.scroll {{ overflow-x: auto; }}
#rd img, #extras img {{ max-width: 100%; height: auto; }}   /* charts may scale; the crops (img.px) never do */
img.px {{ image-rendering: pixelated; max-width: none; width: auto; height: auto; display: block; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 10px; }}
figure {{ margin: 0; }}
figcaption {{ font-size: 12px; }}
.flip {{ display: inline-block; margin: 6px 0 12px; padding: 6px; border: 2px solid #bbb; outline: none; }}
.flip:focus {{ border-color: #36c; }}
.stack {{ position: relative; cursor: pointer; }}
.stack img {{ position: absolute; left: 0; top: 0; }}
.stack img[hidden] {{ display: none; }}
.showing {{ font-weight: bold; }}
</style></head>
<body>
<h1>{title}</h1>
<p class=detail>{machine}<br><code>{command}</code></p>
<nav><a href="#rd">RD plot</a> · <a href="#tables">tables</a> · <a href="#images">images</a> · <a href="#extras">more figures</a></nav>
<section id=rd><h2>Rate–distortion</h2><img src="rd.png" alt="RD plot"></section>
<section id=tables><h2>Tables</h2>{tables}</section>
<section id=images><h2>Images at matched bytes</h2>
<p>Each baseline at its best setting whose file is no larger than the largest of ours shown; bytes, bpp, PSNR,
MS-SSIM and ΔE00 are the whole image's, crop PSNR the crop's. Native resolution, no smoothing. The crop is where
the codecs' errors differ most. Flip panel: click the image, or focus it (hover) and press space / f to flip,
a / b to show a side.</p>
{images}</section>
{extras}
<script type="application/json" id=page-data>{data}</script>
<script>{script}</script>
</body></html>
"""

SCRIPT = """
(function () {
  function label(panel, side) {
    var sel = panel.querySelector(side === 'a' ? '.pick-a' : '.pick-b');
    return sel.options[sel.selectedIndex].text;
  }
  function show(panel, side) {
    var slot = panel.dataset[side];
    panel.dataset.showing = side;
    panel.querySelectorAll('.stack img').forEach(function (img) { img.hidden = img.dataset.slot !== slot; });
    panel.querySelector('.showing').textContent = side.toUpperCase() + ': ' + label(panel, side);
  }
  function flip(panel) { show(panel, panel.dataset.showing === 'a' ? 'b' : 'a'); }
  document.querySelectorAll('.flip').forEach(function (panel) {
    panel.querySelector('.pick-a').value = panel.dataset.a;
    panel.querySelector('.pick-b').value = panel.dataset.b;
    ['a', 'b'].forEach(function (side) {
      panel.querySelector('.pick-' + side).addEventListener('change', function (e) {
        panel.dataset[side] = e.target.value; show(panel, side);
      });
    });
    panel.querySelector('.stack').addEventListener('click', function () { flip(panel); panel.focus(); });
    panel.addEventListener('mouseenter', function () { panel.focus({preventScroll: true}); });
    panel.addEventListener('keydown', function (e) {
      if (e.target.tagName === 'SELECT') return;
      if (e.key === ' ' || e.key === 'f') { flip(panel); e.preventDefault(); }
      else if (e.key === 'a' || e.key === 'b') { show(panel, e.key); e.preventDefault(); }
    });
    show(panel, 'a');
  });
})();
"""
