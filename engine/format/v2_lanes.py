"""Version 2 (the default, ``entropy="rans"``), coded on the CPU: rANS lanes by the
native coder (engine/format/lanes.py, or its numpy reference)."""
from __future__ import annotations

from ..errors import BitstreamError
from ..io.imageio import COLOR_GRAY
from ..io.planes import padded_size
from ..timing import stage
from . import bitstream, lanes
from .base import DenseDecoded, HostCoded


def container(coding, coded: list, h: int, w: int, color: int, timer=None, tile: int = lanes.DEFAULT_TILE) -> bytes:
    """One image's coded lanes -> its version 2 file (whichever coder made them)."""
    with stage(timer, "container"):
        return bitstream.write_lanes(bitstream.Header(bitstream.ENTROPY_RANS, color, coding.quality, coding.model,
                                                      coding.stream_id, w, h, bitstream.VERSION_LANES, tile), coded)


class LanesV2(HostCoded, DenseDecoded):
    name = "v2-lanes"
    version = bitstream.VERSION_LANES
    entropy = bitstream.ENTROPY_RANS

    def serialize(self, coding, packed, h: int, w: int, color: int, timer=None) -> bytes:
        with stage(timer, "entropy"):
            coded = lanes.encode(coding.config, coding.tables, [packed], [color == COLOR_GRAY], lanes.DEFAULT_TILE)[0]
        return container(coding, coded, h, w, color, timer)

    def parse(self, hdr, coding, body, timer=None):
        """-> (levels, ydense, cdense) uint8 numpy."""
        H, W = padded_size(hdr.height, hdr.width, coding.config.multiple)
        with stage(timer, "entropy"):
            dec = lanes.decode(coding.config, coding.tables,
                               [(H // 8, W // 8, hdr.tile, body, hdr.color == COLOR_GRAY)])[0]
        if isinstance(dec, BitstreamError):     # lanes.decode reports a bad file in its place
            raise dec
        return dec


FORMAT = LanesV2()
