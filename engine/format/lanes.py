"""Bitstream v2 entropy coding (the default): the latent grid in independent lanes,
each a rANS stream with version 1's contexts (docs/bitstream.md, "Version 2").

The coder is native (native/rans.cpp, built by ``pip install -e .`` as
``engine.rans_native``): one call codes a batch of images with threads across
lanes and images, the GIL released.  ``engine/format/lanes_reference.py`` is its spec in
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

The coder is a named choice (``coder=``, ``ENGINE_CODER``): ``native`` (above) or
``triton`` (kernels/rans_triton.py: the same bytes, coded on the device where the
network's outputs are, so on CUDA the codes never leave the GPU before they are
bytes); ``auto`` takes triton when the networks run on CUDA and Triton is installed.
"""
from __future__ import annotations

import importlib.util
import threading
import warnings
from typing import TYPE_CHECKING

import numpy as np

from . import lanes_reference
from .. import settings
from ..errors import BitstreamError

if TYPE_CHECKING:
    from .context_coder import Tables

DEFAULT_TILE = 48

_NATIVE = None
_LOCK = threading.Lock()
_CODERS: dict[int, tuple] = {}


def native():
    """The native module, or None when it is not built (engine/native.py loads it)."""
    global _NATIVE
    if _NATIVE is None:
        from .. import native as native_lib
        mod = native_lib.load()
        if mod is None:
            warnings.warn("engine.rans_native is not built (pip install -e .): bitstream v2 runs on the "
                          "slow numpy reference", RuntimeWarning, stacklevel=2)
        _NATIVE = mod or False
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
        bad = lanes_reference.lane_count_error(len(body), h, w, tile)
        if bad:
            out[i] = BitstreamError(bad)
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


# ----------------------------------------------------------------------------- on the device

def resolve_coder(name: str | None, device) -> str:
    """``coder``/``ENGINE_CODER`` -> "native" or "triton" for networks on ``device``.  An
    unknown name is an error, never a silent fallback; "triton" on the CPU needs the
    Triton interpreter (the kernels say so when they run)."""
    name = settings.check("coder", settings.pick(name, "ENGINE_CODER", "auto"), "coder/ENGINE_CODER")
    if name == "auto":
        return "triton" if str(device).startswith("cuda") and importlib.util.find_spec("triton") else "native"
    return name


def device_encode(config, tables: Tables, p, e, ec, grays: list, tile: int = DEFAULT_TILE):
    """The encoder's outputs on their device -- importance p (B, 1, h, w), Y sigmoid
    outputs e (B, n, h, w), CbCr ec (B, m, h/2, w/2) -- -> (words, lengths, geometry) of
    every lane (kernels/rans_triton.py), queued on the current stream, no host wait."""
    from kernels import rans_triton, reference
    levels = reference.quantize(p, config.levels)
    return rans_triton.encode_device(levels, e, ec, grays, tables, config.n, config.levels, config.m, tile)


def device_decode(config, tables: Tables, h: int, w: int, items: list, device, dtype, host_buffer=None):
    """[(Lanes, tile, gray)] of one h x w Y grid -> ((levels, bits, cbits) of ``dtype`` on
    ``device``, per-lane status, geometry), queued on the current stream."""
    from kernels import rans_triton
    for body, tile, _ in items:
        bad = lanes_reference.lane_count_error(len(body), h, w, tile)
        if bad:
            raise BitstreamError(bad)
    return rans_triton.decode_device([b for b, _, _ in items], [t for _, t, _ in items], [g for _, _, g in items],
                                     h, w, tables, config.n, config.levels, config.m, device, dtype,
                                     host_buffer=host_buffer)
