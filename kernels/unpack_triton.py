"""Fused Triton unpack: levels + packed bytes -> dense 0/1 features.

The exact inverse of :mod:`kernels.pack_triton` and bit-identical to
:func:`kernels.reference.unpack`: levels (B, 1, h, w) as ``dtype``, dense Y
bits (B, n, h, w) with zeros where masked, dense CbCr bits (B, m, hc, wc) with
``hc, wc = ceil(h/2), ceil(w/2)``.

Unpack needs no search: the prefix sum of the kept counts (the same
``_level_scan_kernel`` as pack, fed with the uint8 levels) gives every location
its start bit, so each program owns a tile of *output elements*
(all channels x ``BLOCK_L`` locations) and reads bit ``start + c`` from the
payload.  Bytes moved per location: level 1 + cum 4 (+4 read back) + payload
k/8 (gathered, cache resident) read, and the dense output n * sizeof(dtype)
written once with coalesced stores -- the write is the floor and dominates.
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from engine import importance

from .pack_triton import check_device, interpreter_active, level_scan, pow2
from .reference import Packed

# Integer 0/1 (and level) values are stored through float32: exact for every
# output dtype, and the interpreter's direct int -> bfloat16 cast is wrong
# (it reinterprets the bits), so this also keeps bf16 outputs right there.
GPU_BLOCK_L = 128
INTERPRETER_BLOCK_L = 1024


@triton.jit
def _unpack_y_kernel(levels_ptr, cum_ptr, buf_ptr, lev_out_ptr, dense_ptr, HW, BUF_STRIDE,
                     N: tl.constexpr, NPAD: tl.constexpr, L: tl.constexpr, G: tl.constexpr,
                     BLOCK_L: tl.constexpr):
    """grid (cdiv(HW, BLOCK_L), B): dense[b, c, loc] for all c < N and BLOCK_L locations."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    loc = pid * BLOCK_L + tl.arange(0, BLOCK_L)
    lm = loc < HW
    q = tl.load(levels_ptr + b * HW + loc, mask=lm, other=0).to(tl.int32)
    tl.store(lev_out_ptr + b * HW + loc, q.to(tl.float32).to(lev_out_ptr.dtype.element_ty), mask=lm)
    k = tl.minimum(q, L - 1) * G
    start = tl.load(cum_ptr + b * HW + loc, mask=lm, other=0) - k
    c = tl.arange(0, NPAD)
    kept = (c[:, None] < k[None, :]) & lm[None, :]
    pos = start[None, :] + c[:, None]
    byte = tl.load(buf_ptr + b * BUF_STRIDE + (pos >> 3), mask=kept, other=0).to(tl.int32)
    bit = (byte >> (7 - (pos & 7))) & 1
    tl.store(dense_ptr + b * N * HW + c[:, None] * HW + loc[None, :],
             bit.to(tl.float32).to(dense_ptr.dtype.element_ty), mask=(c[:, None] < N) & lm[None, :])


@triton.jit
def _unpack_dense_kernel(buf_ptr, out_ptr, HW, BUF_STRIDE,
                         M: tl.constexpr, MPAD: tl.constexpr, BLOCK_L: tl.constexpr):
    """All M channels kept (CbCr): out[b, c, loc] = bit loc * M + c."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    loc = pid * BLOCK_L + tl.arange(0, BLOCK_L)
    c = tl.arange(0, MPAD)
    valid = (c[:, None] < M) & (loc[None, :] < HW)
    pos = loc[None, :] * M + c[:, None]
    byte = tl.load(buf_ptr + b * BUF_STRIDE + (pos >> 3), mask=valid, other=0).to(tl.int32)
    bit = (byte >> (7 - (pos & 7))) & 1
    tl.store(out_ptr + b * M * HW + c[:, None] * HW + loc[None, :],
             bit.to(tl.float32).to(out_ptr.dtype.element_ty), mask=valid)


def _stack_payload(chunks: list[bytes], nbytes: int) -> np.ndarray:
    buf = np.zeros((len(chunks), max(nbytes, 1)), dtype=np.uint8)
    for i, ch in enumerate(chunks):
        a = np.frombuffer(ch, dtype=np.uint8)[:nbytes]
        buf[i, :a.size] = a
    return buf


def unpack_device(lv: torch.Tensor, ybuf: torch.Tensor, cbuf: torch.Tensor, n: int, m: int, levels: int,
                  dtype=torch.float32, block_l: int | None = None):
    """Device tensors -> (levels (B,1,h,w) dtype, dense Y (B,n,h,w), dense CbCr (B,m,hc,wc)).

    ``lv`` uint8 (B, 1, h, w); ``ybuf``/``cbuf`` uint8 (B, bytes) holding each
    image's payload from byte 0.  No host synchronisation."""
    device = check_device(lv.device)
    B, _, h, w = lv.shape
    HW = h * w
    hc, wc = (h + 1) // 2, (w + 1) // 2
    g = importance.group_size(n, levels)
    block_l = pow2(block_l or (INTERPRETER_BLOCK_L if interpreter_active() else GPU_BLOCK_L))
    lv = lv.contiguous()
    ybuf = ybuf.contiguous()
    cbuf = cbuf.contiguous()
    lev_out = torch.empty(B, 1, h, w, dtype=dtype, device=device)
    dense = torch.empty(B, n, h, w, dtype=dtype, device=device)
    cdense = torch.empty(B, m, hc, wc, dtype=dtype, device=device)
    if B and HW:
        _, cum = level_scan(lv, n, levels, False)
        bl = min(block_l, pow2(HW))
        _unpack_y_kernel[(triton.cdiv(HW, bl), B)](
            lv, cum, ybuf, lev_out, dense, HW, ybuf.shape[1],
            N=n, NPAD=pow2(n), L=levels, G=g, BLOCK_L=bl)
    if B and hc * wc and m:
        bl = min(block_l, pow2(hc * wc))
        _unpack_dense_kernel[(triton.cdiv(hc * wc, bl), B)](
            cbuf, cdense, hc * wc, cbuf.shape[1], M=m, MPAD=pow2(m), BLOCK_L=bl)
    return lev_out, dense, cdense


def unpack(items: list[Packed], n: int, m: int, levels: int, dtype=torch.float32, device="cpu",
           block_l: int | None = None):
    """Drop-in for :func:`kernels.reference.unpack` (bit-identical output)."""
    device = check_device(device)
    B = len(items)
    h, w = items[0].levels.shape
    hc, wc = (h + 1) // 2, (w + 1) // 2
    g = importance.group_size(n, levels)
    lv = np.stack([np.asarray(it.levels, dtype=np.uint8) for it in items])
    if lv.shape != (B, h, w):
        raise ValueError("all items must have the same level-map shape")
    # The payload sizes the levels imply (level > L-1 keeps all n, as channel_mask does).
    want = np.minimum(lv.reshape(B, -1).astype(np.int64), levels - 1).sum(1) * g
    for i, it in enumerate(items):
        if it.ynbits != want[i] or len(it.ybits) * 8 < it.ynbits:
            raise ValueError(f"image {i}: {it.ynbits} Y bits in {len(it.ybits)} bytes, "
                             f"the levels need {int(want[i])}")
        if it.cnbits != m * hc * wc or len(it.cbits) * 8 < it.cnbits:
            raise ValueError(f"image {i}: {it.cnbits} CbCr bits in {len(it.cbits)} bytes, "
                             f"expected {m * hc * wc}")
    ybytes = (int(want.max(initial=0)) + 7) // 8
    cbytes = (m * hc * wc + 7) // 8
    ybuf = torch.from_numpy(_stack_payload([it.ybits for it in items], ybytes)).to(device)
    cbuf = torch.from_numpy(_stack_payload([it.cbits for it in items], cbytes)).to(device)
    lv_t = torch.from_numpy(lv).view(B, 1, h, w).to(device)
    return unpack_device(lv_t, ybuf, cbuf, n, m, levels, dtype=dtype, block_l=block_l)
