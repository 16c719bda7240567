"""The layout of an image inside the engine: RGB pixels <-> padded YCbCr planes.

The networks run on (B, 3, H', W') float32 YCbCr in [0, 1], H' and W' rounded up
to the model's multiple (16) by replicating the last row and column; the decoder's
planes are cropped, clamped and rounded back to (h, w, 3) uint8 RGB.  Every path
(single image, batch, CUDA streams, training, shipping) uses these functions, so a
pixel means the same thing everywhere.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .color import rgb_to_ycbcr, ycbcr_to_rgb


def padded_size(h: int, w: int, multiple: int) -> tuple[int, int]:
    """The sides the networks run at: h and w rounded up to a multiple."""
    return -(-h // multiple) * multiple, -(-w // multiple) * multiple


def preprocess(rgb: np.ndarray, multiple: int, device="cpu") -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H', W') float32 YCbCr, replicate-padded to a multiple."""
    if not rgb.flags.writeable:
        rgb = rgb.copy()
    return preprocess_tensor(torch.from_numpy(rgb).to(device), multiple)


def preprocess_tensor(rgb: torch.Tensor, multiple: int) -> torch.Tensor:
    """:func:`preprocess` for a contiguous (H, W, 3) uint8 tensor already on its device
    (the engine stages images in its own buffers and then runs exactly these ops)."""
    h, w = rgb.shape[:2]
    x = rgb.permute(2, 0, 1)[None].float().div_(255)
    ycc = rgb_to_ycbcr(x)
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        ycc = F.pad(ycc, (0, pw, 0, ph), mode="replicate")
    return ycc


def postprocess(ycc: torch.Tensor, h: int, w: int, gray: bool = False) -> np.ndarray:
    """(1, 3, H', W') YCbCr -> (h, w, 3) uint8 RGB (rounded, clamped, cropped)."""
    return postprocess_tensor(ycc, h, w, gray).cpu().numpy()


def postprocess_tensor(ycc: torch.Tensor, h: int, w: int, gray: bool = False) -> torch.Tensor:
    """:func:`postprocess` without the copy to the host: a contiguous (h, w, 3) uint8
    tensor on ycc's device."""
    ycc = ycc[:, :, :h, :w].float()
    if gray:
        ycc = torch.cat([ycc[:, :1], torch.full_like(ycc[:, 1:], 0.5)], 1)
    rgb = ycbcr_to_rgb(ycc).clamp(0, 1).mul(255).round().to(torch.uint8)
    return rgb[0].permute(1, 2, 0).contiguous()
