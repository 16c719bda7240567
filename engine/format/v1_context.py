"""Version 1, context-coded (``entropy="context"``): the map and codes through
version 1's range coder (engine/format/context_coder.py), kept for old readers."""
from __future__ import annotations

import torch

from ..errors import BitstreamError
from ..io.imageio import COLOR_GRAY
from ..io.planes import padded_size
from ..timing import stage
from . import bitstream, context_coder
from .base import DenseDecoded, HostCoded


class ContextV1(HostCoded, DenseDecoded):
    name = "v1-context"
    version = bitstream.VERSION
    entropy = bitstream.ENTROPY_CONTEXT

    def serialize(self, coding, packed, h: int, w: int, color: int, timer=None) -> bytes:
        from kernels import reference
        cfg, tables = coding.config, coding.tables
        hdr = bitstream.Header(self.entropy, color, coding.quality, coding.model, coding.stream_id, w, h)
        with stage(timer, "entropy"):
            _, yd, cd = reference.unpack([packed], cfg.n, cfg.m, cfg.levels, dtype=torch.uint8)
            msec = context_coder.encode_map(packed.levels, cfg.levels, tables)
            ysec, csec = context_coder.encode_codes(packed.levels, yd[0].numpy(),
                                                    None if color == COLOR_GRAY else cd[0].numpy(),
                                                    cfg.n, cfg.levels, tables)
        with stage(timer, "container"):
            return bitstream.write(hdr, msec, ysec, csec)

    def parse(self, hdr, coding, body, timer=None):
        """-> (levels, ydense, cdense) uint8 numpy."""
        cfg, tables = coding.config, coding.tables
        H, W = padded_size(hdr.height, hdr.width, cfg.multiple)
        gray = hdr.color == COLOR_GRAY
        msec, ysec, csec = body
        with stage(timer, "entropy"):
            levels = context_coder.decode_map(msec, H // 8, W // 8, cfg.levels, tables)
            yd, cd = context_coder.decode_codes(levels, ysec, csec, cfg.n, cfg.levels, cfg.m, H // 16, W // 16,
                                                tables, gray)
            # The range coder cannot tell where a section's symbols end: a section with bytes
            # added (or a grayscale file with a CbCr section) still decodes.  Its encoder is
            # deterministic, so the decoded symbols must encode back to the file's sections
            # exactly (about one encode more per file; version 2 checks each lane's end).
            if (context_coder.encode_map(levels, cfg.levels, tables) != msec
                    or context_coder.encode_codes(levels, yd, None if gray else cd, cfg.n, cfg.levels, tables)
                    != (ysec, csec)):
                raise BitstreamError("corrupt context-coded file: its sections are not what their symbols "
                                     "encode to")
            return levels, yd, cd


FORMAT = ContextV1()
