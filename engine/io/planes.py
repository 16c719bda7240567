"""The layout of an image inside the engine: RGB pixels <-> padded YCbCr planes.

The networks run on (B, 3, H', W') float32 YCbCr in [0, 1], H' and W' rounded up
to the model's multiple (16) by replicating the last row and column; the decoder's
planes are cropped, clamped and rounded back to (h, w, 3) uint8 RGB.  Every path
(single image, batch, CUDA streams, training, shipping) uses these functions, so a
pixel means the same thing everywhere.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

from .. import settings
from .color import RGB2YCC, YCC2RGB, rgb8_to_ycbcr, ycbcr_to_rgb


def padded_size(h: int, w: int, multiple: int) -> tuple[int, int]:
    """The sides the networks run at: h and w rounded up to a multiple."""
    return -(-h // multiple) * multiple, -(-w // multiple) * multiple


def preprocess(rgb: np.ndarray, multiple: int, device="cpu") -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H', W') float32 YCbCr, replicate-padded to a multiple."""
    if not rgb.flags.writeable:
        rgb = rgb.copy()
    return preprocess_tensor(torch.from_numpy(rgb).to(device), multiple)


# The decoder's colour conversion runs in row strips of about this many pixels, written
# into the one output tensor: a whole-image conversion holds several full-size float32
# temporaries (1.2 GB each at 10000x10000).  (The encoder's, :func:`rgb8_to_ycbcr`,
# works in its own small chunks, elementwise in a fixed order: the same values for any
# crop, chunk, device and vector width, tests/test_pipeline.py.)
STRIP_PIXELS = 1 << 20


def _strips(h: int, w: int):
    rows = max(1, STRIP_PIXELS // max(1, w))
    return [(r0, min(h, r0 + rows)) for r0 in range(0, h, rows)]


# ----------------------------------------------------------------------------- native
# On the CPU both conversions run in the native extension when it is built
# (native/pixels.cpp, engine.rans_native): one pass and one thread per image, the GIL
# released, exactly the values of the torch code below -- the encoder's the fma chain
# :func:`engine.io.color.rgb8_to_ycbcr` defines, the decoder's the same chain for the
# inverse matrix, then clamp, x255 and round half to even (tests/test_pixels.py: all
# 2^24 colours one way, random and edge planes the other).  Measured on the 2-core
# Xeon VM while it was busy: 768x512 in ~1-5 ms against ~40-50 ms for torch's ops on
# its two intra-op threads, as much as a bf16 network (issue #25).  A build without
# the functions, ``ENGINE_NATIVE_PIXELS=0``, or a failed check against torch at first
# use (a warning) runs the torch code.
NATIVE_ENV = "ENGINE_NATIVE_PIXELS"
NATIVE_THREADS_PIXELS = 1 << 21     # images this large are converted on every CPU
_native = None


class NativePixels:
    def __init__(self, mod):
        self.mod = mod
        self.lut = torch.arange(256, dtype=torch.uint8).float().div_(255).numpy()   # what rgb8_to_ycbcr divides
        self.fwd = RGB2YCC.float().numpy().reshape(-1).copy()
        self.inv = YCC2RGB.float().numpy().reshape(-1).copy()
        self.off = np.float32([0.0, 0.5, 0.5])     # engine/io/color.py's offsets (checked below)

    @staticmethod
    def _threads(pixels: int) -> int:
        return (os.cpu_count() or 1) if pixels >= NATIVE_THREADS_PIXELS else 1

    def to_planes(self, rgb: np.ndarray, out: np.ndarray) -> None:
        """(h, w, 3) uint8 -> out (3, H, W) float32, replicate-padded."""
        self.mod.rgb_to_planes(rgb, out, self.lut, self.fwd, self.off, self._threads(rgb.shape[0] * rgb.shape[1]))

    def to_rgb(self, planes: np.ndarray, out: np.ndarray, gray: bool) -> None:
        """(3, H, W) float32 -> out (h, w, 3) uint8."""
        self.mod.planes_to_rgb(planes, out, self.inv, self.off, gray, self._threads(out.shape[0] * out.shape[1]))


def native_pixels() -> NativePixels | None:
    """The native conversions, checked against the torch code once, or None."""
    global _native
    if _native is None:
        _native = _load_native() or False
    return _native or None


def _load_native() -> NativePixels | None:
    if settings.env(NATIVE_ENV, "1").strip() == "0":
        return None
    from .. import native
    mod = native.load()
    if mod is None or not hasattr(mod, "rgb_to_planes"):
        return None
    nat = NativePixels(mod)
    # A check on real work: a small image through both paths, both ways.
    g = np.random.default_rng(0)
    rgb = g.integers(0, 256, (37, 29, 3), dtype=np.uint8)
    rgb[0, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [1, 2, 3], [254, 1, 128], [128, 128, 128]]
    ref = _preprocess_torch(torch.from_numpy(rgb), 16)[0].numpy()
    got = np.empty_like(ref)
    nat.to_planes(rgb, got)
    planes = np.concatenate([ref, g.uniform(-0.2, 1.2, ref.shape).astype(np.float32)], 1)
    ok = np.array_equal(got.view(np.uint32), ref.view(np.uint32))
    for gray in (False, True):
        want = _postprocess_torch(torch.from_numpy(planes)[None], 90, 30, gray).numpy()
        have = np.empty_like(want)
        nat.to_rgb(planes, have, gray)
        ok = ok and np.array_equal(want, have)
    if not ok:
        warnings.warn("engine.rans_native's pixel conversions differ from torch's here: using torch's "
                      f"(set {NATIVE_ENV}=0 to skip the check)", RuntimeWarning, stacklevel=3)
        return None
    return nat


def _native_for(t: torch.Tensor) -> NativePixels | None:
    if t.device.type != "cpu" or not t.is_contiguous():
        return None
    return native_pixels()


# ----------------------------------------------------------------------------- torch

def preprocess_tensor(rgb: torch.Tensor, multiple: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`preprocess` for a contiguous (H, W, 3) uint8 tensor already on its device
    (the engine stages images in its own buffers and then runs exactly these ops);
    ``out``: a (1, 3, H', W') float32 tensor on that device to write them into."""
    nat = _native_for(rgb)
    if nat is None or 0 in rgb.shape or (out is not None and not out.is_contiguous()):
        return _preprocess_torch(rgb, multiple, out)
    H, W = padded_size(*rgb.shape[:2], multiple)
    ycc = torch.empty((1, 3, H, W), dtype=torch.float32) if out is None else out
    nat.to_planes(rgb.numpy(), ycc[0].numpy())
    return ycc


def _preprocess_torch(rgb: torch.Tensor, multiple: int, out: torch.Tensor | None = None) -> torch.Tensor:
    h, w = rgb.shape[:2]
    H, W = padded_size(h, w, multiple)
    ycc = torch.empty((1, 3, H, W), dtype=torch.float32, device=rgb.device) if out is None else out
    rgb8_to_ycbcr(rgb, ycc[0, :, :h, :w])
    if W > w:        # replicate padding: the last column, then the last row (corner included)
        ycc[:, :, :h, w:] = ycc[:, :, :h, w - 1:w]
    if H > h:
        ycc[:, :, h:, :] = ycc[:, :, h - 1:h, :]
    return ycc


class LazyPlanes:
    """The padded planes of one (h, w, 3) uint8 image, converted a crop at a time.

    A tiled encode reads its planes tile by tile; holding them whole costs 1.2 GB of
    float32 at 10000x10000 (issue #13).  ``crop`` gives exactly the values of the
    same crop of :func:`preprocess_tensor` by construction: both convert with
    :func:`rgb8_to_ycbcr`, elementwise in a fixed order, and the replicate padding is
    the edge pixel's own value (tests/test_pipeline.py)."""

    def __init__(self, rgb: torch.Tensor, multiple: int):
        self.rgb = rgb
        self.h, self.w = rgb.shape[:2]
        H, W = padded_size(self.h, self.w, multiple)
        self.shape = (1, 3, H, W)
        self.device = rgb.device
        self.dtype = torch.float32

    def crop(self, r0: int, r1: int, s0: int, s1: int) -> torch.Tensor:
        """Padded rows r0:r1, columns s0:s1 -> (1, 3, r1 - r0, s1 - s0) float32 YCbCr."""
        a, b = min(r1, self.h), min(s1, self.w)
        out = torch.empty((1, 3, r1 - r0, s1 - s0), dtype=torch.float32, device=self.device)
        if r0 < a and s0 < b:
            rgb8_to_ycbcr(self.rgb[r0:a, s0:b], out[0, :, :a - r0, :b - s0])
        if s1 > self.w and r0 < a:     # columns past the image: its last column (converted on its own if not in the crop)
            edge = out[:, :, :a - r0, b - s0 - 1:b - s0] if s0 < b else self._col(r0, a)
            out[:, :, :a - r0, max(b, s0) - s0:] = edge
        if r1 > self.h:     # rows past the image: its last row, padded the same way
            edge = out[:, :, a - r0 - 1:a - r0] if r0 < a else self.crop(self.h - 1, self.h, s0, s1)
            out[:, :, max(a, r0) - r0:] = edge
        return out

    def _col(self, r0: int, r1: int) -> torch.Tensor:
        out = torch.empty((1, 3, r1 - r0, 1), dtype=torch.float32, device=self.device)
        rgb8_to_ycbcr(self.rgb[r0:r1, self.w - 1:self.w], out[0])
        return out


def crop_planes(ycc, r0: int, r1: int, s0: int, s1: int) -> torch.Tensor:
    """Rows r0:r1, columns s0:s1 of padded planes: a (B, 3, H, W) tensor or LazyPlanes."""
    if isinstance(ycc, LazyPlanes):
        return ycc.crop(r0, r1, s0, s1)
    return ycc[:, :, r0:r1, s0:s1]


def postprocess(ycc: torch.Tensor, h: int, w: int, gray: bool = False) -> np.ndarray:
    """(1, 3, H', W') YCbCr -> (h, w, 3) uint8 RGB (rounded, clamped, cropped)."""
    return postprocess_tensor(ycc, h, w, gray).cpu().numpy()


def postprocess_tensor(ycc: torch.Tensor, h: int, w: int, gray: bool = False) -> torch.Tensor:
    """:func:`postprocess` without the copy to the host: a contiguous (h, w, 3) uint8
    tensor on ycc's device (converted in row strips, see STRIP_PIXELS)."""
    planes = ycc[0].detach()
    nat = _native_for(planes) if planes.dtype == torch.float32 else None
    if nat is None or h == 0 or w == 0:
        return _postprocess_torch(ycc, h, w, gray)
    out = torch.empty((h, w, 3), dtype=torch.uint8)
    nat.to_rgb(planes.numpy(), out.numpy(), gray)
    return out


def _postprocess_torch(ycc: torch.Tensor, h: int, w: int, gray: bool = False) -> torch.Tensor:
    out = torch.empty((h, w, 3), dtype=torch.uint8, device=ycc.device)
    for r0, r1 in _strips(h, w):
        y = ycc[:1, :, r0:r1, :w].float()
        if gray:
            y = torch.cat([y[:, :1], torch.full_like(y[:, 1:], 0.5)], 1)
        out[r0:r1] = ycbcr_to_rgb(y).clamp(0, 1).mul(255).round().to(torch.uint8)[0].permute(1, 2, 0)
    return out
