"""Large images (tiling), the CUDA pipeline's CPU-testable parts, stage timing, bench smoke.

The CUDA pipeline itself runs in tests/test_pipeline_cuda.py (skipped without a GPU).
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import engine
from engine.runtime import executors as ex
from engine.io import tiling
from engine.net.model import CONFIGS, CodecNet
from engine.timing import StageTimer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def codec(tiny_root):
    return engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch", tile_pixels=0)


@pytest.fixture(scope="module")
def tiled(tiny_root):
    """Tiles everything, small tiles: 208x304 padded -> 4 x 5 tiles of 64."""
    return engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch", tile_pixels=1, tile_size=64)


def _photo(h, w, seed=0):
    from bench.peak_rss import synthetic_photo
    return synthetic_photo(h, w, seed)


# ----------------------------------------------------------------------------- receptive fields

def test_extents_hand_count():
    # small: Y encoder 2(conv@2) + 4(res@2) + 2(s2) + 8(res@4) + 4(s2) + 2*16(res@8) + 8(head) = 60
    assert tiling.encoder_extent(CONFIGS["small"]) == {"y": 60, "c": 88}
    assert tiling.encoder_halo(CONFIGS["small"]) == 96
    assert tiling.decoder_extent(CONFIGS["small"]) == {"y": 73, "c_from_y": 97, "cbits": 129}
    assert tiling.decoder_halo(CONFIGS["small"]) == 144
    assert tiling.encoder_extent(CONFIGS["tiny"])["y"] == 44      # one block fewer at 1/8: -16


def _reach(changed: torch.Tensor, grid: int, lo: int, hi: int) -> int:
    """Largest distance (pixels) between the perturbed input pixels [lo, hi)^2 and the pixels
    covered by a changed output position on a grid of stride ``grid``."""
    ys, xs = torch.nonzero(changed, as_tuple=True)
    if not len(ys):
        return 0

    def dist(idx):
        a = idx * grid
        return torch.clamp(torch.maximum(lo - (a + grid - 1), a - (hi - 1)), min=0).max().item()
    return max(dist(ys), dist(xs))


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_receptive_field_bounds_measured_reach(name):
    """Perturb one input and see how far outputs change: never beyond the counted extent,
    and the count is not loose by more than the 16-pixel grid."""
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    net = CodecNet(cfg).eval()
    S, c = 320, 160
    x = torch.rand(1, 3, S, S)
    x2 = x.clone()
    x2[:, :, c, c] += 0.5
    enc_ext, dec_ext = tiling.encoder_extent(cfg), tiling.decoder_extent(cfg)
    with torch.inference_mode():
        a, b = net.encoder(x), net.encoder(x2)
        ry = max(_reach((a[k] != b[k])[0].any(0), 8, c, c + 1) for k in (0, 1))
        rc = _reach((a[2] != b[2])[0].any(0), 16, c, c + 1)
        assert enc_ext["y"] - 16 < ry <= enc_ext["y"]
        assert enc_ext["c"] - 16 < rc <= enc_ext["c"]
        bits = (a[0] > 0.5).float()
        lv = torch.floor(a[1] * cfg.levels).clamp(max=cfg.levels - 1)
        cb = (a[2] > 0.5).float()
        l0, c0 = c // 8, c // 16
        bits2, lv2, cb2 = bits.clone(), lv.clone(), cb.clone()
        bits2[:, :, l0, l0] = 1 - bits2[:, :, l0, l0]
        lv2[:, :, l0, l0] = (lv2[:, :, l0, l0] + 1) % cfg.levels
        cb2[:, :, c0, c0] = 1 - cb2[:, :, c0, c0]
        y, yb, yc = net.decoder(bits, lv, cb), net.decoder(bits2, lv2, cb), net.decoder(bits, lv, cb2)
    r_y = _reach(y[0, 0] != yb[0, 0], 1, 8 * l0, 8 * l0 + 8)
    r_cy = _reach((y[0, 1:] != yb[0, 1:]).any(0), 1, 8 * l0, 8 * l0 + 8)
    r_cb = _reach((y[0, 1:] != yc[0, 1:]).any(0), 1, 16 * c0, 16 * c0 + 16)
    assert dec_ext["y"] - 16 < r_y <= dec_ext["y"]
    assert dec_ext["c_from_y"] - 16 < r_cy <= dec_ext["c_from_y"]
    assert dec_ext["cbits"] - 16 < r_cb <= dec_ext["cbits"]
    assert torch.equal(y[0, 0], yc[0, 0])              # Y never reads the colour codes


# ----------------------------------------------------------------------------- tile plans

def test_tile_ranges_cover_and_align():
    r = tiling.tile_ranges(304, 64, 96)
    assert [x[2:] for x in r] == [(0, 64), (64, 128), (128, 192), (192, 256), (256, 304)]
    assert r[0][:2] == (0, 160) and r[2][:2] == (32, 288) and r[-1][:2] == (160, 304)
    for i0, i1, c0, c1 in r:
        assert i0 % 16 == 0 and i1 % 16 == 0 and i0 <= c0 < c1 <= i1
    assert tiling.tile_ranges(32, 64, 96) == [(0, 32, 0, 32)]
    assert len(tiling.tile_plan(208, 304, 64, 96)) == 4 * 5
    assert tiling.tiled_work(4000, 6000, 2048, 96) < 1.35
    with pytest.raises(ValueError):
        tiling.tile_ranges(300, 64, 96)
    with pytest.raises(ValueError):
        tiling.tile_ranges(304, 60, 96)
    with pytest.raises(ValueError):
        tiling.check_tile_size(100)
    assert tiling.should_tile(4096, 4096, 2 * 2048 * 2048) and not tiling.should_tile(4096, 4096, 0)
    assert not tiling.should_tile(2048, 4096, 2 * 2048 * 2048)


# ----------------------------------------------------------------------------- tiled == untiled

ENC_TOL = 1e-5          # float32: tiled vs untiled encoder / decoder outputs
F64_TOL = 1e-12         # float64: rounding only (observed ~2e-16); a missing halo shows as >= 1e-8


@pytest.mark.parametrize("name,tile", [("tiny", 32), ("tiny", 64), ("tiny", 112), ("small", 64), ("small", 112),
                                       ("small16d", 64), ("small16d", 96)])
def test_tiled_networks_match_untiled(name, tile):
    """Same values up to float summation order.  float32 (what runs): encoder and decoder
    outputs within 1e-5 (observed <= 1.2e-7, 1-2 ulp) and zero binarization / level flips.
    float64: within 1e-12, i.e. mathematically equal (a halo one grid step too small
    gives ~1e-7, see the next test)."""
    cfg = CONFIGS[name]
    torch.manual_seed(1)
    net = CodecNet(cfg).eval()
    x = torch.rand(2, 3, 208, 304)
    eh, dh, grid = tiling.encoder_halo(cfg), tiling.decoder_halo(cfg), tiling.encoder_grid(cfg)
    with torch.inference_mode():
        e, p, ec = net.encoder(x)
        e2, p2, ec2 = tiling.encode_tiled(net.encoder, x, tile, eh, grid)
        for a, b in ((e, e2), (p, p2), (ec, ec2)):
            assert a.shape == b.shape and (a - b).abs().max().item() <= ENC_TOL
        flips = (((e > 0.5) != (e2 > 0.5)).sum() + ((ec > 0.5) != (ec2 > 0.5)).sum()
                 + (torch.floor(p * cfg.levels) != torch.floor(p2 * cfg.levels)).sum()).item()
        assert flips == 0
        bits, cb = (e > 0.5).float(), (ec > 0.5).float()
        lv = torch.floor(p * cfg.levels).clamp(max=cfg.levels - 1)
        y = net.decoder(bits, lv, cb)
        y2 = tiling.decode_tiled(net.decoder, bits, lv, cb, tile, dh)
        assert y.shape == y2.shape and (y - y2).abs().max().item() <= ENC_TOL
        net = net.double()
        x = x[:1, :, :144, :208].double()                    # a crop of it, 16-aligned
        bits, lv, cb = (t[:1, :, :144 // f, :208 // f].double() for t, f in ((bits, 8), (lv, 8), (cb, 16)))
        ref, got = net.encoder(x), tiling.encode_tiled(net.encoder, x, tile, eh, grid)
        assert max((a - b).abs().max().item() for a, b in zip(ref, got)) <= F64_TOL
        y = net.decoder(bits, lv, cb)
        assert (y - tiling.decode_tiled(net.decoder, bits, lv, cb, tile, dh)).abs().max().item() <= F64_TOL


def test_dithering_needs_tiles_on_even_blocks():
    """An encoder that dithers its colour codes (small16d) counts the 2x2 pattern from the
    tile's origin: tiles on the 32-pixel grid match the untiled run (the test above), and a
    tile starting on an odd block would not (so encoder_grid is what keeps them equal)."""
    cfg = CONFIGS["small16d"]
    assert tiling.encoder_grid(cfg) == 32 and tiling.encoder_halo(cfg) % 32 == 0
    assert tiling.encoder_grid(CONFIGS["small16"]) == 16
    assert tiling.tile_for_runner(112, tiling.encoder_halo(cfg), None, 32) == 96
    torch.manual_seed(1)
    net = CodecNet(cfg).eval().double()
    x = torch.rand(1, 3, 208, 304, dtype=torch.float64)
    with torch.inference_mode():
        ref = net.encoder(x)[2]
        odd = tiling.encode_tiled(net.encoder, x, 48, tiling.encoder_halo(cfg) + 16)[2]
        assert (ref - odd).abs().max().item() > 1e-9
        with pytest.raises(ValueError, match="multiple of 32"):
            tiling.encode_tiled(net.encoder, x, 48, tiling.encoder_halo(cfg), 32)


def test_halo_too_small_is_detected():
    """The float64 check above has teeth: less halo than the receptive field shows."""
    cfg = CONFIGS["tiny"]
    torch.manual_seed(1)
    net = CodecNet(cfg).eval().double()
    x = torch.rand(1, 3, 208, 304, dtype=torch.float64)
    with torch.inference_mode():
        ref = net.encoder(x)
        got = tiling.encode_tiled(net.encoder, x, 64, tiling.encoder_halo(cfg) - 16)
        assert max((a - b).abs().max().item() for a, b in zip(ref, got)) > 1e-9
        e, p, ec = ref
        bits, cb, lv = (e > 0.5).double(), (ec > 0.5).double(), torch.floor(p * cfg.levels).clamp(max=cfg.levels - 1)
        y = net.decoder(bits, lv, cb)
        y2 = tiling.decode_tiled(net.decoder, bits, lv, cb, 64, tiling.decoder_halo(cfg) - 32)
        assert (y - y2).abs().max().item() > 1e-9


def _close_pixels(a: np.ndarray, b: np.ndarray) -> int:
    """Decoded images from tiled / untiled decoders: the float outputs differ by ~1e-7,
    so a value within that of a .5 rounding boundary may round the other way.  Allowed:
    +-1 on at most 1e-4 of the values (observed: 1 value of 180000).  Returns the count."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert d.max(initial=0) <= 1 and np.count_nonzero(d) <= max(1, d.size // 10_000)
    return int(np.count_nonzero(d))


def test_codec_tiled_bytes_equal_untiled(codec, tiled):
    imgs = [_photo(200, 300, 3), np.random.default_rng(4).integers(0, 256, (200, 300, 3), dtype=np.uint8),
            np.random.default_rng(5).integers(0, 256, (131, 77, 3), dtype=np.uint8)]
    for img in imgs:
        a, b = codec.compress(img), tiled.compress(img)
        assert a == b                                   # the file bytes: identical
        _close_pixels(codec.decompress(a), tiled.decompress(a))
        assert np.array_equal(tiled.decompress(a), tiled.decompress(b))   # and deterministic


def test_batch_api_tiles_large_images(codec, tiny_root):
    t = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch",
                     tile_pixels=160 * 160, tile_size=64)
    rng = np.random.default_rng(6)
    imgs = [rng.integers(0, 256, s + (3,), dtype=np.uint8) for s in [(200, 300), (40, 50), (200, 300), (40, 56)]]
    out = t.compress_batch(imgs, batch_size=4)
    assert out == [codec.compress(x) for x in imgs]
    dec = t.decompress_batch(out, batch_size=4)
    for d, b in zip(dec, out):
        assert np.array_equal(d, t.decompress(b))       # batch == single with the same tiling
        _close_pixels(d, codec.decompress(b))


def test_tiles_fit_a_tensorrt_profile(codec, tiny_root):
    """A runner with an optimization profile (TensorRT) gets tiles that fit it, also for
    images under tile_pixels whose side is too long for the profile."""
    from engine.net.export import ShapeProfile, net_profiles
    assert tiling.tile_for_runner(2048, 96, None) == 2048
    assert tiling.tile_for_runner(2048, 96, 2048) == 1856
    with pytest.raises(ValueError, match="profile"):
        tiling.tile_for_runner(2048, 144, 256)
    c = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch")
    r = c.runner
    r.profiles = net_profiles(c.config, ShapeProfile(height=(16, 256, 512), width=(16, 256, 512)))
    assert tiling.runner_max_side(r, "encoder") == 512 and tiling.runner_max_side(r, "decoder") == 512
    seen = []
    enc, dec = r.encode, r.decode
    r.encode = lambda x: seen.append(tuple(x.shape[-2:])) or enc(x)
    r.decode = lambda b, lv, cb: seen.append(tuple(v * 8 for v in b.shape[-2:])) or dec(b, lv, cb)
    img = _photo(100, 600, 1)                          # 0.06 MP, far under tile_pixels, but 608 > 512
    data = c.compress(img)
    assert data == codec.compress(img)
    _close_pixels(c.decompress(data), codec.decompress(data))
    assert len(seen) > 2 and max(max(s) for s in seen) <= 512


def test_cli_tile_options(codec, tiny_root, tmp_path):
    from PIL import Image

    from engine.__main__ import main
    img = _photo(100, 140, 2)
    (tmp_path / "in").mkdir()
    Image.fromarray(img).save(tmp_path / "in" / "a.png")
    rc = main(["compress", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "tiny", "--model-dir",
               str(tiny_root), "--backend", "torch", "--tile-pixels", "1", "--tile-size", "32", "--quiet"])
    assert rc == 0 and (tmp_path / "out" / "a.hnlc").read_bytes() == codec.compress(img)


def test_tile_options_validated(tiny_root):
    with pytest.raises(ValueError, match="multiple of 16"):
        engine.Codec(model="tiny", root=tiny_root, backend="torch", tile_size=1000)


# ----------------------------------------------------------------------------- memory sizing / planning

def test_activation_bytes_scale_and_size():
    small, tiny = CONFIGS["small"], CONFIGS["tiny"]
    for op in ("encode", "decode"):
        a = ex.activation_bytes(small, 512, 768, op)
        assert ex.activation_bytes(small, 1024, 1536, op) == pytest.approx(4 * a, rel=1e-6)
        assert ex.activation_bytes(tiny, 512, 768, op) < a
    # small encoder: 6 (ycc, ycc - 0.5) + 3 * 32 / 4 (ResBlock at 1/2) = 30 floats per pixel
    assert ex.activation_bytes(small, 1000, 1000, "encode") == pytest.approx(30 * 4 * 1.25 * 1e6, rel=0.02)
    # 24 MP through the untiled small encoder: ~3.6 GB (measured on the CPU: ~3.8 GB peak RSS)
    assert 3.0e9 < ex.activation_bytes(small, 4000, 6000, "encode") < 4.0e9
    with pytest.raises(ValueError):
        ex.activation_bytes(small, 16, 16, "train")


def test_memory_budget():
    G = 2 ** 30
    assert ex.memory_budget(80 * G, 0.5, 1 * G) == int(39.5 * G)
    assert ex.memory_budget(G // 2, 0.5, G) == 0
    with pytest.raises(ValueError):
        ex.memory_budget(G, 0)


def test_plan_fits_budget():
    MB = 2 ** 20
    p = ex.plan(100 * MB, 64, 2000 * MB, max_batch=32, max_streams=2)
    assert (p.streams, p.batch) == (2, 10) and p.planned_bytes <= p.budget_bytes
    assert ex.plan(100 * MB, 64, 20000 * MB, max_batch=32).batch == 32           # capped by max_batch
    assert ex.plan(100 * MB, 6, 20000 * MB, max_batch=32).batch == 3             # an even share per stream
    p = ex.plan(100 * MB, 64, 150 * MB, max_batch=32, max_streams=2)
    assert (p.streams, p.batch) == (1, 1)                                         # not two images: one stream
    p = ex.plan(100 * MB, 64, 10 * MB, max_batch=32, max_streams=3)
    assert (p.streams, p.batch) == (1, 1)                                         # over budget: still one
    p = ex.plan(100 * MB, 1, 20000 * MB, max_batch=32, max_streams=4)
    assert (p.streams, p.batch) == (1, 1)
    for n in range(1, 40):
        for budget in (50, 250, 900, 5000):
            p = ex.plan(100 * MB, n, budget * MB, max_batch=8, max_streams=3)
            assert 1 <= p.batch <= 8 and 1 <= p.streams <= min(3, n)
            assert p.planned_bytes <= max(p.budget_bytes, p.per_image_bytes)
    with pytest.raises(ValueError):
        ex.plan(0, 1, 1)


def test_runner_max_batch():
    class R:
        profiles = {"encoder": {"ycc": {"min": [1, 3, 16, 16], "opt": [1, 3, 512, 768], "max": [8, 3, 2048, 2048]}}}
    assert ex.runner_max_batch(R()) == 8
    assert ex.runner_max_batch(object()) is None


def test_packed_from_arrays_matches_reference():
    """Host-side unpacking of pack_device's (padded) buffers == reference.pack."""
    from kernels import reference
    torch.manual_seed(2)
    n, L = 15, 4
    e, p, ec = torch.rand(3, n, 6, 10), torch.rand(3, 1, 6, 10), torch.rand(3, 4, 3, 5)
    ref = reference.pack(e, p, ec, n, L)
    lv = np.stack([r.levels for r in ref])[:, None]
    ymax = 6 * 10 * n // 8 + 1
    ybuf = np.zeros((3, ymax), np.uint8)
    for i, r in enumerate(ref):
        ybuf[i, :len(r.ybits)] = np.frombuffer(r.ybits, np.uint8)
    cbuf = np.stack([np.frombuffer(r.cbits, np.uint8) for r in ref])
    got = reference.packed_from_arrays(lv, np.array([r.ynbits for r in ref], np.int32), ybuf, ref[0].cnbits, cbuf)
    for a, b in zip(got, ref):
        assert np.array_equal(a.levels, b.levels) and (a.ybits, a.ynbits, a.cbits, a.cnbits) == \
            (b.ybits, b.ynbits, b.cbits, b.cnbits)


def test_stream_executor_refuses_a_cpu_device(codec):
    with pytest.raises(ValueError, match="CUDA"):
        ex.StreamExecutor(codec.runner.device)


# ----------------------------------------------------------------------------- the stream executor, no GPU

@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.parametrize("entropy", ["context", "none"])
def test_stream_executor_on_cpu_stand_ins(tiny_root, kernels, entropy):
    """compress_batch / decompress_batch on the stream executor with synchronous stand-ins
    for streams, events and pinned memory: chunks over slots, buffer reuse, pack_device
    + host unpacking, gray / raw / failing / tiled items; bytes equal the single-image API."""
    from PIL import Image
    from fake_cuda import FakeCuda
    c = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels=kernels, entropy=entropy,
                     tile_pixels=150 * 150, tile_size=64)
    rng = np.random.default_rng(8)
    imgs = [rng.integers(0, 256, s + (3,), dtype=np.uint8)
            for s in [(32, 48)] * 7 + [(30, 40), (17, 9), (160, 200), (31, 47)]]
    items = [*imgs[:3], Image.fromarray(imgs[3][:, :, 0]), np.zeros((3, 3), np.float64), *imgs[4:]]
    single = [c.compress(x) if k != 4 else None for k, x in enumerate(items)]
    fake = FakeCuda()
    out = c.compress_batch(items, batch_size=2, errors="return", pipeline={"streams": 3, "api": fake})
    assert isinstance(out[4], engine.ImageError)
    assert [o for k, o in enumerate(out) if k != 4] == [b for k, b in enumerate(single) if k != 4]
    assert len(fake.streams) == 3
    blobs = [b for b in single if b is not None]
    blobs.insert(2, b"HNLC junk")
    fake2 = FakeCuda()
    dec = c.decompress_batch(blobs, batch_size=2, errors="return", pipeline={"streams": 2, "api": fake2})
    assert isinstance(dec[2], engine.BitstreamError)
    for d, b in zip(dec[:2] + dec[3:], blobs[:2] + blobs[3:]):
        assert np.array_equal(d, c.decompress(b))
    # pinned buffers are per slot and reused, not allocated per chunk: 6 chunks of one
    # shape on 2 slots make each slot's named buffers once
    enc, dec = FakeCuda(), FakeCuda()
    same = c.compress_batch([imgs[0]] * 12, batch_size=2, pipeline={"streams": 2, "api": enc})
    c.decompress_batch(same, batch_size=2, pipeline={"streams": 2, "api": dec})
    assert enc.pinned_allocs == 2 * (5 if kernels == "triton" else 1)     # rgb (+ lv, ynbits, ybuf, cbuf)
    assert dec.pinned_allocs == 2 * (4 if entropy == "context" else 1)    # (lv, y, c +) rgb_out


def test_stream_executor_plans_from_budget(tiny_root):
    from fake_cuda import FakeCuda
    c = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch")
    per = ex.activation_bytes(c.config, 32, 48, "encode")
    rng = np.random.default_rng(9)
    imgs = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(9)]
    fake = FakeCuda()
    executor = ex.StreamExecutor(c.runner.device, streams=2, budget_bytes=5 * per, api=fake)
    assert c.compress_batch(imgs, batch_size=8, executor=executor) == [c.compress(x) for x in imgs]
    ((key, p),) = executor.plans
    assert (p.streams, p.batch) == (2, 2) and p.planned_bytes <= 5 * per and len(fake.streams) == 2


# ----------------------------------------------------------------------------- stage timing

def test_stage_timer_records_codec_stages(tiny_root):
    c = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch")
    c.timer = StageTimer()
    img = _photo(48, 64)
    data = c.compress(img)
    enc = c.timer.totals()
    assert {"preprocess", "network", "bitpath", "entropy", "container"} <= set(enc)
    assert all(v >= 0 for v in enc.values())
    c.timer.reset()
    c.decompress_batch([data, data], batch_size=2)
    dec = c.timer.counts()
    assert dec["container"] == 2 and dec["entropy"] == 2 and dec["network"] == 1 and dec["postprocess"] == 1
    spans = c.timer.spans()
    assert spans == sorted(spans, key=lambda s: s["start"]) and all(s["end"] >= s["start"] for s in spans)
    assert all(s["lane"].startswith("cpu:") for s in spans)
    c.timer = None
    assert c.compress(img) == data


# ----------------------------------------------------------------------------- bench smoke

def _write_images(folder: Path, n: int, shape=(64, 96)):
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(_photo(*shape, seed=i)).save(folder / f"img{i}.png")


def test_bench_throughput_smoke(tiny_root, tmp_path):
    from bench import throughput
    data = tmp_path / "imgs"
    _write_images(data, 2)
    out = throughput.main(["--data", str(data), "--model", "tiny", "--model-dir", str(tiny_root),
                           "--backends", "torch", "--batches", "1,2", "--threads", "1", "--repeat", "2",
                           "--out", str(tmp_path / "res"), "--build-dir", str(tmp_path / "build"),
                           "--peak-size", "256", "--no-baselines"])
    files = sorted(p.name for p in (tmp_path / "res").iterdir())
    assert any(f.endswith(".json") for f in files) and any(f.endswith(".md") for f in files)
    assert any(f.endswith(".png") for f in files)
    js = json.loads(next((tmp_path / "res").glob("*.json")).read_text())
    rows = js["rows"]
    assert len(rows) == 4  # two rounds, one row (the best round) per cell
    assert {(r["backend"], r["batch"], r["op"]) for r in rows} == {
        ("torch", b, op) for b in (1, 2) for op in ("encode", "decode")}
    for r in rows:
        assert r["images_per_s"] > 0 and r["megapixels_per_s"] > 0 and r["images"] % r["batch"] == 0
        assert set(r["stages_ms_per_image"]) >= {"network", "entropy"}
    assert js["floor"]["gflop_per_image"]["encode"] > 0 and js["peak_gflops"] > 0
    assert out["machine"]["cpu"]


# ----------------------------------------------------------------------------- slow

@pytest.mark.slow
def test_bench_throughput_with_onnxruntime_and_baselines(tiny_root, tmp_path):
    from bench import throughput
    data = tmp_path / "imgs"
    _write_images(data, 2, (96, 128))
    out = throughput.main(["--data", str(data), "--model", "tiny", "--model-dir", str(tiny_root),
                           "--batches", "1,4", "--threads", "1", "--out", str(tmp_path / "res"),
                           "--build-dir", str(tmp_path / "build"), "--peak-size", "256"])
    backends = {r["backend"] for r in out["rows"]}
    assert {"torch", "onnxruntime"} <= backends
    # auto prefers OpenVINO (bf16) on a CPU with bf16 matrix units, ONNX Runtime elsewhere
    from engine.runners.select import openvino_preferred
    want = "openvino" if openvino_preferred("cpu", "auto")[0] else "onnxruntime"
    assert want in backends
    assert out["default_backend"] == want and out["default_vs_torch"]
    assert {"JPEG (Pillow)", "WebP (Pillow)"} <= set(out["baselines"])


def _rss_model():
    """The shipped model when it is there, else tiny (random weights)."""
    from engine.net.checkpoint import CHECKPOINT_DIR, DEFAULT_MODEL
    return ["--model", DEFAULT_MODEL] if (CHECKPOINT_DIR / DEFAULT_MODEL / "model.json").exists() else ["--model", "tiny"]


@pytest.mark.slow
def test_24mp_compress_peak_rss_under_4gb():
    """6000x4000 through compress (tiled by default) in a fresh process: peak RSS < 4 GB."""
    cmd = [sys.executable, "-m", "bench.peak_rss", *_rss_model(), "--size", "6000x4000", "--threads", "2"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    print(info)
    assert info["tile_pixels"] and 24e6 > info["tile_pixels"]        # the default does tile 24 MP
    assert info["peak_rss_compress_mb"] * 2 ** 20 < 4e9


@pytest.mark.slow
def test_tiled_bytes_equal_untiled_small_config_default_tiles(tmp_path):
    """The default tile size on a 2 x 2 tile image with the small config (random weights)."""
    from engine.net.checkpoint import write_model_dir
    torch.manual_seed(3)
    write_model_dir(tmp_path / "small", CodecNet(CONFIGS["small"]), {1: 0.0})
    img = _photo(2100, 2100, 7)
    a = engine.Codec(model="small", root=tmp_path, backend="torch", kernels="torch", tile_pixels=0)
    b = engine.Codec(model="small", root=tmp_path, backend="torch", kernels="torch", tile_pixels=1)
    assert b.tile_size == 2048
    da = a.compress(img)
    assert da == b.compress(img)
    _close_pixels(a.decompress(da), b.decompress(da))


def test_lazy_planes_crops_equal_the_padded_planes():
    """LazyPlanes (a tiled encode's planes, converted tile by tile) against the whole
    image's padded planes: every crop bit-identical, inside, across and past the edge."""
    from engine.io.planes import LazyPlanes, crop_planes, preprocess_tensor
    rng = np.random.default_rng(31)
    for h, w in [(37, 53), (64, 48), (1, 1), (17, 90)]:
        rgb = torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        full = preprocess_tensor(rgb, 16)
        lazy = LazyPlanes(rgb, 16)
        assert lazy.shape == tuple(full.shape)
        H, W = full.shape[-2:]
        crops = [(0, H, 0, W), (0, 16, 0, 16), (H - 16, H, W - 16, W)]
        crops += [tuple(sorted(rng.integers(0, H + 1, 2))) + tuple(sorted(rng.integers(0, W + 1, 2))) for _ in range(40)]
        for r0, r1, s0, s1 in crops:
            if r1 > r0 and s1 > s0:
                assert torch.equal(crop_planes(lazy, r0, r1, s0, s1), full[:, :, r0:r1, s0:s1]), (h, w, r0, r1, s0, s1)


def _fused_chain_spec() -> np.ndarray:
    """The encoder's colour conversion of every pixel (r, g, b) as the float32 fused
    multiply-add chain ``fma(b, m2, fma(g, m1, r * m0)) + offset`` (engine/io/color.py
    rgb8_to_ycbcr): (3, 256, 256, 256) float32.  Float64 sums stand for the fused
    operations; asserted: no float64 sum was rounded onto a float32 value or a
    midpoint between two, the only places where rounding twice (to float64, then
    float32) can differ from rounding once."""
    from engine.io.color import _OFF32, RGB2YCC
    m = RGB2YCC.numpy().astype(np.float32)
    x = np.arange(256, dtype=np.float32) / np.float32(255)
    assert np.array_equal(x, torch.arange(256, dtype=torch.uint8).float().div_(255).numpy())
    x64 = x.astype(np.float64)

    def fused(t32, p):               # round32(t32 + p), p exact in float64
        s = t32.astype(np.float64) + p
        bb = s - t32
        err = (t32 - (s - bb)) + (p - bb)          # TwoSum: s + err == t32 + p exactly
        s32 = s.astype(np.float32)
        sn, qn = s[err != 0], s32[err != 0]          # the inexact float64 sums
        q = qn.astype(np.float64)
        lo = np.nextafter(qn, np.float32(-np.inf)).astype(np.float64)
        hi = np.nextafter(qn, np.float32(np.inf)).astype(np.float64)
        assert not ((sn == q) | (sn == (q + lo) / 2) | (sn == (q + hi) / 2)).any()
        return s32

    out = np.empty((3, 256, 256, 256), np.float32)
    for i in range(3):
        rg = fused((x * m[i, 0])[:, None], (x64 * np.float64(m[i, 1]))[None, :])   # (r, g)
        pb = (x64 * np.float64(m[i, 2]))[None, None, :]
        for r0 in range(0, 256, 32):
            out[i, r0:r0 + 32] = fused(rg[r0:r0 + 32, :, None], pb) + np.float32(_OFF32[i])
    return out


def test_encoder_colour_is_the_fused_chain_for_every_pixel():
    """Issue #28, item 12: the encoder's planes are one fixed function of the pixel.
    All 2^24 RGB values (a 4096x4096 image) against the spec above, and the same
    values from other chunkings, crops and a non-contiguous input."""
    import engine.io.color as color
    v = np.arange(256, dtype=np.uint8)
    every = np.empty((256, 256, 256, 3), np.uint8)
    every[..., 0], every[..., 1], every[..., 2] = v[:, None, None], v[None, :, None], v
    rgb = torch.from_numpy(every.reshape(4096, 4096, 3))
    got = color.rgb8_to_ycbcr(rgb, torch.empty((3, 4096, 4096))).view(3, 256, 256, 256)
    assert np.array_equal(got.numpy(), _fused_chain_spec())
    part = rgb[1000:1333, 77:3077]
    want = got.view(3, 4096, 4096)[:, 1000:1333, 77:3077]
    old = color.CHUNK_PIXELS["cpu"]
    try:
        for chunk in (1, 4999, 1 << 22):
            color.CHUNK_PIXELS["cpu"] = chunk
            assert torch.equal(color.rgb8_to_ycbcr(part, torch.empty((3, 333, 3000))), want), chunk
    finally:
        color.CHUNK_PIXELS["cpu"] = old
    assert torch.equal(color.rgb8_to_ycbcr(part.transpose(0, 1), torch.empty((3, 3000, 333))),
                       want.transpose(1, 2))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_10000x10000_png_compress_peak_rss_under_3gb(backend, request):
    """Issue #13: a 10000x10000 black PNG (the in-limit maximum) compresses from its path
    within 3 GB peak RSS on both backends (bench/peak_rss.py, its own process): the
    tiled encode converts its planes tile by tile (engine/io/planes.py LazyPlanes)."""
    import os
    env = dict(os.environ)
    if backend == "onnxruntime":            # a clean clone has no artifacts: built for the test
        env["ENGINE_BUILD_DIR"] = str(request.getfixturevalue("shipped_ort_build"))
    cmd = [sys.executable, "-m", "bench.peak_rss", "--input", "black-png", "--size", "10000x10000",
           "--backend", backend, "--threads", "2"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["peak_rss_compress_mb"] < 3 * 1024, info
