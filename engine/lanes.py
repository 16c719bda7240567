"""Bitstream v2 entropy coding (the default): the latent grid in independent lanes,
each a rANS stream with version 1's contexts (docs/bitstream.md, "Version 2").

The coder is native (native/rans.cpp, built by ``pip install -e .`` as
``engine.rans_native``): one call codes a batch of images with threads across
lanes and images, the GIL released.  ``engine/lanes_reference.py`` is its spec in
numpy; when the extension is missing (a source tree that was never installed) the
reference runs instead, with a warning, byte for byte the same and much slower.

Why lanes: a lane decodes without any other, so CPU threads share one image and
a GPU can decode the lanes of a whole batch at once.  A lane is a ``tile`` x ``tile``
rectangle of Y locations (and its half-size CbCr rectangle).  Each lane costs about 6
bytes (its 4-byte final state and a 2-byte length) plus its border contexts; on Kodak,
against version 1, tiles of 16 / 32 / 48 / 64 cost +3.3 / +0.9 / +0.6 / +0.2% at
quality 1 and +2.0 / +0.7 / +0.5 / +0.3% at quality 4.  48 (384 x 384 pixels: 4 lanes
for a Kodak image, 15 for 1080p) keeps a file within ~0.6% of version 1 while a batch
of images still has thousands of lanes.

``HNLC_NATIVE_LIB`` points at another build of the extension (the sanitizer build in
CI's slow step, native/sanitize.sh).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import threading
import warnings
from typing import TYPE_CHECKING

import numpy as np

from . import lanes_reference
from .errors import BitstreamError

if TYPE_CHECKING:
    from .entropy import Tables

DEFAULT_TILE = 48

_NATIVE = None
_LOCK = threading.Lock()
_CODERS: dict[int, tuple] = {}


def native():
    """The native module, or None when it is not built."""
    global _NATIVE
    if _NATIVE is None:
        path = os.environ.get("HNLC_NATIVE_LIB")
        if path:
            loader = importlib.machinery.ExtensionFileLoader("engine.rans_native", path)
            spec = importlib.util.spec_from_file_location("engine.rans_native", path, loader=loader)
            mod = importlib.util.module_from_spec(spec)
            loader.exec_module(mod)
            _NATIVE = mod
        else:
            try:   # by name: the extension is optional, and the package itself is a layer above
                _NATIVE = importlib.import_module("engine.rans_native")
            except ImportError:
                warnings.warn("engine.rans_native is not built (pip install -e .): bitstream v2 runs on the "
                              "slow numpy reference", RuntimeWarning, stacklevel=2)
                _NATIVE = False
    return _NATIVE or None


def coder(tables: Tables, n: int, L: int, m: int):
    """The native coder for one rung's tables (built once per tables object), or None."""
    mod = native()
    if mod is None:
        return None
    hit = _CODERS.get(id(tables))
    if hit is None or hit[0] is not tables:
        with _LOCK:
            c = mod.Coder(n, L, m, np.ascontiguousarray(tables.map, np.uint32),
                          np.ascontiguousarray(tables.y, np.uint16), np.ascontiguousarray(tables.c, np.uint16))
            hit = _CODERS[id(tables)] = (tables, c)
    return hit[1]


def _dense(packed, n: int, L: int, m: int, gray: bool):
    """A Packed record -> the reference's dense inputs."""
    from kernels import reference
    import torch
    _, yd, cd = reference.unpack([packed], n, m, L, dtype=torch.uint8)
    return packed.levels, yd[0].numpy(), None if gray else cd[0].numpy()


def encode(config, tables: Tables, packeds: list, grays: list, tile: int = DEFAULT_TILE,
           threads: int = 1) -> list[list[bytes]]:
    """Packed records (engine/kernels reference.Packed) -> each image's lanes."""
    n, L, m = config.n, config.levels, config.m
    c = coder(tables, n, L, m)
    if c is None:
        return [lanes_reference.encode(*_dense(p, n, L, m, g), n, L, tables, tile) for p, g in zip(packeds, grays)]
    items = [(np.ascontiguousarray(p.levels, np.uint8), bytes(p.ybits), int(p.ynbits), None if g else bytes(p.cbits))
             for p, g in zip(packeds, grays)]
    return c.encode(items, tile, threads)


def decode(config, tables: Tables, items: list, threads: int = 1) -> list:
    """[(h, w, tile, Lanes, gray)] (h x w the Y grid) -> per image (levels (h, w),
    ydense (n, h, w), cdense (m, h/2, w/2)) uint8, or the BitstreamError saying why not."""
    n, L, m = config.n, config.levels, config.m
    out: list = [None] * len(items)
    calls, where = [], []
    for i, (h, w, tile, body, gray) in enumerate(items):
        want = lanes_reference.lane_count(h, w, tile)
        if len(body) != want:
            out[i] = BitstreamError(f"the file has {len(body)} lanes, its {w}x{h} grid in tiles of {tile} "
                                    f"has {want}")
            continue
        calls.append((h, w, tile, body, gray))
        where.append(i)
    c = coder(tables, n, L, m)
    if c is None:
        for i, (h, w, tile, body, gray) in zip(where, calls):
            try:
                out[i] = lanes_reference.decode([body.lane(j) for j in range(len(body))], h, w, n, L, m,
                                                tables, tile, gray)
            except BitstreamError as e:
                out[i] = e
        return out
    bufs, args = [], []
    for h, w, tile, body, gray in calls:
        lv, yd, cd = np.zeros((h, w), np.uint8), np.zeros((n, h, w), np.uint8), np.zeros((m, h // 2, w // 2), np.uint8)
        bufs.append((lv, yd, cd))
        args.append((h, w, tile, body.data, body.starts, lv, yd, None if gray else cd))
    for i, buf, err in zip(where, bufs, c.decode(args, threads)):
        out[i] = BitstreamError(err) if err else buf
    return out
