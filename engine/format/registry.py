"""Which format writes a file and which reads one.  A new format is its module and
one line in FORMATS (docs/architecture.md, "A new format").

Encode picks by (entropy mode, coder); decode by the header's (version, entropy mode)
and the coder the codec runs, so a version 2 file is decoded on the device exactly
when the codec codes on the device."""
from __future__ import annotations

from ..timing import stage
from . import bitstream, v1_context, v1_raw, v2_lanes, v2_lanes_triton

FORMATS = {(f.version, f.entropy, f.coder): f for f in (
    v1_raw.FORMAT,
    v1_context.FORMAT,
    v2_lanes.FORMAT,
    v2_lanes_triton.FORMAT,
)}


def available_formats() -> list[str]:
    """The formats' names, as CompressAI's available_entropy_coders() lists its coders."""
    return [f.name for f in FORMATS.values()]


def for_encode(entropy: int, coder: str = "native"):
    """The format that writes ``entropy`` (a bitstream.ENTROPY_* mode) with ``coder``; a
    mode with no device coder (version 1's) is written by the CPU's."""
    found = {c: f for (_, e, c), f in FORMATS.items() if e == entropy}
    return found.get(coder) or found["native"]


def for_header(hdr, coder: str = "native"):
    """The format that reads a file with this header (bitstream.read checked its modes)."""
    return FORMATS.get((hdr.version, hdr.entropy, coder)) or FORMATS[(hdr.version, hdr.entropy, "native")]


def serialize(coding, record, h: int, w: int, color: int, entropy: int, timer=None) -> bytes:
    """One image's record (a Packed record from the bit path) -> its file bytes, coded
    on the CPU; the entropy pools run this."""
    return for_encode(entropy).serialize(coding, record, h, w, color, timer)


def parse(data: bytes, coding_for, max_pixels: int, timer=None, lanes_on_device: bool = False):
    """Validate a file and entropy-decode it -> (header, coding, record): (levels,
    ydense, cdense) uint8 numpy for a coded file, a Packed record for a raw one.
    ``coding_for(header)`` finds (and checks) the file's rung.  With ``lanes_on_device``
    a version 2 file stops after its container, for the device decoder."""
    with stage(timer, "container"):
        hdr, body = bitstream.read(data, max_pixels)
        coding = coding_for(hdr)
    fmt = for_header(hdr, "triton" if lanes_on_device else "native")
    return hdr, coding, fmt.parse(hdr, coding, body, timer)
