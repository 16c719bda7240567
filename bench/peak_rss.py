"""Peak resident memory of one compress (and optionally decompress) of a large image.

    python -m bench.peak_rss [--model small16] [--model-dir DIR] [--size 6000x4000]
                             [--tile-pixels N] [--tile-size S] [--decompress] [--threads 1]
                             [--input synthetic|black-png|bomb] [--backend torch|onnxruntime]

``--input bomb`` decodes only (no compress): a valid file of the given size with
every importance level 0 (about 0.75 MB for 10000x10000: the smallest file of that
size, issue #13's in-limit decode bomb).  ``--input black-png`` compresses a black
PNG of that size from its path (the CLI's way in).

Run it as its own process: ``ru_maxrss`` is the high-water mark of the whole
process, so everything else this process did counts too (the baseline after
loading the model is printed separately).  ``--model tiny`` without
``--model-dir`` writes a tiny model with seeded random weights to a temporary
folder; ``--random-weights`` does the same for any config in
``engine.net.model.CONFIGS`` (the memory of a network does not depend on its
weights).  Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def rss_peak_bytes() -> int:
    """High-water RSS of this process (Linux reports ru_maxrss in KiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) * (1 if sys.platform == "darwin" else 1024)


def rss_now_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        return rss_peak_bytes()


def synthetic_photo(h: int, w: int, seed: int = 0):
    """A deterministic smooth-ish (h, w, 3) uint8 image: gradients + texture, built in row strips
    so that making it does not raise the high-water mark much above the image itself."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.empty((h, w, 3), np.uint8)
    xs = np.linspace(0, 1, w, dtype=np.float32)
    for y0 in range(0, h, 256):
        y1 = min(h, y0 + 256)
        ys = np.linspace(y0 / h, y1 / h, y1 - y0, endpoint=False, dtype=np.float32)[:, None]
        base = 0.5 + 0.3 * np.sin(6.0 * xs[None, :] + 4.0 * ys) * np.cos(3.0 * ys)
        for c in range(3):
            noise = rng.standard_normal((y1 - y0, w), dtype=np.float32) * 0.04
            out[y0:y1, :, c] = np.clip((base + 0.1 * c + noise) * 255, 0, 255).astype(np.uint8)
    return out


def bomb_file(codec, h: int, w: int) -> bytes:
    """The smallest valid file of h x w pixels: every level 0 (no Y bits), CbCr all zeros."""
    import numpy as np

    from engine.format import registry
    from engine.io.imageio import COLOR_RGB
    from engine.io.planes import padded_size
    from kernels.reference import Packed

    cfg = codec.config
    H, W = padded_size(h, w, cfg.multiple)
    nc = cfg.m * (H // 16) * (W // 16)
    packed = Packed(np.zeros((H // 8, W // 8), np.uint8), b"", 0, bytes((nc + 7) // 8), nc)
    return registry.serialize(codec.rung.coding, packed, h, w, COLOR_RGB, codec.entropy_mode)


def black_png(path, h: int, w: int) -> None:
    from PIL import Image
    Image.new("RGB", (w, h)).save(path)


def main(argv=None) -> dict:
    from engine.settings import available_backends
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="default: the shipped default model")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--random-weights", action="store_true", help="random weights for --model's config")
    ap.add_argument("--quality", type=int, default=None)
    ap.add_argument("--size", default="6000x4000", help="WxH")
    ap.add_argument("--tile-pixels", type=int, default=None, help="tile above this many pixels (0: never)")
    ap.add_argument("--tile-size", type=int, default=None)
    ap.add_argument("--backend", default="torch", choices=available_backends())
    ap.add_argument("--decompress", action="store_true", help="also decompress and check the size")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--input", default="synthetic", choices=["synthetic", "black-png", "bomb"],
                    help="what to code (see above)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import engine
    from engine.net.checkpoint import DEFAULT_MODEL, write_model_dir
    from engine.net.model import CONFIGS, CodecNet

    args.model = args.model or DEFAULT_MODEL

    root = args.model_dir
    tmp = None
    if root is None and (args.random_weights or args.model == "tiny"):
        tmp = tempfile.TemporaryDirectory()
        torch.manual_seed(0)
        write_model_dir(Path(tmp.name) / args.model, CodecNet(CONFIGS[args.model]), {1: -1.0, 2: 0.0, 3: 1.0})
        root = tmp.name
    w, h = (int(v) for v in args.size.lower().split("x"))
    kw = {}
    if args.tile_pixels is not None:
        kw["tile_pixels"] = args.tile_pixels
    if args.tile_size is not None:
        kw["tile_size"] = args.tile_size
    codec = engine.Codec(quality=args.quality, model=args.model, root=root, backend=args.backend,
                         kernels="torch", threads=args.threads, max_pixels=max(h * w, 1), **kw)
    if args.input == "bomb":
        data = bomb_file(codec, h, w)
        base = rss_now_bytes()
        t0 = time.perf_counter()
        rec = codec.decompress(data)
        assert rec.shape == (h, w, 3)
        out = {"model": args.model, "input": "bomb", "backend": args.backend, "size": f"{w}x{h}",
               "megapixels": round(w * h / 1e6, 2), "file_bytes": len(data), "threads": args.threads,
               "baseline_rss_mb": round(base / 2**20, 1), "decompress_s": round(time.perf_counter() - t0, 2),
               "peak_rss_total_mb": round(rss_peak_bytes() / 2**20, 1)}
        print(json.dumps(out), flush=True)
        return out
    if args.input == "black-png":
        tmp_png = tempfile.TemporaryDirectory()
        img = Path(tmp_png.name) / "black.png"
        black_png(img, h, w)
    else:
        img = synthetic_photo(h, w)
    base = rss_now_bytes()
    t0 = time.perf_counter()
    data = codec.compress(img)
    t1 = time.perf_counter()
    out = {"model": args.model, "input": args.input, "backend": args.backend, "size": f"{w}x{h}", "megapixels": round(w * h / 1e6, 2),
           "tile_pixels": getattr(codec, "tile_pixels", None), "tile_size": getattr(codec, "tile_size", None),
           "threads": args.threads, "baseline_rss_mb": round(base / 2**20, 1),
           "compress_s": round(t1 - t0, 2), "bytes": len(data), "sha256": __import__("hashlib").sha256(data).hexdigest()[:16], "bpp": round(len(data) * 8 / (w * h), 4),
           "peak_rss_compress_mb": round(rss_peak_bytes() / 2**20, 1)}
    if args.decompress:
        del img
        rec = codec.decompress(data)
        out["decompress_s"] = round(time.perf_counter() - t1, 2)
        out["peak_rss_total_mb"] = round(rss_peak_bytes() / 2**20, 1)
        assert rec.shape == (h, w, 3)
    print(json.dumps(out), flush=True)
    if tmp is not None:
        tmp.cleanup()
    return out


if __name__ == "__main__":
    main()
