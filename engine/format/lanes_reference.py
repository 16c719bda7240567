"""Bitstream v2's entropy coding, the spec in code (docs/bitstream.md, "Version 2").

Plain numpy and Python, written to be read rather than to be fast: the native coder
(native/rans.cpp, ``engine.rans_native``) must produce the same bytes and decode them
the same (tests/test_lanes.py).

The latent grid (h x w Y locations; h, w even) is cut into ``tile`` x ``tile`` lanes
in raster order (the last row and column of tiles may be smaller).  A lane holds
one rANS stream coding, in this order:

1. the importance levels of its Y rectangle, raster order, each with the
   distribution ``map[up, left]`` (L where the neighbour lies outside the lane);
2. its Y codes: first the locations with (y + x) even (image coordinates), then the
   odd ones, raster order within each part; at each location its kept channels
   k = 0 .. q*g-1 in order, P(1) = ``y[part, k, q, s, c]`` / 2^16 with s = 0 for k = 0
   else 1 + the bit of channel k-1 there, c = 5*ones + zeros among the four
   neighbours *inside the lane* that keep channel k (part 1 only; 0 in part 0);
3. for colour images, the CbCr codes of the lane's half-size rectangle, the same way
   with every channel kept and q = 0 (table ``c``).

These are version 1's contexts and tables (engine/format/context_coder.py), except that a
neighbour across a lane border counts as outside, so each lane decodes alone.

rANS: state x in [2^16, 2^32), 16-bit words, probabilities out of 2^16.  Encoding
runs over the symbols in reverse from x = 2^16: before a symbol of frequency f the
encoder emits the low word and shifts while x >= f * 2^16, then
x = (x // f) * 2^16 + x % f + start.  The lane's bytes are the final x (u32 LE) and
then the emitted words in reverse emission order (u16 LE).  Decoding: slot = x mod
2^16 picks the symbol (start <= slot < start + f); x = f * (x >> 16) + slot - start;
when x < 2^16 it reads one word: x = (x << 16) | word.  A binary symbol has
start 0, f = 2^16 - P1 for 0 and start 2^16 - P1, f = P1 for 1.  A lane is valid
only if it decodes to its last byte exactly and ends with x = 2^16.
"""
from __future__ import annotations

import struct

import numpy as np

from ..errors import BitstreamError

# ``tables`` below is an engine.format.context_coder.Tables (map, y, c arrays); not imported, so
# this module stays at the bottom layer with the other format definitions.

ONE = 1 << 16
LOW = 1 << 16
SPATIAL = 25


def lane_rects(h: int, w: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of each lane of an h x w Y grid, in raster order."""
    return [(y0, min(h, y0 + tile), x0, min(w, x0 + tile))
            for y0 in range(0, h, tile) for x0 in range(0, w, tile)]


def lane_count(h: int, w: int, tile: int) -> int:
    return -(-h // tile) * -(-w // tile)


def lane_count_error(count: int, h: int, w: int, tile: int) -> str | None:
    """Why a file with ``count`` lanes cannot be an h x w Y grid in tiles of ``tile``, or None."""
    want = lane_count(h, w, tile)
    return None if count == want else f"the file has {count} lanes, its {w}x{h} grid in tiles of {tile} has {want}"


def _cum(row: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(row.astype(np.int64))])


# ----------------------------------------------------------------------------- contexts

def sum4(a: np.ndarray) -> np.ndarray:
    """Sum of the 4-neighbours over the last two axes (zero outside)."""
    s = np.zeros_like(a)
    s[..., 1:, :] += a[..., :-1, :]
    s[..., :-1, :] += a[..., 1:, :]
    s[..., :, 1:] += a[..., :, :-1]
    s[..., :, :-1] += a[..., :, 1:]
    return s


def _neighbour_counts(ones: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(.., th, tw) ones and kept -> ones and zeros among the 4 neighbours inside the rectangle."""
    one = (ones.astype(bool) & kept).astype(np.int64)
    return sum4(one), sum4((kept & ~ones.astype(bool)).astype(np.int64))


def _code_symbols(bits: np.ndarray, q: np.ndarray, req: np.ndarray, Lq: int, table: np.ndarray,
                  y0: int, x0: int) -> tuple[np.ndarray, np.ndarray]:
    """One rectangle's codes (C, th, tw) -> (P(1) per coded bit, the bit), in coding order."""
    C, th, tw = bits.shape
    kept = q[None] >= req[:, None, None]                                   # (C, th, tw)
    yy, xx = np.indices((th, tw))
    parity = (yy + y0 + xx + x0) % 2
    prev = np.zeros((C, th, tw), np.int64)
    prev[1:] = 1 + bits[:-1]
    n1, n0 = _neighbour_counts(bits * (parity == 0)[None], kept & (parity == 0)[None])
    p1s, syms = [], []
    flat = table.reshape(-1)
    for part in (0, 1):
        sp = (5 * n1 + n0) if part else np.zeros_like(n1)
        idx = ((((part * C + np.arange(C)[:, None, None]) * Lq + q[None]) * 3 + prev) * SPATIAL + sp)
        sel = kept & (parity == part)[None]
        # location-major: (th, tw, C) raster over locations, channels within one
        order = np.transpose(sel, (1, 2, 0))
        p1s.append(np.transpose(flat[idx], (1, 2, 0))[order])
        syms.append(np.transpose(bits, (1, 2, 0))[order])
    return np.concatenate(p1s).astype(np.int64), np.concatenate(syms).astype(np.int64)


def lane_symbols(levels: np.ndarray, ydense: np.ndarray, cdense: np.ndarray | None, rect, n: int, L: int,
                 tables: Tables) -> tuple[np.ndarray, np.ndarray]:
    """The (start, freq) of every symbol of one lane, in coding order."""
    y0, y1, x0, x1 = rect
    lv = levels[y0:y1, x0:x1].astype(np.int64)
    grid = np.full((y1 - y0 + 1, x1 - x0 + 1), L, np.int64)
    grid[1:, 1:] = lv
    rows = (grid[:-1, 1:] * (L + 1) + grid[1:, :-1]).reshape(-1)          # (up, left)
    maps = tables.map.reshape(-1, L).astype(np.int64)
    cum = np.concatenate([np.zeros((maps.shape[0], 1), np.int64), np.cumsum(maps, 1)], 1)
    s = lv.reshape(-1)
    starts, freqs = [cum[rows, s]], [maps[rows, s]]
    g = n // (L - 1)
    parts = [(ydense[:, y0:y1, x0:x1], lv, np.arange(n) // g + 1, L, tables.y, y0, x0)]
    if cdense is not None:
        cy0, cx0 = y0 // 2, x0 // 2
        cb = cdense[:, cy0:y1 // 2, cx0:x1 // 2]
        parts.append((cb, np.zeros(cb.shape[1:], np.int64), np.zeros(cb.shape[0], np.int64), 1, tables.c, cy0, cx0))
    for bits, q, req, Lq, table, oy, ox in parts:
        p1, b = _code_symbols(bits.astype(np.int64), q, req, Lq, table, oy, ox)
        starts.append(np.where(b == 1, ONE - p1, 0))
        freqs.append(np.where(b == 1, p1, ONE - p1))
    return np.concatenate(starts), np.concatenate(freqs)


# ----------------------------------------------------------------------------- rANS

def rans_encode(starts: np.ndarray, freqs: np.ndarray) -> bytes:
    x = LOW
    words = []
    for start, f in zip(reversed(starts.tolist()), reversed(freqs.tolist())):
        if x >= f << 16:
            words.append(x & 0xFFFF)
            x >>= 16
        x = ((x // f) << 16) + x % f + start
    return struct.pack("<I", x) + np.array(words[::-1], "<u2").tobytes()


class RansDecoder:
    def __init__(self, data: bytes):
        if len(data) < 4 or len(data) % 2:
            raise BitstreamError(f"corrupt lane: {len(data)} bytes is not a rANS stream")
        self.data, self.pos = data, 4
        self.x = struct.unpack_from("<I", data)[0]
        if self.x < LOW:
            raise BitstreamError("corrupt lane: initial state out of range")

    def _advance(self, start: int, f: int, slot: int):
        self.x = f * (self.x >> 16) + slot - start
        if self.x < LOW:
            if self.pos + 2 > len(self.data):
                raise BitstreamError("corrupt lane: the stream ends before its symbols")
            self.x = (self.x << 16) | struct.unpack_from("<H", self.data, self.pos)[0]
            self.pos += 2

    def bit(self, p1: int) -> int:
        slot = self.x & (ONE - 1)
        f0 = ONE - int(p1)
        if slot < f0:
            self._advance(0, f0, slot)
            return 0
        self._advance(f0, int(p1), slot)
        return 1

    def symbol(self, cum: np.ndarray) -> int:
        slot = self.x & (ONE - 1)
        s = int(np.searchsorted(cum, slot, side="right")) - 1
        self._advance(int(cum[s]), int(cum[s + 1] - cum[s]), slot)
        return s

    def finish(self):
        if self.x != LOW or self.pos != len(self.data):
            raise BitstreamError("corrupt lane: its rANS stream does not decode to its end")


# ----------------------------------------------------------------------------- image

def encode(levels: np.ndarray, ydense: np.ndarray, cdense: np.ndarray | None, n: int, L: int,
           tables: Tables, tile: int) -> list[bytes]:
    """levels (h, w), ydense (n, h, w) 0/1 (masked bits ignored), cdense (m, h/2, w/2) or
    None (grayscale) -> each lane's bytes."""
    h, w = levels.shape
    return [rans_encode(*lane_symbols(levels, ydense, cdense, r, n, L, tables)) for r in lane_rects(h, w, tile)]


def _decode_codes(dec: RansDecoder, out: np.ndarray, q: np.ndarray, g: int, table: np.ndarray, Lq: int,
                  rect, C: int):
    """Decode one rectangle's codes into out[:, y0:y1, x0:x1] (q: its levels, g channels per level)."""
    y0, y1, x0, x1 = rect
    flat = table.reshape(-1)
    for part in (0, 1):
        for y in range(y0, y1):
            for x in range(x0, x1):
                if (y + x) % 2 != part:
                    continue
                lq = int(q[y - y0, x - x0])
                for k in range(lq * g if Lq > 1 else C):
                    s = 0 if k == 0 else 1 + int(out[k - 1, y, x])
                    c = 0
                    if part:
                        n1 = n0 = 0
                        for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                            if y0 <= yy < y1 and x0 <= xx < x1 and (Lq == 1 or int(q[yy - y0, xx - x0]) * g > k):
                                if out[k, yy, xx]:
                                    n1 += 1
                                else:
                                    n0 += 1
                        c = 5 * n1 + n0
                    qi = lq if Lq > 1 else 0
                    out[k, y, x] = dec.bit(flat[(((part * C + k) * Lq + qi) * 3 + s) * SPATIAL + c])


def decode(lanes: list[bytes], h: int, w: int, n: int, L: int, m: int, tables: Tables, tile: int, gray: bool):
    """Each lane's bytes -> levels (h, w), ydense (n, h, w), cdense (m, h/2, w/2) uint8."""
    rects = lane_rects(h, w, tile)
    if len(lanes) != len(rects):
        raise BitstreamError(f"{len(lanes)} lanes for a grid of {len(rects)}")
    levels = np.zeros((h, w), np.uint8)
    yd = np.zeros((n, h, w), np.uint8)
    cd = np.zeros((m, h // 2, w // 2), np.uint8)
    cums = [_cum(r) for r in tables.map.reshape(-1, L)]
    g = n // (L - 1)
    for data, (y0, y1, x0, x1) in zip(lanes, rects):
        dec = RansDecoder(data)
        for y in range(y0, y1):
            for x in range(x0, x1):
                up = levels[y - 1, x] if y > y0 else L
                left = levels[y, x - 1] if x > x0 else L
                levels[y, x] = dec.symbol(cums[int(up) * (L + 1) + int(left)])
        _decode_codes(dec, yd, levels[y0:y1, x0:x1], g, tables.y, L, (y0, y1, x0, x1), n)
        if not gray:
            crect = (y0 // 2, y1 // 2, x0 // 2, x1 // 2)
            ones = np.ones((crect[1] - crect[0], crect[3] - crect[2]), np.int64)
            _decode_codes(dec, cd, ones, 1, tables.c, 1, crect, m)
        dec.finish()
    return levels, yd, cd
