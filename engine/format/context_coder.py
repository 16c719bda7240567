"""Entropy coding of the importance map and the binary codes.

Two modes (the file header says which):

* raw (``--entropy none``): the map at ceil(log2 L) bits per location, the kept
  bits exactly as the bit path packed them.
* context: a range coder (constriction's queue coder) driven by *static*
  probability tables fitted on training images and shipped with the model.
  Probabilities are integers (Bernoulli: p1 = t / 2**16; map: rows of counts
  summing to 2**16), so every float the coder sees is an exact dyadic number and
  a file decodes identically on any machine and backend.

Contexts
  map level at (y, x):  (level above, level to the left), L meaning "outside";
                        coded along anti-diagonals so each step is one vector call.
  code bit (k, y, x):   channel k, importance level, bit of channel k-1 at the same
                        location, and - for the second half of a checkerboard - the
                        number of ones and zeros among the four kept neighbours of
                        channel k (coded in the first half).  Two vector calls per
                        channel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import BitstreamError
from .lanes_reference import sum4

ONE = 1 << 16
_SPATIAL = 25   # (ones, zeros) among 4 neighbours -> ones * 5 + zeros


def _constriction():
    import constriction
    return constriction.stream


def nbits_for(levels: int) -> int:
    return max(1, int(np.ceil(np.log2(levels))))


# ----------------------------------------------------------------------------- raw

def pack_map_raw(levels: np.ndarray, L: int) -> bytes:
    nb = nbits_for(L)
    bits = np.unpackbits(levels.reshape(-1, 1).astype(np.uint8), axis=1)[:, 8 - nb:]
    return np.packbits(bits.reshape(-1)).tobytes()


def unpack_map_raw(sec: bytes, h: int, w: int, L: int) -> np.ndarray:
    nb = nbits_for(L)
    need = (h * w * nb + 7) // 8
    if len(sec) != need:
        raise BitstreamError(f"map section has {len(sec)} bytes, expected {need}")
    bits = np.unpackbits(np.frombuffer(sec, np.uint8), count=h * w * nb).reshape(-1, nb)
    vals = np.zeros((h * w,), np.int64)
    for i in range(nb):
        vals = (vals << 1) | bits[:, i]
    if vals.max(initial=0) >= L:
        raise BitstreamError(f"importance level {int(vals.max())} out of range (L = {L})")
    return vals.astype(np.uint8).reshape(h, w)


# ----------------------------------------------------------------------------- tables

@dataclass
class Tables:
    """Integer probability tables of one model quality."""
    map: np.ndarray   # (L+1, L+1, L) uint32, rows sum to 2**16
    y: np.ndarray     # (2, n, L, 3, 25) uint16, P(bit = 1) * 2**16
    c: np.ndarray     # (2, m, 1, 3, 25) uint16

    @classmethod
    def flat(cls, n: int, L: int, m: int) -> "Tables":
        row = np.full(L, ONE // L, np.uint32)
        row[0] += ONE - row.sum()
        return cls(np.tile(row, (L + 1, L + 1, 1)),
                   np.full((2, n, L, 3, _SPATIAL), ONE // 2, np.uint16),
                   np.full((2, m, 1, 3, _SPATIAL), ONE // 2, np.uint16))

    def as_dict(self, prefix: str = "") -> dict:
        return {prefix + "map": self.map, prefix + "y": self.y, prefix + "c": self.c}


def _normalize_rows(counts: np.ndarray) -> np.ndarray:
    """Counts (..., L) -> integer rows summing to exactly 2**16, each entry >= 1."""
    c = counts.astype(np.int64) * 2 + 1
    L = c.shape[-1]
    t = (c * (ONE - L)) // c.sum(-1, keepdims=True) + 1
    rem = ONE - t.sum(-1)
    idx = np.argmax(t, -1)
    np.put_along_axis(t, idx[..., None], np.take_along_axis(t, idx[..., None], -1) + rem[..., None], -1)
    return t.astype(np.uint32)


def _p1(ones: np.ndarray, total: np.ndarray) -> np.ndarray:
    p = (ones + 0.5) / (total + 1.0)
    return np.clip(np.rint(p * ONE), 64, ONE - 64).astype(np.uint16)


# ----------------------------------------------------------------------------- contexts

def _map_walk(h: int, w: int):
    """Map coding order on a level grid bordered by one row above and one column to
    the left (holding L, "outside"): (flat positions in order, the index where each
    anti-diagonal ends, the bordered row length).  Order: anti-diagonals d = y + x
    ascending, y ascending within one."""
    ys, xs = (a.ravel() for a in np.indices((h, w)))
    order = np.lexsort((ys, ys + xs))
    ys, xs = ys[order], xs[order]
    wp = w + 1
    return (ys + 1) * wp + xs + 1, np.cumsum(np.bincount(ys + xs, minlength=h + w - 1)), wp


def _map_grid(levels: np.ndarray, L: int) -> np.ndarray:
    h, w = levels.shape
    grid = np.full((h + 1, w + 1), L, np.int64)
    grid[1:, 1:] = levels
    return grid.reshape(-1)


def _map_ctx(grid: np.ndarray, pos: np.ndarray, wp: int, L: int) -> np.ndarray:
    """Row of the map table for each position: (level above, level to the left)."""
    return grid[pos - wp] * (L + 1) + grid[pos - 1]


def _neighbour_counts(bits: np.ndarray, kept: np.ndarray):
    """Ones and zeros among the 4-neighbours that are kept (over the last two axes)."""
    one = bits.astype(bool) & kept
    return sum4(one.astype(np.int8)), sum4((kept & ~one).astype(np.int8))


class _Planes:
    """What the contexts of one code section need besides the bits: the levels
    (all ones for CbCr), the level each channel needs, and the checkerboard."""

    def __init__(self, C: int, q: np.ndarray, req: np.ndarray, Lq: int):
        self.C, self.q, self.req, self.Lq = C, q, np.asarray(req), Lq
        self.h, self.w = q.shape
        yy, xx = np.indices((self.h, self.w))
        self.anchor = (yy + xx) % 2 == 0

    def kept(self, k0: int = 0, k1: int | None = None) -> np.ndarray:
        """(k1 - k0, h, w): channel k is kept where the level reaches req[k]."""
        return self.q[None] >= self.req[k0:k1, None, None]

    def qctx(self, dtype) -> np.ndarray:
        return self.q.astype(dtype) if self.Lq > 1 else np.zeros((self.h, self.w), dtype)


def _contexts(planes: _Planes, bits: np.ndarray, positions: int = 1 << 22):
    """What :func:`_decode_planes` visits, for a sender that knows every bit: yields
    (context index, bit) of the coded positions in coding order (k, part, y, x), a
    run of whole channels at a time so that temporaries stay near ``positions``
    entries (one run for a Kodak image, ~11 for 24 megapixels)."""
    C, h, w = bits.shape
    step = max(1, positions // (2 * h * w))
    qctx = planes.qctx(np.int32)
    part = np.arange(2, dtype=np.int32)[None, :, None, None]
    for k0 in range(0, C, step):
        k1 = min(C, k0 + step)
        kept = planes.kept(k0, k1)                                             # (c, h, w)
        sel = np.stack([kept & planes.anchor, kept & ~planes.anchor], 1)        # (c, 2, h, w)
        prev = np.zeros((k1 - k0, h, w), np.int32)
        prev[1 if k0 == 0 else 0:] = 1 + bits[max(0, k0 - 1):k1 - 1]
        n1, n0 = _neighbour_counts(bits[k0:k1], sel[:, 0])
        k = np.arange(k0, k1, dtype=np.int32)[:, None, None, None]
        idx = ((part * C + k) * planes.Lq + qctx) * 3 + prev[:, None]
        idx *= _SPATIAL
        idx[:, 1] += n1 * 5 + n0
        yield idx[sel], np.broadcast_to(bits[k0:k1, None], sel.shape)[sel]


# ----------------------------------------------------------------------------- coder

def _bernoulli():
    return _constriction().model.Bernoulli(perfect=False)


def _categorical():
    return _constriction().model.Categorical(perfect=False)


def _to_bytes(words: np.ndarray) -> bytes:
    return words.astype("<u4").tobytes()


def _from_bytes(sec: bytes) -> np.ndarray:
    if len(sec) % 4:
        raise BitstreamError("entropy-coded section length is not a multiple of 4")
    return np.frombuffer(sec, "<u4").astype(np.uint32)


def encode_map(levels: np.ndarray, L: int, tables: Tables) -> bytes:
    cs = _constriction()
    enc = cs.queue.RangeEncoder()
    probs = tables.map.reshape(-1, L).astype(np.float64) / ONE
    grid = _map_grid(levels, L)
    pos, _, wp = _map_walk(*levels.shape)   # one call: the sender knows every context
    enc.encode(grid[pos].astype(np.int32), _categorical(), probs[_map_ctx(grid, pos, wp, L)])
    return _to_bytes(enc.get_compressed())


def decode_map(sec: bytes, h: int, w: int, L: int, tables: Tables) -> np.ndarray:
    cs = _constriction()
    dec = cs.queue.RangeDecoder(_from_bytes(sec))
    probs = tables.map.reshape(-1, L).astype(np.float64) / ONE
    pos, ends, wp = _map_walk(h, w)
    grid = np.full((h + 1) * wp, L, np.int64)      # filled one anti-diagonal (coder call) at a time
    fam = _categorical()
    try:
        start = 0
        for end in ends:
            p = pos[start:end]
            grid[p] = dec.decode(fam, probs[_map_ctx(grid, p, wp, L)])
            start = end
    except Exception as e:  # constriction raises AssertionError/ValueError on invalid data
        raise BitstreamError(f"corrupt map section: {e}") from e
    return grid.reshape(h + 1, wp)[1:, 1:].astype(np.uint8)


def _encode_planes(planes: _Planes, bits: np.ndarray, table: np.ndarray) -> bytes:
    cs = _constriction()
    enc = cs.queue.RangeEncoder()
    flat = table.reshape(-1).astype(np.float64) / ONE
    for idx, sym in _contexts(planes, bits):   # one coder call per run of channels
        enc.encode(sym.astype(np.int32), _bernoulli(), flat[idx])
    return _to_bytes(enc.get_compressed())


def _decode_planes(planes: _Planes, sec: bytes, table: np.ndarray) -> np.ndarray:
    """The receiver's side of :func:`_contexts`: channel by channel, two coder
    calls each, with everything that depends only on the levels worked out first."""
    cs = _constriction()
    dec = cs.queue.RangeDecoder(_from_bytes(sec))
    flat = table.reshape(-1).astype(np.float64) / ONE
    fam = _bernoulli()
    C, h, w = planes.C, planes.h, planes.w
    wp = w + 2                                   # a zero border makes neighbours plain offsets
    kept = planes.kept()
    anchors = kept & planes.anchor
    around = sum4(anchors.astype(np.int8)).reshape(C, -1)   # kept anchors next to each location
    qctx = planes.qctx(np.int64).reshape(-1)
    bits = np.zeros((C, h * w), np.uint8)
    ones = np.zeros((h + 2) * wp, np.int8)       # channel k's decoded anchor bits, bordered
    for k in range(C):
        prev = np.zeros(h * w, np.int64) if k == 0 else 1 + bits[k - 1].astype(np.int64)
        ones[:] = 0
        for part, sel in ((0, anchors[k]), (1, kept[k] & ~planes.anchor)):
            pos = np.flatnonzero(sel)
            if not pos.size:
                continue
            idx = ((((part * C + k) * planes.Lq + qctx[pos]) * 3 + prev[pos]) * _SPATIAL)
            padded = pos + (pos // w) * 2 + wp + 1
            if part == 1:   # 5 * ones + zeros, zeros = kept anchors around - ones
                n1 = ones[padded - 1] + ones[padded + 1] + ones[padded - wp] + ones[padded + wp]
                idx += 4 * n1.astype(np.int64) + around[k, pos]
            try:
                sym = dec.decode(fam, flat[idx]).astype(np.uint8)
            except Exception as e:  # constriction raises AssertionError/ValueError on invalid data
                raise BitstreamError(f"corrupt code section: {e}") from e
            bits[k, pos] = sym
            if part == 0:
                ones[padded] = sym
    return bits.reshape(C, h, w)


def y_planes(levels: np.ndarray, n: int, L: int) -> _Planes:
    g = n // (L - 1)
    return _Planes(n, levels, np.arange(n) // g + 1, L)


def c_planes(hc: int, wc: int, m: int) -> _Planes:
    return _Planes(m, np.ones((hc, wc), np.uint8), np.ones(m, np.int64), 1)


def encode_codes(levels, ydense, cdense, n, L, tables: Tables) -> tuple[bytes, bytes]:
    """ydense (n, h, w), cdense (m, hc, wc): uint8 0/1 (masked Y bits ignored)."""
    ysec = _encode_planes(y_planes(levels, n, L), ydense, tables.y)
    csec = b"" if cdense is None else _encode_planes(c_planes(*cdense.shape[1:], cdense.shape[0]), cdense, tables.c)
    return ysec, csec


def decode_codes(levels, ysec, csec, n, L, m, hc, wc, tables: Tables, gray: bool):
    yd = _decode_planes(y_planes(levels, n, L), ysec, tables.y)
    cd = np.zeros((m, hc, wc), np.uint8) if gray else _decode_planes(c_planes(hc, wc, m), csec, tables.c)
    return yd, cd


# ----------------------------------------------------------------------------- fitting

def fit(samples, n: int, L: int, m: int) -> Tables:
    """Count contexts over (levels, ydense, cdense) samples from *training* images."""
    map_counts = np.zeros(((L + 1) * (L + 1), L), np.int64)
    ty = [np.zeros((2 * n * L * 3 * _SPATIAL,), np.int64) for _ in range(2)]
    tc = [np.zeros((2 * m * 1 * 3 * _SPATIAL,), np.int64) for _ in range(2)]

    def count(store, planes, bits):
        for idx, sym in _contexts(planes, bits):
            store[0] += np.bincount(idx, weights=sym, minlength=store[0].size).astype(np.int64)
            store[1] += np.bincount(idx, minlength=store[1].size)

    for levels, yd, cd in samples:
        grid = _map_grid(levels, L)
        pos, _, wp = _map_walk(*levels.shape)
        np.add.at(map_counts, (_map_ctx(grid, pos, wp, L), grid[pos]), 1)
        count(ty, y_planes(levels, n, L), yd)
        count(tc, c_planes(*cd.shape[1:], m), cd)
    return Tables(_normalize_rows(map_counts).reshape(L + 1, L + 1, L),
                  _p1(ty[0], ty[1]).reshape(2, n, L, 3, _SPATIAL),
                  _p1(tc[0], tc[1]).reshape(2, m, 1, 3, _SPATIAL))


# ----------------------------------------------------------------------------- rate

def information(levels: np.ndarray, ydense: np.ndarray, cdense: np.ndarray | None, n: int, L: int,
                tables: Tables) -> tuple[float, np.ndarray]:
    """What the context coder would spend, from the same tables and contexts as the
    sender: (total bits of map + Y + CbCr sections, mean bits per kept Y bit of
    each channel (n,), NaN where a channel has no kept bit).  The range coder
    writes within a few bytes per section of this; the code search ranks its
    candidates by it."""
    grid = _map_grid(levels, L)
    pos, _, wp = _map_walk(*levels.shape)
    probs = tables.map.reshape(-1, L).astype(np.float64) / ONE
    total = -np.log2(probs[_map_ctx(grid, pos, wp, L), grid[pos]]).sum()
    per = np.zeros(n)
    cnt = np.zeros(n)
    planes = y_planes(levels, n, L)
    flat = tables.y.reshape(-1).astype(np.float64) / ONE
    for idx, sym in _contexts(planes, ydense):
        p1 = flat[idx]
        bits = -np.log2(np.where(sym.astype(bool), p1, 1.0 - p1))
        k = (idx // (_SPATIAL * 3 * L)) % n           # the context's channel
        per += np.bincount(k, bits, minlength=n)
        cnt += np.bincount(k, minlength=n)
    total += per.sum()
    if cdense is not None:
        flat = tables.c.reshape(-1).astype(np.float64) / ONE
        for idx, sym in _contexts(c_planes(*cdense.shape[1:], cdense.shape[0]), cdense):
            p1 = flat[idx]
            total += -np.log2(np.where(sym.astype(bool), p1, 1.0 - p1)).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(total), per / cnt
