"""Fused Triton pack: quantize + mask + binarize + pack for a whole batch.

Produces exactly what :func:`kernels.reference.pack` produces (same bit layout:
locations in raster order, kept channels ``0..k-1`` of each location, bit
``e > 0.5``, MSB-first, last byte zero-padded, each image from byte 0 of its
own buffer).

Three launches, no host synchronisation until the result is copied out:

1. ``_level_scan_kernel`` -- one program per image: p -> level
   ``q = min(floor(p * L), L - 1)`` (stored as uint8) and the *inclusive*
   prefix sum of the kept counts ``k = q * g`` (int32, bits).  This is the
   per-location bit offset table of the direct compaction (a chunked
   ``tl.cumsum`` with a carried total, so the scan is fused with the
   quantization instead of a separate ``torch.cumsum`` pass).
2. ``_pack_y_kernel`` -- every program owns ``BLOCK_BYTES`` whole *output*
   bytes.  Each output bit position ``pos`` finds its location by a branchless
   binary search over the prefix sum (``loc`` = first location whose inclusive
   end is ``> pos``), its channel is ``pos - start(loc)``, and the bit is
   ``e[b, ch, loc] > 0.5``.  The 8 bits are OR-ed into a byte in registers and
   the byte is stored once.
3. ``_pack_dense_kernel`` -- the CbCr bits: all ``m`` channels kept, so the
   location of output bit ``pos`` is simply ``pos // m``; same byte ownership.

Why direct compaction with byte ownership (bytes moved per location, n = 60,
float32 e, k = kept bits, ``k <= n``)::

    direct compaction, byte-owned (this file)
        read  p 4 + e 4k (only kept channels are ever touched)
        write level 1 + cum 4, read cum ~4 (search table, L1/L2 resident)
        write payload k/8, each byte exactly once, no zero-fill, no atomics
    direct compaction with atomic_or on int32 words
        same reads, but the payload must be zero-filled first (n/8 extra) and
        every kept bit is a 4-byte read-modify-write at L2 (8k bytes of atomic
        traffic instead of k/8, up to 32-way contention on one word)
    dense-then-compact
        read all of e (4n, masked channels too), write n bits/bytes of a dense
        0/1 buffer, read it back (2n more), then the compacted write

At n = 60, k = 30 on average the byte-owned path moves about 4 + 120 + 9 + 4
= ~137 B/location against ~4 + 240 + 120 (dense 0/1 bytes written and read)
+ 4 = ~368 B for dense-then-compact, and it avoids the atomics' 8 B/bit of
L2 RMW traffic.  The price is the search: ``ceil(log2(h*w + 1))`` cached int32
loads per output bit (the table is 4*h*w bytes per image, e.g. 24 KiB for
64x96, so it stays in L1/L2); that is compute/L1 work, not DRAM traffic.

Runs on CUDA tensors (compiled) or, for CPU tensors, in the Triton
interpreter (``TRITON_INTERPRET=1`` must be set before this module is
imported); anything else raises :class:`RuntimeError`, there is no silent
fallback to torch.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from engine import importance

from .reference import Packed, packed_from_arrays

try:  # the class the @triton.jit decorator returns in interpreter mode
    from triton.runtime.interpreter import InterpretedFunction as _Interpreted
except ImportError:  # pragma: no cover - layout of older/newer triton
    _Interpreted = None

# Launch sizes.  The compiled kernels want moderate blocks; the interpreter
# runs each program as numpy code, so fewer, larger programs are much faster.
GPU_BLOCKS = dict(scan_block=1024, block_bytes=128)
INTERPRETER_BLOCKS = dict(scan_block=4096, block_bytes=2048)


# --------------------------------------------------------------------------- kernels

@triton.jit
def _level_scan_kernel(src_ptr, levels_ptr, cum_ptr, HW,
                       L: tl.constexpr, G: tl.constexpr, FROM_P: tl.constexpr,
                       BLOCK: tl.constexpr):
    """One program per image.  FROM_P: src is the importance p (float) and the
    levels are written; else src is already the uint8 levels.  Writes the
    inclusive prefix sum of kept bits per location to cum (int32)."""
    b = tl.program_id(0)
    base = b.to(tl.int64) * HW
    carry = tl.zeros([], dtype=tl.int32)
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        m = offs < HW
        if FROM_P:
            p = tl.load(src_ptr + base + offs, mask=m, other=0.0)
            x = p * L                       # in p's dtype, like torch's p * levels
            if x.dtype != tl.float64:
                x = x.to(tl.float32)        # exact widening (fp16/bf16/fp32)
            x = tl.minimum(tl.maximum(tl.floor(x), 0.0), L - 1.0)
            q = x.to(tl.int32)
            tl.store(levels_ptr + base + offs, q.to(tl.uint8), mask=m)
        else:
            q = tl.load(src_ptr + base + offs, mask=m, other=0).to(tl.int32)
            q = tl.minimum(q, L - 1)        # level > L-1 keeps all n, like channel_mask
        k = tl.where(m, q * G, 0)
        c = tl.cumsum(k, axis=0) + carry
        tl.store(cum_ptr + base + offs, c, mask=m)
        carry += tl.sum(k, axis=0)


@triton.jit
def _pack_y_kernel(e_ptr, cum_ptr, out_ptr, HW, OUT_STRIDE,
                   N: tl.constexpr, NSTEPS: tl.constexpr, BLOCK_BYTES: tl.constexpr):
    """grid (cdiv(max_bytes, BLOCK_BYTES), B): each program owns BLOCK_BYTES
    output bytes of image b and gathers their 8 bits each."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    cum_row = cum_ptr + b * HW
    total = tl.load(cum_row + HW - 1)                       # kept bits of image b
    j = pid * BLOCK_BYTES + tl.arange(0, BLOCK_BYTES)       # output byte index
    t = tl.arange(0, 8)                                     # bit in byte, MSB first
    pos = j[:, None] * 8 + t[None, :]                       # (BLOCK_BYTES, 8)
    valid = pos < total
    # branchless lower bound: first location whose inclusive end is > pos
    lo = tl.zeros([BLOCK_BYTES, 8], dtype=tl.int32)
    hi = lo + HW
    for _ in tl.static_range(NSTEPS):
        active = lo < hi
        mid = (lo + hi) >> 1
        end = tl.load(cum_row + mid, mask=active & valid, other=0)
        right = end <= pos
        lo = tl.where(active & right, mid + 1, lo)
        hi = tl.where(active & (end > pos), mid, hi)
    loc = lo
    start = tl.load(cum_row + loc - 1, mask=valid & (loc > 0), other=0)
    ch = pos - start
    ev = tl.load(e_ptr + b * N * HW + ch * HW + loc, mask=valid, other=0.0)
    bits = (ev > 0.5).to(tl.int32) << (7 - t)[None, :]
    byte = tl.sum(bits, axis=1)
    tl.store(out_ptr + b * OUT_STRIDE + j, byte.to(tl.uint8), mask=j * 8 < total)


@triton.jit
def _pack_dense_kernel(x_ptr, out_ptr, HW, OUT_STRIDE,
                       M: tl.constexpr, BLOCK_BYTES: tl.constexpr):
    """All M channels kept (CbCr): bit pos -> location pos // M, channel pos % M."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    nbits = HW * M
    j = pid * BLOCK_BYTES + tl.arange(0, BLOCK_BYTES)
    t = tl.arange(0, 8)
    pos = j[:, None] * 8 + t[None, :]
    valid = pos < nbits
    loc = pos // M
    ch = pos % M
    xv = tl.load(x_ptr + b * M * HW + ch * HW + loc, mask=valid, other=0.0)
    bits = (xv > 0.5).to(tl.int32) << (7 - t)[None, :]
    byte = tl.sum(bits, axis=1)
    tl.store(out_ptr + b * OUT_STRIDE + j, byte.to(tl.uint8), mask=j * 8 < nbits)


# --------------------------------------------------------------------------- runtime checks

def interpreter_active() -> bool:
    """True when the kernels were decorated in Triton-interpreter mode."""
    if _Interpreted is not None:
        return isinstance(_pack_y_kernel, _Interpreted)
    return type(_pack_y_kernel).__name__ == "InterpretedFunction"  # pragma: no cover


def check_device(device) -> torch.device:
    """Raise a clear error where the kernels cannot run on ``device``."""
    device = torch.device(device)
    if device.type == "cuda" or (device.type == "cpu" and interpreter_active()):
        return device
    if device.type == "cpu":
        hint = "" if torch.cuda.is_available() else " (and no CUDA device is available)"
        raise RuntimeError(
            "Triton bit-path kernels got CPU tensors but the Triton interpreter is not active"
            f"{hint}: set TRITON_INTERPRET=1 in the environment before importing kernels."
            "pack_triton, move the tensors to CUDA, or use ENGINE_KERNELS=torch.")
    raise RuntimeError(f"Triton bit-path kernels run on CUDA or (interpreted) on the CPU, not on {device}")


def default_blocks() -> dict:
    return dict(INTERPRETER_BLOCKS if interpreter_active() else GPU_BLOCKS)


def pow2(x: int) -> int:
    return triton.next_power_of_2(max(int(x), 1))


# --------------------------------------------------------------------------- wrappers

def level_scan(src: torch.Tensor, n: int, levels: int, from_p: bool, scan_block: int | None = None):
    """(B, 1, h, w) importance (from_p) or uint8 levels -> (uint8 levels or
    None, int32 inclusive kept-bit prefix sum (B, h*w))."""
    B, _, h, w = src.shape
    HW = h * w
    g = importance.group_size(n, levels)
    if HW * n >= 2 ** 31:
        raise ValueError(f"h*w*n = {HW * n} bits per image does not fit the int32 offsets")
    src = src.contiguous()
    lv = torch.empty(B, 1, h, w, dtype=torch.uint8, device=src.device) if from_p else None
    cum = torch.empty(B, HW, dtype=torch.int32, device=src.device)
    if B and HW:
        block = min(pow2(scan_block or default_blocks()["scan_block"]), pow2(HW))
        _level_scan_kernel[(B,)](src, lv if from_p else src, cum, HW,
                                 L=levels, G=g, FROM_P=from_p, BLOCK=block)
    return lv, cum


def pack_device(e: torch.Tensor, p: torch.Tensor, ec: torch.Tensor, n: int, levels: int,
                scan_block: int | None = None, block_bytes: int | None = None):
    """The device half of :func:`pack`; no host synchronisation.

    Returns ``(levels uint8 (B,1,h,w), ynbits int32 (B,), ybuf uint8 (B, Ymax),
    cnbits int, cbuf uint8 (B, Cmax))``; image b's Y payload is
    ``ybuf[b, :ceil(ynbits[b] / 8)]``, bytes beyond that are unspecified."""
    B, ne, h, w = e.shape
    if ne != n:
        raise ValueError(f"e has {ne} channels, expected n={n}")
    if tuple(p.shape) != (B, 1, h, w):
        raise ValueError(f"p must be {(B, 1, h, w)}, got {tuple(p.shape)}")
    if ec.dim() != 4 or ec.shape[0] != B:
        raise ValueError(f"ec must be (B={B}, m, hc, wc), got {tuple(ec.shape)}")
    device = check_device(e.device)
    if p.device != device or ec.device != device:
        raise ValueError(f"e, p, ec must be on one device, got {e.device}, {p.device}, {ec.device}")
    blocks = default_blocks()
    block_bytes = pow2(block_bytes or blocks["block_bytes"])
    HW = h * w
    e = e.contiguous()
    ec = ec.contiguous()
    lv, cum = level_scan(p, n, levels, True, scan_block)
    ymax = (HW * n + 7) // 8
    ybuf = torch.empty(B, ymax, dtype=torch.uint8, device=device)
    if B and HW:
        _pack_y_kernel[(triton.cdiv(ymax, block_bytes), B)](
            e, cum, ybuf, HW, ymax, N=n, NSTEPS=HW.bit_length(), BLOCK_BYTES=block_bytes)
        ynbits = cum[:, HW - 1]
    else:
        ynbits = torch.zeros(B, dtype=torch.int32, device=device)
    m, hc, wc = ec.shape[1:]
    cnbits = m * hc * wc
    cmax = (cnbits + 7) // 8
    cbuf = torch.empty(B, cmax, dtype=torch.uint8, device=device)
    if B and cnbits:
        _pack_dense_kernel[(triton.cdiv(cmax, block_bytes), B)](
            ec, cbuf, hc * wc, cmax, M=m, BLOCK_BYTES=block_bytes)
    return lv, ynbits, ybuf, cnbits, cbuf


def to_packed(lv: torch.Tensor, ynbits: torch.Tensor, ybuf: torch.Tensor, cnbits: int,
              cbuf: torch.Tensor) -> list[Packed]:
    """Copy the device results of :func:`pack_device` into Packed records."""
    return packed_from_arrays(lv.cpu().numpy(), ynbits.cpu().numpy(), ybuf.cpu().numpy(), cnbits, cbuf.cpu().numpy())


def pack(e: torch.Tensor, p: torch.Tensor, ec: torch.Tensor, n: int, levels: int, **blocks) -> list[Packed]:
    """Drop-in for :func:`kernels.reference.pack` (bit-identical output)."""
    return to_packed(*pack_device(e, p, ec, n, levels, **blocks))
