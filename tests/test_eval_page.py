"""engine.eval's colour and per-plane metrics, the per-image matched comparison, the
metric selection, and the comparison page (``--html``), loaded in a real headless
Chromium: no console errors, every image decodes at native size, the flip panel
works with the mouse and the keyboard, the screenshot is not blank.

The browser test checks the page of a small evaluation made here, or any page given in
``EVAL_PAGE`` (a folder holding index.html), such as the README main command's:

    EVAL_PAGE=runs/eval/kodak-page python -m pytest tests/test_eval_page.py -k browser
"""
import html.parser
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import eval as ev

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT.parent / "shared" / "data" / "train"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _inputs(folder: Path):
    """Two small images: centre crops of training photos where ../shared is present,
    else smooth synthetic ones.  176 x 168 (MS-SSIM needs sides over 160) and 128 x 96
    (no MS-SSIM: its labels say so): small, because effort 1's search is the slow part."""
    folder.mkdir()
    photos = sorted(TRAIN.glob("*.jpg"))[:2] if TRAIN.is_dir() else []
    for i, (cw, ch) in enumerate(((176, 168), (128, 96))):
        if len(photos) == 2:
            im = Image.open(photos[i]).convert("RGB")
            w, h = im.size
            im = im.crop((w // 2 - cw // 2, h // 2 - ch // 2, w // 2 + cw // 2, h // 2 + ch // 2))
        else:
            y, x = np.mgrid[0:ch, 0:cw]
            rgb = np.stack([128 + 100 * np.sin(x / (9 + i)), 128 + 90 * np.cos(y / 13), (x + y) % 256], -1)
            im = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
        im.save(folder / f"p{i}.png")


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory):
    """The shipped model at qualities 1-2, effort 1 at q2, and the baselines, on 2 small images, with the page."""
    from engine.net.checkpoint import CHECKPOINT_DIR, DEFAULT_MODEL
    if not (CHECKPOINT_DIR / DEFAULT_MODEL / "model.json").exists():
        pytest.skip("the shipped model is not in this checkout")
    d = tmp_path_factory.mktemp("page_eval")
    _inputs(d / "imgs")
    fig = d / "roi.png"
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(fig)
    threads = torch.get_num_threads()
    try:    # one thread: these small convolutions gain nothing from two, and lose 30x on a busy machine
        out = ev.main(["--data", str(d / "imgs"), "--quality", "1,2", "--effort", "0,1", "--effort-quality", "2",
                       "--backend", "torch", "--threads", "1", "--json", str(d / "r.json"), "--html", str(d / "page"),
                       "--html-extra", f"{fig}=a region-of-interest example"])
    finally:
        torch.set_num_threads(threads)
    return d, out


def test_delta_e00_is_scikit_images():
    from skimage.color import deltaE_ciede2000, rgb2lab
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8)
    want = deltaE_ciede2000(rgb2lab(a), rgb2lab(b)).mean()
    assert ev.delta_e00(ev.lab(a), b) == pytest.approx(want, rel=1e-4)
    blue, dark_red = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    blue[..., 2], dark_red[..., 0] = 255, 129
    assert ev.delta_e00(ev.lab(blue), dark_red) > 40 and ev.delta_e00(ev.lab(blue), blue) == 0


def test_plane_psnr_sees_chroma_only_errors():
    ref = ev.Reference("x", np.full((32, 32, 3), 120, np.uint8))
    # a shift along the Cb axis only: Y unchanged to within rounding
    rec = ref.rgb.astype(int) + np.array([-1, -1, 6])[None, None]
    q = ref.quality(rec.astype(np.uint8))
    assert q["psnr-y"] > q["psnr-cb"] + 10 and q["psnr-cb"] < q["psnr-cr"]


def test_per_image_match_takes_the_best_setting_that_fits():
    ours = [{"bytes": 100, "bpp": 1.0, "psnr-rgb": 30.0}, {"bytes": 50, "bpp": 0.5, "psnr-rgb": 20.0},
            {"bytes": 10, "bpp": 0.1, "psnr-rgb": 10.0}]
    curve = [{"setting": s, "per_image": [{"bytes": b, "bpp": b / 100, "psnr-rgb": s * 1.0} for b in sizes]}
             for s, sizes in ((1, (60, 40, 20)), (2, (90, 45, 30)), (3, (101, 70, 40)))]
    m = ev.per_image_match(ours, curve)
    assert (m["n"], m["of"], m["settings"]) == (2, 3, [2, 2])      # image 3: nothing fits; setting 3 too big
    assert m["ours"]["psnr-rgb"] == 25.0 and m["theirs"]["psnr-rgb"] == 2.0 and m["theirs"]["bytes"] == 67.5


def test_metric_selection(tiny_root, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(tiny_root / "tiny", root / "tiny")
    with pytest.raises(SystemExit, match="no model for metric ms-ssim"):
        ev.metric_models(["mse", "ms-ssim"], "tiny", root)
    shutil.copytree(tiny_root / "tiny", root / "tiny-msssim")
    meta = json.loads((root / "tiny-msssim" / "model.json").read_text())
    (root / "tiny-msssim" / "model.json").write_text(json.dumps(dict(meta, metric="ms-ssim")))
    assert ev.metric_models(["mse", "ms-ssim"], None, root) == {"mse": "tiny", "ms-ssim": "tiny-msssim"}
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(d / "a.png")
    out = ev.main(["--data", str(d), "--model-dir", str(root), "--model", "tiny", "--metric", "mse,ms-ssim",
                   "--quality", "1", "--backend", "torch", "--no-baselines", "--json", str(tmp_path / "r.json")])
    assert {m: v["model"] for m, v in out["metrics"].items()} == {"mse": "tiny", "ms-ssim": "tiny-msssim"}
    assert "| ms-ssim | 0 | 1 |" in (tmp_path / "r.md").read_text()
    with pytest.raises(SystemExit):
        ev.main(["--data", str(d), "--metric", "psnr"])


def test_eval_reports_colour_planes_and_matches(tiny_eval):
    d, out = tiny_eval
    saved = json.loads((d / "r.json").read_text())
    for key in ev.QUALITY_KEYS:
        assert key in saved["efforts"]["0"]["ours"]["2"]["mean"]
        assert key in saved["efforts"]["1"]["ours"]["2"]["per_image"][0]
        for curve in saved["baselines"].values():
            assert all(key in p and key in p["per_image"][0] for p in curve)
        assert key in saved["results"] and key in saved["metrics"]["mse"]["efforts"]["1"]["results"]
    assert len(saved["per_image_matched"]) == 3 and len(saved["interpolated"]) == 3
    for row in out["per_image_matched"]:
        rows = out["metrics"]["mse"]["efforts"][row["effort"]]["ours"][row["quality"]]["per_image"]
        for name, curve in out["baselines"].items():
            m = row[name]
            fits = [ev.best_fitting(r["bytes"], [dict(p["per_image"][i], setting=p["setting"]) for p in curve])
                    for i, r in enumerate(rows)]
            assert m["n"] == sum(f is not None for f in fits) and m["settings"] == [f["setting"] for f in fits if f]
    md = (d / "r.md").read_text()
    assert "ΔE00" in md and "PSNR-Cb" in md and "Matched per image" in md and "| mse | 1 | 2 |" in md


class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def test_page_is_self_contained(tiny_eval):
    d, out = tiny_eval
    page = d / "page"
    text = (page / "index.html").read_text()
    parser = _Refs()
    parser.feed(text)
    files = [r for r in parser.refs if not r.startswith("#")]
    assert files and all(":" not in r and (page / r).is_file() for r in files), files
    assert "http:" not in text and "https:" not in text
    crops = sorted((page / "crops").glob("*.png"))
    assert len(crops) >= 2 * 4              # per image: original, ours e0, ours e1, and at least one baseline
    assert (page / "extras" / "roi.png").is_file() and "a region-of-interest example" in text
    for name in out["images"]:
        assert name in text


@pytest.fixture
def page_dir(request):
    """The page to check: EVAL_PAGE's folder, else the small evaluation's."""
    given = os.environ.get("EVAL_PAGE")
    if given:
        index = Path(given).resolve() / "index.html"
        assert index.is_file(), f"EVAL_PAGE={given}: no index.html there"
        return index.parent
    d, _ = request.getfixturevalue("tiny_eval")
    return d / "page"


def test_page_in_a_real_browser(page_dir, tmp_path):
    import cdp_browser as browser
    if browser.find_chromium() is None:
        if IN_CI:
            pytest.fail("chromium is missing in CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no chromium here (CI installs it)")
    url = (page_dir / "index.html").as_uri()
    with browser.Browser(tmp_path / "profile", tmp_path / "chromium.log") as b:
        page = b.page()
        page.goto(url)
        imgs = page.js("""Array.from(document.images).map(i => ({src: i.getAttribute('src'), ok: i.complete,
            w: i.naturalWidth, h: i.naturalHeight, px: i.classList.contains('px'), hidden: i.hidden,
            rw: i.getBoundingClientRect().width, rh: i.getBoundingClientRect().height}))""")
        assert len(imgs) > 10
        bad = [i["src"] for i in imgs if not (i["ok"] and i["w"] > 0 and i["h"] > 0)]
        assert not bad, f"images that did not decode: {bad}"
        scaled = [i for i in imgs if i["px"] and not i["hidden"] and (i["rw"], i["rh"]) != (i["w"], i["h"])]
        assert not scaled, f"crops not at native resolution: {scaled}"
        assert all(u.startswith(("file:", "data:", "about:")) for u in page.requested_urls()), page.requested_urls()

        def state():
            return page.js("""(() => { const p = document.querySelector('.flip');
                const v = Array.from(p.querySelectorAll('.stack img')).filter(i => !i.hidden);
                return {showing: p.dataset.showing, a: p.dataset.a, b: p.dataset.b,
                        visible: v.map(i => i.dataset.slot), label: p.querySelector('.showing').textContent}; })()""")
        s0 = state()
        assert s0["showing"] == "a" and s0["visible"] == [s0["a"]] and s0["a"] != s0["b"]
        box = page.js("""(() => { const s = document.querySelector('.flip .stack'); s.scrollIntoView();
            const r = s.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()""")
        page.click(*box)                                           # the mouse: a real click on the image
        s1 = state()
        assert s1["showing"] == "b" and s1["visible"] == [s0["b"]] and s1["label"].startswith("B:")
        page.key("f", "KeyF", 70, "f")                              # the keyboard: f flips back
        assert state()["visible"] == [s0["a"]]
        page.key(" ", "Space", 32, " ")                             # space flips
        assert state()["visible"] == [s0["b"]]
        page.key("a", "KeyA", 65, "a")                              # a shows side A
        assert state()["showing"] == "a"
        shot = Image.open(io.BytesIO(page.screenshot()))
        assert not page.errors(), page.errors()
    px = np.asarray(shot.convert("L"), dtype=np.float32)
    assert px.shape[0] > 500 and px.std() > 20, "blank screenshot"
    assert (px < 128).mean() > 0.02, "the screenshot shows almost nothing dark: no text or images drawn"


def test_readme_main_command_leaves_the_tree_clean():
    """The README's main command writes its results and page where git does not track
    them (runs/); the recorded reference in bench/results/ is not rewritten (#27)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines()
             if ln.startswith("python3 -m venv") and "python -m engine.eval" in ln]
    assert len(lines) == 1, lines
    args = lines[0].split("python -m engine.eval", 1)[1].split("&&")[0].split()
    outs = {a: args[i + 1] for i, a in enumerate(args) if a in ("--json", "--plot", "--html")}
    assert set(outs) == {"--json", "--plot", "--html"}, args
    written = [*outs.values(), str(Path(outs["--json"]).with_suffix(".md")), outs["--html"] + "/index.html"]
    for path in written:
        assert not path.startswith("bench/results")
        r = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert r.returncode == 0, f"{path} is not ignored by git: the main command would dirty the tree"
