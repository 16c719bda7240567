"""The bit path: importance quantization + mask + binarize + pack, and the reverse.

Two implementations with identical results (tested bit-exact):
  * ``torch``  — plain torch (reference.py); the production path on the CPU.
  * ``triton`` — fused Triton kernels (pack_triton.py / unpack_triton.py); CUDA,
    or the Triton interpreter on the CPU when TRITON_INTERPRET=1.

Choose with ``ENGINE_KERNELS=torch|triton`` or ``get_bitpath("...")``; the
default is triton on CUDA tensors and torch elsewhere.  An unknown name is an
error, never a silent fallback.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import reference

from engine import settings


def kernel_choice(name: str | None = None) -> str:
    return settings.check("kernels", settings.pick(name, "ENGINE_KERNELS", "auto"), "ENGINE_KERNELS/kernels")


@dataclass(frozen=True)
class BitPath:
    """One implementation of the bit path.

    pack(e, p, ec, n, levels) -> [Packed]         sigmoid features (B, n, h, w), importance
                                                  (B, 1, h, w), CbCr features (B, m, h/2, w/2)
    unpack(items, n, m, levels, dtype, device)    -> levels (B, 1, h, w), dense Y bits with
                                                  zeros where masked, CbCr bits
    pack_device(e, p, ec, n, levels)              pack's device half, no host sync:
                                                  (levels, ynbits, ybuf, cnbits, cbuf); None
                                                  where pack is host-side anyway (torch)
    """
    name: str
    pack: Callable
    unpack: Callable
    pack_device: Callable | None = None


TORCH = BitPath("torch", reference.pack, reference.unpack)


def get_bitpath(name: str | None = None, device: str = "cpu") -> BitPath:
    """The bit path for this choice (``auto``: Triton on CUDA when it is installed)."""
    name = kernel_choice(name)
    if name == "auto":
        name = "triton" if str(device).startswith("cuda") and _triton_available() else "torch"
    if name == "torch":
        return TORCH
    from . import pack_triton, unpack_triton  # lazy: triton is optional
    return BitPath("triton", pack_triton.pack, unpack_triton.unpack, pack_triton.pack_device)


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
        return True
    except ImportError:
        return False
