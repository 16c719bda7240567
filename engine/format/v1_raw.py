"""Version 1, raw (``entropy="raw"``): the importance map at ceil(log2 L) bits per
location and the kept code bits as they are (docs/bitstream.md)."""
from __future__ import annotations

from ..errors import BitstreamError
from ..io.imageio import COLOR_GRAY
from ..io.planes import padded_size
from ..timing import stage
from . import bitstream, context_coder
from .base import HostCoded, bitpath


class RawV1(HostCoded):
    name = "v1-raw"
    version = bitstream.VERSION
    entropy = bitstream.ENTROPY_RAW
    upload = "raw"

    def serialize(self, coding, packed, h: int, w: int, color: int, timer=None) -> bytes:
        hdr = bitstream.Header(self.entropy, color, coding.quality, coding.model, coding.stream_id, w, h)
        with stage(timer, "entropy"):
            msec = context_coder.pack_map_raw(packed.levels, coding.config.levels)
            csec = b"" if color == COLOR_GRAY else packed.cbits
        with stage(timer, "container"):
            return bitstream.write(hdr, msec, packed.ybits, csec)

    def parse(self, hdr, coding, body, timer=None):
        """-> a Packed record, its sections' lengths checked against its map."""
        from kernels import reference
        cfg = coding.config
        H, W = padded_size(hdr.height, hdr.width, cfg.multiple)
        h, w, nc = H // 8, W // 8, cfg.m * (H // 16) * (W // 16)
        gray = hdr.color == COLOR_GRAY
        msec, ysec, csec = body
        with stage(timer, "entropy"):
            levels = context_coder.unpack_map_raw(msec, h, w, cfg.levels)
            ny = reference.expected_ybits(levels, cfg.n, cfg.levels)
            nc_file = 0 if gray else nc
            if len(ysec) != (ny + 7) // 8 or len(csec) != (nc_file + 7) // 8:
                raise BitstreamError(f"code sections have {len(ysec)}+{len(csec)} bytes, the map implies "
                                     f"{(ny + 7) // 8}+{(nc_file + 7) // 8}")
            return reference.Packed(levels, ysec, ny, csec if not gray else bytes((nc + 7) // 8), nc)

    def to_device(self, rung, slot, packeds: list, kernels: str):
        """The bit path's unpack, on the slot's device."""
        cfg = rung.q.config
        with slot.stage("h2d"):
            lv, bits, cbits = bitpath(kernels, slot.device).unpack(packeds, cfg.n, cfg.m, cfg.levels,
                                                                   device=slot.device)
        return lv, bits, cbits, None


FORMAT = RawV1()
