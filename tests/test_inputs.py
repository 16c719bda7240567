"""Input normalisation (engine/io/imageio.py, issue #13): every input is a plain
C-contiguous uint8 array scaled by its mode, oriented and in sRGB, and every
input failure is an ImageError."""
import io
import os
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

import engine
from engine.errors import ImageError
from engine.io.imageio import COLOR_GRAY, COLOR_RGB, to_rgb


@pytest.fixture(scope="module")
def codec(tiny_root):
    return engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch")


def test_ndarray_subclasses_are_coded_as_plain_arrays():
    """np.asmatrix used to abort the process ("double free or corruption", the shipped
    model at 64x96): run it in a child so that a crash fails this test, not the run."""
    code = """
import numpy as np, engine
c = engine.Codec(backend="torch", kernels="torch")
a = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)[:, :, 0]   # a strided view
assert c.compress(np.asmatrix(a)) == c.compress(a)
m = np.ma.masked_array(a, mask=a > 200)
assert c.compress(m) == c.compress(a)
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_normalised_array_is_a_contiguous_base_ndarray():
    class Sub(np.ndarray):
        pass
    a = np.random.default_rng(1).integers(0, 256, (10, 14, 4), dtype=np.uint8)
    for img in (a.view(Sub), a[:, ::-1], np.asfortranarray(a), a[::2, ::2, :3]):
        rgb, color = to_rgb(img)
        assert type(rgb) is np.ndarray and rgb.flags.c_contiguous and color == COLOR_RGB
        assert np.array_equal(rgb, np.asarray(img)[:, :, :3])


def _png_bytes(im, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_every_pil_failure_is_an_image_error(codec, tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    data = _png_bytes(Image.fromarray(rgb))
    p = tmp_path / "cut.png"
    p.write_bytes(data[:len(data) // 2])
    lazy = Image.open(p)                       # opened lazily: the truncation shows at load()
    with pytest.raises(ImageError):
        codec.compress(lazy)
    lazy.close()
    whole = tmp_path / "whole.png"
    whole.write_bytes(data)
    with Image.open(whole) as closed:
        pass                                   # its with block closed the file before loading
    with pytest.raises(ImageError):
        codec.compress(closed)
    with pytest.raises(ImageError):
        codec.compress(torch.empty(3, 8, 8, device="meta"))
    with pytest.raises(ImageError):
        codec.compress(p)


def test_premultiplied_alpha_modes_are_read(codec):
    """'La' and 'RGBa' used to raise a plain ValueError; opaque pixels equal the plain mode's."""
    g = np.random.default_rng(3).integers(0, 256, (16, 24), dtype=np.uint8)
    la = Image.merge("LA", [Image.fromarray(g), Image.new("L", (24, 16), 255)])
    assert codec.compress(la.convert("La")) == codec.compress(g)
    rgb = np.random.default_rng(4).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    rgba = Image.fromarray(np.concatenate([rgb, np.full((16, 24, 1), 255, np.uint8)], 2), "RGBA")
    assert codec.compress(rgba.convert("RGBa")) == codec.compress(rgb)


def _fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    f = tmp_path / "pipe.png"
    os.mkfifo(f)
    return f


def _returns_without_blocking(fn, fifo, seconds=60):
    """Run fn in a thread; if it is still waiting on the FIFO after ``seconds``, open the
    FIFO's write end to release it (so the test fails instead of hanging)."""
    box = {}

    def go():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - examined below
            box["error"] = e
    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(seconds)
    blocked = t.is_alive()
    if blocked:
        with open(fifo, "wb"):
            pass
        t.join(30)
    assert not blocked, "reading the FIFO blocked"
    return box


def test_special_files_are_refused_without_blocking(codec, tmp_path):
    fifo = _fifo(tmp_path)
    box = _returns_without_blocking(lambda: codec.compress(fifo), fifo)
    assert isinstance(box.get("error"), ImageError) and "FIFO" in str(box["error"]), box
    with pytest.raises(ImageError, match="folder"):
        codec.compress(tmp_path)
    if os.path.exists("/dev/zero"):
        with pytest.raises(ImageError, match="device"):
            codec.compress("/dev/zero")


def test_16_bit_images_are_scaled_by_mode_not_data():
    """One pixel 255 -> 256 used to rescale the whole image (8-bit guess by max <= 255)."""
    a = np.full((8, 10), 255, np.uint16)
    b = a.copy()
    b[0, 0] = 256
    for mode_arr in (lambda x: Image.fromarray(x),                            # I;16
                     lambda x: Image.fromarray(x.astype(np.int32), "I")):     # Pillow's 16-bit PNG mode
        ra, ca = to_rgb(mode_arr(a))
        rb, _ = to_rgb(mode_arr(b))
        assert ca == COLOR_GRAY
        assert np.array_equal(ra.reshape(-1, 3)[1:], rb.reshape(-1, 3)[1:])   # the other pixels unchanged
        full = np.array([[0, 257, 32896, 65535]], np.uint16)
        out = to_rgb(mode_arr(full))[0][0, :, 0]
        assert out.tolist() == [0, 1, 128, 255]                                 # x 255/65535


def test_float_images_are_unit_range():
    """An F image in [0, 1] used to come back black; values outside the range or NaN are refused."""
    f = Image.fromarray(np.array([[0.0, 0.25, 0.5, 1.0]], np.float32), "F")
    assert to_rgb(f)[0][0, :, 0].tolist() == [0, 64, 128, 255]
    for bad in (np.array([[0.0, 255.0]], np.float32), np.array([[np.nan, 0.5]], np.float32)):
        with pytest.raises(ImageError):
            to_rgb(Image.fromarray(bad, "F"))


def test_float_tensors_0_255_and_nan_refused(codec):
    x = torch.rand(3, 8, 8)
    assert codec.compress(x) == codec.compress((x * 255).round().to(torch.uint8))
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        codec.compress(x * 255)
    y = x.clone()
    y[0, 0, 0] = float("nan")
    with pytest.raises(ImageError, match="NaN"):
        codec.compress(y)


def test_exif_orientation_applied(tmp_path):
    rgb = np.random.default_rng(5).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6                  # Orientation: rotate 90 degrees clockwise to display
    p = tmp_path / "o.png"
    Image.fromarray(rgb).save(p, exif=exif)
    out, _ = to_rgb(p)
    assert np.array_equal(out, np.rot90(rgb, -1))
    with Image.open(p) as im:
        assert np.array_equal(to_rgb(im)[0], np.rot90(rgb, -1))
        assert im.size == (20, 12)    # the caller's image is left as it is
    j = tmp_path / "o.jpg"
    Image.fromarray(rgb).save(j, exif=exif, quality=95)
    assert to_rgb(j)[0].shape == (20, 12, 3)


def _linear_rgb_profile() -> bytes:
    """lcms's sRGB profile with its tone curves set to gamma 1 and its name changed:
    an RGB profile that is not sRGB."""
    b = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    i = b.find(b"para")
    struct.pack_into(">HHi", b, i + 8, 0, 0, 1 << 16)           # function type 0, gamma 1.0
    j = b.find("sRGB".encode("utf-16-be"))
    b[j:j + 8] = "line".encode("utf-16-be")
    return bytes(b)


def test_icc_profile_converted_to_srgb(tmp_path):
    prof = _linear_rgb_profile()
    assert "srgb" not in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(prof))).lower()
    a = np.full((8, 8, 3), 128, np.uint8)
    p = tmp_path / "lin.png"
    Image.fromarray(a).save(p, icc_profile=prof)
    out, color = to_rgb(p)
    # linear 0.502 is sRGB 0.735 (x255 = 187.5): the pixels are converted, not taken as they are
    assert color == COLOR_RGB and np.all(np.abs(out.astype(int) - 188) <= 2), out[0, 0]
    s = tmp_path / "srgb.png"
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(a).save(s, icc_profile=srgb)
    assert np.array_equal(to_rgb(s)[0], a)            # already sRGB: untouched


def test_batch_calls_refuse_a_single_item(codec, tmp_path):
    a = np.random.default_rng(6).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    p = tmp_path / "a.png"
    Image.fromarray(a).save(p)
    for one in (a, str(p), p, Image.fromarray(a), torch.from_numpy(a).permute(2, 0, 1)):
        with pytest.raises(ImageError, match="iterable"):
            codec.compress_batch(one)
    data = codec.compress(a)
    with pytest.raises(ImageError, match="iterable"):
        codec.decompress_batch(data)
    stack = np.stack([a, a[::-1].copy()])                  # a 4-D array is a batch
    assert codec.compress_batch(stack) == [codec.compress(a), codec.compress(a[::-1].copy())]
