"""RGB <-> YCbCr, ITU-R BT.601 full range (the JPEG/JFIF matrix).

All planes are float in [0, 1]; Cb and Cr carry the usual +128/255 offset so
that they live in [0, 1] too.  The networks see each plane minus 0.5.
"""
from __future__ import annotations

import torch

# Rows: Y, Cb, Cr.  Columns: R, G, B.  (JFIF / ITU-T T.871)
RGB2YCC = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [-0.168735892, -0.331264108, 0.5],
        [0.5, -0.418687589, -0.081312411],
    ],
    dtype=torch.float64,
)
YCC2RGB = torch.linalg.inv(RGB2YCC)
_OFFSET = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) YCbCr in [0, 1]."""
    m = RGB2YCC.to(rgb.dtype).to(rgb.device)
    off = _OFFSET.to(rgb.dtype).to(rgb.device).view(1, 3, 1, 1)
    return torch.einsum("ij,bjhw->bihw", m, rgb) + off


# The engine's planes (engine/io/planes.py) are converted from uint8 pixels in chunks of
# about this many pixels on the CPU: three planes of it stay below torch's intra-op
# grain size (32768 elements), so each op runs on the calling thread (splitting small
# ops across threads cost 7x more than it gained on this 2-core VM while it was busy)
# and the temporaries stay in cache.  Other devices take larger chunks (fewer
# launches).  The values do not depend on it (tests/test_pipeline.py).
CHUNK_PIXELS = {"cpu": 1 << 13}
CHUNK_PIXELS_OTHER = 1 << 22
_M32 = RGB2YCC.float().double().tolist()     # the float32 matrix, each entry exact in float64
_OFF32 = _OFFSET.float().tolist()


def rgb8_to_ycbcr(rgb: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(h, w, 3) uint8 RGB -> ``out``, a (3, h, w) float32 YCbCr view it writes (and returns).

    The engine's encoder planes: the same values on every device, vector width, crop
    and chunking, by construction (issue #28, item 12).  Each value is exactly the
    float32 fused multiply-add chain ``fma(b, m2, fma(g, m1, r * m0)) + offset`` (r, g,
    b: the pixel / 255 in float32; m: the float32 matrix), which is what the einsum in
    :func:`rgb_to_ycbcr` computes in its vector body on AVX2 and AVX-512, so files did
    not change.  It is computed elementwise in a fixed order: ``r * m0`` in float32
    (correctly rounded), each further product in float64 (exact: 24 x 24 bits) added in
    float64 and rounded to float32; for every one of the 2^24 pixels that double
    rounding gives the fused operation's value (checked exhaustively in
    tests/test_pipeline.py).  A matrix product instead sums in an order that depends on
    the CPU's vector width and the tensor's shape: a crop and the whole image were one
    ulp apart on AVX-512."""
    h, w = rgb.shape[:2]
    if h == 0 or w == 0:
        return out
    dev = rgb.device
    rows = max(1, CHUNK_PIXELS.get(dev.type, CHUNK_PIXELS_OTHER) // w)
    n = min(rows, h) * w
    x32 = torch.empty((3, n), dtype=torch.float32, device=dev)
    x64 = torch.empty((2, n), dtype=torch.float64, device=dev)
    t = torch.empty(n, dtype=torch.float64, device=dev)
    p = torch.empty(n, dtype=torch.float64, device=dev)
    f = torch.empty(n, dtype=torch.float32, device=dev)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        shape, k = (r1 - r0, w), (r1 - r0) * w
        x = x32[:, :k].view(3, *shape)
        x.copy_(rgb[r0:r1].permute(2, 0, 1)).div_(255)           # the pixel / 255, float32
        g, b = x64[:, :k].view(2, *shape).copy_(x[1:])             # g, b in float64 (exact)
        tt, pp, ff = t[:k].view(shape), p[:k].view(shape), f[:k].view(shape)
        for i, (m0, m1, m2) in enumerate(_M32):
            torch.mul(x[0], m0, out=ff)          # r * m0, float32: = fma(r, m0, 0)
            tt.copy_(ff)
            torch.mul(g, m1, out=pp)             # exact
            tt.add_(pp)
            ff.copy_(tt)                         # = fma(g, m1, r * m0)
            tt.copy_(ff)
            torch.mul(b, m2, out=pp)             # exact
            tt.add_(pp)
            o = out[i, r0:r1]
            o.copy_(tt)                          # = fma(b, m2, ...)
            o.add_(_OFF32[i])                    # + the offset, float32
    return out


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (no clamping)."""
    m = YCC2RGB.to(ycc.dtype).to(ycc.device)
    off = _OFFSET.to(ycc.dtype).to(ycc.device).view(1, 3, 1, 1)
    return torch.einsum("ij,bjhw->bihw", m, ycc - off)


# sRGB (D65) -> CIE XYZ, IEC 61966-2-1's matrix; the white point for CIELAB.
_RGB_TO_XYZ = ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722), (0.0193, 0.1192, 0.9505))
_WHITE_D65 = (0.95047, 1.0, 1.08883)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> CIELAB (L in 0..100), differentiable: training's
    colour term (engine.net.train --delta-e), where a Euclidean distance is ΔE76.  The
    evaluation's ΔE00 is scikit-image's (engine/eval.py), not this."""
    rgb = rgb.clamp(0, 1)
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).clamp_min(1e-8) ** 2.4, rgb / 12.92)
    m = torch.tensor(_RGB_TO_XYZ, dtype=rgb.dtype, device=rgb.device)
    xyz = torch.einsum("ij,bjhw->bihw", m, lin)
    xyz = xyz / torch.tensor(_WHITE_D65, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    d = 6 / 29
    f = torch.where(xyz > d ** 3, xyz.clamp_min(1e-8) ** (1 / 3), xyz / (3 * d * d) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)
