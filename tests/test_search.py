"""effort > 0: the per-image code search (engine/net/search.py) and where it is wired in."""
import json
import shutil

import numpy as np
import pytest

import engine
from engine.net import checkpoint
from engine.format import bitstream, context_coder as entropy
from engine.io.planes import preprocess
from engine.eval import psnr_rgb
from engine.net import search as S
from engine.net.search import MAX_EFFORT, CodeSearch, check_effort, lr_factor, ms_ssim, ms_ssim_reference, rung_slope


def _image(h=48, w=64, seed=0):
    """Smooth structure plus texture: something the search can improve."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(xx / 5.0 + c) * np.cos(yy / 7.0 - c) for c in range(3)], -1)
    img = 127 + 90 * base + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("bad", [-1, MAX_EFFORT + 1, 1.5, True, "3", None])
def test_effort_must_be_an_int_in_range(tiny_root, bad):
    with pytest.raises(ValueError, match="effort"):
        engine.Codec(model="tiny", root=tiny_root, backend="torch", effort=bad)
    with pytest.raises(ValueError, match="effort"):
        check_effort(bad)


def test_information_is_what_the_coder_writes(tiny_root):
    """The search ranks candidates by entropy.information: it must equal the coded
    section sizes of a version 1 file (up to the range coder's few bytes of flush per
    section), and a version 2 file's lanes within their flush and border contexts."""
    codec = engine.Codec(quality=2, model="tiny", root=tiny_root, backend="torch", entropy="context")
    v2 = engine.Codec(quality=2, model="tiny", root=tiny_root, backend="torch")
    for seed in range(3):
        data = codec.compress(_image(64, 80, seed))
        hdr, (msec, ysec, csec) = bitstream.read(data, 10 ** 8)
        _, body = bitstream.read(v2.compress(_image(64, 80, seed)), 10 ** 8)
        _, mdl, (lv, yd, cd) = codec.parse(data)
        cfg = mdl.q.config
        bits, per = entropy.information(lv, yd, cd, cfg.n, cfg.levels, mdl.tables)
        coded = len(msec) + len(ysec) + len(csec)
        assert bits / 8 <= coded <= bits / 8 + 3 * 8, (bits / 8, coded)
        assert bits / 8 * 0.98 <= len(body.data) <= bits / 8 * 1.02 + 6 * len(body), (bits / 8, len(body.data))
        kept = [k for k in range(cfg.n) if np.isfinite(per[k])]
        assert kept and all(0 < per[k] < 16 for k in kept)


def test_search_never_worse_than_one_pass_and_decodes(tiny_root):
    codec0 = engine.Codec(quality=2, model="tiny", root=tiny_root, backend="torch")
    codec = engine.Codec(quality=2, model="tiny", root=tiny_root, backend="torch", effort=2)
    q = checkpoint.resolve("tiny", 2, root=tiny_root)
    net = checkpoint.load_net(q)
    mdl_tables = codec.parse(codec0.compress(_image()))[1].tables
    search = CodeSearch(net, mdl_tables, rung_slope(q))
    img = _image()
    _, _, _, stats = search.run(preprocess(img, 16), [img.shape[:2]], 2)
    assert stats["steps"] == 16
    assert all(j <= j0 + 1e-9 for j, j0 in zip(stats["J"], stats["J0"]))
    data = codec.compress(img)
    out = codec.decompress(data)
    assert out.shape == img.shape
    # an ordinary file: a codec without effort decodes it to the same pixels
    assert np.array_equal(codec0.decompress(data), out)


def test_search_is_deterministic_and_batch_equals_single(tiny_root):
    codec = engine.Codec(quality=2, model="tiny", root=tiny_root, backend="torch", effort=1)
    imgs = [_image(48, 64, s) for s in range(3)] + [_image(40, 56, 9)]
    one = [codec.compress(im) for im in imgs]
    assert one == [codec.compress(im) for im in imgs]
    assert codec.compress_batch(imgs, batch_size=3) == one


def test_gray_input_searches_y_only(tiny_root):
    codec = engine.Codec(quality=2, model="tiny", root=tiny_root, backend="torch", effort=1)
    g = _image()[:, :, 0]
    data = codec.compress(g)
    hdr, _ = bitstream.read(data, 10 ** 8)
    assert hdr.color == 1 and not codec.parse(data)[2][2].any()   # no CbCr codes in the file
    out = codec.decompress(data)
    assert np.array_equal(out[:, :, 0], out[:, :, 1])


@pytest.mark.slow
def test_search_improves_the_shipped_model():
    """On the shipped model the search must lower J (dB) and raise PSNR per bit."""
    img = _image(96, 128, 3)
    c0 = engine.Codec(quality=4, backend="torch")
    c1 = engine.Codec(quality=4, backend="torch", effort=2)
    d0, d1 = c0.compress(img), c1.compress(img)
    p0, p1 = psnr_rgb(img, c0.decompress(d0)), psnr_rgb(img, c1.decompress(d1))
    slope = rung_slope(checkpoint.resolve("small", 4))
    px = img.shape[0] * img.shape[1]
    # J = -PSNR + slope * bpp, the search's own objective (header bytes included here)
    assert -p1 + slope * len(d1) * 8 / px < -p0 + slope * len(d0) * 8 / px
    assert p1 > p0


def test_lr_factor_decays_from_one_to_final():
    for steps in (8, 24, 192):
        f = [lr_factor(k, steps, 0.1) for k in range(1, steps + 1)]
        assert f[0] == 1.0 and f[-1] == pytest.approx(0.1)
        assert all(a >= b for a, b in zip(f, f[1:]))              # never rises
        # a half cosine: symmetric about the midpoint (0.55 there), flat at both ends
        assert all(a + b == pytest.approx(1.1) for a, b in zip(f, reversed(f)))
        assert f[0] - f[1] < f[steps // 2 - 1] - f[steps // 2]
        assert all(lr_factor(k, steps, 1.0) == 1.0 for k in range(1, steps + 1))   # 1: constant
    # cycles of 32 with restarts at half the previous peak; a cycle is the whole schedule of a
    # 32-step effort, so a longer effort begins with exactly the shorter one's run
    f = [lr_factor(k, 80, 0.1, 32, 0.5) for k in range(1, 81)]
    assert f[:32] == [lr_factor(k, 32, 0.1) for k in range(1, 33)]
    assert f[32] == 0.5 and f[63] == pytest.approx(0.05) and f[64] == 0.25 and f[79] == pytest.approx(0.025)
    assert f[64:] == [0.25 * lr_factor(k, 16, 0.1) for k in range(1, 17)]       # the short last cycle
    assert [lr_factor(k, 24, 0.1, 32, 0.5) for k in range(1, 25)] == [lr_factor(k, 24, 0.1) for k in range(1, 25)]


def test_ms_ssim_is_pytorch_msssim():
    """The search's differentiable MS-SSIM is the metric engine.eval reports."""
    import torch
    from pytorch_msssim import ms_ssim as reference
    g = torch.Generator().manual_seed(0)
    for h, w in [(161, 161), (176, 203), (321, 481)]:
        x = torch.rand(2, 3, h, w, generator=g)
        y = (x + 0.15 * torch.randn(x.shape, generator=g)).clamp(0, 1)
        want = reference(x, y, data_range=1.0, size_average=False)
        assert torch.allclose(ms_ssim(x, y), want, atol=1e-5)
        assert torch.allclose(ms_ssim(x, None, ms_ssim_reference(y)), want, atol=1e-5)
    x.requires_grad_(True)
    ms_ssim(x, y).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="MS-SSIM"):
        ms_ssim(torch.rand(1, 3, 160, 400), torch.rand(1, 3, 160, 400))


def _searcher(tiny_root, quality=2):
    codec0 = engine.Codec(quality=quality, model="tiny", root=tiny_root, backend="torch")
    q = checkpoint.resolve("tiny", quality, root=tiny_root)
    tables = codec0.parse(codec0.compress(_image()))[1].tables
    return CodeSearch(checkpoint.load_net(q), tables, rung_slope(q))


def test_ms_ssim_term_is_in_the_exact_cost(tiny_root, monkeypatch):
    """With MS_SSIM_WEIGHT = b the exact J is (1 - b) 10 log10 MSE + b 10 log10(1 - MS-SSIM)
    + s R over the image's own pixels; images too small for 5 scales keep b = 0."""
    monkeypatch.setattr(S, "MS_SSIM_WEIGHT", 0.4)
    search = _searcher(tiny_root)
    big, small = _image(170, 180, 1), _image(48, 64, 2)
    for img, has_term in ((big, True), (small, False)):
        _, _, _, st = search.run(preprocess(img, 16), [img.shape[:2]], 1)
        assert (st["ms_ssim0"][0] is not None) == has_term
        dist = -st["psnr0"][0] if not has_term else (
            0.6 * -st["psnr0"][0] + 0.4 * 10 * np.log10(1 - st["ms_ssim0"][0]))
        assert st["J0"][0] == pytest.approx(dist + st["slope"] * st["bpp0"][0])
        assert st["J"][0] <= st["J0"][0] + 1e-9
    # the term is measured on the image's own pixels: the padding (176 x 192 here) is cut off
    import torch
    img = big
    ycc = preprocess(img, 16)
    assert tuple(ycc.shape[-2:]) == (176, 192)
    _, _, _, st = search.run(ycc, [img.shape[:2]], 1)
    target = S.CodeSearch._rgb(ycc)[:, :, :170, :180]
    assert st["ms_ssim0"][0] < 1.0 and np.isfinite(st["ms_ssim0"][0])
    assert float(ms_ssim(target, target)[0]) == pytest.approx(1.0)


def test_search_lr_follows_the_schedule(tiny_root, monkeypatch):
    import torch
    monkeypatch.setattr(S, "LR_FINAL", 0.1)
    monkeypatch.setattr(S, "LR_PERIOD", 8)
    monkeypatch.setattr(S, "LR_RESTART", 0.5)
    seen = []
    step = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append([g["lr"] for g in self.param_groups])
        return step(self, *a, **k)
    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    img = _image()
    _searcher(tiny_root).run(preprocess(img, 16), [img.shape[:2]], 2)
    steps = S.STEPS[2]
    assert len(seen) == steps
    for k, (lr_c, lr_i) in enumerate(seen, 1):
        assert lr_c == pytest.approx(S.LR_CODES * lr_factor(k, steps, 0.1, 8, 0.5))
        assert lr_i == pytest.approx(S.LR_IMPORTANCE * lr_factor(k, steps, 0.1, 8, 0.5))
    assert seen[0][0] == S.LR_CODES and seen[7][0] == pytest.approx(0.1 * S.LR_CODES)   # the first cycle
    assert seen[8][0] == pytest.approx(0.5 * S.LR_CODES) and seen[-1][0] == pytest.approx(0.05 * S.LR_CODES)


def test_higher_effort_never_ends_at_a_worse_cost(tiny_root):
    """From effort 4 (one whole 32-step cycle) up, every effort's run begins with effort 4's
    whole run, and an effort of whole cycles (4, 6, 7, 8, 9) with the previous one's; the
    best candidate is kept, so J never rises along those (effort 5 ends on a short cycle)."""
    search = _searcher(tiny_root)
    img = _image(56, 72, 7)
    j = {e: search.run(preprocess(img, 16), [img.shape[:2]], e)[3]["J"][0] for e in (4, 5, 6, 7)}
    assert j[5] <= j[4] + 1e-12 and j[6] <= j[4] + 1e-12 and j[7] <= j[6] + 1e-12


def test_search_with_ms_ssim_is_deterministic_and_ordinary(tiny_root, monkeypatch):
    monkeypatch.setattr(S, "MS_SSIM_WEIGHT", 0.5)
    monkeypatch.setattr(S, "LR_FINAL", 0.05)
    codec = engine.Codec(quality=2, model="tiny", root=tiny_root, backend="torch", effort=1)
    imgs = [_image(170, 180, 4), _image(48, 64, 5)]
    one = [codec.compress(im) for im in imgs]
    assert one == [codec.compress(im) for im in imgs]
    assert codec.compress_batch(imgs, batch_size=2) == one
    plain = engine.Codec(quality=2, model="tiny", root=tiny_root, backend="torch")
    for im, data in zip(imgs, one):
        assert plain.decompress(data).shape == im.shape


def test_rung_slope_reads_the_ladder(tiny_root, tmp_path):
    shutil.copytree(tiny_root / "tiny", tmp_path / "tiny")
    meta_path = tmp_path / "tiny" / "model.json"
    meta = json.loads(meta_path.read_text())
    for k, (b, p) in zip(["1", "2", "3"], [(0.1, 20.0), (0.2, 22.0), (0.4, 23.0)]):
        meta["qualities"][k].update(val_bpp_context=b, val_psnr_rgb=p)
    meta_path.write_text(json.dumps(meta))
    s = [rung_slope(checkpoint.resolve("tiny", q, root=tmp_path)) for q in (1, 2, 3)]
    from engine.net import search
    assert s == pytest.approx([search.SLOPE_SCALE * x for x in (20.0, 10.0, 5.0)])
    meta["qualities"]["2"]["search_slope"] = 7.5
    meta_path.write_text(json.dumps(meta))
    assert rung_slope(checkpoint.resolve("tiny", 2, root=tmp_path)) == 7.5


def test_search_pursues_the_models_metric(tiny_root, tmp_path):
    """Issue #29: a model trained for MS-SSIM is searched with MS_SSIM_WEIGHT_PERCEPTUAL,
    an MSE model with MS_SSIM_WEIGHT; model.json's "search_ms_ssim_weight" overrides; and
    the codec's search (effort > 0) carries the weight its rung's model asks for."""
    from engine.net import search
    from engine.net.search import rung_ms_ssim_weight
    shutil.copytree(tiny_root / "tiny", tmp_path / "tiny")
    meta_path = tmp_path / "tiny" / "model.json"
    meta = json.loads(meta_path.read_text())
    q = checkpoint.resolve("tiny", 2, root=tmp_path)
    assert rung_ms_ssim_weight(q) is None
    meta["metric"] = "ms-ssim"
    meta_path.write_text(json.dumps(meta))
    assert rung_ms_ssim_weight(q) == search.MS_SSIM_WEIGHT_PERCEPTUAL != search.MS_SSIM_WEIGHT
    codec = engine.Codec(quality=2, model="tiny", root=tmp_path, backend="torch", effort=1)
    img = _image(170, 180, 1)
    assert codec.decompress(codec.compress(img)).shape == img.shape
    assert codec.rung.search.ms_ssim_weight == search.MS_SSIM_WEIGHT_PERCEPTUAL
    _, _, _, st = codec.rung.search.run(preprocess(img, 16), [img.shape[:2]], 1)
    assert st["ms_ssim_weight"] == search.MS_SSIM_WEIGHT_PERCEPTUAL
    meta["search_ms_ssim_weight"] = 0.5
    meta_path.write_text(json.dumps(meta))
    assert rung_ms_ssim_weight(q) == 0.5


def test_retired_rung_decodes_but_does_not_encode(tiny_root, tmp_path):
    shutil.copytree(tiny_root / "tiny", tmp_path / "tiny")
    img = _image()
    data = engine.Codec(quality=3, model="tiny", root=tmp_path, backend="torch").compress(img)
    meta_path = tmp_path / "tiny" / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["qualities"]["3"]["retired"] = "loses to JPEG at its rate"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="retired"):
        engine.Codec(quality=3, model="tiny", root=tmp_path, backend="torch")
    assert checkpoint.qualities("tiny", tmp_path) == [1, 2]
    assert checkpoint.qualities("tiny", tmp_path, retired=True) == [1, 2, 3]
    out = engine.Codec(model="tiny", root=tmp_path, backend="torch").decompress(data)
    assert out.shape == img.shape


def test_shipped_top_rungs_are_retired():
    assert checkpoint.qualities() == [1, 2, 3, 4, 5]
    assert checkpoint.resolve().quality == 4
    assert checkpoint.resolve("small", 7, decode=True).quality == 7
    # the perceptual model's q5 lost to WebP's MS-SSIM on held-out images (issue #29):
    # it no longer encodes, and its files still decode
    perceptual = checkpoint.model_for("ms-ssim")
    assert checkpoint.qualities(perceptual) == [1, 2, 3, 4]
    assert checkpoint.qualities(perceptual, retired=True) == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="retired"):
        engine.Codec(quality=5, metric="ms-ssim", backend="torch")
    assert checkpoint.resolve(perceptual, 5, decode=True).quality == 5


def test_files_of_the_retired_perceptual_q5_still_decode(tmp_path):
    # A q5 file as the model made it before the retirement (the same weights and offset, so
    # the same fingerprint): its model.json without the "retired" entry.
    perceptual = checkpoint.model_for("ms-ssim")
    shutil.copytree(checkpoint.CHECKPOINT_DIR / perceptual, tmp_path / perceptual)
    meta_path = tmp_path / perceptual / "model.json"
    meta = json.loads(meta_path.read_text())
    del meta["qualities"]["5"]["retired"]
    meta_path.write_text(json.dumps(meta))
    img = _image()
    old = engine.Codec(quality=5, model=perceptual, root=tmp_path, backend="torch")
    data = old.compress(img)
    out = engine.Codec(metric="ms-ssim", backend="torch").decompress(data)
    assert np.array_equal(out, old.decompress(data))


def test_eval_draws_one_curve_per_effort(tiny_root, tmp_path):
    from PIL import Image

    from engine import eval as ev
    d = tmp_path / "imgs"
    d.mkdir()
    for s in range(2):
        Image.fromarray(_image(48, 64, s)).save(d / f"i{s}.png")
    out = ev.main(["--data", str(d), "--model", "tiny", "--model-dir", str(tiny_root), "--backend", "torch",
                   "--effort", "0,1", "--effort-quality", "2", "--json", str(tmp_path / "r.json")])
    assert set(out["efforts"]) == {0, 1}
    assert sorted(out["efforts"][0]["ours"]) == [1, 2, 3] and sorted(out["efforts"][1]["ours"]) == [2]
    e1 = out["efforts"][1]["ours"][2]["mean"]
    assert e1["effort"] == 1 and e1["encoding_time"] > 0
    md = (tmp_path / "r.md").read_text()
    assert "| 1 | 2 |" in md and "| 0 | 3 |" in md


def test_cli_effort(tiny_root, tmp_path):
    from engine.__main__ import main as cli
    from PIL import Image
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(_image()).save(src / "a.png")
    rc = cli(["compress", str(src), "-o", str(tmp_path / "c"), "--model", "tiny", "--model-dir", str(tiny_root),
              "--backend", "torch", "-q", "2", "--effort", "1", "--quiet"])
    assert rc == 0
    blob = (tmp_path / "c" / "a.hnlc").read_bytes()
    ref = engine.Codec(quality=2, model="tiny", root=tiny_root, backend="torch", effort=1).compress(
        np.asarray(Image.open(src / "a.png").convert("RGB")))
    assert blob == ref
    with pytest.raises(SystemExit):
        cli(["compress", str(src), "-o", str(tmp_path / "d"), "--effort", "10"])


def test_bench_tools_for_effort_run(tmp_path):
    """Smoke: bench.effort_time and bench.search_tune run end to end on tiny inputs."""
    from PIL import Image

    from bench import effort_time, search_tune
    d = tmp_path / "imgs"
    d.mkdir()
    for s in range(3):
        Image.fromarray(_image(48, 64, s)).save(d / f"i{s}.png")
    effort_time.main(["--data", str(d), "--efforts", "0,1", "--limit", "1", "--backend", "torch",
                      "--search-precision", "fp32,bf16", "--out", str(tmp_path / "et")])
    rows = json.loads((tmp_path / "et.json").read_text())["rows"]
    assert [(r["effort"], r["search_precision"]) for r in rows] == [(0, "-"), (1, "fp32"), (1, "bf16")]
    assert rows[1]["steps"] == 8
    search_tune.main(["--data", str(d), "--holdout", "1", "--limit", "1", "--efforts", "1",
                      "--out", str(tmp_path / "st")])
    res = json.loads((tmp_path / "st.json").read_text())
    assert [r["effort"] for r in res["rows"]] == [0, 1] and len(res["ladder_effort0"]) == 3


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_search_precision_never_worse_than_one_pass(tiny_root, precision):
    """bf16 runs the gradient steps only: the checks stay fp32, so the codes returned
    are never worse by the exact J than the encoder's own, in either precision, and the
    file is ordinary."""
    q = checkpoint.resolve("tiny", 2, root=tiny_root)
    codec0 = engine.Codec(quality=2, model="tiny", root=tiny_root, backend="torch")
    tables = codec0.parse(codec0.compress(_image()))[1].tables
    img = _image()
    _, _, _, stats = CodeSearch(checkpoint.load_net(q), tables, rung_slope(q), precision=precision).run(
        preprocess(img, 16), [img.shape[:2]], 2)
    assert stats["precision"] == precision
    assert all(j <= j0 + 1e-9 for j, j0 in zip(stats["J"], stats["J0"]))
    codec = engine.Codec(quality=2, model="tiny", root=tiny_root, backend="torch", effort=2, search_precision=precision)
    data = codec.compress(img)
    assert codec.compress(img) == data                      # deterministic in each precision
    assert np.array_equal(codec0.decompress(data), codec.decompress(data))


def test_search_precision_auto_follows_the_cpu(monkeypatch):
    monkeypatch.setenv("ENGINE_CPU_BF16", "1")
    assert S.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv("ENGINE_CPU_BF16", "0")
    assert S.resolve_precision("auto", "cpu") == "fp32"
    assert S.resolve_precision("bf16", "cpu") == "bf16" and S.resolve_precision("fp32", "cpu") == "fp32"


def test_search_precision_is_a_checked_setting(tiny_root, monkeypatch):
    with pytest.raises(ValueError, match="search_precision must be one of"):
        engine.Codec(quality=2, model="tiny", root=tiny_root, search_precision="fp64")
    monkeypatch.setenv("ENGINE_SEARCH_PRECISION", "bf16")
    assert engine.Codec(quality=2, model="tiny", root=tiny_root).settings().search_precision == "bf16"
    monkeypatch.setenv("ENGINE_SEARCH_PRECISION", "fp8")
    with pytest.raises(ValueError, match="ENGINE_SEARCH_PRECISION"):
        engine.Codec(quality=2, model="tiny", root=tiny_root)


@pytest.mark.slow
def test_bf16_search_finds_codes_as_good_as_fp32_on_the_shipped_model():
    """The stated tolerance (README, "Effort"): on the shipped model at its default rung,
    the bf16 search's exact J is within 0.15 dB of the fp32 search's at effort 2."""
    from engine.net.rungs import load_tables
    q = checkpoint.resolve(checkpoint.DEFAULT_MODEL)
    img = _image(96, 128, 5)
    js = {}
    for p in ("fp32", "bf16"):
        s = CodeSearch(checkpoint.load_net(q), load_tables(q), rung_slope(q), S.rung_ms_ssim_weight(q), precision=p)
        js[p] = s.run(preprocess(img, 16), [img.shape[:2]], 2)[3]
    assert js["bf16"]["J0"] == pytest.approx(js["fp32"]["J0"], abs=1e-4)   # fp32 checks (channels_last: ~1e-7)
    assert js["bf16"]["J"][0] < js["bf16"]["J0"][0]
    assert abs(js["bf16"]["J"][0] - js["fp32"]["J"][0]) <= 0.15
