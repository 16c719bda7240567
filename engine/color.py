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


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (no clamping)."""
    m = YCC2RGB.to(ycc.dtype).to(ycc.device)
    off = _OFFSET.to(ycc.dtype).to(ycc.device).view(1, 3, 1, 1)
    return torch.einsum("ij,bjhw->bihw", m, ycc - off)
