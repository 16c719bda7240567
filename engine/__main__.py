"""Command line: ``python -m engine compress|decompress ...``.

  hnlc compress photo.png -o photo.hnlc                (hnlc: the console script; the same CLI)
  hnlc decompress photo.hnlc -o photo.png
  python -m engine compress IMG|DIR|GLOB... -o OUTDIR [--quality Q] [--batch N] [--entropy rans|context|none]
                                           [--max-bytes N | --target-bpp BPP] [--ray [ADDRESS]]
                                           [--roi MASK|MASKDIR [--roi-boost K]]
  python -m engine decompress FILE|DIR|GLOB... -o OUTDIR [--batch N]
  python -m engine info FILE... [--json]

Outputs are written atomically (temp file + rename; a new output is published only
if no other run wrote it meanwhile).  An existing output that the codec wrote for
this input with these settings is skipped (so an interrupted run resumes where it
stopped): a decoded PNG carries its source's SHA-256, and a compressed file has a
record in OUTDIR/.hnlc-sources/ (the SHA-256 of the input, the settings and the
model, and of the file written); an output made from another input or with other
settings is reported and kept, and --force rewrites it.  --force rewrites outputs
the codec wrote.  A file the codec did not
write (no HNLC magic, or a PNG without the codec's provenance chunk) is never
overwritten, not even with --force, and neither is an input.  Inputs whose
outputs would collide (a.png and a.jpg, d1/a.png and d2/a.png) are refused, all
of them, naming each other.  A bad input is reported and the others still go
through.  Errors: one line each on stderr.  Exit codes: 0 all done (or already
done), 2 any input failed or was refused, or nothing matched; 130 interrupted
(SIGINT), 143 terminated (SIGTERM): finished outputs are complete and no temp file
is left; temp files of a run killed outright (SIGKILL) are removed by the next run
into that folder.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time
from pathlib import Path

EXT = ".hnlc"
# tEXt chunks in every PNG the CLI decodes: the source file's name and the SHA-256
# of its bytes.  Only a PNG carrying them is the codec's own output (--force may
# replace it; a rerun skips it when it came from the same file).
PNG_SOURCE_KEY = "HNLC-source"
PNG_SHA_KEY = "HNLC-source-sha256"
# Compressed outputs cannot carry their provenance (the format has no room for it):
# OUTDIR/RECORDS/<sha256 of the output's name>.json says which input and settings made
# each one, and the SHA-256 of the bytes written.
RECORDS = ".hnlc-sources"
# Folder inputs: the extensions compress takes (Pillow reads them all; a GIF's first
# frame), the rest are listed in a note.
COMPRESS_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif"}


class _Interrupts:
    """Ctrl-C (and SIGTERM) as a flag as well as a KeyboardInterrupt: Python drops an exception
    raised inside a weakref or import-lock callback ("Exception ignored in ..."), so
    the raise alone can be lost mid-import; the output loop checks the flag too."""
    seen = False
    signum = None

    @classmethod
    def handler(cls, signum, frame):
        cls.seen = True
        cls.signum = signum
        raise KeyboardInterrupt

    @classmethod
    def check(cls):
        if cls.seen:
            raise KeyboardInterrupt


def _parser():
    from .settings import CHOICES
    prog = "hnlc" if Path(sys.argv[0]).name == "hnlc" else "python -m engine"   # the console script, or -m
    ap = argparse.ArgumentParser(prog=prog, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("compress", "decompress"):
        p = sub.add_parser(name)
        p.add_argument("inputs", nargs="+", help="files, folders or glob patterns")
        p.add_argument("-o", "--out", required=True,
                       help=f"output folder; for one input file, a file name ending in {EXT if name == 'compress' else '.png'}")
        p.add_argument("--model", default=None)
        p.add_argument("--model-dir", default=None, help="folder holding model folders (default: shipped)")
        if name == "compress":
            p.add_argument("--metric", default=None, choices=CHOICES["metric"],
                           help="the model trained for this metric (default mse; --model names one)")
        p.add_argument("--backend", default="auto", choices=CHOICES["backend"])
        p.add_argument("--kernels", default=None, choices=CHOICES["kernels"], help="default ENGINE_KERNELS, else auto")
        # the knobs that were environment-only; unset, the variable (engine/settings.py) still decides
        p.add_argument("--coder", default=None, choices=CHOICES["coder"],
                       help="bitstream v2's entropy coder (default ENGINE_CODER, else auto)")
        p.add_argument("--precision", default=None, choices=CHOICES["precision"],
                       help="the networks' precision (default ENGINE_PRECISION, else auto)")
        p.add_argument("--compile", default=None, choices=CHOICES["compile"],
                       help="torch backend: torch.compile mode (default ENGINE_TORCH_COMPILE, else off)")
        p.add_argument("--entropy-pool", default=None, choices=CHOICES["entropy_pool"],
                       help="where entropy coding runs (default ENGINE_ENTROPY_POOL, else auto)")
        p.add_argument("--batch", type=int, default=8, help="images per network batch")
        p.add_argument("--force", action="store_true", help="overwrite existing outputs")
        p.add_argument("--max-pixels", type=int, default=None)
        p.add_argument("--tile-pixels", type=int, default=None,
                       help="run the networks in tiles above this many pixels (0: never; default ~8.4 M)")
        p.add_argument("--tile-size", type=int, default=None, help="tile side in pixels, a multiple of 16")
        p.add_argument("--quiet", action="store_true")
        if name == "compress":
            p.add_argument("-q", "--quality", type=int, default=None)
            p.add_argument("--search-precision", default=None, choices=CHOICES["search_precision"],
                           help="the code search's steps (effort > 0; default ENGINE_SEARCH_PRECISION, else auto: "
                                "bf16 on a CPU with bf16 matrix units)")
            p.add_argument("--entropy", default="rans", choices=CHOICES["entropy"],
                           help="rans: bitstream v2 (default); context: v1's range coder; none: raw bits")
            p.add_argument("--effort", type=int, default=0, choices=range(10), metavar="0..9",
                           help="per-image code search (slower, better; default 0: one pass)")
            size = p.add_mutually_exclusive_group()
            size.add_argument("--max-bytes", type=int, default=None, metavar="N",
                              help="each image's best file of at most N bytes (a search over the qualities, "
                                   "and --effort when given)")
            size.add_argument("--target-bpp", type=float, default=None, metavar="BPP",
                              help="the same, at most BPP bits per pixel")
            p.add_argument("--roi", default=None, metavar="MASK",
                           help="region of interest: a mask image (mode L or 1, nonzero = inside) for one input, "
                                "or a folder of masks named like the inputs (by file stem; inputs without one "
                                "are coded without ROI)")
            p.add_argument("--roi-boost", type=float, default=None, metavar="K",
                           help="raise the importance logits under the mask by K (default 1.0)")
            p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                           help="encode on a Ray cluster (pip install -e '.[ray]'): ADDRESS, 'auto', or none "
                                "for RAY_ADDRESS / a local Ray; same bytes as without")
    p = sub.add_parser("info", help="header fields, sizes and decodability of .hnlc files, without decoding")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", action="store_true", help="a JSON list, one object per file")
    p.add_argument("--model-dir", default=None, help="folder holding model folders (default: shipped)")
    p.add_argument("--max-pixels", type=int, default=None)
    return ap


def _expand(inputs: list[str], exts, skipped: list | None = None) -> list[Path]:
    """Files, folders (their files with one of ``exts``; the others go to ``skipped``)
    and glob patterns -> input paths."""
    import glob
    out = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            files = sorted(q for q in p.iterdir() if q.is_file())
            out += [q for q in files if q.suffix.lower() in exts]
            if skipped is not None:
                skipped += [q for q in files if q.suffix.lower() not in exts]
        elif any(c in s for c in "*?[") and not p.exists():
            out += sorted(Path(g) for g in glob.glob(s) if Path(g).is_file())
        else:
            out.append(p)
    return out


def _text(name: str) -> str:
    """A file name as text for a PNG chunk or a record: bytes that are not UTF-8 (a
    name decoded with surrogate escapes) become backslash escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _png(rgb, source: str = "", sha: str = "") -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    info.add_text(PNG_SOURCE_KEY, _text(source))
    info.add_text(PNG_SHA_KEY, sha)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _sha256(path: Path) -> str | None:
    from .io.imageio import open_regular
    try:
        with open_regular(path) as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def _is_codec_file(dst: Path) -> bool:
    """Did the codec write this existing compressed output (a valid HNLC header)?  Anything
    unreadable or unrecognised counts as not written by the codec (a file that starts
    with HNLC but has no valid header, too)."""
    from .format.bitstream import HEADER_MAX, peek
    from .io.imageio import MAX_SIDE, open_regular
    try:
        with open_regular(dst) as f:
            peek(f.read(HEADER_MAX), MAX_SIDE * MAX_SIDE)
        return True
    except Exception:  # noqa: BLE001 - cannot tell: treat as someone else's file
        return False


def _png_source(dst: Path) -> tuple[bool, str | None]:
    """Did the codec write this existing PNG?  -> (yes, the SHA-256 of the file it was
    decoded from).  Anything unreadable or unrecognised counts as not written by the codec."""
    from .io.imageio import open_regular
    try:
        with open_regular(dst) as f:
            from PIL import Image
            with Image.open(f, formats=["PNG"]) as im:
                sha = im.info.get(PNG_SHA_KEY)
            return isinstance(sha, str) and len(sha) == 64, sha
    except Exception:  # noqa: BLE001 - cannot tell: treat as someone else's file
        return False, None


def _record_path(out: Path, name: str) -> Path:
    return out / RECORDS / (hashlib.sha256(os.fsencode(name)).hexdigest()[:40] + ".json")


def _read_record(out: Path, name: str) -> dict | None:
    import json

    from .io.imageio import open_regular
    try:
        with open_regular(_record_path(out, name)) as f:
            rec = json.loads(f.read(1 << 16))
        return rec if isinstance(rec, dict) else None
    except (OSError, ValueError):
        return None


def _write_record(out: Path, name: str, source: Path, key: str, data: bytes) -> None:
    """The record of a compressed output: what made it (``key``: the SHA-256 of the input's
    SHA-256, the settings and the model) and the SHA-256 of the bytes written."""
    import json

    from .io.atomic import atomic_write_bytes
    (out / RECORDS).mkdir(exist_ok=True)
    rec = {"output": _text(name), "source": _text(str(source)), "key": key,
           "output_sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_bytes(_record_path(out, name), (json.dumps(rec, indent=1) + "\n").encode())


def _drop_record(out: Path, name: str, key: str, data: bytes) -> None:
    """Remove this run's record of an output it did not publish (another run's file is
    there): left behind, it would tie that file to this input."""
    rec = _read_record(out, name)
    if rec and rec.get("key") == key and rec.get("output_sha256") == hashlib.sha256(data).hexdigest():
        try:
            _record_path(out, name).unlink()
        except OSError:
            pass


def _source_key(f: Path, settings: dict, mask: Path | None = None) -> str | None:
    """What ties a compressed output to its input: the SHA-256 of the input's bytes, the
    settings (model and its files' hash, quality, entropy, effort, target size, ROI)
    and the ROI mask's bytes.  None when the input cannot be read."""
    import json
    src = _sha256(f)
    if src is None:
        return None
    roi = _sha256(mask) if isinstance(mask, Path) else None
    return hashlib.sha256(json.dumps({"source": src, "roi": roi, **settings}, sort_keys=True).encode()).hexdigest()


# What an existing output means (a job's ``existing``), besides a failure's message.
SKIP = "skip"       # this input's output, already done
REDO = "redo"       # written again


class _Compress:
    """``compress``: images -> .hnlc files, each with a record of what made it."""
    ext = EXT
    input_exts = COMPRESS_EXTS
    past = "compressed"

    def __init__(self, args):
        self.args = args
        self.masks: dict[Path, Path | None] | None = None
        self.keys: dict[Path, str | None] = {}
        self.bpps: list[float] = []

    def model(self) -> str | None:
        from .net.checkpoint import model_for
        return model_for(self.args.metric, self.args.model, self.args.model_dir)

    def open(self, kw: dict):
        """The arguments checked, then the codec."""
        import engine
        a = self.args
        if a.quality is not None and (a.max_bytes is not None or a.target_bpp is not None):
            raise ValueError("--quality and --max-bytes / --target-bpp exclude each other: a target size chooses "
                             "the quality")
        if a.roi_boost is not None and a.roi is None:
            raise ValueError("--roi-boost needs --roi (the mask it boosts)")
        if a.roi is not None and a.ray is not None:
            raise ValueError("--roi is not supported with --ray yet: run without --ray")
        if a.ray is not None:        # the same compress_iter, run by Ray actors (engine/ray_data.py)
            from .ray_data import RayCompressor
            return RayCompressor(a.ray, quality=a.quality, entropy=a.entropy, effort=a.effort, **kw)
        return engine.Codec(quality=a.quality, entropy=a.entropy, effort=a.effort, **kw)

    def expand(self, inputs: list[str]) -> list[Path]:
        not_taken: list[Path] = []
        files = _expand(inputs, self.input_exts, not_taken)
        if not_taken and not self.args.quiet:
            names = ", ".join(_text(q.name) for q in not_taken[:5]) + (", ..." if len(not_taken) > 5 else "")
            print(f"note: {len(not_taken)} file{'s' * (len(not_taken) > 1)} in the input folders skipped, not "
                  f"{'/'.join(sorted(COMPRESS_EXTS))}: {names}", file=sys.stderr)
        return files

    def take(self, files: list[Path]) -> None:
        """The inputs' ROI masks, checked before anything is written."""
        a = self.args
        if a.roi is None:
            return
        from .roi import check_boost, masks_for
        check_boost(a.roi_boost)
        found, unmasked = masks_for(a.roi, files)
        self.masks = dict(zip(files, found))
        if unmasked and not a.quiet:
            print(f"note: {unmasked} of {len(files)} inputs have no mask in {a.roi}: coded without ROI",
                  file=sys.stderr)

    def begin(self, out: Path, model: str) -> None:
        from .net.checkpoint import model_fingerprint
        a = self.args
        self.out = out
        self.settings = {"model": model, "model_sha256": model_fingerprint(model, a.model_dir),
                         "quality": a.quality, "entropy": a.entropy, "effort": a.effort,
                         "max_bytes": a.max_bytes, "target_bpp": a.target_bpp, "roi_boost": a.roi_boost}

    def key(self, f: Path) -> str | None:
        """:func:`_source_key` of an input, once per input."""
        if f not in self.keys:
            self.keys[f] = _source_key(f, self.settings, self.masks.get(f) if self.masks else None)
        return self.keys[f]

    def written_by_codec(self, dst: Path) -> bool:
        return _is_codec_file(dst)

    def existing(self, f: Path, dst: Path) -> str:
        """An existing output of the codec's is done only when its record has this input's
        key and the output's bytes are the ones recorded."""
        key = self.key(f)
        rec = _read_record(self.out, dst.name)
        if key is None:                 # unreadable input: let the read report it
            return REDO
        if rec is not None and rec.get("key") == key:
            # else recorded for this input, but the file is not what was written
            return SKIP if rec.get("output_sha256") == _sha256(dst) else REDO
        return (f"{dst} exists, made from another input or with other settings (or with no record of its "
                "input): --force replaces it")

    def results(self, codec, todo: list):
        a = self.args
        target = dict(max_bytes=a.max_bytes, target_bpp=a.target_bpp)
        if self.masks is not None:
            target.update(roi=[self.masks[f] for f, _ in todo], roi_boost=a.roi_boost)
        return codec.compress_iter((f for f, _ in todo), batch_size=a.batch, errors="return", **target)

    def publish(self, f: Path, dst: Path, r: bytes, replace: bool) -> int | None:
        """The record first (an output is never on disk without one, even after a kill in
        between), then the file -> bytes written, or None when another run published
        another file there meanwhile."""
        key = self.key(f)
        _write_record(self.out, dst.name, f, key, r)
        if not _write_output(dst, r, replace, lambda: _sha256(dst) == hashlib.sha256(r).hexdigest()):
            _drop_record(self.out, dst.name, key, r)
            return None
        _write_record(self.out, dst.name, f, key, r)    # again: a concurrent loser may have replaced it
        w, h = _size_of(r)
        self.bpps.append(len(r) * 8 / (w * h))
        return len(r)

    def summary(self) -> str:
        return f"; mean {sum(self.bpps) / len(self.bpps):.4f} bpp" if self.bpps else ""


class _Decompress:
    """``decompress``: .hnlc files -> PNGs that carry their source's name and SHA-256."""
    ext = ".png"
    input_exts = {EXT}
    past = "decompressed"

    def __init__(self, args):
        self.args = args
        self.shas: dict[Path, str] = {}

    def model(self) -> str | None:
        return None

    def open(self, kw: dict):
        import engine
        self.kw = kw
        return engine.Codec(**kw)

    def expand(self, inputs: list[str]) -> list[Path]:
        return _expand(inputs, self.input_exts)

    def take(self, files: list[Path]) -> None:
        pass

    def begin(self, out: Path, model: str) -> None:
        pass

    def written_by_codec(self, dst: Path) -> bool:
        return _png_source(dst)[0]

    def existing(self, f: Path, dst: Path) -> str:
        """An existing PNG of the codec's is done when it was decoded from this input."""
        src_sha = _sha256(f)
        if src_sha is None:             # unreadable input: let the read report it
            return REDO
        if _png_source(dst)[1] == src_sha:
            return SKIP
        return f"{dst} exists, decoded from another file: --force replaces it"

    def read(self, f: Path, codec):
        """An input's bytes (its SHA-256 kept for the PNG), or the error that refused it."""
        from .net.checkpoint import model_channels
        from .errors import EngineError
        from .format.bitstream import read_file
        from .io.imageio import open_regular
        try:
            with open_regular(f) as fh:     # a FIFO or device is refused, not waited on
                # no more than a valid file of its header can have (a 6 GB file is refused, not loaded)
                data = read_file(fh, codec.max_pixels, lambda m: model_channels(m, self.args.model_dir))
        except OSError as e:
            return EngineError(f"cannot read {f}: {e.strerror or e}")
        except EngineError as e:
            return e
        except MemoryError:
            return EngineError(f"cannot read {f}: out of memory")
        self.shas[f] = hashlib.sha256(data).hexdigest()
        return data

    def results(self, codec, todo: list):
        if self.args.model is not None:     # the named model decodes every file (another's is refused)
            return codec.decompress_iter((self.read(f, codec) for f, _ in todo), batch_size=self.args.batch,
                                         errors="return")
        return self._by_header(codec, todo)

    def _by_header(self, codec, todo: list):
        """Without --model each file decodes with the model its header names, when that
        model is installed (a name, never a path: checkpoint.installed), else with the
        default codec, which refuses it naming the model.  One stream per run of
        consecutive files of one model, so the output stays in input order."""
        import itertools

        import engine
        from .format.bitstream import peek
        from .net.checkpoint import installed

        def tagged():
            for f, _ in todo:
                data, model = self.read(f, codec), codec.model_name
                if not isinstance(data, BaseException):
                    try:
                        named = peek(data, codec.max_pixels).model
                    except Exception:  # noqa: BLE001 - the codec reports a bad header, per file
                        named = model
                    if named != model and installed(named, self.args.model_dir):
                        model = named
                yield model, data

        others = {}
        try:
            for model, group in itertools.groupby(tagged(), key=lambda t: t[0]):
                if model == codec.model_name:
                    c = codec
                else:
                    c = others.get(model) or others.setdefault(model, engine.Codec(**{**self.kw, "model": model}))
                yield from c.decompress_iter((d for _, d in group), batch_size=self.args.batch, errors="return")
        finally:
            for c in others.values():
                c.close()

    def publish(self, f: Path, dst: Path, r, replace: bool) -> int | None:
        """The PNG -> bytes written, or None when another run published another file there meanwhile."""
        src_sha = self.shas.pop(f, "")
        data = _png(r, f.name, src_sha)
        if not _write_output(dst, data, replace, lambda: _png_source(dst) == (True, src_sha)):
            return None
        return len(data)

    def summary(self) -> str:
        return ""


def _write_output(dst: Path, data: bytes, replace: bool, same) -> bool:
    """Write an output atomically -> False when another run published it after we planned
    it, and ``same()`` says that file is not the one we would write."""
    from .io.atomic import atomic_write_bytes
    try:
        atomic_write_bytes(dst, data, replace=replace)
    except FileExistsError:
        return same()
    return True


def _plan(files: list[Path], out: Path, job, force: bool, name: str | None = None):
    """Inputs -> (todo [(input, output)], skipped count, failures [(input, message)]),
    in input order.  The same file named twice is one input.  ``name``: the output's
    file name in ``out`` (one input, -o a file).  An existing output the codec wrote is
    replaced with ``force``, else the job (:class:`_Compress`, :class:`_Decompress`)
    says whether it is done."""
    seen: dict[Path, Path] = {}
    by_dst: dict[Path, list] = {}
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen[key] = f
            dst = out / (name or f.stem + job.ext)
            by_dst.setdefault(dst.resolve(), []).append((f, dst))
    todo, skipped, failures = [], 0, []
    for rdst, group in by_dst.items():
        if len(group) > 1:
            names = " and ".join(str(f) for f, _ in group)
            for f, dst in group:
                failures.append((f, f"{names} would all be written to {dst}: none of them is written "
                                    "(rename one, or run them with separate output folders)"))
            continue
        ((f, dst),) = group
        if rdst in seen:
            failures.append((f, f"output {dst} would overwrite an input; choose another output folder"))
        elif not os.path.lexists(dst):
            todo.append((f, dst))
        elif not job.written_by_codec(dst):
            failures.append((f, f"{dst} exists and was not written by this codec: it is never overwritten "
                                "(not even with --force); choose another output folder"))
        elif force:
            todo.append((f, dst))
        else:
            verdict = job.existing(f, dst)
            if verdict == SKIP:
                skipped += 1
            elif verdict == REDO:
                todo.append((f, dst))
            else:
                failures.append((f, verdict))
    return todo, skipped, failures


def _codec_options(args, model: str | None) -> dict:
    """The Codec's arguments both commands take."""
    from .net.checkpoint import DEFAULT_MODEL
    from .io.imageio import max_pixels_setting
    return dict(model=model or args.model or DEFAULT_MODEL, backend=args.backend, kernels=args.kernels,
                max_pixels=max_pixels_setting(args.max_pixels, "--max-pixels"), root=args.model_dir,
                tile_pixels=args.tile_pixels, tile_size=args.tile_size, coder=args.coder, precision=args.precision,
                compile=args.compile, entropy_pool=args.entropy_pool,
                **({"search_precision": args.search_precision} if args.cmd == "compress" else {}))


def _remove_stale_temps(out: Path) -> None:
    """Temps of earlier runs into ``out`` that were killed outright."""
    from .io.atomic import stale_temps
    for folder in (out, out / RECORDS):
        for t in stale_temps(folder):
            try:
                t.unlink()
            except OSError:
                pass


def run(args) -> int:
    job = (_Compress if args.cmd == "compress" else _Decompress)(args)
    kw = _codec_options(args, job.model())
    codec = job.open(kw)
    files = job.expand(args.inputs)
    if not files:
        codec.close()
        print(f"error: no input matched {' '.join(args.inputs)}", file=sys.stderr)
        return 2
    try:
        job.take(files)
        out, name = _destination(args.out, args.inputs, files, job.ext)
    except ValueError:
        codec.close()
        raise
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out)
    job.begin(out, kw["model"])
    todo, skipped, failures = _plan(files, out, job, args.force, name)
    done = _write_all(job, codec, todo, failures, args.quiet)
    codec.close()
    _Interrupts.check()
    for f, msg in failures:
        print(f"error: {f}: {msg}", file=sys.stderr)
    if not args.quiet:
        print(f"{done} {job.past}, {skipped} skipped (already done), {len(failures)} failed" + job.summary(),
              file=sys.stderr)
    return 2 if failures else 0


def _write_all(job, codec, todo: list, failures: list, quiet: bool) -> int:
    """Each input of ``todo`` coded and written to its output, in input order (failures
    appended) -> outputs written."""
    from tqdm import tqdm
    existed = {dst for _, dst in todo if os.path.lexists(dst)}     # replaced; every other output is new
    bar = tqdm(total=len(todo), unit="img", disable=quiet or not todo, file=sys.stderr)
    t0 = time.perf_counter()
    nbytes_out = done = 0
    # One stream over every input: the network and the entropy coder stay overlapped
    # across batches, and at most a window of inputs is held in memory.
    results = job.results(codec, todo)
    for k, ((f, dst), r) in enumerate(zip(todo, results)):
        _Interrupts.check()
        bar.update(1)
        if isinstance(r, BaseException):
            failures.append((f, str(r)))
            continue
        if dst in existed and not job.written_by_codec(dst):   # replaced by someone else's file while we ran
            failures.append((f, f"{dst} appeared during the run and was not written by this codec: not overwritten"))
            continue
        try:
            n = job.publish(f, dst, r, replace=dst in existed)
            if n is None:               # another run wrote this output after we planned it
                failures.append((f, f"{dst} appeared during the run (another run wrote it from another input "
                                    "or with other settings): not overwritten"))
                continue
            nbytes_out += n
            done += 1
        except OSError as e:
            failures.append((f, f"cannot write {dst}: {e.strerror or e}"))
        except Exception as e:  # noqa: BLE001 - this output fails, named; the others go on
            failures.append((f, f"cannot write {dst}: {type(e).__name__}: {e}"))
        dt = max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix_str(f"{(k + 1) / dt:.2f} img/s, {nbytes_out / dt / 1e6:.2f} MB/s out", refresh=False)
    bar.close()
    return done


def _destination(out_arg: str, inputs: list[str], files: list[Path], ext: str) -> tuple[Path, str | None]:
    """-o -> (output folder, output file name or None).  -o names the output file when it
    ends in the output's extension ``ext`` (.hnlc / .png) and is not a folder, and the one
    input is a file (``hnlc compress photo.png -o photo.hnlc``); else it is a folder (created)."""
    out = Path(out_arg)
    if out.suffix.lower() != ext or out.is_dir():
        return out, None
    if len(inputs) != 1 or len(files) != 1 or not Path(inputs[0]).is_file():
        raise ValueError(f"-o {out_arg} names one output file: give one input file, or an output folder")
    return out.parent, out.name


def _size_of(data: bytes) -> tuple[int, int]:
    """A file's (width, height), from its header."""
    from .format.bitstream import peek
    from .io.imageio import MAX_SIDE
    hdr = peek(data, MAX_SIDE * MAX_SIDE)
    return hdr.width, hdr.height


def main(argv=None) -> int:
    import signal
    import threading
    on_main = threading.current_thread() is threading.main_thread()
    _Interrupts.seen = False
    _Interrupts.signum = None
    if on_main:
        previous = signal.signal(signal.SIGINT, _Interrupts.handler) or signal.SIG_DFL
        # SIGTERM the same way (issue #28): the temp file being written is removed
        previous_term = signal.signal(signal.SIGTERM, _Interrupts.handler) or signal.SIG_DFL
    try:
        args = _parser().parse_args(argv)
        from .errors import EngineError
        try:
            if args.cmd == "info":
                from .info import run as info
                return info(args)
            return run(args)
        except (EngineError, OSError, ValueError) as e:
            _Interrupts.check()     # a library that turned the Ctrl-C into its own error
            print(f"error: {e}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:       # Ctrl-C: no traceback; finished outputs are complete, no temp files left
        if _Interrupts.signum == signal.SIGTERM:
            print("terminated", file=sys.stderr)
            return 143
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if on_main:
            # A Ctrl-C after the work is done, while the interpreter shuts down, would
            # otherwise kill it by the signal (exit -2) with every output written.
            signal.signal(signal.SIGINT, signal.SIG_IGN if argv is None else previous)
            signal.signal(signal.SIGTERM, signal.SIG_IGN if argv is None else previous_term)


def console() -> None:
    """The ``hnlc`` command ([project.scripts]) and ``python -m engine``."""
    rc = main()
    if rc in (130, 143):
        # Interrupted: leave without the interpreter's shutdown.  A Ctrl-C that went
        # through a nested PyRun call (some imports make one) marks it unhandled, and
        # the shutdown would then kill the process by SIGINT instead of exiting 130.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


if __name__ == "__main__":
    console()
