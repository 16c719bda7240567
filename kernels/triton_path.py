"""The Triton bit path: same ``pack`` / ``unpack`` signatures as reference.py.

CUDA tensors run the compiled kernels.  CPU tensors run them in the Triton
interpreter, which works only when ``TRITON_INTERPRET=1`` was set before this
module was first imported (the ``@triton.jit`` decorators read it); otherwise
the calls raise :class:`RuntimeError` -- there is no silent torch fallback.
"""
from __future__ import annotations

import torch

from . import pack_triton, unpack_triton
from .reference import Packed

interpreter_active = pack_triton.interpreter_active


def pack(e: torch.Tensor, p: torch.Tensor, ec: torch.Tensor, n: int, levels: int) -> list[Packed]:
    """Sigmoid features e (B, n, h, w), importance p (B, 1, h, w), CbCr features
    ec (B, m, h/2, w/2) -> one :class:`Packed` per image (== reference.pack)."""
    return pack_triton.pack(e, p, ec, n, levels)


def pack_device(e: torch.Tensor, p: torch.Tensor, ec: torch.Tensor, n: int, levels: int):
    """The device half of :func:`pack`, no host synchronisation (the CUDA pipeline
    copies the results out itself): ``(levels uint8 (B,1,h,w), ynbits int32 (B,),
    ybuf uint8 (B, Ymax), cnbits int, cbuf uint8 (B, Cmax))``."""
    return pack_triton.pack_device(e, p, ec, n, levels)


def unpack(items: list[Packed], n: int, m: int, levels: int, dtype=torch.float32, device="cpu"):
    """Packed images (all the same h, w) -> levels (B, 1, h, w) as dtype, dense Y
    bits (B, n, h, w) with zeros where masked, CbCr bits (B, m, ceil(h/2), ceil(w/2))
    (== reference.unpack)."""
    return unpack_triton.unpack(items, n, m, levels, dtype=dtype, device=device)
