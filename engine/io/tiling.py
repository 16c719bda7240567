"""Tiled encoder / decoder runs for large images, equal to the untiled run.

A 24-megapixel photo through the "small" networks untiled needs several GB of
activations (the Y encoder holds 32 channels at 1/2 resolution: 6 M positions
x 32 x 4 B = 768 MB per tensor, about three alive at once).  Here the image is
cut into core tiles on the 16-pixel grid; each tile is run with a *halo* of
context around it and only its core is kept:

    core  [c0, c1)            multiples of GRID = 16 (the right/bottom end
                              may be the padded image side, also a multiple of 16)
    input [c0 - halo, c1 + halo] clipped to the image; halo a multiple of 16

Why the result equals the untiled run: an output position depends on input
pixels at most ``extent`` pixels beyond the pixels it covers (its receptive
field, :func:`encoder_extent` / :func:`decoder_extent`).  With
``halo >= extent`` every core output sees exactly the inputs it sees in the
untiled run; where the tile is clipped, the tile edge *is* the image edge, so
the convolutions' zero padding is the same too.  Tiles start on the 16-pixel
grid, so every stride-2 convolution and pixel (un)shuffle samples the same
grid as in the untiled run.

Arithmetic: the values are the same mathematically (in float64 tiled and untiled
differ by ~2e-16; a halo one grid step short shows as ~1e-7).  In float32 the
convolution kernels may sum in another order for a smaller input, so outputs
can differ by an ulp or two (observed <= 1.2e-7 on the CPU; tests hold them to
1e-5).  A file's bytes change only if a feature sits within that of the 0.5
binarization threshold or of an importance-level boundary: tests/test_pipeline.py
counts such flips (none on its images) and checks the bytes are identical; a
24 MP photo gives identical bytes tiled and untiled with the tiny and the small
config (``python -m bench.peak_rss ... --tile-pixels 0`` prints a sha256).
Decoded pixels may round the other way where a value is that close to .5
(observed: 1 value in 180 000 off by 1).
"""
from __future__ import annotations

import torch

from .planes import crop_planes

GRID = 16
# The defaults (engine/settings.py, ENGINE_TILE_PIXELS / ENGINE_TILE_SIZE):
# tile when the padded image has more than 2 x 2048 x 2048 pixels (0: never).  Untiled,
# the "small" model's compress peaks at ~0.15 GB per MP on the CPU (bench/peak_rss.py:
# 0.50 GB at 1.6 MP, 1.19 GB at 6.3 MP, 3.8 GB at 24 MP), so ~1.5 GB at 8.4 MP.
# Core tile side 2048 (pixels, multiple of 16): 2048 + 2 halos is ~5 MP per tile run;
# for a 6000x4000 photo that is 6 tiles and 1.12x (encoder) / 1.17x (decoder) the
# untiled work, and no slower on the CPU than untiled (39 s vs 41 s, 1 thread).


# ---------------------------------------------------------------------------
# Receptive fields, counted from the config (mirrors engine/net/model.py)
# ---------------------------------------------------------------------------
# Units: full-resolution pixels.  A position on a grid of stride j covers j x j
# pixels.  How far an output reaches beyond the pixels it covers grows per layer:
#   3x3 conv, stride 1, on grid j        + j      (k // 2 positions each side)
#   1x1 conv                             + 0
#   3x3 conv, stride 2, reading grid j   + j      (pad 1: one position before)
#   PixelUnshuffle(2)                    + 0      (a 2x2 block is exactly the coarse position)
#   PixelShuffle(2) to grid j            + j      (a fine position reads its coarse parent,
#                                                  which covers j more pixels on one side)
# A ResBlock is two 3x3 convs (the skip adds nothing).  Extents add along a
# path; a network's extent is the maximum over its paths.

def _conv(j: int, count: int = 1) -> int:
    return count * j


def _res(j: int, count: int = 1) -> int:
    return 2 * count * j


def encoder_extent(cfg) -> dict[str, int]:
    """Per-stream extents (pixels) of :class:`engine.net.model.Encoder`."""
    b = cfg.blocks
    y = (0                       # PixelUnshuffle(2)            -> grid 2
         + _conv(2) + _res(2)    # conv(4, c1), ResBlock(c1)
         + _conv(2)              # conv(c1, c2, s2)             -> grid 4
         + _res(4)               # ResBlock(c2)
         + _conv(4)              # conv(c2, c3, s2)             -> grid 8
         + _res(8, b)            # blocks x ResBlock(c3)
         + _conv(8))             # y_head / imp's 3x3 conv (the 1x1 adds nothing)
    c = (0                       # PixelUnshuffle(2)            -> grid 2
         + _conv(2)              # conv(8, cc/2)
         + _conv(2) + _res(4)    # conv(s2) -> grid 4, ResBlock
         + _conv(4) + _res(8)    # conv(s2) -> grid 8, ResBlock
         + _conv(8) + _res(16)   # conv(s2) -> grid 16, ResBlock
         + _conv(16))            # c_head
    return {"y": y, "c": c}


def decoder_extent(cfg) -> dict[str, int]:
    """Per-input extents (pixels) of :class:`engine.net.model.Decoder`: how far an output
    pixel reaches into the latents ("bits"/"levels" at 1/8, "cbits" at 1/16)."""
    b = cfg.blocks
    y8 = _conv(8) + _res(8, b)                    # y8: conv(n+1, c3), blocks x ResBlock
    y4 = y8 + _conv(8) + 4 + _res(4)              # y4: up(c3, c2) = conv@8 + shuffle->4, ResBlock
    y2 = y4 + _conv(4) + 2 + _res(2)              # y2: up(c2, c1), ResBlock
    y_out = y2 + _conv(2) + 1                     # y1: up(c1, 1)
    # CbCr: c1 <- c4 <- [c8 | f4(y4)], c8 <- [c16 | f8(y8)]; f4/f8 are 1x1 convs.
    at_c4_in = 1 + _conv(2) + 2 + _conv(4) + _res(4) + _conv(4)     # c1, then c4 (conv, ResBlock, up)
    at_c8_in = at_c4_in + 4 + _conv(8) + _res(8) + _conv(8)        # c8 (conv, ResBlock, up)
    at_cbits = at_c8_in + 8 + _conv(16) + _res(16) + _conv(16)     # c16 (conv, ResBlock, up)
    c_from_y = max(at_c4_in + y4, at_c8_in + y8)
    return {"y": y_out, "c_from_y": c_from_y, "cbits": at_cbits}


def _round_up(x: int, m: int = GRID) -> int:
    return -(-int(x) // m) * m


def encoder_grid(cfg) -> int:
    """What encoder tiles and halos are multiples of: 16, or 32 for a config that dithers
    its colour codes on a 2x2 pattern of 16x16 blocks (``c_dither``, engine/net/model.py
    dither_offsets, counted from the tile's origin): a tile must start on an even block."""
    return 2 * GRID if cfg.c_dither else GRID


def encoder_halo(cfg) -> int:
    """Context (pixels, a multiple of :func:`encoder_grid`) around an encoder tile: >= the receptive field."""
    return _round_up(max(encoder_extent(cfg).values()), encoder_grid(cfg))


def decoder_halo(cfg) -> int:
    return _round_up(max(decoder_extent(cfg).values()))


# ---------------------------------------------------------------------------
# Tile plans (pure)
# ---------------------------------------------------------------------------

def tile_ranges(size: int, tile: int, halo: int, grid: int = GRID) -> list[tuple[int, int, int, int]]:
    """Cut one padded side into tiles -> [(in0, in1, core0, core1)], pixels.

    ``size`` must be a multiple of 16, ``tile`` and ``halo`` of ``grid`` (16, or 32 for an
    encoder that dithers its colour codes: :func:`encoder_grid`, so every input range starts
    on an even block); the cores cover [0, size) without overlap, each input range is its
    core plus ``halo`` each side, clipped to [0, size)."""
    for name, v, g in (("size", size, GRID), ("tile", tile, grid), ("halo", halo, grid)):
        if v % g or v < 0:
            raise ValueError(f"{name}={v} must be a non-negative multiple of {g}")
    if tile <= 0:
        raise ValueError("tile must be positive")
    out = []
    for c0 in range(0, size, tile):
        c1 = min(size, c0 + tile)
        out.append((max(0, c0 - halo), min(size, c1 + halo), c0, c1))
    return out


def tile_plan(height: int, width: int, tile: int, halo: int,
              grid: int = GRID) -> list[tuple[tuple[int, int, int, int], ...]]:
    """All 2-D tiles of a padded image: [(row range, column range)] as from :func:`tile_ranges`."""
    return [(r, c) for r in tile_ranges(height, tile, halo, grid) for c in tile_ranges(width, tile, halo, grid)]


def tiled_work(height: int, width: int, tile: int, halo: int) -> float:
    """Pixels the tiles process / image pixels (the halo overhead, >= 1)."""
    tot = sum((r[1] - r[0]) * (c[1] - c[0]) for r, c in tile_plan(height, width, tile, halo))
    return tot / max(1, height * width)


def should_tile(height: int, width: int, tile_pixels: int, max_side: int | None = None) -> bool:
    """``tile_pixels`` <= 0 never tiles; otherwise tile when the padded area exceeds it,
    or when a side exceeds what the runner accepts (``max_side``, a TensorRT profile)."""
    if tile_pixels <= 0:
        return False
    return height * width > tile_pixels or (max_side is not None and max(height, width) > max_side)


def runner_max_side(runner, net: str = "encoder") -> int | None:
    """The largest image side (pixels) a runner's engines accept: a TensorRT build's
    optimization profile (``runner.profiles``); None for runners without a limit."""
    prof = getattr(runner, "profiles", None)     # declared by every Runner; duck-typed stand-ins may lack it
    try:
        if net == "encoder":
            return int(min(prof["encoder"]["ycc"]["max"][2:]))
        return int(min(prof["decoder"]["bits"]["max"][2:])) * 8
    except (KeyError, TypeError, IndexError, ValueError):
        return None


def tile_for_runner(tile: int, halo: int, max_side: int | None, grid: int = GRID) -> int:
    """The core tile side, a multiple of ``grid`` (at least one), shrunk so that tile + 2
    halos fits ``max_side``."""
    tile = max(grid, tile // grid * grid)
    if max_side is None:
        return tile
    fit = (max_side - 2 * halo) // grid * grid
    if fit < grid:
        raise ValueError(f"the runner accepts sides up to {max_side} pixels, too small for tiles with a "
                         f"{halo}-pixel halo: rebuild with a larger profile (python -m engine.build --profile-height/"
                         "--profile-width)")
    return min(tile, fit)


# ---------------------------------------------------------------------------
# Tiled runs (any runner: they only call runner.encode / runner.decode)
# ---------------------------------------------------------------------------

def encode_tiled(encode, ycc: torch.Tensor, tile: int, halo: int, grid: int = GRID):
    """``encode`` = runner.encode on (B, 3, H, W) with H, W multiples of 16 ->
    (e, p, ec) as the untiled call would return them.  ``ycc``: the planes, or
    :class:`engine.io.planes.LazyPlanes` (converted tile by tile).  ``grid``: the
    config's :func:`encoder_grid`."""
    B, _, H, W = ycc.shape
    e = p = ec = None
    for (r0, r1, a0, a1), (s0, s1, b0, b1) in tile_plan(H, W, tile, halo, grid):
        te, tp, tec = encode(crop_planes(ycc, r0, r1, s0, s1))
        if e is None:
            e = te.new_empty(B, te.shape[1], H // 8, W // 8)
            p = tp.new_empty(B, tp.shape[1], H // 8, W // 8)
            ec = tec.new_empty(B, tec.shape[1], H // 16, W // 16)
        for out, t, f in ((e, te, 8), (p, tp, 8), (ec, tec, 16)):
            out[:, :, a0 // f:a1 // f, b0 // f:b1 // f] = \
                t[:, :, (a0 - r0) // f:(a1 - r0) // f, (b0 - s0) // f:(b1 - s0) // f]
        del te, tp, tec
    return e, p, ec


def decode_tiled(decode, bits: torch.Tensor, levels: torch.Tensor, cbits: torch.Tensor, tile: int, halo: int,
                 store=None):
    """``decode`` = runner.decode; latents of an image of (8h, 8w) padded pixels ->
    (B, 3, 8h, 8w) as the untiled call would return it.  With ``store``, nothing
    full-size is made: ``store(core, a0, b0)`` gets each tile's core planes (top-left
    corner at padded pixel (a0, b0)) and None is returned (the engine converts each
    core to uint8 RGB at once: the float planes of a 100 MP image are 1.2 GB)."""
    B, _, h, w = bits.shape
    H, W = h * 8, w * 8
    out = None
    for (r0, r1, a0, a1), (s0, s1, b0, b1) in tile_plan(H, W, tile, halo):
        y = decode(bits[:, :, r0 // 8:r1 // 8, s0 // 8:s1 // 8], levels[:, :, r0 // 8:r1 // 8, s0 // 8:s1 // 8],
                   cbits[:, :, r0 // 16:r1 // 16, s0 // 16:s1 // 16])
        core = y[:, :, a0 - r0:a1 - r0, b0 - s0:b1 - s0]
        if store is not None:
            store(core, a0, b0)
        else:
            if out is None:
                out = y.new_empty(B, y.shape[1], H, W)
            out[:, :, a0:a1, b0:b1] = core
        del y, core
    return out


def check_tile_size(tile: int) -> int:
    tile = int(tile)
    if tile <= 0 or tile % GRID:
        raise ValueError(f"tile_size must be a positive multiple of {GRID}, got {tile}")
    return tile
