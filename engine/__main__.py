"""Command line: ``python -m engine compress|decompress ...``.

  python -m engine compress IMG|DIR|GLOB... -o OUTDIR [--quality Q] [--batch N] [--entropy rans|context|none]
  python -m engine decompress FILE|DIR|GLOB... -o OUTDIR [--batch N]

Outputs are written atomically (temp file + rename).  An existing output is
skipped (so an interrupted run resumes where it stopped) unless --force; an
input is never overwritten.  A bad input is reported and the others still
go through.  Errors: one line each on stderr, exit code 2 if any input failed.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

EXT = ".hnlc"


def _parser():
    ap = argparse.ArgumentParser(prog="python -m engine", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("compress", "decompress"):
        p = sub.add_parser(name)
        p.add_argument("inputs", nargs="+", help="files, folders or glob patterns")
        p.add_argument("-o", "--out", required=True, help="output folder")
        p.add_argument("--model", default=None)
        p.add_argument("--model-dir", default=None, help="folder holding model folders (default: shipped)")
        p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"])
        p.add_argument("--kernels", default=None, choices=["auto", "torch", "triton"])
        p.add_argument("--batch", type=int, default=8, help="images per network batch")
        p.add_argument("--force", action="store_true", help="overwrite existing outputs")
        p.add_argument("--max-pixels", type=int, default=None)
        p.add_argument("--tile-pixels", type=int, default=None,
                       help="run the networks in tiles above this many pixels (0: never; default ~8.4 M)")
        p.add_argument("--tile-size", type=int, default=None, help="tile side in pixels, a multiple of 16")
        p.add_argument("--quiet", action="store_true")
        if name == "compress":
            p.add_argument("-q", "--quality", type=int, default=None)
            p.add_argument("--entropy", default="rans", choices=["rans", "context", "none"],
                           help="rans: bitstream v2 (default); context: v1's range coder; none: raw bits")
            p.add_argument("--effort", type=int, default=0, choices=range(10), metavar="0..9",
                           help="per-image code search (slower, better; default 0: one pass)")
    return ap


def _expand(inputs: list[str], exts) -> list[Path]:
    import glob
    out = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in exts)
        elif any(c in s for c in "*?[") and not p.exists():
            out += sorted(Path(g) for g in glob.glob(s) if Path(g).is_file())
        else:
            out.append(p)
    return out


def _png(rgb) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def run(args) -> int:
    import engine
    from .checkpoint import DEFAULT_MODEL, atomic_write_bytes
    from .data import IMAGE_EXTS
    from .errors import EngineError
    from .imageio import DEFAULT_MAX_PIXELS

    kw = dict(model=args.model or DEFAULT_MODEL, backend=args.backend, kernels=args.kernels,
              max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, root=args.model_dir,
              tile_pixels=args.tile_pixels, tile_size=args.tile_size)
    comp = args.cmd == "compress"
    codec = engine.Codec(quality=args.quality, entropy=args.entropy, effort=args.effort, **kw) if comp else engine.Codec(**kw)
    files = _expand(args.inputs, IMAGE_EXTS if comp else {EXT})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = {f.resolve() for f in files}
    failures: list[tuple[Path, str]] = []
    todo, skipped = [], 0
    for f in files:
        dst = out / (f.stem + (EXT if comp else ".png"))
        if dst.resolve() in inputs:
            failures.append((f, f"output {dst} would overwrite an input; choose another output folder"))
        elif dst.exists() and not args.force:
            skipped += 1
        else:
            todo.append((f, dst))
    from tqdm import tqdm
    bar = tqdm(total=len(todo), unit="img", disable=args.quiet or not todo, file=sys.stderr)
    t0 = time.perf_counter()
    nbytes_out = 0
    bpps = []
    done = 0

    def read(f):
        try:
            return f.read_bytes()
        except OSError as e:
            return EngineError(f"cannot read {f}: {e.strerror or e}")

    # One stream over every input: the network and the entropy coder stay overlapped
    # across batches, and at most a window of inputs is held in memory.
    if comp:
        results = codec.compress_iter((f for f, _ in todo), batch_size=args.batch, errors="return")
    else:
        results = codec.decompress_iter((read(f) for f, _ in todo), batch_size=args.batch, errors="return")
    for k, ((f, dst), r) in enumerate(zip(todo, results)):
        bar.update(1)
        if isinstance(r, BaseException):
            failures.append((f, str(r)))
            continue
        try:
            if comp:
                atomic_write_bytes(dst, r)
                nbytes_out += len(r)
                w, h = _size_of(r)
                bpps.append(len(r) * 8 / (w * h))
            else:
                data = _png(r)
                atomic_write_bytes(dst, data)
                nbytes_out += len(data)
            done += 1
        except OSError as e:
            failures.append((f, f"cannot write {dst}: {e.strerror or e}"))
        dt = max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix_str(f"{(k + 1) / dt:.2f} img/s, {nbytes_out / dt / 1e6:.2f} MB/s out", refresh=False)
    bar.close()
    codec.close()
    for f, msg in failures:
        print(f"error: {f}: {msg}", file=sys.stderr)
    if not args.quiet:
        summary = f"{done} {'compressed' if comp else 'decompressed'}, {skipped} skipped (output exists), {len(failures)} failed"
        if bpps:
            summary += f"; mean {sum(bpps) / len(bpps):.4f} bpp"
        print(summary, file=sys.stderr)
    return 2 if failures else 0


def _size_of(data: bytes) -> tuple[int, int]:
    import struct
    k = data[8]
    return struct.unpack_from("<II", data, 9 + k + 8)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from .errors import EngineError
    try:
        return run(args)
    except (EngineError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
