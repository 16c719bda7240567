"""The engine's stages, each written once; every path (one image, a batch, CUDA
streams) runs these and nothing else.

Encode::

    images ──stage_images──> padded YCbCr planes on the device
           ──encode_chunk──> bits on the device (network or code search, then the bit path)
           ──bits_to_host──> Packed records (levels + packed Y / CbCr bits)
           ──serialize────> file bytes (entropy coder + container)

    with the device coder (``opts.coder == "triton"``, bitstream v2): encode_chunk ends
    with the rANS lanes coded on the device, bits_to_host copies their bytes, and
    container() writes the file around them; no CPU entropy stage.

Decode::

    file bytes ──parse──────────> header + dense bits (container + entropy decoder)
               ──latents_to_device─> decoder inputs on the device
    (device coder: parse checks the container only, latents_to_device uploads the
    lanes and decodes them on the device into the decoder's inputs)
               ──decode_chunk──> YCbCr planes ──to_images──> uint8 RGB on the device
               ──images_to_host─> (h, w, 3) uint8 arrays

A chunk is a list of images of one rung and one padded shape.  The device stages
take a *lane* (engine/executors.py): where the work runs (``lane.device``, the lane's
CUDA stream made current by the executor), its staging buffers (``lane.host``: pinned
on a CUDA stream, plain memory inline) and its stage timer (``lane.stage``).  The
CPU stages (serialize, parse) take only a rung's :class:`~engine.rungs.Coding`, so
entropy worker processes run them without any network.

``opts`` is the codec's settings, read by name: ``kernels``, ``effort``,
``tile_pixels``, ``tile_size``, ``coder``, ``entropy_mode``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import bitstream, entropy, importance, lanes, lanes_reference, roi, tiling
from .errors import BitstreamError, ImageError
from .imageio import COLOR_GRAY
from .planes import LazyPlanes, padded_size, postprocess_tensor, preprocess_tensor
from .timing import stage


def bitpath(kernels: str, device):
    """The bit path (kernels/) for this choice on this device."""
    from kernels import get_bitpath
    return get_bitpath(kernels, str(device))


def needs_tiles(opts, rung, height: int, width: int, net: str = "encoder") -> bool:
    """Padded height x width over ``opts.tile_pixels``, or a side over what the runner
    accepts: the network then runs in tiles (engine/tiling.py), one image at a time."""
    return tiling.should_tile(height, width, opts.tile_pixels, tiling.runner_max_side(rung.runner, net))


# ----------------------------------------------------------------------------- encode

def stage_images(lane, rgbs: list, multiple: int, lazy: bool = False) -> torch.Tensor:
    """(h, w, 3) uint8 arrays of one padded shape -> (B, 3, H', W') YCbCr planes on the
    lane's device: one staging buffer, one copy to the device, then the same ops as
    :func:`engine.planes.preprocess`.  ``lazy`` (one image that runs in tiles): the
    pixels on the device as :class:`LazyPlanes`, converted tile by tile; on the CPU the
    caller's array itself, with no staging copy."""
    if lazy:
        if len(rgbs) != 1:
            raise ValueError("lazy planes are for one image at a time (a tiled one)")
        if lane.device.type == "cpu":
            import warnings
            with warnings.catch_warnings():     # a read-only array (Pillow's): the planes only read it
                warnings.simplefilter("ignore", UserWarning)
                rgb = torch.from_numpy(np.ascontiguousarray(rgbs[0]))
            return LazyPlanes(rgb, multiple)
    sizes = [r.nbytes for r in rgbs]
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    host = lane.host("rgb", (int(offs[-1]),))
    hv = host.numpy()
    for r, o, nb in zip(rgbs, offs, sizes):
        hv[o:o + nb] = r.reshape(-1)
    with lane.stage("h2d"):
        dev = host.to(lane.device, non_blocking=True)
    if lazy:
        return LazyPlanes(dev.view(rgbs[0].shape), multiple)
    with lane.stage("preprocess"):
        if len(rgbs) == 1:
            return preprocess_tensor(dev.view(rgbs[0].shape), multiple)
        # each image's planes written into the batch's tensor (a torch.cat of them cost as much
        # as converting them, on a busy 2-core CPU: #25)
        H, W = padded_size(*rgbs[0].shape[:2], multiple)
        planes = torch.empty((len(rgbs), 3, H, W), dtype=torch.float32, device=lane.device)
        for k, (r, o, nb) in enumerate(zip(rgbs, offs, sizes)):
            preprocess_tensor(dev[o:o + nb].view(r.shape), multiple, out=planes[k:k + 1])
        return planes


def lazy_planes(opts, rung, rgbs: list, multiple: int) -> bool:
    """Whether a chunk's planes are made tile by tile: one image, encoded in tiles
    without the code search (which needs the whole image's planes)."""
    if len(rgbs) != 1 or opts.effort:
        return False
    H, W = padded_size(*rgbs[0].shape[:2], multiple)
    return needs_tiles(opts, rung, H, W, "encoder")


def searcher(rung):
    """The rung's code search (engine/search.py), built on first use."""
    if rung.search is None:
        from . import checkpoint
        from .search import CodeSearch, rung_ms_ssim_weight, rung_slope
        net = checkpoint.load_net(rung.q).to(rung.runner.device)
        rung.search = CodeSearch(net, rung.tables, rung_slope(rung.q), rung_ms_ssim_weight(rung.q))
    return rung.search


def latents(opts, rung, lane, ycc: torch.Tensor, sizes: list, colors: list, boosts: list | None = None):
    """The encoder's sigmoid outputs (e, p, ec) for a chunk of padded planes, in tiles
    when :func:`needs_tiles`; with ``opts.effort`` > 0 the searched codes instead
    (``sizes``: each image's (h, w)).  ``boosts``: per image None or an
    :class:`engine.roi.RoiBoost`: its logit boost is added to ``p`` here, after any
    runner and before the levels are made, so every backend's files get it (with the
    search, the search starts from the boosted map and weighs the region's error)."""
    H, W = ycc.shape[-2:]
    tiled = needs_tiles(opts, rung, H, W, "encoder")
    if opts.effort == 0:
        if tiled:
            halo = tiling.encoder_halo(rung.q.config)
            tile = tiling.tile_for_runner(opts.tile_size, halo, tiling.runner_max_side(rung.runner, "encoder"))
            e, p, ec = tiling.encode_tiled(rung.runner.encode, ycc, tile, halo)
        else:
            e, p, ec = rung.runner.encode(ycc)
        b = boost_grid(boosts, p)
        return (e, p, ec) if b is None else (e, importance.boost(p, b), ec)
    if tiled:     # typed, so the batch APIs and the CLI report it per image (issue #28)
        raise ImageError(f"effort > 0 searches whole images and this one ({W}x{H} padded) is over "
                         f"tile_pixels={opts.tile_pixels}: use effort=0 or a larger tile_pixels")
    search = searcher(rung)
    gray = [c == COLOR_GRAY for c in colors]
    boosts = list(boosts) if boosts else [None] * len(sizes)
    # On CUDA a chunk is searched as one batch; on the CPU one image at a time,
    # which costs no speed there and keeps a batch's bytes equal to one image's.
    step = len(sizes) if ycc.device.type == "cuda" else 1
    out = []
    with lane.stage("search"):
        for s in range(0, len(sizes), step):
            out.append(search.run(ycc[s:s + step], sizes[s:s + step], opts.effort, gray=gray[s:s + step],
                                  roi=boosts[s:s + step])[:3])
    return tuple(torch.cat(t) for t in zip(*out))


def boost_grid(boosts: list | None, p: torch.Tensor) -> torch.Tensor | None:
    """Per image None or a RoiBoost -> (B, 1, h, w) float32 logit boosts on p's grid and
    device (0 where an image has none), or None when no image has one."""
    grid = roi.stack(boosts, *p.shape[-2:])
    return None if grid is None else torch.from_numpy(grid).to(p.device)


def codes_on_device(opts) -> bool:
    """Whether encode_chunk entropy-codes on the device (bitstream v2, the Triton coder)."""
    return getattr(opts, "coder", "native") == "triton" and opts.entropy_mode == bitstream.ENTROPY_RANS


@dataclass
class DeviceCoded:
    """A chunk's lanes coded on the device: ``flat`` uint16 words, lane i at
    ``flat[offs[i]:offs[i + 1]]`` (int64 word offsets, lanes + 1), and their geometry."""
    flat: torch.Tensor
    offs: torch.Tensor
    geo: object


def encode_chunk(opts, rung, lane, ycc: torch.Tensor, sizes: list, colors: list, boosts: list | None = None):
    """Planes -> bits on the device: the bit path's device buffers ``(levels, ynbits,
    ybuf, cnbits, cbuf)`` (Triton) or, for the torch bit path, Packed records; with
    :func:`codes_on_device`, the coded lanes (:class:`DeviceCoded`).  ``boosts``: each
    image's region of interest (None or an engine.roi.RoiBoost), see :func:`latents`."""
    cfg = rung.q.config
    with lane.stage("network"):
        e, p, ec = latents(opts, rung, lane, ycc, sizes, colors, boosts)
    if codes_on_device(opts):
        from kernels import rans_triton
        with lane.stage("entropy"):
            words, lens, geo = lanes.device_encode(cfg, rung.tables, p, e, ec, [c == COLOR_GRAY for c in colors])
            # into a buffer of the worst case: its used length is known on the host only
            # once the lane's copies are done (HostBits.lanes), so nothing waits here
            flat, offs = rans_triton.compact(words, lens, total=words.numel())
        return DeviceCoded(flat, offs, geo)
    with lane.stage("bitpath"):
        bp = bitpath(opts.kernels, e.device)
        if bp.pack_device is None:
            return bp.pack(e, p, ec, cfg.n, cfg.levels)
        return bp.pack_device(e, p, ec, cfg.n, cfg.levels)


class HostBits:
    """A chunk's bits on their way to the host; :meth:`packed` (or, coded on the device,
    :meth:`lanes`) once the lane's copies are done."""

    def __init__(self, packed: list | None = None, buffers: tuple | None = None, coded: tuple | None = None):
        self._packed, self._buffers, self._coded = packed, buffers, coded

    def lanes(self) -> list | None:
        """Each image's lanes' bytes when the chunk was coded on the device, else None."""
        if self._coded is None:
            return None
        from kernels import rans_triton
        flat, offs, geo = self._coded
        offs = offs.numpy().copy()
        words = flat[:int(offs[-1])].cpu().numpy()      # exactly the file bytes cross over
        return rans_triton.lanes_to_bytes(words, offs, geo.per_image)

    def packed(self) -> list:
        if self._packed is None:
            from kernels.reference import packed_from_arrays
            lv, nb, y, cnbits, c = self._buffers
            self._packed = packed_from_arrays(lv.numpy(), nb.numpy(), y.numpy(), cnbits, c.numpy())
        return self._packed


def bits_to_host(lane, bits) -> HostBits:
    """Device bits -> the lane's staging buffers, without waiting for the copies."""
    if isinstance(bits, list):
        return HostBits(packed=bits)
    if isinstance(bits, DeviceCoded):
        with lane.stage("d2h"):
            offs = lane.host("lane_offs", bits.offs.shape, torch.int64).copy_(bits.offs, non_blocking=True)
        return HostBits(coded=(bits.flat, offs, bits.geo))
    lv, ynbits, ybuf, cnbits, cbuf = bits
    with lane.stage("d2h"):
        h = (lane.host("lv", lv.shape).copy_(lv, non_blocking=True),
             lane.host("ynbits", ynbits.shape, torch.int32).copy_(ynbits, non_blocking=True),
             lane.host("ybuf", ybuf.shape).copy_(ybuf, non_blocking=True),
             int(cnbits),
             lane.host("cbuf", cbuf.shape).copy_(cbuf, non_blocking=True))
    return HostBits(buffers=h)


def container(coding, coded: list, h: int, w: int, color: int, timer=None, tile: int = lanes.DEFAULT_TILE) -> bytes:
    """One image's coded lanes -> its version 2 file."""
    with stage(timer, "container"):
        return bitstream.write_lanes(bitstream.Header(bitstream.ENTROPY_RANS, color, coding.quality, coding.model,
                                                      coding.stream_id, w, h, bitstream.VERSION_LANES, tile), coded)


def serialize(coding, packed, h: int, w: int, color: int, entropy_mode: int, timer=None) -> bytes:
    """One image's Packed record -> the file's bytes (version 2 for rANS lanes, else 1)."""
    cfg = coding.config
    gray = color == COLOR_GRAY
    if entropy_mode == bitstream.ENTROPY_RANS:
        with stage(timer, "entropy"):
            coded = lanes.encode(cfg, coding.tables, [packed], [gray], lanes.DEFAULT_TILE)[0]
        return container(coding, coded, h, w, color, timer)
    hdr = bitstream.Header(entropy_mode, color, coding.quality, coding.model, coding.stream_id, w, h)
    with stage(timer, "entropy"):
        if entropy_mode == bitstream.ENTROPY_RAW:
            msec = entropy.pack_map_raw(packed.levels, cfg.levels)
            ysec = packed.ybits
            csec = b"" if gray else packed.cbits
        else:
            from kernels import reference
            _, yd, cd = reference.unpack([packed], cfg.n, cfg.m, cfg.levels, dtype=torch.uint8)
            msec = entropy.encode_map(packed.levels, cfg.levels, coding.tables)
            ysec, csec = entropy.encode_codes(packed.levels, yd[0].numpy(), None if gray else cd[0].numpy(),
                                              cfg.n, cfg.levels, coding.tables)
    with stage(timer, "container"):
        return bitstream.write(hdr, msec, ysec, csec)


# ----------------------------------------------------------------------------- decode

@dataclass(frozen=True)
class LanesToDecode:
    """A version 2 file checked up to its entropy coding, for the device decoder."""
    body: bitstream.Lanes
    h: int              # the Y grid
    w: int
    tile: int
    gray: bool


def parse(data: bytes, coding_for, max_pixels: int, timer=None, lanes_on_device: bool = False):
    """Validate a file and entropy-decode it -> (header, coding, decoded): decoded is
    (levels, ydense, cdense) uint8 numpy for a context-coded file, a Packed record for a
    raw one.  ``coding_for(header)`` finds (and checks) the file's rung.  With
    ``lanes_on_device`` a version 2 file stops after its container, as a
    :class:`LanesToDecode` for :func:`latents_to_device`."""
    with stage(timer, "container"):
        hdr, body = bitstream.read(data, max_pixels)
        coding = coding_for(hdr)
        if lanes_on_device and hdr.version == bitstream.VERSION_LANES:
            H, W = padded_size(hdr.height, hdr.width, coding.config.multiple)
            bad = lanes_reference.lane_count_error(len(body), H // 8, W // 8, hdr.tile)
            if bad:
                raise BitstreamError(bad)
            return hdr, coding, LanesToDecode(body, H // 8, W // 8, hdr.tile, hdr.color == COLOR_GRAY)
    with stage(timer, "entropy"):
        return hdr, coding, parse_body(hdr, coding, body)


def parse_body(hdr, coding, body):
    """A file's body (bitstream.read) -> what :func:`parse` returns as decoded."""
    cfg = coding.config
    H, W = padded_size(hdr.height, hdr.width, cfg.multiple)
    h, w, hc, wc = H // 8, W // 8, H // 16, W // 16
    gray = hdr.color == COLOR_GRAY
    if hdr.version == bitstream.VERSION_LANES:
        dec = lanes.decode(cfg, coding.tables, [(h, w, hdr.tile, body, gray)])[0]
        if isinstance(dec, BitstreamError):
            raise dec
        return dec
    msec, ysec, csec = body
    if hdr.entropy == bitstream.ENTROPY_RAW:
        from kernels import reference
        levels = entropy.unpack_map_raw(msec, h, w, cfg.levels)
        ny = reference.expected_ybits(levels, cfg.n, cfg.levels)
        nc = 0 if gray else cfg.m * hc * wc
        if len(ysec) != (ny + 7) // 8 or len(csec) != (nc + 7) // 8:
            raise BitstreamError(f"code sections have {len(ysec)}+{len(csec)} bytes, the map implies "
                                 f"{(ny + 7) // 8}+{(nc + 7) // 8}")
        return reference.Packed(levels, ysec, ny, csec if not gray else bytes((cfg.m * hc * wc + 7) // 8),
                                cfg.m * hc * wc)
    levels = entropy.decode_map(msec, h, w, cfg.levels, coding.tables)
    yd, cd = entropy.decode_codes(levels, ysec, csec, cfg.n, cfg.levels, cfg.m, hc, wc, coding.tables, gray)
    # v1's range coder cannot tell where a section's symbols end: a section with bytes
    # added (or a grayscale file with a CbCr section) still decodes.  Its encoder is
    # deterministic, so the decoded symbols must encode back to the file's sections
    # exactly (about one encode more per v1 file; version 2 checks each lane's end).
    if (entropy.encode_map(levels, cfg.levels, coding.tables) != msec
            or entropy.encode_codes(levels, yd, None if gray else cd, cfg.n, cfg.levels, coding.tables)
            != (ysec, csec)):
        raise BitstreamError("corrupt context-coded file: its sections are not what their symbols encode to")
    return levels, yd, cd


def latents_to_device(opts, rung, lane, decs: list):
    """Parsed items of one rung and shape -> decoder inputs (levels, bits, cbits) as
    float tensors on the lane's device, in order, and ``errors()``: per item None, or the
    BitstreamError of a file whose lanes the device decoder refused (call it once the
    lane's copies are done).  :class:`LanesToDecode` items are decoded on the device
    (kernels/rans_triton.py), straight into the inputs."""
    on_dev = [k for k, d in enumerate(decs) if isinstance(d, LanesToDecode)]
    if not on_dev:
        return (*_host_latents(opts, rung, lane, decs), lambda: [None] * len(decs))
    from kernels import rans_triton
    d0 = decs[on_dev[0]]
    with lane.stage("h2d"):
        hostbuf = (lambda shape, dtype: lane.host("lanes_in", shape, dtype))
        (lv, bits, cbits), status, geo = lanes.device_decode(
            rung.q.config, rung.tables, d0.h, d0.w, [(decs[k].body, decs[k].tile, decs[k].gray) for k in on_dev],
            lane.device, torch.float32, host_buffer=hostbuf if lane.device.type == "cuda" else None)
    with lane.stage("entropy"):
        status_h = lane.host("lane_status", status.shape, torch.int32).copy_(status, non_blocking=True)

    def errors():
        out = [None] * len(decs)
        for k, ok in zip(on_dev, rans_triton.image_status(status_h.numpy(), geo.per_image)):
            if not ok:
                out[k] = BitstreamError("corrupt lane: its rANS stream does not decode to its end")
        return out
    if len(on_dev) == len(decs):
        return lv, bits, cbits, errors
    rest = [k for k in range(len(decs)) if k not in set(on_dev)]
    parts = _host_latents(opts, rung, lane, [decs[k] for k in rest])
    order = {k: ("dev", j) for j, k in enumerate(on_dev)} | {k: ("host", j) for j, k in enumerate(rest)}
    merged = []
    for dev_t, host_t in zip((lv, bits, cbits), parts):
        merged.append(torch.cat([(dev_t if order[k][0] == "dev" else host_t)[order[k][1]:order[k][1] + 1]
                                 for k in range(len(decs))]))
    return (*merged, errors)


def _host_latents(opts, rung, lane, decs: list):
    """Items decoded on the host -> decoder inputs: dense (context-coded) items through
    one staging buffer each, raw files through the bit path's unpack."""
    cfg = rung.q.config
    dev = lane.device
    with lane.stage("h2d"):
        if all(isinstance(d, tuple) for d in decs):
            B = len(decs)
            if dev.type == "cpu" and lane.stream is None:
                # Inline on the CPU: straight into the decoder's float inputs, numpy casting on this
                # thread (torch's .float() on its intra-op threads cost ~10x that on a busy 2-core
                # machine, #25).
                ins = [torch.empty((B, *a.shape), dtype=torch.float32) for a in decs[0]]
                for k, d in enumerate(decs):
                    for buf, a in zip(ins, d):
                        buf.numpy()[k] = a
                return ins[0][:, None], ins[1], ins[2]
            host = [lane.host(name, (B, *a.shape)) for name, a in zip(("lv_in", "y_in", "c_in"), decs[0])]
            for k, d in enumerate(decs):
                for buf, a in zip(host, d):
                    buf.numpy()[k] = a
            lv, bits, cbits = (buf.to(dev, non_blocking=True) for buf in host)
            return lv[:, None].float(), bits.float(), cbits.float()
        raw = [d for d in decs if not isinstance(d, tuple)]
        lv_r, b_r, c_r = bitpath(opts.kernels, dev).unpack(raw, cfg.n, cfg.m, cfg.levels, device=dev)
        it = iter(range(len(raw)))
        lv, bits, cbits = [], [], []
        for d in decs:
            if isinstance(d, tuple):
                levels, yd, cd = d
                lv.append(torch.from_numpy(levels).to(dev)[None, None].float())
                bits.append(torch.from_numpy(yd).to(dev)[None].float())
                cbits.append(torch.from_numpy(cd).to(dev)[None].float())
            else:
                j = next(it)
                lv.append(lv_r[j:j + 1])
                bits.append(b_r[j:j + 1])
                cbits.append(c_r[j:j + 1])
        return torch.cat(lv), torch.cat(bits), torch.cat(cbits)


def decode_chunk(opts, rung, lane, lv: torch.Tensor, bits: torch.Tensor, cbits: torch.Tensor) -> torch.Tensor:
    """Decoder inputs -> (B, 3, H', W') YCbCr planes, in tiles when :func:`needs_tiles`."""
    H, W = bits.shape[-2] * 8, bits.shape[-1] * 8
    with lane.stage("network"):
        if needs_tiles(opts, rung, H, W, "decoder"):
            halo = tiling.decoder_halo(rung.q.config)
            tile = tiling.tile_for_runner(opts.tile_size, halo, tiling.runner_max_side(rung.runner, "decoder"))
            return tiling.decode_tiled(rung.runner.decode, bits, lv, cbits, tile, halo)
        return rung.runner.decode(bits, lv, cbits)


def decode_images(opts, rung, lane, lv: torch.Tensor, bits: torch.Tensor, cbits: torch.Tensor, headers: list) -> list:
    """:func:`decode_chunk` then :func:`to_images`; a tiled image (a chunk of one) is
    converted to uint8 RGB tile by tile, so its float planes are never whole (issue #13:
    memory bounded by the image).  The same values either way: the conversion is per pixel."""
    H, W = bits.shape[-2] * 8, bits.shape[-1] * 8
    if len(headers) != 1 or not needs_tiles(opts, rung, H, W, "decoder"):
        return to_images(lane, decode_chunk(opts, rung, lane, lv, bits, cbits), headers)
    (hdr,) = headers
    gray = hdr.color == COLOR_GRAY
    out = torch.empty((hdr.height, hdr.width, 3), dtype=torch.uint8, device=bits.device)

    def store(core, a0, b0):
        hr, wr = min(core.shape[-2], hdr.height - a0), min(core.shape[-1], hdr.width - b0)
        if hr > 0 and wr > 0:
            out[a0:a0 + hr, b0:b0 + wr] = postprocess_tensor(core, hr, wr, gray=gray)

    with lane.stage("network"):
        halo = tiling.decoder_halo(rung.q.config)
        tile = tiling.tile_for_runner(opts.tile_size, halo, tiling.runner_max_side(rung.runner, "decoder"))
        tiling.decode_tiled(rung.runner.decode, bits, lv, cbits, tile, halo, store=store)
    return [out]


def to_images(lane, ycc: torch.Tensor, headers: list) -> list:
    """Planes -> one (h, w, 3) uint8 tensor per image on the device (cropped, clamped, rounded)."""
    with lane.stage("postprocess"):
        return [postprocess_tensor(ycc[k:k + 1], hdr.height, hdr.width, gray=hdr.color == COLOR_GRAY)
                for k, hdr in enumerate(headers)]


def images_to_host(lane, images: list) -> list:
    """Device images -> views of one staging buffer (copies not waited for); read them
    (and copy them out) after the lane's work is done.  Inline on the CPU the images are
    host tensors of their own already: they are returned as they are."""
    if lane.device.type == "cpu" and lane.stream is None:
        return list(images)
    with lane.stage("d2h"):
        host = lane.host("rgb_out", (sum(o.numel() for o in images),))
        views, o0 = [], 0
        for o in images:
            v = host[o0:o0 + o.numel()].view(o.shape)
            v.copy_(o, non_blocking=True)
            views.append(v)
            o0 += o.numel()
    return views
