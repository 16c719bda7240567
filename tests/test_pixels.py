"""The native pixel conversions (native/pixels.cpp) give exactly the torch code's values
(engine/io/planes.py): the encoder's planes for all 2^24 colours, the decoder's pixels on
random and edge planes, crops and padding, gray files."""
import numpy as np
import pytest
import torch

from engine.io import planes

nat = planes.native_pixels()
pytestmark = pytest.mark.skipif(nat is None, reason="engine.rans_native has no pixel conversions (pip install -e .)")


def test_forward_every_colour_and_padding():
    v = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], -1).astype(np.uint8).reshape(4096, 4096, 3)
    ref = planes._preprocess_torch(torch.from_numpy(rgb), 16)[0].numpy()
    got = planes.preprocess_tensor(torch.from_numpy(rgb), 16)[0].numpy()
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))
    g = np.random.default_rng(5)
    for h, w in [(1, 1), (33, 17), (61, 90), (16, 16), (100, 150)]:
        a = torch.from_numpy(g.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert torch.equal(planes.preprocess_tensor(a, 16), planes._preprocess_torch(a, 16)), (h, w)


@pytest.mark.parametrize("gray", [False, True])
def test_inverse_matches_torch(gray):
    g = np.random.default_rng(6)
    edge = np.array([0, 1, 0.5, -0.0, 1e-8, 0.9999999, 1.0000001, np.inf, -np.inf]
                    + [k / 255 for k in range(0, 256, 5)] + [(k + 0.5) / 255 for k in range(0, 256, 5)], np.float32)
    grid = np.ascontiguousarray(np.stack(np.meshgrid(edge, edge, edge, indexing="ij")).reshape(3, 1, -1))
    cases = [(grid, 1, grid.shape[2])]
    for H, W, h, w in [(512, 768, 512, 768), (512, 784, 500, 771), (64, 96, 61, 90), (16, 16, 1, 1)]:
        cases.append((g.uniform(-0.1, 1.1, (3, H, W)).astype(np.float32), h, w))
        cases.append((g.normal(0.5, 0.3, (3, H, W)).astype(np.float32), h, w))
    for t, h, w in cases:
        x = torch.from_numpy(t)[None]
        assert torch.equal(planes.postprocess_tensor(x, h, w, gray), planes._postprocess_torch(x, h, w, gray))


def test_batches_and_views():
    """Planes of a batch: image k's conversion is its own; a non-contiguous view runs torch's."""
    g = np.random.default_rng(7)
    y = torch.from_numpy(g.uniform(0, 1, (3, 3, 64, 96)).astype(np.float32))
    for k in range(3):
        assert torch.equal(planes.postprocess_tensor(y[k:k + 1], 60, 90), planes._postprocess_torch(y[k:k + 1], 60, 90))
    view = y[:, :, 8:40, 16:80]
    assert torch.equal(planes.postprocess_tensor(view, 30, 60), planes._postprocess_torch(view, 30, 60))


def test_switched_off(monkeypatch):
    monkeypatch.setenv(planes.NATIVE_ENV, "0")
    assert planes._load_native() is None
