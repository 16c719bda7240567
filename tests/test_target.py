"""Target sizes (engine/target.py): compress(img, max_bytes=N | target_bpp=B) and the
CLI's --max-bytes / --target-bpp give the best file that fits, the very bytes of
that rung's own codec; when nothing fits, a TargetSizeError says how small it gets."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import engine
from engine.format import bitstream
from engine.errors import ImageError, TargetSizeError

QS = (1, 2, 3)     # the tiny model's ladder (tests/conftest.py)


def _codec(tiny_root, **kw):
    return engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch", **kw)


def _img(seed=7, shape=(40, 56, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="module")
def ladder(tiny_root):
    """Each rung's own file of the test image (effort 0)."""
    img = _img()
    return img, {q: _codec(tiny_root, quality=q).compress(img) for q in QS}


def _quality(data: bytes) -> int:
    return bitstream.read(data, 10 ** 9)[0].quality


def test_max_bytes_gives_the_highest_rung_that_fits(tiny_root, ladder):
    img, files = ladder
    codec = _codec(tiny_root)
    sizes = sorted({len(d) for d in files.values()})
    for limit in sizes + [s + 1 for s in sizes] + [s - 1 for s in sizes[1:]]:
        out = codec.compress(img, max_bytes=limit)
        q = _quality(out)
        assert len(out) <= limit
        assert out == files[q]                                          # the rung's own bytes
        assert all(len(files[h]) > limit for h in QS if h > q)          # no higher rung fits


def test_target_bpp_is_max_bytes_over_the_images_pixels(tiny_root, ladder):
    img, files = ladder
    codec = _codec(tiny_root)
    h, w = img.shape[:2]
    for q in QS:
        bpp = len(files[q]) * 8 / (w * h)
        out = codec.compress(img, target_bpp=bpp)
        assert len(out) <= len(files[q])                 # a file's own bpp lets that file fit
        assert out == codec.compress(img, max_bytes=len(files[q]))


def test_nothing_fits_says_how_small_it_gets(tiny_root, ladder):
    img, files = ladder
    smallest = min(len(d) for d in files.values())
    with pytest.raises(TargetSizeError, match=f"smallest file is {smallest} bytes") as e:
        _codec(tiny_root).compress(img, max_bytes=smallest - 1)
    assert e.value.smallest == smallest and e.value.limit == smallest - 1
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("kw, match", [
    ({"max_bytes": 0}, "positive"), ({"max_bytes": 10.5}, "positive"), ({"target_bpp": -1}, "positive"),
    ({"target_bpp": float("nan")}, "positive"), ({"max_bytes": 100, "target_bpp": 1.0}, "not both"),
])
def test_bad_targets_are_value_errors(tiny_root, kw, match):
    with pytest.raises(ValueError, match=match):
        _codec(tiny_root).compress(_img(), **kw)


def test_gray_images_stay_gray(tiny_root):
    gray = _img(3, (40, 56))
    files = {q: _codec(tiny_root, quality=q).compress(gray) for q in QS}
    out = _codec(tiny_root).compress(gray, max_bytes=len(files[2]))
    assert bitstream.read(out, 10 ** 9)[0].color == 1 and out == files[_quality(out)]


def test_effort_joins_the_search(tiny_root, ladder):
    """With effort asked for, the file is one of the (rung, effort) candidates' own files
    and fits; its rung is never below the effort-0 search's, the next rung up at the
    effort does not fit, and at its rung the effort's file wins whenever it fits."""
    img, files = ladder
    effort = {q: _codec(tiny_root, quality=q, effort=1).compress(img) for q in QS}
    codec = _codec(tiny_root, effort=1)
    for limit in sorted({len(d) for d in list(files.values()) + list(effort.values())}):
        out = codec.compress(img, max_bytes=limit)
        q = _quality(out)
        assert len(out) <= limit and out in (files[q], effort[q])
        if len(effort[q]) <= limit:
            assert out == effort[q]
        fit0 = [r for r in QS if len(files[r]) <= limit]
        if fit0:
            assert q >= max(fit0)
            assert q + 1 not in QS or len(effort[q + 1]) > limit


def test_batch_and_iter_fit_each_image_with_errors_in_place(tiny_root, ladder):
    img, files = ladder
    limit = len(files[2])
    codec = _codec(tiny_root)
    out = codec.compress_batch([img, "no/such/file.png", img[:20, :28]], max_bytes=limit, errors="return")
    assert out[0] == codec.compress(img, max_bytes=limit)
    assert isinstance(out[1], ImageError)
    assert out[2] == codec.compress(img[:20, :28], max_bytes=limit)
    with pytest.raises(ImageError):
        codec.compress_batch([img, "no/such/file.png"], max_bytes=limit)


def test_cli_max_bytes_and_target_bpp(tiny_root, ladder, tmp_path):
    img, files = ladder
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img[:8, :8]).save(tmp_path / "b.png")
    limit = len(files[2])
    common = [sys.executable, "-m", "engine", "compress", "--model", "tiny", "--model-dir", str(tiny_root),
              "--backend", "torch", "--kernels", "torch"]
    r = subprocess.run(common + [str(tmp_path / "a.png"), "-o", str(tmp_path / "o1"), "--max-bytes", str(limit)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o1" / "a.hnlc").read_bytes() == _codec(tiny_root).compress(tmp_path / "a.png",
                                                                                   max_bytes=limit)
    bpp = 0.01        # under every rung's rate: a.png fails with the smallest size, b.png too
    r = subprocess.run(common + [str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "o2"),
                                 "--target-bpp", str(bpp)], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("smallest file is") == 2 and "a.png" in r.stderr and "b.png" in r.stderr
    assert not (tmp_path / "o2" / "a.hnlc").exists()
    r = subprocess.run(common + [str(tmp_path / "a.png"), "-o", str(tmp_path / "o3"), "-q", "2", "--max-bytes", "99"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "exclude each other" in r.stderr and "Traceback" not in r.stderr
