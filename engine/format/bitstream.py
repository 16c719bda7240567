"""The file container (specified in docs/bitstream.md): version 2 is written by the
default entropy mode (rANS lanes), version 1 by the raw and the legacy context modes;
both are read.

Version 1::

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

Version 2 (entropy mode 2, rANS lanes: engine/format/lanes.py)::

    offset size  field
    0      9+k   as version 1, with version 2 and entropy mode 2
    9+k    8     stream id
    17+k   4     width   (u32 LE)
    21+k   4     height  (u32 LE)
    25+k   2     lane tile side T in Y-grid locations (u16 LE, even, 2..4096)
    27+k   2     reserved, 0
    29+k   4     lane count N (u32 LE)
    33+k   4     CRC-32 (zlib) of the whole file without these 4 bytes
    37+k   ...   N lane lengths, LEB128 varints (each >= 4 and even), then the N lanes
                 back to back (nothing after)

Version 2's checksum covers the header too, so a flipped size or colour byte is
caught before anything is decoded.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import BitstreamError
from ..io.imageio import COLOR_GRAY, COLOR_RGB, check_size
from . import MAGIC

VERSION = 1          # raw and context files
VERSION_LANES = 2    # rANS-lane files
VERSIONS = (VERSION, VERSION_LANES)
ENTROPY_RAW = 0
ENTROPY_CONTEXT = 1
ENTROPY_RANS = 2
ENTROPY_NAMES = {"none": ENTROPY_RAW, "raw": ENTROPY_RAW, "context": ENTROPY_CONTEXT, "rans": ENTROPY_RANS}
_MODES = {VERSION: (ENTROPY_RAW, ENTROPY_CONTEXT), VERSION_LANES: (ENTROPY_RANS,)}
_PRE = struct.Struct("<4sBBBBB")
_POST = struct.Struct("<8sIIIIII")
_POST2 = struct.Struct("<8sIIHHII")
MAX_TILE = 4096
HEADER_MAX = _PRE.size + 64 + max(_POST.size, _POST2.size)    # the longest header (a 64-character model name)


@dataclass(frozen=True)
class Header:
    entropy: int
    color: int
    quality: int
    model: str
    stream_id: bytes
    width: int
    height: int
    version: int = VERSION
    tile: int = 0            # version 2: lane tile side in Y-grid locations


@dataclass(frozen=True)
class Lanes:
    """A version 2 file's body: the lanes back to back and where each starts."""
    data: bytes
    starts: np.ndarray       # (N + 1,) uint64, lane i is data[starts[i]:starts[i + 1]]

    def __len__(self) -> int:
        return len(self.starts) - 1

    def lane(self, i: int) -> bytes:
        return self.data[int(self.starts[i]):int(self.starts[i + 1])]


def _name(h: Header) -> bytes:
    name = h.model.encode("ascii")
    if not 1 <= len(name) <= 64:
        raise ValueError("model name must be 1..64 ASCII characters")
    return name


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def write(h: Header, map_sec: bytes, y_sec: bytes, c_sec: bytes) -> bytes:
    """A version 1 file (raw or context mode)."""
    name = _name(h)
    payload = map_sec + y_sec + c_sec
    return b"".join([
        _PRE.pack(MAGIC, VERSION, h.entropy, h.color, h.quality, len(name)), name,
        _POST.pack(h.stream_id[:8], h.width, h.height, len(map_sec), len(y_sec), len(c_sec),
                   zlib.crc32(payload) & 0xFFFFFFFF),
        payload,
    ])


def write_lanes(h: Header, lanes: list[bytes]) -> bytes:
    """A version 2 file: ``h.tile`` and the lanes' bytes in raster order."""
    name = _name(h)
    if not 2 <= h.tile <= MAX_TILE or h.tile % 2:
        raise ValueError(f"lane tile must be even, 2..{MAX_TILE}, got {h.tile}")
    table = b"".join(_varint(len(x)) for x in lanes)
    pre = _PRE.pack(MAGIC, VERSION_LANES, ENTROPY_RANS, h.color, h.quality, len(name)) + name
    post = _POST2.pack(h.stream_id[:8], h.width, h.height, h.tile, 0, len(lanes), 0)[:-4]
    body = table + b"".join(lanes)
    crc = zlib.crc32(body, zlib.crc32(pre + post)) & 0xFFFFFFFF
    return b"".join([pre, post, struct.pack("<I", crc), body])


def _read_lanes(data: bytes, hdr_end: int, count: int) -> Lanes:
    """The lane table and lanes after a version 2 header (count already bounded)."""
    lengths = np.zeros(count, np.uint64)
    pos = hdr_end
    for i in range(count):
        v = shift = 0
        while True:
            if pos >= len(data) or shift > 28:
                raise BitstreamError("corrupt lane table (truncated or over-long length)")
            b = data[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if v < 4 or v % 2:
            raise BitstreamError(f"corrupt lane table: lane {i} has {v} bytes")
        lengths[i] = v
    starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.uint64)]).astype(np.uint64)
    if pos + int(starts[-1]) != len(data):
        raise BitstreamError(f"file length {len(data)} does not match its lane table "
                             f"({pos} + {int(starts[-1])}): truncated or corrupt")
    return Lanes(data[pos:], starts)


def read(data: bytes, max_pixels: int) -> tuple[Header, tuple | Lanes]:
    """Parse and validate everything that can be checked without the model -> (header,
    body): version 1's body is its three sections (map, Y codes, CbCr codes),
    version 2's its :class:`Lanes`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    version, entropy, color, quality, k, model, end = _prefix(data)
    if version == VERSION_LANES:
        return _read_v2(data, model, color, quality, k, max_pixels)
    sid, w, h, lm, ly, lc, crc = _POST.unpack_from(data, _PRE.size + k)
    check_size(w, h, max_pixels, exc=BitstreamError)
    if end + lm + ly + lc != len(data):
        raise BitstreamError(f"file length {len(data)} does not match its header "
                             f"({end} + {lm} + {ly} + {lc}): truncated or corrupt")
    if color == COLOR_GRAY and lc:     # version 1 has no header checksum: what the fields imply is checked
        raise BitstreamError("corrupt header: a grayscale file with a CbCr section (colour byte flipped?)")
    payload = data[end:]
    if zlib.crc32(payload) & 0xFFFFFFFF != crc:
        raise BitstreamError("payload checksum mismatch: the file is corrupt")
    hdr = Header(entropy, color, quality, model, sid, w, h)
    return hdr, (payload[:lm], payload[lm:lm + ly], payload[lm + ly:])


def peek(data: bytes, max_pixels: int) -> Header:
    """The header of a file from its first bytes (``HEADER_MAX`` of them always suffice),
    with the checks that need nothing after the header (magic, version, modes, size
    limits; version 2's lane tile).  Reading nothing else, it cannot see a corrupt body
    or checksum: :func:`read` checks those."""
    data = bytes(data[:HEADER_MAX])
    version, entropy, color, quality, k, model, _ = _prefix(data)
    if version == VERSION:
        sid, w, h = _POST.unpack_from(data, _PRE.size + k)[:3]
        tile = 0
    else:
        sid, w, h, tile, reserved = _POST2.unpack_from(data, _PRE.size + k)[:5]
        if not 2 <= tile <= MAX_TILE or tile % 2 or reserved:
            raise BitstreamError(f"corrupt header (lane tile {tile})")
    check_size(w, h, max_pixels, exc=BitstreamError)
    return Header(entropy, color, quality, model, sid, w, h, version, tile)


# Bounded reads (issue #28): the most bytes a valid file of a given header can have.
# Every coded symbol costs at most 16 bits (probabilities are out of 2^16 and none is
# 0: rANS and the range coder emit at most -log2(p) bits per symbol, plus rounding);
# 17 leaves room for that rounding.  A Y location codes its level and at most n
# channels, a CbCr location m channels; raw packing is smaller still.
BITS_PER_SYMBOL = 17
SECTION_SLACK = 64          # per v1 section: the range coder's last words
LANE_SLACK = 5 + 8          # per v2 lane: its length varint, final state, a last word
# Without the model's config (a file naming a model not installed here): generous
# channel counts, above every config the engine ships (n = 90 at most, m = 8).
GENERIC_N, GENERIC_M = 128, 32
READ_CHUNK = 1 << 20


def max_file_bytes(h: Header, n: int | None = None, m: int | None = None, multiple: int = 16) -> int:
    """The most bytes a valid file with header ``h`` can have, for a model with ``n`` Y
    and ``m`` CbCr channels (None: :data:`GENERIC_N`, :data:`GENERIC_M`).  Readers
    refuse anything longer without reading it (about 210 MB for the shipped config at
    the 100 M pixel limit; a real file there is ~12 MB)."""
    n = GENERIC_N if n is None else n
    m = GENERIC_M if m is None else m
    H, W = -(-h.height // multiple) * multiple, -(-h.width // multiple) * multiple
    ylocs, clocs = (H // 8) * (W // 8), (H // 16) * (W // 16)
    symbols = ylocs * (1 + n) + (0 if h.color == COLOR_GRAY else clocs * m)
    body = -(-symbols * BITS_PER_SYMBOL // 8)
    if h.version == VERSION_LANES and h.tile:
        lanes = -(-(H // 8) // h.tile) * -(-(W // 8) // h.tile)
        return HEADER_MAX + body + lanes * LANE_SLACK
    return HEADER_MAX + body + 3 * SECTION_SLACK


def read_file(f, max_pixels: int, channels=None) -> bytes:
    """A whole file from a binary file object, reading no more than a valid file of its
    header can have (:func:`max_file_bytes`): a BitstreamError for anything longer (a
    6 GB file is refused after reading one chunk past its bound, not loaded).
    ``channels(model)`` -> (n, m, multiple) of an installed model, or None."""
    head = f.read(HEADER_MAX)
    hdr = peek(head, max_pixels)
    dims = channels(hdr.model) if channels else None
    limit = max_file_bytes(hdr, *(dims or ()))
    parts, size = [head], len(head)
    while size <= limit:
        block = f.read(min(READ_CHUNK, limit + 1 - size))
        if not block:
            break
        parts.append(block)
        size += len(block)
    if size > limit:
        raise BitstreamError(f"the file is over {limit} bytes, more than any valid {hdr.width}x{hdr.height} "
                             f"file of model {hdr.model!r} can have: corrupt, or not an HNLC file")
    return b"".join(parts)


def header_length(h: Header) -> int:
    """Bytes before a file's sections (version 1) or lane table (version 2)."""
    return _PRE.size + len(_name(h)) + (_POST.size if h.version == VERSION else _POST2.size)


def _prefix(data: bytes) -> tuple:
    """(version, entropy, colour, quality, k, model, header end) of a file, checked as
    far as the fixed part of the header goes."""
    if len(data) < _PRE.size:
        raise BitstreamError(f"truncated file: {len(data)} bytes is shorter than the header")
    magic, version, entropy, color, quality, k = _PRE.unpack_from(data)
    if magic != MAGIC:
        raise BitstreamError("not an HNLC file (bad magic)")
    if version not in VERSIONS:
        raise BitstreamError(f"unsupported format version {version}; this engine reads versions "
                             f"{', '.join(map(str, VERSIONS))}")
    if entropy not in _MODES[version]:
        raise BitstreamError(f"unknown entropy mode {entropy} for format version {version}")
    if color not in (COLOR_RGB, COLOR_GRAY):
        raise BitstreamError(f"unknown colour mode {color}")
    if not 1 <= k <= 64 or quality < 1:
        raise BitstreamError("corrupt header (model name length / quality)")
    end = _PRE.size + k + (_POST.size if version == VERSION else _POST2.size)
    if len(data) < end:
        raise BitstreamError(f"truncated file: {len(data)} bytes, header needs {end}")
    try:
        model = data[_PRE.size:_PRE.size + k].decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError("corrupt header (model name is not ASCII)") from None
    return version, entropy, color, quality, k, model, end


def _read_v2(data: bytes, model: str, color: int, quality: int, k: int, max_pixels: int):
    at = _PRE.size + k
    sid, w, h, tile, reserved, count, crc = _POST2.unpack_from(data, at)
    end = at + _POST2.size
    # the checksum first: it covers the header, so nothing below reads a flipped field
    if zlib.crc32(data[end:], zlib.crc32(data[:end - 4])) & 0xFFFFFFFF != crc:
        raise BitstreamError("checksum mismatch: the file is corrupt")
    check_size(w, h, max_pixels, exc=BitstreamError)
    if not 2 <= tile <= MAX_TILE or tile % 2 or reserved:
        raise BitstreamError(f"corrupt header (lane tile {tile})")
    if not 1 <= count <= (len(data) - end) // 5:    # every lane: a length byte and >= 4 bytes
        raise BitstreamError(f"corrupt header: {count} lanes cannot fit in {len(data)} bytes")
    hdr = Header(ENTROPY_RANS, color, quality, model, sid, w, h, VERSION_LANES, tile)
    return hdr, _read_lanes(data, end, count)
