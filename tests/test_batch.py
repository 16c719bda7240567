import numpy as np
import pytest
import torch

import engine
from engine.errors import BitstreamError, ImageError


@pytest.fixture(scope="module")
def codec(tiny_root):
    return engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch")


def _images():
    rng = np.random.default_rng(11)
    shapes = [(32, 48), (30, 40), (32, 48), (17, 9), (64, 16), (31, 47)]
    return [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in shapes]


def test_batch_bytes_equal_single_and_order_kept(codec, tmp_path):
    imgs = _images()
    from PIL import Image
    p = tmp_path / "p.png"
    Image.fromarray(imgs[1]).save(p)
    mixed = [imgs[0], p, torch.from_numpy(imgs[2]).permute(2, 0, 1), *imgs[3:]]
    out = codec.compress_batch(mixed, batch_size=3)
    single = [codec.compress(x) for x in imgs]
    assert out == single
    dec = codec.decompress_batch(out, batch_size=4)
    for d, b in zip(dec, single):
        assert np.array_equal(d, codec.decompress(b))


def test_bad_item_does_not_fail_the_batch(codec, tmp_path):
    imgs = _images()[:3]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8garbage")
    out = codec.compress_batch([imgs[0], bad, imgs[1], np.zeros((3, 3), np.float64), imgs[2]], errors="return")
    assert isinstance(out[1], ImageError) and isinstance(out[3], ImageError)
    assert out[0] == codec.compress(imgs[0]) and out[2] == codec.compress(imgs[1]) and out[4] == codec.compress(imgs[2])
    with pytest.raises(ImageError):
        codec.compress_batch([imgs[0], bad])
    blobs = [out[0], b"HNLC junk", out[2]]
    dec = codec.decompress_batch(blobs, errors="return")
    assert isinstance(dec[1], BitstreamError)
    assert np.array_equal(dec[0], codec.decompress(out[0])) and np.array_equal(dec[2], codec.decompress(out[2]))
    with pytest.raises(ValueError):
        codec.compress_batch(imgs, errors="ignore")


def test_decode_window_smaller_than_the_batch_list(codec):
    """batch_size=1 keeps only a few parses ahead of the network: every item still
    decodes as on its own, a corrupt one in the middle fails alone, progress counts all."""
    imgs = _images()
    blobs = [codec.compress(x) for x in imgs]
    blobs.insert(3, blobs[0][:-5])
    seen = []
    dec = codec.decompress_batch(blobs, batch_size=1, errors="return", progress=seen.append)
    assert isinstance(dec[3], BitstreamError) and sum(seen) == len(blobs)
    for d, b in zip(dec[:3] + dec[4:], blobs[:3] + blobs[4:]):
        assert np.array_equal(d, codec.decompress(b))


def test_iterators_stream_in_bounded_memory(codec):
    """compress_iter / decompress_iter pull inputs lazily: however long the stream, the
    items taken but not yet given back stay within a few windows; results are in order
    and equal to one-at-a-time; an exception object in the stream is that item's error."""
    imgs = _images()
    single = [codec.compress(x) for x in imgs]
    window, n = 4, 30
    pulled = []

    def stream(items):
        for k in range(n):
            pulled.append(k)
            yield items[k % len(items)] if k != 7 else ValueError("unreadable")

    got = []
    for data in codec.compress_iter(stream(imgs), batch_size=2, window=window, errors="return"):
        got.append(data)
        assert len(pulled) - len(got) <= 3 * window + 1      # buckets <= window, results <= 2 x window
    assert len(got) == n and isinstance(got[7], ValueError)
    assert all(g == single[k % len(imgs)] for k, g in enumerate(got) if k != 7)

    pulled.clear()
    dec = []
    for rgb in codec.decompress_iter(stream(single), batch_size=2, window=window, errors="return"):
        dec.append(rgb)
        assert len(pulled) - len(dec) <= 4 * window + 1      # + parses ahead <= window
    assert len(dec) == n and isinstance(dec[7], ValueError)
    for k, d in enumerate(dec):
        if k != 7:
            assert np.array_equal(d, codec.decompress(single[k % len(imgs)]))
    with pytest.raises(ValueError, match="unreadable"):
        list(codec.compress_iter(stream(imgs), batch_size=2, window=window))
