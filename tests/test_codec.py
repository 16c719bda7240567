"""Compress -> file -> decompress with the tiny model (random weights)."""
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import engine
from engine.format import bitstream
from engine.errors import BitstreamError, ImageError, ImageTooLargeError


@pytest.fixture(scope="module", params=["rans", "context", "none"])
def codec(request, tiny_root):
    return engine.Codec(model="tiny", root=tiny_root, entropy=request.param, backend="torch", kernels="torch")


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (16, 16), (33, 17)])
def test_round_trip_odd_sizes(codec, shape):
    rng = np.random.default_rng(sum(shape))
    img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    data = codec.compress(img)
    out = codec.decompress(data)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out, _plain_round_trip(codec, img))
    # decoding is deterministic and the same bytes come back for the same input
    assert codec.compress(img) == data
    assert np.array_equal(codec.decompress(data), out)


def _plain_round_trip(codec, img):
    """The oracle: the plain pieces composed by hand -- planes, runner, reference bit
    path, runner, planes -- with no stages, scheduler, executor or entropy coder."""
    from kernels import reference
    from engine.io.planes import postprocess, preprocess
    cfg = codec.config
    e, p, ec = codec.runner.encode(preprocess(img, cfg.multiple))
    lv, bits, cbits = reference.unpack(reference.pack(e, p, ec, cfg.n, cfg.levels), cfg.n, cfg.m, cfg.levels)
    return postprocess(codec.runner.decode(bits, lv, cbits), *img.shape[:2])


def test_round_trip_large_odd(tiny_root):
    codec = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch", tile_pixels=0)
    img = np.random.default_rng(0).integers(0, 256, (513, 769, 3), dtype=np.uint8)
    out = codec.decompress(codec.compress(img))
    assert out.shape == (513, 769, 3) and np.array_equal(out, _plain_round_trip(codec, img))


def test_shipped_model_reconstructs_a_photo():
    """The shipped model's round trip looks like its input (a crop of a held-out
    training photo when ../shared is there, else a smooth synthetic photo)."""
    from engine.net.checkpoint import CHECKPOINT_DIR
    if not (CHECKPOINT_DIR / "small" / "model.json").exists():
        pytest.skip("the shipped model is not in this checkout")
    from bench.peak_rss import synthetic_photo
    img = synthetic_photo(128, 192, 3)
    out = engine.Codec(quality=5, backend="torch", kernels="torch").decompress(
        engine.Codec(quality=5, backend="torch", kernels="torch").compress(img))
    mse = np.mean((out.astype(np.float64) - img) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 22


def test_file_header_fields(codec):
    img = np.zeros((20, 30, 3), np.uint8)
    data = codec.compress(img)
    assert data[:4] == b"HNLC" and data[4] == (2 if codec.entropy_name == "rans" else 1)
    k = data[8]
    assert data[9:9 + k] == b"tiny"
    w, h = struct.unpack_from("<II", data, 9 + k + 8)
    assert (w, h) == (30, 20)


def test_raw_and_context_decode_identically(tiny_root):
    img = np.random.default_rng(5).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    a = engine.Codec(model="tiny", root=tiny_root, entropy="none", backend="torch")
    b = engine.Codec(model="tiny", root=tiny_root, entropy="context", backend="torch")
    assert np.array_equal(a.decompress(a.compress(img)), b.decompress(b.compress(img)))
    # either codec reads either file (the mode is in the header)
    assert np.array_equal(a.decompress(b.compress(img)), b.decompress(a.compress(img)))


def test_inputs_pil_path_tensor_gray_rgba(codec, tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    pil = Image.fromarray(rgb)
    p = tmp_path / "x.png"
    pil.save(p)
    ref = codec.compress(rgb)
    assert codec.compress(pil) == ref
    assert codec.compress(p) == ref
    assert codec.compress(str(p)) == ref
    assert codec.compress(torch.from_numpy(rgb).permute(2, 0, 1)) == ref
    # RGBA: alpha dropped
    rgba = np.concatenate([rgb, np.full((24, 40, 1), 7, np.uint8)], 2)
    assert codec.compress(rgba) == ref
    assert codec.compress(Image.fromarray(rgba, "RGBA")) == ref
    # grayscale: coded as Y only, decoded as three equal channels
    g = rng.integers(0, 256, (24, 40), dtype=np.uint8)
    out = codec.decompress(codec.compress(Image.fromarray(g, "L")))
    assert out.shape == (24, 40, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert codec.compress(g) == codec.compress(Image.fromarray(g, "L"))


def test_bad_inputs_raise_typed_errors(codec, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="cannot read image"):
        codec.compress(bad)
    with pytest.raises(ImageError):
        codec.compress(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="uint8"):
        codec.compress(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ImageError, match="shape"):
        codec.compress(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ImageError):
        codec.compress(np.zeros((0, 4, 3), np.uint8))
    small = engine.Codec(model="tiny", root=codec.root, max_pixels=100, backend="torch")
    with pytest.raises(ImageTooLargeError, match="limit"):
        small.compress(np.zeros((11, 10, 3), np.uint8))
    assert issubclass(engine.BitstreamError, ValueError) and issubclass(ImageError, ValueError)


def _good(codec):
    return codec.compress(np.random.default_rng(9).integers(0, 256, (32, 48, 3), dtype=np.uint8))


def test_bad_files_rejected(codec):
    data = _good(codec)
    with pytest.raises(BitstreamError, match="truncated"):
        codec.decompress(data[:10])
    with pytest.raises(BitstreamError):
        codec.decompress(data[:-1])
    with pytest.raises(BitstreamError, match="magic"):
        codec.decompress(b"JUNK" + data[4:])
    with pytest.raises(BitstreamError, match="version 7"):
        codec.decompress(data[:4] + b"\x07" + data[5:])
    flipped = bytearray(data)
    flipped[-1] ^= 0x10
    with pytest.raises(BitstreamError, match="checksum"):
        codec.decompress(bytes(flipped))
    with pytest.raises(BitstreamError):
        codec.decompress(b"")
    with pytest.raises(BitstreamError):
        codec.decompress("not bytes")


def _rewrite(data, **changes):
    """Re-serialise a file with header fields changed and a fresh CRC."""
    hdr, body = bitstream.read(data, 10 ** 9)
    import dataclasses
    hdr = dataclasses.replace(hdr, **changes)
    if hdr.version == bitstream.VERSION_LANES:
        return bitstream.write_lanes(hdr, [body.lane(i) for i in range(len(body))])
    return bitstream.write(hdr, *body)


def test_wrong_model_or_quality_says_what_is_needed(codec, tiny_root):
    data = _good(codec)
    with pytest.raises(BitstreamError, match="model 'other'"):
        codec.decompress(_rewrite(data, model="other"))
    with pytest.raises(BitstreamError, match="quality 9"):
        codec.decompress(_rewrite(data, quality=9))
    with pytest.raises(BitstreamError, match="different version"):
        codec.decompress(_rewrite(data, stream_id=b"\0" * 8))
    # another quality of the same model decodes: the codec loads that rung
    other = engine.Codec(model="tiny", root=tiny_root, quality=1, backend="torch")
    assert np.array_equal(other.decompress(data), codec.decompress(data))


def test_decompression_bomb_checked_before_allocation(codec):
    data = _rewrite(_good(codec), width=60000, height=60000)
    with pytest.raises(BitstreamError, match="limit"):
        codec.decompress(data)


_RECUT = {"map short": lambda m, y, c: (m[:-1], y, c), "Y long": lambda m, y, c: (m, y + b"\0\0\0\0", c),
          "CbCr short": lambda m, y, c: (m, y, c[:-4])}


@pytest.mark.parametrize("cut", ["map short", "Y long", "CbCr short", "gray with CbCr"])
def test_length_edit_consistent_crc_rejected(tiny_root, cut):
    """A file whose sections are re-cut but whose CRC is right fails with a BitstreamError.
    The raw coder checks every section length; the context coder re-encodes what it
    decoded and compares (issue #13: these cases used to decode)."""
    if cut == "gray with CbCr":
        codec = engine.Codec(model="tiny", root=tiny_root, entropy="context", backend="torch", kernels="torch")
        gray = np.random.default_rng(8).integers(0, 256, (24, 40), dtype=np.uint8)
        color = codec.compress(np.random.default_rng(8).integers(0, 256, (24, 40, 3), dtype=np.uint8))
        hdr, (m, y, c) = bitstream.read(codec.compress(gray), 10 ** 9)
        _, (_, _, c_color) = bitstream.read(color, 10 ** 9)
        assert c == b"" and c_color
        with pytest.raises(BitstreamError):
            codec.decompress(bitstream.write(hdr, m, y, c_color))
        return
    for entropy in ("none", "context"):
        codec = engine.Codec(model="tiny", root=tiny_root, entropy=entropy, backend="torch", kernels="torch")
        hdr, (m, y, c) = bitstream.read(_good(codec), 10 ** 9)
        with pytest.raises(BitstreamError):
            codec.decompress(bitstream.write(hdr, *_RECUT[cut](m, y, c)))


def test_cli_round_trip_and_errors(tiny_root, tmp_path):
    img = np.random.default_rng(4).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    src = tmp_path / "a.png"
    Image.fromarray(img).save(src)
    (tmp_path / "broken.png").write_bytes(b"xx")
    out = tmp_path / "out"
    base = [sys.executable, "-m", "engine"]
    common = ["--model", "tiny", "--model-dir", str(tiny_root), "--backend", "torch"]
    r = subprocess.run(base + ["compress", str(src), "-o", str(out)] + common, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "a.hnlc").exists()
    r = subprocess.run(base + ["compress", str(src), "-o", str(out)] + common, capture_output=True, text=True)
    assert r.returncode == 0 and "1 skipped" in r.stderr  # resumable: finished outputs are kept
    r = subprocess.run(base + ["compress", str(tmp_path / "broken.png"), str(src), "-o", str(out), "--force"] + common,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "broken.png" in r.stderr and "Traceback" not in r.stderr
    assert (out / "a.hnlc").exists()  # the good image was still written
    dec = tmp_path / "dec"
    r = subprocess.run(base + ["decompress", str(out / "a.hnlc"), "-o", str(dec)] + common, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with Image.open(dec / "a.png") as im:
        assert im.size == (28, 20)
    (tmp_path / "c.hnlc").write_bytes(b"HNLC\x01garbage")
    r = subprocess.run(base + ["decompress", str(tmp_path / "c.hnlc"), "-o", str(dec)] + common, capture_output=True, text=True)
    assert r.returncode == 2 and "error:" in r.stderr and "c.hnlc" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("entropy", ["none", "context"])
def test_triton_and_torch_bit_paths_give_identical_files(tiny_root, entropy):
    """ENGINE_KERNELS=triton (interpreter on the CPU) writes the same bytes as torch."""
    img = np.random.default_rng(21).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    a = engine.Codec(model="tiny", root=tiny_root, entropy=entropy, backend="torch", kernels="torch")
    b = engine.Codec(model="tiny", root=tiny_root, entropy=entropy, backend="torch", kernels="triton")
    fa, fb = a.compress(img), b.compress(img)
    assert fa == fb
    assert np.array_equal(a.decompress(fa), b.decompress(fb))


def test_unknown_kernel_or_backend_name_is_an_error(tiny_root, monkeypatch):
    with pytest.raises(ValueError, match="kernels"):
        engine.Codec(model="tiny", root=tiny_root, kernels="cuda-magic")
    monkeypatch.setenv("ENGINE_KERNELS", "fast")
    with pytest.raises(ValueError, match="ENGINE_KERNELS"):
        engine.Codec(model="tiny", root=tiny_root)
    monkeypatch.delenv("ENGINE_KERNELS")
    with pytest.raises(ValueError, match="backend"):
        engine.Codec(model="tiny", root=tiny_root, backend="tpu")


def test_weights_hashed_once_per_process(tiny_root, monkeypatch):
    """resolve() reads a weights file once while it is unchanged, and again after it changes."""
    import os
    from pathlib import Path
    from engine.net import checkpoint
    from engine.io import imageio
    reads = []
    real = imageio.open_regular

    def counting(path):
        if Path(path).name == "weights.safetensors":
            reads.append(path)
        return real(path)
    monkeypatch.setattr(imageio, "open_regular", counting)
    monkeypatch.setattr(checkpoint, "_HASHES", {})
    a = checkpoint.resolve("tiny", 2, root=tiny_root)
    for q in (1, 2, 3, 2):
        checkpoint.resolve("tiny", q, root=tiny_root)
    engine.Codec(model="tiny", root=tiny_root, backend="torch", quality=3)
    assert len(reads) == 1
    st = a.weights.stat()
    os.utime(a.weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))     # "changed"
    assert checkpoint.resolve("tiny", 2, root=tiny_root).fingerprint == a.fingerprint and len(reads) == 2


FORK_SCRIPT = """
import multiprocessing as mp, sys
import numpy as np, torch, engine
root, backend = sys.argv[1], sys.argv[2]
opts = dict(model="tiny", root=root, backend=backend, kernels="torch", threads=2)
codec = engine.Codec(**opts)
img = np.random.default_rng(3).integers(0, 256, (160, 224, 3), dtype=np.uint8)
data = codec.compress(img)
ref = codec.decompress(data)                   # the parent has run torch's parallel loops


def child(q):
    a = codec.decompress(data)                 # the parent's codec
    b = engine.Codec(**opts).decompress(data)   # a new one, asking for 2 threads
    q.put([int(np.abs(x.astype(int) - ref).max()) for x in (a, b)] + [torch.get_num_threads()])


ctx = mp.get_context("fork")
q = ctx.Queue()
p = ctx.Process(target=child, args=(q,))
p.start()
p.join(150)
if p.is_alive():
    p.kill()
    print("HUNG")
else:
    print(q.get(timeout=10), p.exitcode)
"""


@pytest.mark.parametrize("backend", ["torch", pytest.param("onnxruntime", marks=pytest.mark.slow)])
def test_decoding_in_a_forked_child_does_not_hang(tiny_root, tmp_path, backend):
    """Issue #28, item 7: after the parent decoded, a child forked by multiprocessing
    decodes (GNU OpenMP's pool does not survive fork; engine/forksafe.py sets a forked
    child's torch to one thread), with the parent's codec and with a new one."""
    import os
    env = dict(os.environ)
    if backend == "onnxruntime":
        from engine import build
        res = build.build("tiny", 2, "onnxruntime", "fp32", tmp_path / "build", tiny_root, log=lambda *a, **k: None)
        assert [r.status for r in res] == ["built"]
        env["ENGINE_BUILD_DIR"] = str(tmp_path / "build")
    (tmp_path / "fork.py").write_text(FORK_SCRIPT)
    r = subprocess.run([sys.executable, str(tmp_path / "fork.py"), str(tiny_root), backend],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "HUNG" not in r.stdout, "decoding in a forked child hung"
    diffs, code = r.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert code == "0" and eval(diffs)[:2] <= [1, 1] and eval(diffs)[2] == 1, r.stdout


def test_small_traps_are_typed_errors(tiny_root):
    """Issue #28, item 11: numpy integers are integers and strings are not numbers for the
    target size; threads must be positive; effort > 0 over tile_pixels is an ImageError."""
    from engine import target
    target.check(np.int64(5000), None)
    target.check(None, np.float32(0.3))
    for bad in ("0.3", b"1", True):
        with pytest.raises(ValueError, match="target_bpp"):
            target.check(None, bad)
    with pytest.raises(ValueError, match="max_bytes"):
        target.check(np.float64(5000.0), None)
    for threads in (-1, 0, 1.5, True):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            engine.Codec(model="tiny", root=tiny_root, backend="torch", threads=threads)
    img = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    c = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch", effort=1, tile_pixels=1)
    with pytest.raises(ImageError, match="effort > 0"):
        c.compress(img)
    out = c.compress_batch([img], errors="return")
    assert isinstance(out[0], ImageError)
    data = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch").compress(img, max_bytes=np.int64(10**6))
    assert isinstance(data, bytes)


def test_repr_says_what_the_codec_encodes_with(tiny_root):
    with engine.Codec(quality=2, model="tiny", root=tiny_root, backend="torch", effort=1) as c:
        assert repr(c) == ("Codec(model='tiny', metric='mse', quality=2, effort=1, backend='torch, fp32', "
                           "entropy='rans')")
