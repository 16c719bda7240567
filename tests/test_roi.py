"""Regions of interest (issue #27, engine/roi.py): compress(img, roi=mask, roi_boost=k)
raises the importance logits under the mask, on every backend, through the batch APIs,
the CLI, the Pillow plugin, a target size and the code search; files stay ordinary
files; bad masks are ImageErrors and nothing is written."""
import numpy as np
import pytest
import torch
from PIL import Image

import engine
from engine import importance, roi
from engine.format import bitstream
from engine.__main__ import main
from engine.errors import ImageError

H, W = 40, 56          # 5 x 7 importance locations of the image's own pixels


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny networks: one torch thread (many times faster on a busy 2-core machine); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _codec(tiny_root, quality=1, **kw):
    return engine.Codec(model="tiny", root=tiny_root, backend=kw.pop("backend", "torch"), kernels="torch",
                        quality=quality, **kw)


def _img(seed=3, shape=(H, W, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _mask():
    m = np.zeros((H, W), bool)
    m[8:24, 16:40] = True            # blocks rows 1..2, columns 2..4 exactly
    return m


def _levels(codec, data):
    return codec.parse(data)[2][0].astype(int)


def _inside_blocks():
    g = np.zeros((48 // 8, 64 // 8), bool)    # the encoder's grid: the image padded to 48x64
    g[1:3, 2:5] = True
    return g


# ----------------------------------------------------------------------------- levels

def test_levels_rise_under_the_mask_and_nowhere_else(tiny_root):
    codec = _codec(tiny_root)
    img = _img()
    plain = _levels(codec, codec.compress(img))
    boosted = _levels(codec, codec.compress(img, roi=_mask(), roi_boost=3))
    inside = _inside_blocks()
    assert (boosted[inside] >= plain[inside]).all() and (boosted[inside] > plain[inside]).any()
    assert (boosted[~inside] == plain[~inside]).all()
    lower = _levels(codec, codec.compress(img, roi=_mask().astype(np.float32) * -3))     # a map may lower
    assert (lower[inside] <= plain[inside]).all() and (lower[~inside] == plain[~inside]).all()


def test_importance_boost_is_the_logit_shift_and_exact_where_zero():
    p = torch.tensor([0.0, 1e-6, 0.2, 0.5, 0.9, 1.0])
    b = torch.tensor([1.0, 2.0, 0.0, -1.0, 0.5, 0.0])
    out = importance.boost(p, b)
    want = torch.sigmoid(torch.logit(p.double().clamp(1e-30, 1 - 2 ** -24)) + b.double()).float()
    assert torch.allclose(out, want, atol=1e-6)
    assert out[2] == p[2] and out[5] == p[5]              # untouched where the boost is 0
    assert out[0] > 0                                      # a saturated 0 still rises
    half = importance.boost(p.half(), b.half())
    assert half.dtype == torch.float16


def test_ordinary_decoders_decode_the_file(tiny_root):
    img = _img()
    data = _codec(tiny_root).compress(img, roi=_mask(), roi_boost=2)
    fresh = _codec(tiny_root, quality=3)                   # another codec, no ROI anywhere
    out = fresh.decompress(data)
    assert out.shape == img.shape
    assert bitstream.read(data, 10 ** 9)[0].quality == 1


def test_nothing_inside_or_zero_boost_is_the_plain_file(tiny_root):
    codec = _codec(tiny_root)
    img = _img()
    plain = codec.compress(img)
    assert codec.compress(img, roi=np.zeros((H, W), np.uint8)) == plain
    assert codec.compress(img, roi=_mask(), roi_boost=0) == plain
    assert codec.compress(img, roi=np.zeros((H, W), np.float32)) == plain


def test_mask_pools_by_max_and_map_by_mean():
    m = np.zeros((H, W), bool)
    m[9, 17] = True                  # one pixel of block (1, 2)
    b = roi.prepare(m, 2.0, H, W)
    assert b.grid.shape == (5, 7) and b.grid[1, 2] == 2.0 and b.grid.sum() == 2.0
    b = roi.prepare(m.astype(np.float32) * 2, None, H, W)
    assert b.grid[1, 2] == pytest.approx(2.0 / 64) and np.count_nonzero(b.grid) == 1
    # partial edge blocks average over their own pixels; padding blocks copy the nearest
    f = np.ones((20, 21), np.float32)
    b = roi.prepare(f, 3.0, 20, 21)
    assert b.grid.shape == (3, 3) and np.allclose(b.grid, 3.0)
    assert b.padded(4, 4)[3, 3] == 3.0 and b.padded(4, 4).shape == (4, 4)
    # default boosts: DEFAULT_BOOST for a mask, 1 x a map
    assert roi.prepare(_mask(), None, H, W).grid.max() == roi.DEFAULT_BOOST
    assert roi.prepare(_mask() * np.float32(0.5), None, H, W).grid.max() == 0.5


def test_block_aligned_map_equals_the_mask(tiny_root):
    codec = _codec(tiny_root)
    img = _img()
    assert codec.compress(img, roi=_mask().astype(np.float32) * 1.5) == codec.compress(img, roi=_mask(),
                                                                                     roi_boost=1.5)
    assert codec.compress(img, roi=Image.fromarray(_mask().astype(np.uint8) * 255), roi_boost=1.5) == \
        codec.compress(img, roi=_mask(), roi_boost=1.5)


def test_search_weights():
    m = _mask()
    w = roi.prepare(m, 2.0, H, W).weights()
    assert w[m].min() == 3.0 and w[~m].max() == 1.0
    w = roi.prepare(m.astype(np.float32) * -1, None, H, W).weights()
    assert w[m].max() == 0.5 and w[~m].min() == 1.0


# ----------------------------------------------------------------------------- backends

class _WrappedRunner:
    """Any runner (the OpenVINO one, ...): the boost is applied after runner.encode."""

    def __init__(self, inner):
        self.inner, self.device, self.name = inner, inner.device, "wrapped"
        self.calls = 0

    def encode(self, ycc):
        self.calls += 1
        return self.inner.encode(ycc)

    def decode(self, *a):
        return self.inner.decode(*a)


def test_the_boost_is_outside_the_runner(tiny_root):
    codec = _codec(tiny_root)
    img = _img()
    want = codec.compress(img, roi=_mask(), roi_boost=2)
    codec.rung.runner = _WrappedRunner(codec.rung.runner)
    assert codec.compress(img, roi=_mask(), roi_boost=2) == want
    assert codec.rung.runner.calls == 1


def test_triton_bit_path_and_coder_write_the_same_roi_files(tiny_root):
    from kernels import pack_triton
    if not pack_triton.interpreter_active():
        pytest.skip("CPU tensors need the Triton interpreter")
    img = _img()
    want = _codec(tiny_root).compress(img, roi=_mask(), roi_boost=2)
    for kw in (dict(kernels="triton"), dict(coder="triton")):
        codec = engine.Codec(model="tiny", root=tiny_root, backend="torch", quality=1, **kw)
        assert codec.compress(img, roi=_mask(), roi_boost=2) == want, kw


@pytest.fixture(scope="module")
def tiny_graphs(tmp_path_factory, tiny_root):
    """The tiny model's q1 built for ONNX Runtime and, where installed, OpenVINO (fp32)."""
    pytest.importorskip("onnxruntime")
    from engine import build
    from engine.net.checkpoint import resolve
    out = tmp_path_factory.mktemp("roi_graphs")
    backends = ["onnxruntime"]
    try:
        import openvino  # noqa: F401
        backends.append("openvino")
    except ImportError:
        pass
    for be in backends:
        r = build.build_quality(resolve("tiny", 1, root=tiny_root), be, "fp32", out, log=lambda *a, **k: None)
        assert r.status == "built"
    return out, backends


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_graph_backends_raise_the_levels_under_the_mask(tiny_root, tiny_graphs, backend, monkeypatch):
    out, built = tiny_graphs
    if backend not in built:
        pytest.skip(f"{backend} is not installed")
    monkeypatch.setenv("ENGINE_BUILD_DIR", str(out))
    codec = _codec(tiny_root, backend=backend, precision="fp32")
    assert codec.runner.name == backend
    img = _img()
    plain = _levels(codec, codec.compress(img))
    boosted = _levels(codec, codec.compress(img, roi=_mask(), roi_boost=3))
    inside = _inside_blocks()
    assert (boosted[inside] >= plain[inside]).all() and (boosted[inside] > plain[inside]).any()
    assert (boosted[~inside] == plain[~inside]).all()


# ----------------------------------------------------------------------------- batches

def test_batch_one_mask_for_all_or_one_per_item(tiny_root):
    codec = _codec(tiny_root)
    imgs = [_img(s) for s in (1, 2, 3)]
    m = _mask()
    single = [codec.compress(i, roi=m, roi_boost=2) for i in imgs]
    assert codec.compress_batch(imgs, roi=m, roi_boost=2) == single
    per = codec.compress_batch(imgs, roi=[m, None, m.astype(np.uint8)], roi_boost=2)
    assert per == [single[0], codec.compress(imgs[1]), single[2]]
    assert list(codec.compress_iter(iter(imgs), roi=iter([m, None, m]), roi_boost=2)) == per
    with pytest.raises(ValueError, match="2 masks for 3 images"):
        codec.compress_batch(imgs, roi=[m, m])
    with pytest.raises(ValueError, match="fewer masks"):
        list(codec.compress_iter(iter(imgs), roi=iter([m])))


def test_bad_mask_is_its_items_error_in_a_batch(tiny_root):
    codec = _codec(tiny_root)
    imgs = [_img(1), _img(2)]
    out = codec.compress_batch(imgs, roi=[np.zeros((3, 3), bool), _mask()], errors="return")
    assert isinstance(out[0], ImageError) and "3x3" in str(out[0])
    assert out[1] == codec.compress(imgs[1], roi=_mask())


@pytest.mark.parametrize("mask, words", [
    (np.zeros((H, W + 1), bool), "57x40 and the image 56x40"),
    (np.zeros((H, W, 3), np.uint8), "HxW"),
    (np.full((H, W), np.nan, np.float32), "NaN"),
    (np.full((H, W), np.inf, np.float64), "NaN or infinite"),
    (np.full((H, W), -1, np.int16), "must not be negative"),
    (np.zeros((H, W), np.complex64), "dtype complex64"),
    ([[1, 0], [0, 1]], "unsupported ROI mask type list"),
    (Image.new("RGB", (W, H)), "mode RGB"),
    (Image.new("L", (W + 2, H)), "58x40"),
])
def test_bad_masks_are_clear_image_errors(tiny_root, mask, words):
    with pytest.raises(ImageError, match=words):
        _codec(tiny_root).compress(_img(), roi=mask)


@pytest.mark.parametrize("boost", [float("nan"), float("inf"), "2", True])
def test_bad_boost_is_a_value_error(tiny_root, boost):
    with pytest.raises(ValueError, match="roi_boost"):
        _codec(tiny_root).compress(_img(), roi=_mask(), roi_boost=boost)


def test_boost_without_roi_is_refused(tiny_root):
    with pytest.raises(ValueError, match="without a roi"):
        _codec(tiny_root).compress(_img(), roi_boost=2)


def test_mask_from_a_path_and_a_missing_one(tiny_root, tmp_path):
    codec = _codec(tiny_root)
    Image.fromarray(_mask()).save(tmp_path / "m.png")              # mode 1
    assert codec.compress(_img(), roi=tmp_path / "m.png", roi_boost=2) == codec.compress(_img(), roi=_mask(),
                                                                                          roi_boost=2)
    with pytest.raises(ImageError, match="cannot read ROI mask"):
        codec.compress(_img(), roi=tmp_path / "nope.png")


# ----------------------------------------------------------------------------- target size, search

def test_max_bytes_with_roi_is_the_rungs_own_roi_file(tiny_root):
    codec = _codec(tiny_root)
    img = _img()
    files = {q: _codec(tiny_root, quality=q).compress(img, roi=_mask(), roi_boost=2) for q in (1, 2, 3)}
    limit = len(files[2])
    out = codec.compress(img, max_bytes=limit, roi=_mask(), roi_boost=2)
    assert len(out) <= limit and out in files.values()
    assert out == files[max(q for q, d in files.items() if len(d) <= limit)]
    batch = codec.compress_batch([img, img], max_bytes=limit, roi=[_mask(), None], roi_boost=2)
    assert batch[0] == out and batch[1] == codec.compress(img, max_bytes=limit)
    bad = codec.compress_batch([img], max_bytes=limit, roi=[np.zeros((2, 2), bool)], errors="return")
    assert isinstance(bad[0], ImageError)


def test_effort_one_on_a_tiny_image(tiny_root):
    img = _img(5, (24, 32, 3))
    m = np.zeros((24, 32), bool)
    m[:16, :16] = True
    codec = _codec(tiny_root, quality=2, effort=1)
    data = codec.compress(img, roi=m, roi_boost=3)
    assert data == codec.compress(img, roi=m, roi_boost=3)             # deterministic
    assert _codec(tiny_root).decompress(data).shape == img.shape       # an ordinary file
    assert codec.compress_batch([img, img], roi=[m, None], roi_boost=3) == [data, codec.compress(img)]


def test_search_starts_from_the_boosted_map_and_weighs_the_region(tiny_root, monkeypatch):
    from engine.net import search as S
    from engine.io.planes import preprocess
    from engine.runtime.stages import searcher
    codec = _codec(tiny_root, quality=2)
    srch = searcher(codec.rung)
    img = _img(5, (24, 32, 3))
    m = np.zeros((24, 32), bool)
    m[:8, :8] = True
    b = roi.prepare(m, 3.0, 24, 32)
    ycc = preprocess(img, 16)
    monkeypatch.setattr(S, "STEPS", (0, 0) + S.STEPS[2:])             # effort 1: no steps, the start only
    _, p0, _, st0 = srch.run(ycc, [(24, 32)], 1)
    _, p1, _, st1 = srch.run(ycc, [(24, 32)], 1, roi=[b])
    q0 = importance.quantize_levels(p0, 4)[0, 0]
    q1 = importance.quantize_levels(p1, 4)[0, 0]
    assert q1[0, 0] > q0[0, 0] and torch.equal(q1[1:], q0[1:]) and torch.equal(q1[0, 1:], q0[0, 1:])
    # the start's distortion is weighted 4 : 1 inside : outside
    seen = {}
    real = S.CodeSearch._distortion

    def spy(rgb, target, weight):
        seen["w"] = weight.clone()
        return real(rgb, target, weight)
    monkeypatch.setattr(S.CodeSearch, "_distortion", staticmethod(spy))
    srch.run(ycc, [(24, 32)], 1, roi=[b])
    w = seen["w"][0, 0]
    assert w[:8, :8].min() == 4 and w[8:, :].max() == 1 and w[:24, 8:].max() == 1


# ----------------------------------------------------------------------------- CLI, Pillow

@pytest.fixture
def cli(tiny_root, capsys):
    def run(*argv):
        rc = main([*map(str, argv), "--model", "tiny", "--model-dir", str(tiny_root), "--backend", "torch",
                   "--kernels", "torch"])
        return rc, capsys.readouterr().err
    return run


def test_cli_one_mask_for_one_input(cli, tiny_root, tmp_path):
    Image.fromarray(_img()).save(tmp_path / "a.png")
    Image.fromarray(_mask()).save(tmp_path / "mask.png")
    rc, err = cli("compress", tmp_path / "a.png", "-o", tmp_path / "out", "-q", "1", "--roi", tmp_path / "mask.png",
                  "--roi-boost", "2")
    assert rc == 0, err
    assert (tmp_path / "out" / "a.hnlc").read_bytes() == _codec(tiny_root).compress(_img(), roi=_mask(), roi_boost=2)


def test_cli_folder_of_masks_by_stem(cli, tiny_root, tmp_path):
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        Image.fromarray(_img(seed)).save(tmp_path / f"{name}.png")
    (tmp_path / "masks").mkdir()
    Image.fromarray(_mask().astype(np.uint8) * 255).save(tmp_path / "masks" / "a.png")
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "masks" / "c.png")    # wrong size
    rc, err = cli("compress", tmp_path / "*.png", "-o", tmp_path / "out", "-q", "1", "--roi", tmp_path / "masks")
    assert rc == 2
    codec = _codec(tiny_root)
    assert (tmp_path / "out" / "a.hnlc").read_bytes() == codec.compress(_img(1), roi=_mask())
    assert (tmp_path / "out" / "b.hnlc").read_bytes() == codec.compress(_img(2))      # no mask: no ROI
    assert not (tmp_path / "out" / "c.hnlc").exists()
    assert "c.png" in err and "3x3" in err and "1 of 3 inputs have no mask" in err


def test_cli_roi_with_max_bytes(cli, tiny_root, tmp_path):
    Image.fromarray(_img()).save(tmp_path / "a.png")
    Image.fromarray(_mask()).save(tmp_path / "m.png")
    limit = len(_codec(tiny_root, quality=2).compress(_img(), roi=_mask()))
    rc, err = cli("compress", tmp_path / "a.png", "-o", tmp_path / "out", "--roi", tmp_path / "m.png",
                  "--max-bytes", limit)
    assert rc == 0, err
    assert (tmp_path / "out" / "a.hnlc").read_bytes() == _codec(tiny_root).compress(_img(), roi=_mask(),
                                                                                    max_bytes=limit)


def test_cli_refusals_write_nothing(cli, tmp_path):
    for name in ("a", "b"):
        Image.fromarray(_img()).save(tmp_path / f"{name}.png")
    Image.fromarray(_mask()).save(tmp_path / "m.png")
    out = tmp_path / "out"
    rc, err = cli("compress", tmp_path / "a.png", tmp_path / "b.png", "-o", out, "--roi", tmp_path / "m.png")
    assert rc == 2 and "one mask for one input" in err and not out.exists()
    rc, err = cli("compress", tmp_path / "a.png", "-o", out, "--roi-boost", "2")
    assert rc == 2 and "--roi-boost needs --roi" in err and not out.exists()
    (tmp_path / "empty").mkdir()
    rc, err = cli("compress", tmp_path / "a.png", "-o", out, "--roi", tmp_path / "empty")
    assert rc == 2 and "no mask there" in err and not out.exists()
    rc, err = cli("compress", tmp_path / "a.png", "-o", out, "--roi", tmp_path / "m.png", "--roi-boost", "nan")
    assert rc == 2 and "roi_boost" in err and not out.exists()


@pytest.fixture
def plugin(tiny_root):
    engine.register_pillow(model="tiny", root=tiny_root, backend="torch", kernels="torch")
    yield
    engine.register_pillow()


def test_pillow_save_with_roi(plugin, tiny_root, tmp_path):
    img = _img()
    Image.fromarray(img).save(tmp_path / "r.hnlc", quality=1, roi=_mask(), roi_boost=2)
    assert (tmp_path / "r.hnlc").read_bytes() == _codec(tiny_root).compress(img, roi=_mask(), roi_boost=2)
    with Image.open(tmp_path / "r.hnlc") as im:
        assert im.size == (W, H)
        im.load()
    with pytest.raises(ImageError):
        Image.fromarray(img).save(tmp_path / "bad.hnlc", roi=np.zeros((2, 2), bool))
    assert not (tmp_path / "bad.hnlc").exists()
