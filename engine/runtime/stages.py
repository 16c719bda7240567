"""The engine's stages, each written once; every path (one image, a batch, CUDA
streams) runs these and nothing else.

Encode::

    images ──stage_images──> padded YCbCr planes on the device
           ──encode_chunk──> bits on the device (network or code search, then the bit path)
           ──format.to_host─> each image's record on the host
           ──format.serialize─> file bytes (entropy coder + container)

Decode::

    file bytes ──registry.parse─> header + the format's record (container + entropy decoder)
               ──latents_to_device─> decoder inputs on the device (each format uploads its own)
               ──decode_chunk──> YCbCr planes ──to_images──> uint8 RGB on the device
               ──images_to_host─> (h, w, 3) uint8 arrays

A chunk is a list of images of one rung and one padded shape.  The device stages
take a *slot* (engine/runtime/executors.py): where the work runs (``slot.device``, the slot's
CUDA stream made current by the executor), its staging buffers (``slot.host``: pinned
on a CUDA stream, plain memory inline) and its stage timer (``slot.stage``).  What
happens to the bits, and everything that knows the file's layout, is the format's
(engine/format/: one object per format, picked by engine/format/registry.py).

``settings`` is the call's :class:`engine.settings.Settings` (frozen, resolved once by
the Codec): ``kernels``, ``effort``, ``tile_pixels``, ``tile_size``, ``coder`` (decode:
which format reads a file).
"""
from __future__ import annotations

import numpy as np
import torch

from .. import importance, roi
from ..io import tiling
from ..errors import ImageError
from ..format import registry
from ..io.imageio import COLOR_GRAY
from ..io.planes import LazyPlanes, padded_size, postprocess_tensor, preprocess_tensor


def needs_tiles(settings, rung, height: int, width: int, net: str = "encoder") -> bool:
    """Padded height x width over ``settings.tile_pixels``, or a side over what the runner
    accepts: the network then runs in tiles (engine/io/tiling.py), one image at a time."""
    return tiling.should_tile(height, width, settings.tile_pixels, tiling.runner_max_side(rung.runner, net))


# ----------------------------------------------------------------------------- encode

def stage_images(slot, rgbs: list, multiple: int, lazy: bool = False) -> torch.Tensor:
    """(h, w, 3) uint8 arrays of one padded shape -> (B, 3, H', W') YCbCr planes on the
    slot's device: one staging buffer, one copy to the device, then the same ops as
    :func:`engine.io.planes.preprocess`.  ``lazy`` (one image that runs in tiles): the
    pixels on the device as :class:`LazyPlanes`, converted tile by tile; on the CPU the
    caller's array itself, with no staging copy."""
    if lazy:
        if len(rgbs) != 1:
            raise ValueError("lazy planes are for one image at a time (a tiled one)")
        if slot.device.type == "cpu":
            import warnings
            with warnings.catch_warnings():     # a read-only array (Pillow's): the planes only read it
                warnings.simplefilter("ignore", UserWarning)
                rgb = torch.from_numpy(np.ascontiguousarray(rgbs[0]))
            return LazyPlanes(rgb, multiple)
    sizes = [r.nbytes for r in rgbs]
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    host = slot.host("rgb", (int(offs[-1]),))
    hv = host.numpy()
    for r, o, nb in zip(rgbs, offs, sizes):
        hv[o:o + nb] = r.reshape(-1)
    with slot.stage("h2d"):
        dev = host.to(slot.device, non_blocking=True)
    if lazy:
        return LazyPlanes(dev.view(rgbs[0].shape), multiple)
    with slot.stage("preprocess"):
        if len(rgbs) == 1:
            return preprocess_tensor(dev.view(rgbs[0].shape), multiple)
        # each image's planes written into the batch's tensor (a torch.cat of them cost as much
        # as converting them, on a busy 2-core CPU: #25)
        H, W = padded_size(*rgbs[0].shape[:2], multiple)
        planes = torch.empty((len(rgbs), 3, H, W), dtype=torch.float32, device=slot.device)
        for k, (r, o, nb) in enumerate(zip(rgbs, offs, sizes)):
            preprocess_tensor(dev[o:o + nb].view(r.shape), multiple, out=planes[k:k + 1])
        return planes


def lazy_planes(settings, rung, rgbs: list, multiple: int) -> bool:
    """Whether a chunk's planes are made tile by tile: one image, encoded in tiles
    without the code search (which needs the whole image's planes)."""
    if len(rgbs) != 1 or settings.effort:
        return False
    H, W = padded_size(*rgbs[0].shape[:2], multiple)
    return needs_tiles(settings, rung, H, W, "encoder")


def searcher(rung, precision: str = "auto"):
    """The rung's code search (engine/net/search.py) in ``precision`` (a
    ``search_precision`` choice), built on first use."""
    from ..net.search import CodeSearch, resolve_precision, rung_ms_ssim_weight, rung_slope
    precision = resolve_precision(precision, rung.runner.device)
    if rung.search is None or rung.search.precision != precision:
        from ..net import checkpoint
        net = checkpoint.load_net(rung.q).to(rung.runner.device)
        rung.search = CodeSearch(net, rung.tables, rung_slope(rung.q), rung_ms_ssim_weight(rung.q), precision)
    return rung.search


def latents(settings, rung, slot, ycc: torch.Tensor, sizes: list, colors: list, boosts: list | None = None):
    """The encoder's sigmoid outputs (e, p, ec) for a chunk of padded planes, in tiles
    when :func:`needs_tiles`; with ``settings.effort`` > 0 the searched codes instead
    (``sizes``: each image's (h, w)).  ``boosts``: per image None or an
    :class:`engine.roi.RoiBoost`: its logit boost is added to ``p`` here, after any
    runner and before the levels are made, so every backend's files get it (with the
    search, the search starts from the boosted map and weighs the region's error)."""
    H, W = ycc.shape[-2:]
    tiled = needs_tiles(settings, rung, H, W, "encoder")
    if settings.effort == 0:
        if tiled:
            halo, grid = tiling.encoder_halo(rung.q.config), tiling.encoder_grid(rung.q.config)
            tile = tiling.tile_for_runner(settings.tile_size, halo, tiling.runner_max_side(rung.runner, "encoder"), grid)
            e, p, ec = tiling.encode_tiled(rung.runner.encode, ycc, tile, halo, grid)
        else:
            e, p, ec = rung.runner.encode(ycc)
        b = boost_grid(boosts, p)
        return (e, p, ec) if b is None else (e, importance.boost(p, b), ec)
    if tiled:     # typed, so the batch APIs and the CLI report it per image (issue #28)
        raise ImageError(f"effort > 0 searches whole images and this one ({W}x{H} padded) is over "
                         f"tile_pixels={settings.tile_pixels}: use effort=0 or a larger tile_pixels")
    search = searcher(rung, settings.search_precision)
    gray = [c == COLOR_GRAY for c in colors]
    boosts = list(boosts) if boosts else [None] * len(sizes)
    # On CUDA a chunk is searched as one batch; on the CPU one image at a time,
    # which costs no speed there and keeps a batch's bytes equal to one image's.
    step = len(sizes) if ycc.device.type == "cuda" else 1
    out = []
    with slot.stage("search"):
        for s in range(0, len(sizes), step):
            out.append(search.run(ycc[s:s + step], sizes[s:s + step], settings.effort, gray=gray[s:s + step],
                                  roi=boosts[s:s + step])[:3])
    return tuple(torch.cat(t) for t in zip(*out))


def boost_grid(boosts: list | None, p: torch.Tensor) -> torch.Tensor | None:
    """Per image None or a RoiBoost -> (B, 1, h, w) float32 logit boosts on p's grid and
    device (0 where an image has none), or None when no image has one."""
    grid = roi.stack(boosts, *p.shape[-2:])
    return None if grid is None else torch.from_numpy(grid).to(p.device)


def encode_chunk(settings, fmt, rung, slot, ycc: torch.Tensor, sizes: list, colors: list, boosts: list | None = None):
    """Planes -> the format's bits on the device (``fmt.finish``: the bit path's buffers,
    or lanes coded on the device).  ``boosts``: each image's region of interest (None
    or an engine.roi.RoiBoost), see :func:`latents`."""
    with slot.stage("network"):
        e, p, ec = latents(settings, rung, slot, ycc, sizes, colors, boosts)
    return fmt.finish(rung, slot, e, p, ec, [c == COLOR_GRAY for c in colors], settings.kernels)


# ----------------------------------------------------------------------------- decode

def latents_to_device(settings, rung, slot, parsed: list):
    """Parsed (header, record) pairs of one rung and shape -> decoder inputs (levels,
    bits, cbits) as float tensors on the slot's device, in order, and ``errors()``: per
    item None, or the error of a file found on the device (call it once the slot's
    copies are done).  Each format uploads its own records; a chunk of mixed files
    (version 1 and 2 of one shape) uploads each kind once, then the inputs are put back
    in the items' order."""
    groups: dict[str, tuple] = {}
    for k, (hdr, _) in enumerate(parsed):
        fmt = registry.for_header(hdr, settings.coder)
        groups.setdefault(fmt.upload, (fmt, []))[1].append(k)
    done = [(ks, fmt.to_device(rung, slot, [parsed[k][1] for k in ks], settings.kernels)) for fmt, ks in groups.values()]
    if len(done) == 1:
        lv, bits, cbits, errors = done[0][1]
        return lv, bits, cbits, errors or (lambda: [None] * len(parsed))
    where = {k: (g, j) for g, (ks, _) in enumerate(done) for j, k in enumerate(ks)}
    order = [where[k] for k in range(len(parsed))]
    merged = [torch.cat([done[g][1][t][j:j + 1] for g, j in order]) for t in range(3)]

    def errors():
        out = [None] * len(parsed)
        for ks, (*_, errs) in done:
            for k, err in zip(ks, errs() if errs else []):
                out[k] = err
        return out
    return (*merged, errors)


def decode_chunk(settings, rung, slot, lv: torch.Tensor, bits: torch.Tensor, cbits: torch.Tensor) -> torch.Tensor:
    """Decoder inputs -> (B, 3, H', W') YCbCr planes, in tiles when :func:`needs_tiles`."""
    H, W = bits.shape[-2] * 8, bits.shape[-1] * 8
    with slot.stage("network"):
        if needs_tiles(settings, rung, H, W, "decoder"):
            halo = tiling.decoder_halo(rung.q.config)
            tile = tiling.tile_for_runner(settings.tile_size, halo, tiling.runner_max_side(rung.runner, "decoder"))
            return tiling.decode_tiled(rung.runner.decode, bits, lv, cbits, tile, halo)
        return rung.runner.decode(bits, lv, cbits)


def decode_images(settings, rung, slot, lv: torch.Tensor, bits: torch.Tensor, cbits: torch.Tensor, headers: list) -> list:
    """:func:`decode_chunk` then :func:`to_images`; a tiled image (a chunk of one) is
    converted to uint8 RGB tile by tile, so its float planes are never whole (issue #13:
    memory bounded by the image).  The same values either way: the conversion is per pixel."""
    H, W = bits.shape[-2] * 8, bits.shape[-1] * 8
    if len(headers) != 1 or not needs_tiles(settings, rung, H, W, "decoder"):
        return to_images(slot, decode_chunk(settings, rung, slot, lv, bits, cbits), headers)
    (hdr,) = headers
    gray = hdr.color == COLOR_GRAY
    out = torch.empty((hdr.height, hdr.width, 3), dtype=torch.uint8, device=bits.device)

    def store(core, a0, b0):
        hr, wr = min(core.shape[-2], hdr.height - a0), min(core.shape[-1], hdr.width - b0)
        if hr > 0 and wr > 0:
            out[a0:a0 + hr, b0:b0 + wr] = postprocess_tensor(core, hr, wr, gray=gray)

    with slot.stage("network"):
        halo = tiling.decoder_halo(rung.q.config)
        tile = tiling.tile_for_runner(settings.tile_size, halo, tiling.runner_max_side(rung.runner, "decoder"))
        tiling.decode_tiled(rung.runner.decode, bits, lv, cbits, tile, halo, store=store)
    return [out]


def to_images(slot, ycc: torch.Tensor, headers: list) -> list:
    """Planes -> one (h, w, 3) uint8 tensor per image on the device (cropped, clamped, rounded)."""
    with slot.stage("postprocess"):
        return [postprocess_tensor(ycc[k:k + 1], hdr.height, hdr.width, gray=hdr.color == COLOR_GRAY)
                for k, hdr in enumerate(headers)]


def images_to_host(slot, images: list) -> list:
    """Device images -> views of one staging buffer (copies not waited for); read them
    (and copy them out) after the slot's work is done.  Inline on the CPU the images are
    host tensors of their own already: they are returned as they are."""
    if slot.device.type == "cpu" and slot.stream is None:
        return list(images)
    with slot.stage("d2h"):
        host = slot.host("rgb_out", (sum(o.numel() for o in images),))
        views, o0 = [], 0
        for o in images:
            v = host[o0:o0 + o.numel()].view(o.shape)
            v.copy_(o, non_blocking=True)
            views.append(v)
            o0 += o.numel()
    return views
