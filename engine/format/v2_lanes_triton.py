"""Version 2 coded on the device (``coder="triton"``, kernels/rans_triton.py): the
same bytes as the native coder, but the codes never leave the GPU before they are
bytes.  Encode ends with the lanes coded and compacted on the device, and only their
bytes cross to the host; decode checks the container on the host, uploads the lanes
and decodes them on the device straight into the decoder's inputs."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import BitstreamError
from ..io.imageio import COLOR_GRAY
from ..io.planes import padded_size
from ..timing import stage
from . import bitstream, lanes, lanes_reference
from .base import HostBits
from .v2_lanes import container


@dataclass
class DeviceCoded:
    """A chunk's lanes coded on the device: ``flat`` uint16 words, lane i at
    ``flat[offs[i]:offs[i + 1]]`` (int64 word offsets, lanes + 1), and their geometry."""
    flat: torch.Tensor
    offs: torch.Tensor
    geo: object


@dataclass(frozen=True)
class LanesToDecode:
    """A version 2 file checked up to its entropy coding, for the device decoder."""
    body: bitstream.Lanes
    h: int              # the Y grid
    w: int
    tile: int
    gray: bool


def _lane_bytes(staged) -> list:
    from kernels import rans_triton
    flat, offs, geo = staged
    offs = offs.numpy().copy()
    words = flat[:int(offs[-1])].cpu().numpy()      # exactly the file bytes cross over
    return rans_triton.lanes_to_bytes(words, offs, geo.per_image)


class LanesV2Triton:
    name = "v2-lanes-triton"
    version = bitstream.VERSION_LANES
    entropy = bitstream.ENTROPY_RANS
    coder = "triton"
    host_entropy = False    # serialize writes the container only, on the finishing thread
    upload = "lanes"

    def finish(self, rung, slot, e, p, ec, grays: list, kernels: str) -> DeviceCoded:
        from kernels import rans_triton
        with slot.stage("entropy"):
            words, lens, geo = lanes.device_encode(rung.q.config, rung.tables, p, e, ec, grays)
            # into a buffer of the worst case: its used length is known on the host only
            # once the slot's copies are done (HostBits.records), so nothing waits here
            flat, offs = rans_triton.compact(words, lens, total=words.numel())
        return DeviceCoded(flat, offs, geo)

    def to_host(self, slot, bits: DeviceCoded) -> HostBits:
        with slot.stage("d2h"):
            offs = slot.host("rans_offs", bits.offs.shape, torch.int64).copy_(bits.offs, non_blocking=True)
        return HostBits(staged=(bits.flat, offs, bits.geo), convert=_lane_bytes)

    def serialize(self, coding, coded: list, h: int, w: int, color: int, timer=None) -> bytes:
        return container(coding, coded, h, w, color, timer)

    def parse(self, hdr, coding, body, timer=None) -> LanesToDecode:
        """The container only: the lanes' count checked, their coding left to the device."""
        with stage(timer, "container"):
            H, W = padded_size(hdr.height, hdr.width, coding.config.multiple)
            bad = lanes_reference.lane_count_error(len(body), H // 8, W // 8, hdr.tile)
            if bad:
                raise BitstreamError(bad)
            return LanesToDecode(body, H // 8, W // 8, hdr.tile, hdr.color == COLOR_GRAY)

    def to_device(self, rung, slot, decs: list, kernels: str):
        """Uploads the lanes and decodes them on the device; ``errors()`` reads each
        file's lane status once the slot's copies are done."""
        from kernels import rans_triton
        d0 = decs[0]
        with slot.stage("h2d"):
            hostbuf = (lambda shape, dtype: slot.host("rans_in", shape, dtype))
            (lv, bits, cbits), status, geo = lanes.device_decode(
                rung.q.config, rung.tables, d0.h, d0.w, [(d.body, d.tile, d.gray) for d in decs],
                slot.device, torch.float32, host_buffer=hostbuf if slot.device.type == "cuda" else None)
        with slot.stage("entropy"):
            status_h = slot.host("rans_status", status.shape, torch.int32).copy_(status, non_blocking=True)

        def errors():
            return [None if ok else BitstreamError("corrupt lane: its rANS stream does not decode to its end")
                    for ok in rans_triton.image_status(status_h.numpy(), geo.per_image)]
        return lv, bits, cbits, errors


FORMAT = LanesV2Triton()
