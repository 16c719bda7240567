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

import os

from . import reference

KERNEL_CHOICES = ("auto", "torch", "triton")


def kernel_choice(name: str | None = None) -> str:
    name = (name or os.environ.get("ENGINE_KERNELS") or "auto").strip().lower()
    if name not in KERNEL_CHOICES:
        raise ValueError(f"ENGINE_KERNELS/kernels must be one of {KERNEL_CHOICES}, got {name!r}")
    return name


def get_bitpath(name: str | None = None, device: str = "cpu"):
    """Return the module implementing ``pack`` and ``unpack`` for this choice."""
    name = kernel_choice(name)
    if name == "auto":
        name = "triton" if str(device).startswith("cuda") and _triton_available() else "torch"
    if name == "torch":
        return reference
    from . import triton_path  # noqa: WPS433 (lazy: triton is optional)
    return triton_path


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
        return True
    except ImportError:
        return False
