"""``python -m engine info FILE... [--json]``: what each file is, without decoding it.

Per file: the header's fields, size and bits per pixel, the section sizes (version 1:
map, Y codes, CbCr codes; version 2: the lane table and every lane), the stream id,
and whether this installation decodes it (the model and quality it names, checked
against the installed model's stream id, as decoding would check it).  The whole file
is validated (checksum, lengths, lane table) but nothing is entropy-decoded.

Exit codes: 0 when every file was read (a valid file that this installation cannot
decode is still described, with ``decodes: false`` and why), 2 when any file is not a
readable HNLC file.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ENTROPY = {0: "none (raw bits)", 1: "context (v1 range coder)", 2: "rans (v2 lanes)"}


def describe(data: bytes, codings=None, max_pixels: int | None = None) -> dict:
    """A file's fields as a dict (see the module docstring).  ``codings(model)`` gives a
    :class:`engine.net.rungs.Codings` for a model name (None: this installation's)."""
    from .net import rungs
    from .format import bitstream
    from .errors import BitstreamError
    from .io.imageio import COLOR_GRAY, max_pixels_setting

    hdr, body = bitstream.read(data, max_pixels_setting(max_pixels))
    head = bitstream.header_length(hdr)
    d = {
        "version": hdr.version, "entropy": ENTROPY[hdr.entropy],
        "color": "gray" if hdr.color == COLOR_GRAY else "rgb",
        "model": hdr.model, "quality": hdr.quality, "stream_id": hdr.stream_id.hex(),
        "width": hdr.width, "height": hdr.height,
        "bytes": len(data), "bpp": len(data) * 8 / (hdr.width * hdr.height), "header_bytes": head,
    }
    if hdr.version == bitstream.VERSION:
        m, y, c = body
        d["sections"] = {"map": len(m), "y": len(y), "cbcr": len(c)}
    else:
        sizes = [int(b - a) for a, b in zip(body.starts[:-1], body.starts[1:])]
        d["lane_tile"] = hdr.tile
        d["lane_table_bytes"] = len(data) - head - len(body.data)
        d["lane_bytes"] = sizes
    codings = codings or (lambda model: rungs.Codings(model))
    try:
        cs = codings(hdr.model)
        coding = cs.for_header(hdr)
        if hdr.version == bitstream.VERSION_LANES:      # as decoding checks it (issue #28)
            from .format.lanes_reference import lane_count_error
            H, W = (-(-v // coding.config.multiple) * coding.config.multiple for v in (hdr.height, hdr.width))
            bad = lane_count_error(len(body), H // 8, W // 8, hdr.tile)
            if bad:
                raise BitstreamError(bad)
        retired = cs.resolve(hdr.quality, decode=True).meta.get("retired")
        d["decodes"] = True
        d["decoder"] = {"model": hdr.model, "quality": hdr.quality, "retired": bool(retired)}
    except BitstreamError as e:
        d["decodes"] = False
        d["decoder"] = {"error": str(e)}
    return d


def text(name: str, d: dict) -> str:
    """A file's description in a few lines."""
    lines = [f"{name}: HNLC version {d['version']}, {d['entropy']}, {d['width']}x{d['height']} "
             f"{d['color'].upper() if d['color'] == 'rgb' else 'grayscale'}, model {d['model']!r} "
             f"quality {d['quality']}, stream id {d['stream_id']}",
             f"  {d['bytes']} bytes, {d['bpp']:.4f} bpp: header {d['header_bytes']}"]
    if "sections" in d:
        s = d["sections"]
        lines[-1] += f", map {s['map']}, Y codes {s['y']}, CbCr codes {s['cbcr']}"
    else:
        sizes = d["lane_bytes"]
        lines[-1] += (f", lane table {d['lane_table_bytes']}, {len(sizes)} lane{'s' * (len(sizes) != 1)} "
                      f"of {d['lane_tile']}x{d['lane_tile']} locations: {sum(sizes)} "
                      f"(min {min(sizes)}, median {statistics.median(sizes):g}, max {max(sizes)})")
    if d["decodes"]:
        dec = d["decoder"]
        lines.append(f"  decodes here: engine.Codec(model={dec['model']!r}) (quality {dec['quality']}"
                     f"{', a retired rung: decodes only' if dec['retired'] else ''}; stream id matches)")
    else:
        lines.append(f"  does not decode here: {d['decoder']['error']}")
    return "\n".join(lines)


def run(args) -> int:
    """The ``info`` subcommand (engine/__main__.py parses its arguments)."""
    from .format.bitstream import read_file
    from .net.checkpoint import model_channels
    from .errors import EngineError
    from .io.imageio import max_pixels_setting, open_regular
    from .net.rungs import Codings

    max_pixels = max_pixels_setting(args.max_pixels, "--max-pixels")
    cache: dict = {}

    def codings(model: str):
        if model not in cache:
            cache[model] = Codings(model, args.model_dir)
        return cache[model]

    records, failed = [], 0
    for name in args.files:
        try:
            with open_regular(Path(name)) as f:     # bounded: what a valid file of its header can have
                data = read_file(f, max_pixels, lambda m: model_channels(m, args.model_dir))
            rec = {"file": name, **describe(data, codings, max_pixels)}
        except MemoryError:
            failed += 1
            rec = {"file": name, "error": "out of memory"}
            if not args.json:
                print(f"error: {name}: out of memory", file=sys.stderr)
        except (EngineError, OSError) as e:
            failed += 1
            msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            rec = {"file": name, "error": msg}
            if not args.json:
                print(f"error: {name}: {msg}", file=sys.stderr)
        else:
            if not args.json:
                print(text(name, rec))
        records.append(rec)
    if args.json:
        json.dump(records, sys.stdout, indent=1)
        print()
    return 2 if failed else 0
