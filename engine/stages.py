"""The engine's stages, each written once; every path (one image, a batch, CUDA
streams) runs these and nothing else.

Encode::

    images ──stage_images──> padded YCbCr planes on the device
           ──encode_chunk──> bits on the device (network or code search, then the bit path)
           ──bits_to_host──> Packed records (levels + packed Y / CbCr bits)
           ──serialize────> file bytes (entropy coder + container)

Decode::

    file bytes ──parse──────────> header + dense bits (container + entropy decoder)
               ──latents_to_device─> decoder inputs on the device
               ──decode_chunk──> YCbCr planes ──to_images──> uint8 RGB on the device
               ──images_to_host─> (h, w, 3) uint8 arrays

A chunk is a list of images of one rung and one padded shape.  The device stages
take a *lane* (engine/executors.py): where the work runs (``lane.device``, the lane's
CUDA stream made current by the executor), its staging buffers (``lane.host``: pinned
on a CUDA stream, plain memory inline) and its stage timer (``lane.stage``).  The
CPU stages (serialize, parse) take only a rung's :class:`~engine.rungs.Coding`, so
entropy worker processes run them without any network.

``opts`` is the codec's settings, read by name: ``kernels``, ``effort``,
``tile_pixels``, ``tile_size``.
"""
from __future__ import annotations

import numpy as np
import torch

from . import bitstream, entropy, lanes, tiling
from .errors import BitstreamError
from .imageio import COLOR_GRAY
from .planes import padded_size, postprocess_tensor, preprocess_tensor
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

def stage_images(lane, rgbs: list, multiple: int) -> torch.Tensor:
    """(h, w, 3) uint8 arrays of one padded shape -> (B, 3, H', W') YCbCr planes on the
    lane's device: one staging buffer, one copy to the device, then the same ops as
    :func:`engine.planes.preprocess`."""
    sizes = [r.nbytes for r in rgbs]
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    host = lane.host("rgb", (int(offs[-1]),))
    hv = host.numpy()
    for r, o, nb in zip(rgbs, offs, sizes):
        hv[o:o + nb] = r.reshape(-1)
    with lane.stage("h2d"):
        dev = host.to(lane.device, non_blocking=True)
    with lane.stage("preprocess"):
        return torch.cat([preprocess_tensor(dev[o:o + nb].view(r.shape), multiple)
                          for r, o, nb in zip(rgbs, offs, sizes)])


def searcher(rung):
    """The rung's code search (engine/search.py), built on first use."""
    if rung.search is None:
        from . import checkpoint
        from .search import CodeSearch, rung_slope
        net = checkpoint.load_net(rung.q).to(rung.runner.device)
        rung.search = CodeSearch(net, rung.tables, rung_slope(rung.q))
    return rung.search


def latents(opts, rung, lane, ycc: torch.Tensor, sizes: list, colors: list):
    """The encoder's sigmoid outputs (e, p, ec) for a chunk of padded planes, in tiles
    when :func:`needs_tiles`; with ``opts.effort`` > 0 the searched codes instead
    (``sizes``: each image's (h, w))."""
    H, W = ycc.shape[-2:]
    tiled = needs_tiles(opts, rung, H, W, "encoder")
    if opts.effort == 0:
        if tiled:
            halo = tiling.encoder_halo(rung.q.config)
            tile = tiling.tile_for_runner(opts.tile_size, halo, tiling.runner_max_side(rung.runner, "encoder"))
            return tiling.encode_tiled(rung.runner.encode, ycc, tile, halo)
        return rung.runner.encode(ycc)
    if tiled:
        raise ValueError(f"effort > 0 searches whole images and this one ({W}x{H} padded) is over "
                         f"tile_pixels={opts.tile_pixels}: use effort=0 or a larger tile_pixels")
    search = searcher(rung)
    gray = [c == COLOR_GRAY for c in colors]
    # On CUDA a chunk is searched as one batch; on the CPU one image at a time,
    # which costs no speed there and keeps a batch's bytes equal to one image's.
    step = len(sizes) if ycc.device.type == "cuda" else 1
    out = []
    with lane.stage("search"):
        for s in range(0, len(sizes), step):
            out.append(search.run(ycc[s:s + step], sizes[s:s + step], opts.effort, gray=gray[s:s + step])[:3])
    return tuple(torch.cat(t) for t in zip(*out))


def encode_chunk(opts, rung, lane, ycc: torch.Tensor, sizes: list, colors: list):
    """Planes -> bits on the device: the bit path's device buffers ``(levels, ynbits,
    ybuf, cnbits, cbuf)`` (Triton) or, for the torch bit path, Packed records."""
    cfg = rung.q.config
    with lane.stage("network"):
        e, p, ec = latents(opts, rung, lane, ycc, sizes, colors)
    with lane.stage("bitpath"):
        bp = bitpath(opts.kernels, e.device)
        if bp.pack_device is None:
            return bp.pack(e, p, ec, cfg.n, cfg.levels)
        return bp.pack_device(e, p, ec, cfg.n, cfg.levels)


class HostBits:
    """A chunk's bits on their way to the host; :meth:`packed` once the lane's copies are done."""

    def __init__(self, packed: list | None = None, buffers: tuple | None = None):
        self._packed, self._buffers = packed, buffers

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
    lv, ynbits, ybuf, cnbits, cbuf = bits
    with lane.stage("d2h"):
        h = (lane.host("lv", lv.shape).copy_(lv, non_blocking=True),
             lane.host("ynbits", ynbits.shape, torch.int32).copy_(ynbits, non_blocking=True),
             lane.host("ybuf", ybuf.shape).copy_(ybuf, non_blocking=True),
             int(cnbits),
             lane.host("cbuf", cbuf.shape).copy_(cbuf, non_blocking=True))
    return HostBits(buffers=h)


def serialize(coding, packed, h: int, w: int, color: int, entropy_mode: int, timer=None) -> bytes:
    """One image's Packed record -> the file's bytes (version 2 for rANS lanes, else 1)."""
    cfg = coding.config
    gray = color == COLOR_GRAY
    v2 = entropy_mode == bitstream.ENTROPY_RANS
    hdr = bitstream.Header(entropy_mode, color, coding.quality, coding.model, coding.stream_id, w, h,
                           *((bitstream.VERSION_LANES, lanes.DEFAULT_TILE) if v2 else ()))
    if v2:
        with stage(timer, "entropy"):
            coded = lanes.encode(cfg, coding.tables, [packed], [gray], hdr.tile)[0]
        with stage(timer, "container"):
            return bitstream.write_lanes(hdr, coded)
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

def parse(data: bytes, coding_for, max_pixels: int, timer=None):
    """Validate a file and entropy-decode it -> (header, coding, decoded): decoded is
    (levels, ydense, cdense) uint8 numpy for a context-coded file, a Packed record for a
    raw one.  ``coding_for(header)`` finds (and checks) the file's rung."""
    with stage(timer, "container"):
        hdr, body = bitstream.read(data, max_pixels)
        coding = coding_for(hdr)
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
    """Parsed items of one rung and shape -> decoder inputs (bits, levels, cbits) as
    float tensors on the lane's device, in order.  Dense (context-coded) items go
    through one staging buffer each; raw files through the bit path's unpack."""
    cfg = rung.q.config
    dev = lane.device
    with lane.stage("h2d"):
        if all(isinstance(d, tuple) for d in decs):
            B = len(decs)
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


def to_images(lane, ycc: torch.Tensor, headers: list) -> list:
    """Planes -> one (h, w, 3) uint8 tensor per image on the device (cropped, clamped, rounded)."""
    with lane.stage("postprocess"):
        return [postprocess_tensor(ycc[k:k + 1], hdr.height, hdr.width, gray=hdr.color == COLOR_GRAY)
                for k, hdr in enumerate(headers)]


def images_to_host(lane, images: list) -> list:
    """Device images -> views of one staging buffer (copies not waited for); read them
    (and copy them out) after the lane's work is done."""
    with lane.stage("d2h"):
        host = lane.host("rgb_out", (sum(o.numel() for o in images),))
        views, o0 = [], 0
        for o in images:
            v = host[o0:o0 + o.numel()].view(o.shape)
            v.copy_(o, non_blocking=True)
            views.append(v)
            o0 += o.numel()
    return views
