"""effort > 0: the per-image code search (engine/search.py) and where it is wired in."""
import json
import shutil

import numpy as np
import pytest

import engine
from engine import bitstream, checkpoint, entropy
from engine.planes import preprocess
from engine.eval import psnr_rgb
from engine.search import MAX_EFFORT, CodeSearch, check_effort, rung_slope


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
    section sizes (up to the range coder's few bytes of flush per section)."""
    codec = engine.Codec(quality=2, model="tiny", root=tiny_root, backend="torch")
    for seed in range(3):
        data = codec.compress(_image(64, 80, seed))
        hdr, msec, ysec, csec = bitstream.read(data, 10 ** 8)
        _, mdl, (lv, yd, cd) = codec.parse(data)
        cfg = mdl.q.config
        bits, per = entropy.information(lv, yd, cd, cfg.n, cfg.levels, mdl.tables)
        coded = len(msec) + len(ysec) + len(csec)
        assert bits / 8 <= coded <= bits / 8 + 3 * 8, (bits / 8, coded)
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
    hdr, _, _, csec = bitstream.read(data, 10 ** 8)
    assert csec == b"" and hdr.color == 1
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


def test_rung_slope_reads_the_ladder(tiny_root, tmp_path):
    shutil.copytree(tiny_root / "tiny", tmp_path / "tiny")
    meta_path = tmp_path / "tiny" / "model.json"
    meta = json.loads(meta_path.read_text())
    for k, (b, p) in zip(["1", "2", "3"], [(0.1, 20.0), (0.2, 22.0), (0.4, 23.0)]):
        meta["qualities"][k].update(val_bpp_context=b, val_psnr_rgb=p)
    meta_path.write_text(json.dumps(meta))
    s = [rung_slope(checkpoint.resolve("tiny", q, root=tmp_path)) for q in (1, 2, 3)]
    from engine import search
    assert s == pytest.approx([search.SLOPE_SCALE * x for x in (20.0, 10.0, 5.0)])
    meta["qualities"]["2"]["search_slope"] = 7.5
    meta_path.write_text(json.dumps(meta))
    assert rung_slope(checkpoint.resolve("tiny", 2, root=tmp_path)) == 7.5


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
                      "--out", str(tmp_path / "et")])
    rows = json.loads((tmp_path / "et.json").read_text())["rows"]
    assert [r["effort"] for r in rows] == [0, 1] and rows[1]["steps"] == 8
    search_tune.main(["--data", str(d), "--holdout", "1", "--limit", "1", "--efforts", "1",
                      "--out", str(tmp_path / "st")])
    res = json.loads((tmp_path / "st.json").read_text())
    assert [r["effort"] for r in res["rows"]] == [0, 1] and len(res["ladder_effort0"]) == 3
