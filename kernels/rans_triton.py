"""Bitstream v2's entropy coder in Triton: rANS lanes coded where the codes are made.

The spec is engine/format/lanes_reference.py (docs/bitstream.md, "Version 2"); the native
coder (native/rans.cpp) is the production CPU path.  These kernels write the same
bytes and decode them to the same bits (tests/test_rans_triton.py: random inputs and
the shipped model's codes of Kodak crops, under the interpreter on the CPU and
compiled on CUDA).

One element of a program's block is one lane (a tile of one image's latent grid):
every lane is an independent rANS stream, so a batch's lanes are coded side by side
and a program walks its lanes' symbols in lock step.  Lanes of different sizes (the
last row/column of tiles) and images of different tiles share a launch: each lane
carries its own rectangle and the walk is masked to it.

* ``_encode_kernel``: contexts computed on the device from the levels (the fused
  pack's level scan) and the codes' bits read straight from the encoder's sigmoid
  outputs (``e > 0.5``, the bit path's own test), so no packed intermediate is built.
  rANS encodes in reverse coding order, so the walk runs backwards (CbCr part 1,
  CbCr part 0, Y part 1, Y part 0, map), every context being known from the input.
  Words go back to front into a per-lane buffer of worst-case size (at most one
  16-bit word per symbol, plus the final state), which ``_compact_kernel`` then
  packs lane after lane: the file's lane bytes, back to back.
* ``_decode_kernel``: all lanes of a batch in parallel, forwards; levels and bits are
  written straight into the decoder network's input tensors (any float dtype) and
  the contexts read back what the lane decoded earlier (part 1 reads part 0's
  anchors; the map reads the row above).  A lane that runs out of words, or does not
  end exactly at its last word with the encoder's initial state, is reported in a
  per-lane status (1 = valid), never read past.

Why not one CUDA thread per *symbol*: within a lane rANS is a chain (each symbol
needs the state the previous one left), so a lane is inherently sequential; the
parallelism is across lanes (4 per Kodak image at the engine's tile of 48, 15 per
1080p image, a few hundred per batch).  Masked steps (channels a location does not
keep) cost a predicated iteration; the decoder must make them anyway because which
channels are kept is only known once the level is decoded.

State arithmetic is int64 (x < 2^32 and f * (x >> 16) < 2^32 fit, signedness never
matters).  Runs compiled on CUDA tensors or, for CPU tensors, in the Triton
interpreter (TRITON_INTERPRET=1 before import); anything else raises RuntimeError.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl

from engine.format import lanes_reference

from .pack_triton import check_device, interpreter_active, pow2

# Lanes per program: one warp's worth compiled (one lane per thread); the
# interpreter runs each program as numpy code, so fewer, wider programs are faster.
GPU_LANES = 32
INTERPRETER_LANES = 256
COMPACT_BLOCK = 1024


# --------------------------------------------------------------------------- device steps

@triton.jit
def _enc_step(x, wp, row, start, f, active):
    """One symbol (start, f) into states x, words written at row[wp - 1] downwards."""
    f = tl.where(active, f, 1)
    emit = active & (x >= (f << 16))
    tl.store(row + wp - 1, (x & 65535).to(tl.uint16), mask=emit)
    wp = tl.where(emit, wp - 1, wp)
    x = tl.where(emit, x >> 16, x)
    q = x // f
    x = tl.where(active, (q << 16) + (x - q * f) + start, x)
    return x, wp


@triton.jit
def _enc_bit(x, wp, row, p1, bit, active):
    f = tl.where(bit, p1, 65536 - p1)
    start = tl.where(bit, 65536 - p1, 0)
    return _enc_step(x, wp, row, start, f, active)


@triton.jit
def _dec_renorm(x, pos, bad, data_ptr, end, active):
    """x below 2^16 reads one word; a lane out of words is bad and keeps x = 2^16."""
    need = active & (x < 65536)
    can = pos < end
    w = tl.load(data_ptr + pos, mask=need & can, other=0).to(tl.int64)
    bad = bad | (need & (pos >= end))
    x = tl.where(need, tl.where(can, (x << 16) | w, 65536), x)
    pos = tl.where(need & can, pos + 1, pos)
    return x, pos, bad


@triton.jit
def _dec_bit(x, pos, bad, data_ptr, end, p1, active):
    slot = x & 65535
    f0 = 65536 - p1
    b = slot >= f0
    f = tl.where(b, p1, f0)
    start = tl.where(b, f0, 0)
    x = tl.where(active, f * (x >> 16) + slot - start, x)
    x, pos, bad = _dec_renorm(x, pos, bad, data_ptr, end, active)
    return b, x, pos, bad


# --------------------------------------------------------------------------- encode

@triton.jit
def _neighbours(plane, loc, W, iu, idn, il, ir):
    """A code's neighbour context index (Y and CbCr alike): 4 * (ones among the kept
    up/down/left/right bits of this channel's plane) + how many of the four are kept
    (the masks)."""
    ones = ((tl.load(plane + loc - W, mask=iu, other=0).to(tl.float32) > 0.5).to(tl.int32)
            + (tl.load(plane + loc + W, mask=idn, other=0).to(tl.float32) > 0.5).to(tl.int32)
            + (tl.load(plane + loc - 1, mask=il, other=0).to(tl.float32) > 0.5).to(tl.int32)
            + (tl.load(plane + loc + 1, mask=ir, other=0).to(tl.float32) > 0.5).to(tl.int32))
    return 4 * ones + iu.to(tl.int32) + idn.to(tl.int32) + il.to(tl.int32) + ir.to(tl.int32)


@triton.jit
def _lanes(geo_ptr, NL, BLOCK: tl.constexpr):
    """A program's lanes, the prologue of both kernels: lane index j, which are live,
    each lane's image and rectangle (y0, x0, th, tw) and colour flag, read from the rows
    of :attr:`Geometry.table` (6, NL), and a zero vector for scalar conditions (the
    interpreter mistypes bool & scalar)."""
    j = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = j < NL
    img = tl.load(geo_ptr + j, mask=live, other=0).to(tl.int64)
    y0 = tl.load(geo_ptr + NL + j, mask=live, other=0)
    x0 = tl.load(geo_ptr + 2 * NL + j, mask=live, other=0)
    th = tl.load(geo_ptr + 3 * NL + j, mask=live, other=0)
    tw = tl.load(geo_ptr + 4 * NL + j, mask=live, other=0)
    color = tl.load(geo_ptr + 5 * NL + j, mask=live, other=0) != 0
    zero = tl.zeros([BLOCK], tl.int32)
    return j, live, img, y0, x0, th, tw, color, zero


@triton.jit
def _tables(tab_ptr, N: tl.constexpr, L: tl.constexpr):
    """:class:`DeviceTables`' flat tensor -> its (map counts, Y, CbCr) tables."""
    ytab_ptr = tab_ptr + (L + 1) * (L + 1) * (L + 1)
    return tab_ptr, ytab_ptr, ytab_ptr + 2 * N * L * 75


@triton.jit
def _chroma(y0, x0, th, tw, H, W, TH, TW):
    """The lanes' half-size CbCr rectangles: (plane width, plane size, y0, x0, th, tw,
    the checkerboard's offset, rows and part-columns to walk)."""
    WC = W // 2
    cy0 = y0 // 2
    cx0 = x0 // 2
    return WC, (H // 2) * WC, cy0, cx0, th // 2, tw // 2, (cy0 + cx0) & 1, TH // 2, (TW // 2 + 1) // 2


@triton.jit
def _kept_around(lv_img, loc, W, at, ty, tx, th, tw, zero, G: tl.constexpr):
    """The kept-channel counts (level * G) of the up/down/left/right neighbours in the lane."""
    ku = tl.load(lv_img + loc - W, mask=at & (zero + ty > 0), other=0).to(tl.float32).to(tl.int32) * G
    kd = tl.load(lv_img + loc + W, mask=at & (ty + 1 < th), other=0).to(tl.float32).to(tl.int32) * G
    kl = tl.load(lv_img + loc - 1, mask=at & (zero + tx > 0), other=0).to(tl.float32).to(tl.int32) * G
    kr = tl.load(lv_img + loc + 1, mask=at & (tx + 1 < tw), other=0).to(tl.float32).to(tl.int32) * G
    return ku, kd, kl, kr


@triton.jit
def _encode_kernel(lv_ptr, e_ptr, ec_ptr, tab_ptr, geo_ptr, out_ptr, len_ptr, NL, H, W, CAP, TH, TW,
                   N: tl.constexpr, L: tl.constexpr, M: tl.constexpr, G: tl.constexpr,
                   BLOCK: tl.constexpr):
    j, live, img, y0, x0, th, tw, color, zero = _lanes(geo_ptr, NL, BLOCK)
    cum_ptr, ytab_ptr, ctab_ptr = _tables(tab_ptr, N, L)
    row = out_ptr + j.to(tl.int64) * CAP
    x = tl.full([BLOCK], 65536, tl.int64)
    wp = tl.zeros([BLOCK], tl.int64) + CAP
    HW = H * W
    lv_img = lv_ptr + img * HW
    e_img = e_ptr + img * (N * HW)
    # ---- CbCr codes (colour lanes), reverse order: part 1, then part 0
    WC, HWC, cy0, cx0, ch, cw, coff, TCH, JXC = _chroma(y0, x0, th, tw, H, W, TH, TW)
    ec_img = ec_ptr + img * (M * HWC)
    for pp in tl.static_range(2):
        part = 1 - pp
        for iy in range(TCH):
            ty = TCH - 1 - iy
            for ix in range(JXC):
                tx = 2 * (JXC - 1 - ix) + ((ty + coff + part) & 1)
                at = live & color & (ty < ch) & (tx < cw)
                loc = (cy0 + ty) * WC + cx0 + tx
                nu = at & (zero + ty > 0)
                nd = at & (ty + 1 < ch)
                nl = at & (zero + tx > 0)
                nr = at & (tx + 1 < cw)
                for kk in range(M):
                    k = M - 1 - kk
                    bit = tl.load(ec_img + k * HWC + loc, mask=at, other=0.0).to(tl.float32) > 0.5
                    pb = tl.load(ec_img + (k - 1) * HWC + loc, mask=at & (zero + k > 0), other=0.0).to(tl.float32) > 0.5
                    s = tl.where(zero + k > 0, 1 + pb.to(tl.int32), 0)
                    sp = tl.zeros([BLOCK], tl.int32)
                    if part == 1:
                        sp = _neighbours(ec_img + k * HWC, loc, WC, nu, nd, nl, nr)
                    p1 = tl.load(ctab_ptr + (((part * M + k) * 3 + s) * 25 + sp), mask=at, other=32768)
                    x, wp = _enc_bit(x, wp, row, p1.to(tl.int64), bit, at)
    # ---- Y codes, reverse order: part 1, then part 0
    JX = (TW + 1) // 2
    for pp in tl.static_range(2):
        part = 1 - pp
        for iy in range(TH):
            ty = TH - 1 - iy
            for ix in range(JX):
                tx = 2 * (JX - 1 - ix) + ((ty + part) & 1)
                at = live & (ty < th) & (tx < tw)
                loc = (y0 + ty) * W + x0 + tx
                q = tl.load(lv_img + loc, mask=at, other=0).to(tl.int32)
                K = q * G
                ku = tl.zeros([BLOCK], tl.int32)
                kd = tl.zeros([BLOCK], tl.int32)
                kl = tl.zeros([BLOCK], tl.int32)
                kr = tl.zeros([BLOCK], tl.int32)
                if part == 1:
                    ku, kd, kl, kr = _kept_around(lv_img, loc, W, at, ty, tx, th, tw, zero, G)
                # channels kept anywhere in the block: the rest of the N would be all masked
                KMAX = tl.max(K, axis=0)
                for kk in range(KMAX):
                    k = KMAX - 1 - kk
                    act = at & (k < K)
                    bit = tl.load(e_img + k * HW + loc, mask=act, other=0.0).to(tl.float32) > 0.5
                    pb = tl.load(e_img + (k - 1) * HW + loc, mask=act & (zero + k > 0), other=0.0).to(tl.float32) > 0.5
                    s = tl.where(zero + k > 0, 1 + pb.to(tl.int32), 0)
                    sp = tl.zeros([BLOCK], tl.int32)
                    if part == 1:
                        iu = act & (k < ku)
                        idn = act & (k < kd)
                        il = act & (k < kl)
                        ir = act & (k < kr)
                        sp = _neighbours(e_img + k * HW, loc, W, iu, idn, il, ir)
                    p1 = tl.load(ytab_ptr + ((((part * N + k) * L + q) * 3 + s) * 25 + sp), mask=act, other=32768)
                    x, wp = _enc_bit(x, wp, row, p1.to(tl.int64), bit, act)
    # ---- importance levels, reverse raster; context (up, left), L outside the lane
    for iy in range(TH):
        ty = TH - 1 - iy
        for ix in range(TW):
            tx = TW - 1 - ix
            at = live & (ty < th) & (tx < tw)
            loc = (y0 + ty) * W + x0 + tx
            sym = tl.load(lv_img + loc, mask=at, other=0).to(tl.int32)
            up = tl.where(zero + ty > 0, tl.load(lv_img + loc - W, mask=at & (zero + ty > 0), other=0).to(tl.int32), L)
            left = tl.where(zero + tx > 0, tl.load(lv_img + loc - 1, mask=at & (zero + tx > 0), other=0).to(tl.int32), L)
            base = cum_ptr + (up * (L + 1) + left) * (L + 1) + sym
            lo = tl.load(base, mask=at, other=0).to(tl.int64)
            hi = tl.load(base + 1, mask=at, other=1).to(tl.int64)
            x, wp = _enc_step(x, wp, row, lo, hi - lo, at)
    # ---- the final state, in front of the words (u32 LE = low word, high word)
    tl.store(row + wp - 2, (x & 65535).to(tl.uint16), mask=live)
    tl.store(row + wp - 1, (x >> 16).to(tl.uint16), mask=live)
    tl.store(len_ptr + j, (CAP - wp + 2).to(tl.int32), mask=live)


@triton.jit
def _compact_kernel(words_ptr, len_ptr, off_ptr, out_ptr, CAP, BLOCKW: tl.constexpr):
    """grid (lanes, cdiv(CAP, BLOCKW)): lane i's last len[i] words -> out[off[i]:]."""
    i = tl.program_id(0)
    t = tl.program_id(1) * BLOCKW + tl.arange(0, BLOCKW)
    n = tl.load(len_ptr + i).to(tl.int64)
    off = tl.load(off_ptr + i)
    m = t < n
    w = tl.load(words_ptr + i.to(tl.int64) * CAP + CAP - n + t, mask=m, other=0)
    tl.store(out_ptr + off + t, w, mask=m)


# --------------------------------------------------------------------------- decode

@triton.jit
def _decode_kernel(data_ptr, start_ptr, end_ptr, tab_ptr, geo_ptr, lv_ptr, y_ptr, c_ptr, status_ptr,
                   NL, H, W, TH, TW,
                   N: tl.constexpr, L: tl.constexpr, M: tl.constexpr, G: tl.constexpr,
                   BLOCK: tl.constexpr):
    j, live, img, y0, x0, th, tw, color, zero = _lanes(geo_ptr, NL, BLOCK)
    cum_ptr, ytab_ptr, ctab_ptr = _tables(tab_ptr, N, L)
    pos = tl.load(start_ptr + j, mask=live, other=0)
    end = tl.load(end_ptr + j, mask=live, other=0)
    bad = live & (end - pos < 2)
    w0 = tl.load(data_ptr + pos, mask=live & ~bad, other=0).to(tl.int64)
    w1 = tl.load(data_ptr + pos + 1, mask=live & ~bad, other=0).to(tl.int64)
    x = tl.where(bad, 65536, w0 | (w1 << 16))
    bad = bad | (live & (x < 65536))
    x = tl.where(x < 65536, 65536, x)
    pos = pos + 2
    HW = H * W
    lv_img = lv_ptr + img * HW
    y_img = y_ptr + img * (N * HW)
    # ---- importance levels, raster order; (up, left) context, L outside the lane
    for ty in range(TH):
        left = tl.full([BLOCK], L, tl.int32)
        for tx in range(TW):
            at = live & (ty < th) & (tx < tw)
            loc = (y0 + ty) * W + x0 + tx
            up = tl.where(zero + ty > 0, tl.load(lv_img + loc - W, mask=at & (zero + ty > 0), other=0).to(tl.int32), L)
            base = cum_ptr + (up * (L + 1) + left) * (L + 1)
            slot = x & 65535
            sym = tl.zeros([BLOCK], tl.int32)
            for s in tl.static_range(1, L):
                sym += (tl.load(base + s, mask=at, other=65536).to(tl.int64) <= slot).to(tl.int32)
            lo = tl.load(base + sym, mask=at, other=0).to(tl.int64)
            hi = tl.load(base + sym + 1, mask=at, other=1).to(tl.int64)
            x = tl.where(at, (hi - lo) * (x >> 16) + slot - lo, x)
            x, pos, bad = _dec_renorm(x, pos, bad, data_ptr, end, at)
            tl.store(lv_img + loc, sym.to(lv_ptr.dtype.element_ty), mask=at)
            left = sym
        tl.debug_barrier()
    # ---- Y codes: part 0 (y + x even), then part 1; kept channels 0 .. q*G - 1
    JX = (TW + 1) // 2
    for part in tl.static_range(2):
        for ty in range(TH):
            for ix in range(JX):
                tx = 2 * ix + ((ty + part) & 1)
                at = live & (ty < th) & (tx < tw)
                loc = (y0 + ty) * W + x0 + tx
                q = tl.load(lv_img + loc, mask=at, other=0).to(tl.float32).to(tl.int32)
                K = q * G
                ku = tl.zeros([BLOCK], tl.int32)
                kd = tl.zeros([BLOCK], tl.int32)
                kl = tl.zeros([BLOCK], tl.int32)
                kr = tl.zeros([BLOCK], tl.int32)
                if part == 1:
                    ku, kd, kl, kr = _kept_around(lv_img, loc, W, at, ty, tx, th, tw, zero, G)
                prev = tl.zeros([BLOCK], tl.int32)
                for k in range(tl.max(K, axis=0)):     # channels kept anywhere in the block
                    act = at & (k < K)
                    s = tl.where(zero + k > 0, 1 + prev, 0)
                    sp = tl.zeros([BLOCK], tl.int32)
                    if part == 1:
                        iu = act & (k < ku)
                        idn = act & (k < kd)
                        il = act & (k < kl)
                        ir = act & (k < kr)
                        sp = _neighbours(y_img + k * HW, loc, W, iu, idn, il, ir)
                    p1 = tl.load(ytab_ptr + ((((part * N + k) * L + q) * 3 + s) * 25 + sp), mask=act, other=32768)
                    b, x, pos, bad = _dec_bit(x, pos, bad, data_ptr, end, p1.to(tl.int64), act)
                    tl.store(y_img + k * HW + loc, b.to(y_ptr.dtype.element_ty), mask=act)
                    prev = b.to(tl.int32)
        tl.debug_barrier()
    # ---- CbCr codes of the half-size rectangle (colour lanes), every channel kept
    WC, HWC, cy0, cx0, ch, cw, coff, TCH, JXC = _chroma(y0, x0, th, tw, H, W, TH, TW)
    c_img = c_ptr + img * (M * HWC)
    for part in tl.static_range(2):
        for ty in range(TCH):
            for ix in range(JXC):
                tx = 2 * ix + ((ty + coff + part) & 1)
                at = live & color & (ty < ch) & (tx < cw)
                loc = (cy0 + ty) * WC + cx0 + tx
                nu = at & (zero + ty > 0)
                nd = at & (ty + 1 < ch)
                nl = at & (zero + tx > 0)
                nr = at & (tx + 1 < cw)
                prev = tl.zeros([BLOCK], tl.int32)
                for k in range(M):
                    s = tl.where(zero + k > 0, 1 + prev, 0)
                    sp = tl.zeros([BLOCK], tl.int32)
                    if part == 1:
                        sp = _neighbours(c_img + k * HWC, loc, WC, nu, nd, nl, nr)
                    p1 = tl.load(ctab_ptr + (((part * M + k) * 3 + s) * 25 + sp), mask=at, other=32768)
                    b, x, pos, bad = _dec_bit(x, pos, bad, data_ptr, end, p1.to(tl.int64), at)
                    tl.store(c_img + k * HWC + loc, b.to(c_ptr.dtype.element_ty), mask=at)
                    prev = b.to(tl.int32)
        tl.debug_barrier()
    ok = live & ~bad & (x == 65536) & (pos == end)
    tl.store(status_ptr + j, ok.to(tl.int32), mask=live)


# --------------------------------------------------------------------------- host side

@dataclass(frozen=True)
class DeviceTables:
    """One rung's tables on a device, in the kernels' layout: one flat int32 tensor
    (the kernels' ``tab_ptr``) holding, back to back, the cumulative map counts
    ((L+1)^2, L+1), the Y codes' P(1) * 2^16 (2, n, L, 3, 25) and the CbCr codes'
    (2, m, 1, 3, 25)."""
    flat: torch.Tensor
    L: int
    n: int

    @property
    def cum(self) -> torch.Tensor:
        k = (self.L + 1) ** 3
        return self.flat[:k].view((self.L + 1) ** 2, self.L + 1)

    @property
    def y(self) -> torch.Tensor:
        k = (self.L + 1) ** 3
        return self.flat[k:k + 2 * self.n * self.L * 75].view(2, self.n, self.L, 3, 25)

    @property
    def c(self) -> torch.Tensor:
        return self.flat[(self.L + 1) ** 3 + 2 * self.n * self.L * 75:].view(2, -1, 1, 3, 25)


_TABLES: dict[tuple, tuple] = {}


def device_tables(tables, L: int, device) -> DeviceTables:
    """``tables`` (an engine.format.context_coder.Tables) on ``device``, cached per tables object."""
    device = torch.device(device)
    key = (id(tables), str(device))
    hit = _TABLES.get(key)
    if hit is None or hit[0] is not tables:
        maps = np.asarray(tables.map, np.int64).reshape(-1, L)
        cum = np.concatenate([np.zeros((maps.shape[0], 1), np.int64), np.cumsum(maps, 1)], 1)
        y, c = np.asarray(tables.y, np.int32), np.asarray(tables.c, np.int32)
        if cum.shape != ((L + 1) ** 2, L + 1) or y.shape[2:] != (L, 3, 25) or c.shape[2:] != (1, 3, 25):
            raise ValueError(f"tables of shapes {maps.shape}, {y.shape}, {c.shape} for L={L}")
        flat = np.concatenate([cum.astype(np.int32).ravel(), y.ravel(), c.ravel()])
        dt = DeviceTables(torch.from_numpy(flat).to(device), L, y.shape[1])
        hit = _TABLES[key] = (tables, dt)
    return hit[1]


@dataclass(frozen=True)
class Geometry:
    """Every lane of a batch: its image and rectangle, the rows of ``table`` (6, lanes)
    int32 on the device (the kernels' ``geo_ptr``): image, y0, x0, th, tw, colour."""
    table: torch.Tensor
    per_image: list            # lanes of each image, in order
    max_th: int
    max_tw: int
    max_symbols: int           # the most symbols any lane can hold

    img = property(lambda self: self.table[0])
    y0 = property(lambda self: self.table[1])
    x0 = property(lambda self: self.table[2])
    th = property(lambda self: self.table[3])
    tw = property(lambda self: self.table[4])
    color = property(lambda self: self.table[5])

    def __len__(self) -> int:
        return int(self.table.shape[1])


def geometry(h: int, w: int, tiles: list[int], grays: list[bool], n: int, m: int, device) -> Geometry:
    """Lanes of a batch of h x w Y grids, image b cut in tiles of ``tiles[b]``."""
    if h % 2 or w % 2:
        raise ValueError(f"the Y grid must have even sides, got {h}x{w}")
    rows, per = [], []
    for b, (tile, gray) in enumerate(zip(tiles, grays)):
        rects = lanes_reference.lane_rects(h, w, int(tile))
        per.append(len(rects))
        rows += [(b, y0, x0, y1 - y0, x1 - x0, 0 if gray else 1) for y0, y1, x0, x1 in rects]
    a = np.asarray(rows, np.int32).reshape(-1, 6)
    t = torch.from_numpy(np.ascontiguousarray(a.T)).to(device)
    th = int(a[:, 3].max(initial=0))
    tw = int(a[:, 4].max(initial=0))
    return Geometry(t, per, th, tw, th * tw * (1 + n) + (th // 2) * (tw // 2) * m)


def launch_lanes() -> int:
    return INTERPRETER_LANES if interpreter_active() else GPU_LANES


def _lane_launch(nl: int) -> tuple[tuple, dict]:
    """The grid and options of a launch over ``nl`` lanes (one lane per element)."""
    block = min(launch_lanes(), pow2(nl))
    return (triton.cdiv(nl, block),), dict(BLOCK=block, **({} if interpreter_active() else {"num_warps": 1}))


def encode_device(levels: torch.Tensor, e: torch.Tensor, ec: torch.Tensor | None, grays: list[bool],
                  tables, n: int, L: int, m: int, tile: int, dt: DeviceTables | None = None):
    """The device half of :func:`encode`, no host synchronisation.

    levels (B, 1, h, w) or (B, h, w) uint8, e (B, n, h, w) the Y codes' sigmoid
    outputs (or 0/1 bits: a bit is ``e > 0.5``), ec (B, m, h/2, w/2) (None when every
    image is grayscale) -> (words (lanes, CAP) uint16, lengths (lanes,) int32 in words,
    :class:`Geometry`); lane i is the last ``lengths[i]`` words of ``words[i]``."""
    device = check_device(e.device)
    B, ne, h, w = e.shape
    if ne != n:
        raise ValueError(f"e has {ne} channels, expected n={n}")
    levels = levels.reshape(B, h, w)
    if levels.dtype != torch.uint8 or levels.device != device:
        raise ValueError(f"levels must be uint8 on {device}, got {levels.dtype} on {levels.device}")
    if ec is None:
        if not all(grays):
            raise ValueError("colour images need their CbCr codes (ec)")
        ec = torch.zeros(B, m, h // 2, w // 2, dtype=torch.uint8, device=device)
    if tuple(ec.shape) != (B, m, h // 2, w // 2) or ec.device != device:
        raise ValueError(f"ec must be {(B, m, h // 2, w // 2)} on {device}, got {tuple(ec.shape)} on {ec.device}")
    if len(grays) != B:
        raise ValueError(f"{len(grays)} colour flags for {B} images")
    geo = geometry(h, w, [tile] * B, grays, n, m, device)
    dt = dt or device_tables(tables, L, device)
    cap = geo.max_symbols + 2
    nl = len(geo)
    words = torch.empty(nl, cap, dtype=torch.uint16, device=device)
    lens = torch.empty(nl, dtype=torch.int32, device=device)
    if nl:
        grid, opts = _lane_launch(nl)
        _encode_kernel[grid](levels.contiguous(), e.contiguous(), ec.contiguous(), dt.flat, geo.table, words, lens,
                             nl, h, w, cap, geo.max_th, geo.max_tw, N=n, L=L, M=m, G=n // (L - 1), **opts)
    return words, lens, geo


def compact(words: torch.Tensor, lens: torch.Tensor, total: int | None = None):
    """Each lane's words back to back on the device -> (flat uint16 words, int64 word
    offsets (lanes + 1,)).  ``total`` (the sum of ``lens``, if the caller already has it
    on the host) saves a synchronisation."""
    offs = torch.zeros(lens.shape[0] + 1, dtype=torch.int64, device=lens.device)
    torch.cumsum(lens.to(torch.int64), 0, out=offs[1:])
    if total is None:
        total = int(offs[-1])
    out = torch.empty(int(total), dtype=torch.uint16, device=words.device)
    nl, cap = words.shape
    if nl and total:
        block = COMPACT_BLOCK if not interpreter_active() else pow2(cap)
        _compact_kernel[(nl, triton.cdiv(cap, block))](words, lens, offs, out, cap, BLOCKW=block)
    return out, offs


def lanes_to_bytes(flat: np.ndarray, offs: np.ndarray, per_image: list) -> list[list[bytes]]:
    """Host copies of :func:`compact`'s output -> each image's lanes' bytes."""
    raw = np.ascontiguousarray(flat).astype("<u2", copy=False).tobytes()
    out, i = [], 0
    for k in per_image:
        out.append([raw[2 * int(offs[j]):2 * int(offs[j + 1])] for j in range(i, i + k)])
        i += k
    return out


def encode(levels, e, ec, grays, tables, n: int, L: int, m: int, tile: int) -> list[list[bytes]]:
    """Codes on a device -> each image's lanes, the bytes the native coder writes."""
    words, lens, geo = encode_device(levels, e, ec, grays, tables, n, L, m, tile)
    flat, offs = compact(words, lens)
    return lanes_to_bytes(flat.cpu().numpy(), offs.cpu().numpy(), geo.per_image)


def upload(bodies: list, device, host_buffer=None):
    """Lanes bodies (engine.format.bitstream.Lanes) -> (device uint16 words, lane start and end
    word offsets (int64, lanes)).  Every lane has an even length (the container checks),
    so the bodies' concatenation is a sequence of little-endian words."""
    starts, ends, chunks, at = [], [], [], 0
    for body in bodies:
        if len(body.data) % 2:
            raise ValueError("a lanes body has an odd length")
        st = np.asarray(body.starts, np.int64)
        starts.append(at + st[:-1] // 2)
        ends.append(at + st[1:] // 2)
        chunks.append(body.data)
        at += len(body.data) // 2
    raw = b"".join(chunks)
    words = np.frombuffer(raw, "<u2") if raw else np.zeros(1, "<u2")
    host = torch.from_numpy(words.astype(np.uint16, copy=True))
    if host_buffer is not None:
        host = host_buffer(host.shape, torch.uint16).copy_(host)
    data = host.to(device, non_blocking=host_buffer is not None)
    se = torch.from_numpy(np.stack([np.concatenate(starts or [np.zeros(0, np.int64)]),
                                    np.concatenate(ends or [np.zeros(0, np.int64)])])).to(device)
    return data, se[0], se[1]


def decode_device(bodies: list, tiles: list[int], grays: list[bool], h: int, w: int, tables, n: int, L: int, m: int,
                  device, dtype=torch.float32, dt: DeviceTables | None = None, host_buffer=None):
    """Lanes of a batch of h x w Y grids -> (levels (B, 1, h, w), bits (B, n, h, w),
    cbits (B, m, h/2, w/2)) of ``dtype`` on ``device`` (the decoder network's inputs;
    zeros where a channel is not kept, and for grayscale images' CbCr), and each lane's
    status (int32, 1 = valid), all without host synchronisation."""
    device = check_device(device)
    B = len(bodies)
    geo = geometry(h, w, tiles, grays, n, m, device)
    for body, k, tile in zip(bodies, geo.per_image, tiles):
        if len(body) != k:
            raise ValueError(f"a body of {len(body)} lanes for a {w}x{h} grid in tiles of {tile} ({k} lanes)")
    data, starts, ends = upload(bodies, device, host_buffer)
    dt = dt or device_tables(tables, L, device)
    lv = torch.zeros(B, 1, h, w, dtype=dtype, device=device)
    yb = torch.zeros(B, n, h, w, dtype=dtype, device=device)
    cb = torch.zeros(B, m, h // 2, w // 2, dtype=dtype, device=device)
    nl = len(geo)
    status = torch.zeros(nl, dtype=torch.int32, device=device)
    if nl:
        grid, opts = _lane_launch(nl)
        _decode_kernel[grid](data, starts, ends, dt.flat, geo.table, lv, yb, cb, status,
                             nl, h, w, geo.max_th, geo.max_tw, N=n, L=L, M=m, G=n // (L - 1), **opts)
    return (lv, yb, cb), status, geo


def image_status(status: np.ndarray, per_image: list) -> list[bool]:
    """Per-lane status (host) -> per image: every lane valid."""
    out, i = [], 0
    for k in per_image:
        out.append(bool(np.all(status[i:i + k] == 1)))
        i += k
    return out
