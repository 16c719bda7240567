"""The file container, format version 1 (specified in docs/bitstream.md).

    offset size  field
    0      4     magic b"HNLC"
    4      1     format version (1)
    5      1     entropy mode (0 raw, 1 context-coded)
    6      1     colour mode (0 RGB, 1 grayscale)
    7      1     quality (1..255)
    8      1     model-name length k (1..64)
    9      k     model name, ASCII
    9+k    8     stream id: first 8 bytes of the model's stream fingerprint
    17+k   4     width   (u32 LE)
    21+k   4     height  (u32 LE)
    25+k   4     map section length   (u32 LE)
    29+k   4     Y-code section length
    33+k   4     CbCr-code section length
    37+k   4     CRC-32 (zlib) of the three sections
    41+k   ...   map section | Y-code section | CbCr-code section (nothing after)
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import BitstreamError
from .imageio import COLOR_GRAY, COLOR_RGB, check_size

MAGIC = b"HNLC"
VERSION = 1
ENTROPY_RAW = 0
ENTROPY_CONTEXT = 1
ENTROPY_NAMES = {"none": ENTROPY_RAW, "raw": ENTROPY_RAW, "context": ENTROPY_CONTEXT}
_PRE = struct.Struct("<4sBBBBB")
_POST = struct.Struct("<8sIIIIII")


@dataclass(frozen=True)
class Header:
    entropy: int
    color: int
    quality: int
    model: str
    stream_id: bytes
    width: int
    height: int


def write(h: Header, map_sec: bytes, y_sec: bytes, c_sec: bytes) -> bytes:
    name = h.model.encode("ascii")
    if not 1 <= len(name) <= 64:
        raise ValueError("model name must be 1..64 ASCII characters")
    payload = map_sec + y_sec + c_sec
    return b"".join([
        _PRE.pack(MAGIC, VERSION, h.entropy, h.color, h.quality, len(name)), name,
        _POST.pack(h.stream_id[:8], h.width, h.height, len(map_sec), len(y_sec), len(c_sec),
                   zlib.crc32(payload) & 0xFFFFFFFF),
        payload,
    ])


def read(data: bytes, max_pixels: int) -> tuple[Header, bytes, bytes, bytes]:
    """Parse and validate everything that can be checked without the model."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < _PRE.size:
        raise BitstreamError(f"truncated file: {len(data)} bytes is shorter than the header")
    magic, version, entropy, color, quality, k = _PRE.unpack_from(data)
    if magic != MAGIC:
        raise BitstreamError("not an HNLC file (bad magic)")
    if version != VERSION:
        raise BitstreamError(f"unsupported format version {version}; this engine reads version {VERSION}")
    if entropy not in (ENTROPY_RAW, ENTROPY_CONTEXT):
        raise BitstreamError(f"unknown entropy mode {entropy}")
    if color not in (COLOR_RGB, COLOR_GRAY):
        raise BitstreamError(f"unknown colour mode {color}")
    if not 1 <= k <= 64 or quality < 1:
        raise BitstreamError("corrupt header (model name length / quality)")
    end = _PRE.size + k + _POST.size
    if len(data) < end:
        raise BitstreamError(f"truncated file: {len(data)} bytes, header needs {end}")
    try:
        model = data[_PRE.size:_PRE.size + k].decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError("corrupt header (model name is not ASCII)") from None
    sid, w, h, lm, ly, lc, crc = _POST.unpack_from(data, _PRE.size + k)
    check_size(w, h, max_pixels, exc=BitstreamError)
    if end + lm + ly + lc != len(data):
        raise BitstreamError(f"file length {len(data)} does not match its header "
                             f"({end} + {lm} + {ly} + {lc}): truncated or corrupt")
    payload = data[end:]
    if zlib.crc32(payload) & 0xFFFFFFFF != crc:
        raise BitstreamError("payload checksum mismatch: the file is corrupt")
    hdr = Header(entropy, color, quality, model, sid, w, h)
    return hdr, payload[:lm], payload[lm:lm + ly], payload[lm + ly:]
