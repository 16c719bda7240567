"""Batch compression: many images through one codec, same bytes as one at a time.

Images are bucketed by their padded shape (sides rounded up to the model's
multiple of 16).  Only images with the *same* padded shape share a network
batch, so no image gets extra padding: the padding waste is exactly what the
single-image API has, and the bytes are identical.  Network batches run in the
calling thread while a thread pool does the entropy coding of the previous
batch (constriction and numpy release the GIL for most of that work), so the
CPU pipeline overlaps the two stages; on CUDA the same shape runs with the GPU
doing the network and the bit path.
"""
from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from .codec import postprocess, preprocess
from .imageio import COLOR_GRAY, to_rgb

ERRORS = ("raise", "return")


def _check_errors(errors: str):
    if errors not in ERRORS:
        raise ValueError(f"errors must be one of {ERRORS}, got {errors!r}")


def _finish(results: list, errors: str):
    if errors == "raise":
        for r in results:
            if isinstance(r, BaseException):
                raise r
    return results


def compress_batch(codec, images, batch_size: int = 8, errors: str = "raise", workers: int | None = None,
                   progress=None) -> list:
    """-> list of bytes (or, with errors="return", the exception in a failed item's place)."""
    _check_errors(errors)
    images = list(images)
    results: list = [None] * len(images)
    mdl = codec._main
    cfg = mdl.q.config
    mult = cfg.multiple
    buckets: dict[tuple, list] = defaultdict(list)
    for i, img in enumerate(images):
        try:
            rgb, color = to_rgb(img, codec.max_pixels)
        except Exception as e:  # noqa: BLE001 - reported per item
            results[i] = e
            if progress:
                progress(1)
            continue
        h, w = rgb.shape[:2]
        buckets[(-(-h // mult), -(-w // mult))].append((i, rgb, color))
    pool = ThreadPoolExecutor(max_workers=workers or max(1, (os.cpu_count() or 2) - 1))
    pending: list[tuple[int, Future]] = []
    try:
        for items in buckets.values():
            for s in range(0, len(items), batch_size):
                chunk = items[s:s + batch_size]
                try:
                    ycc = torch.cat([preprocess(rgb, mult, mdl.runner.device) for _, rgb, _ in chunk])
                    e, p, ec = mdl.runner.encode(ycc)
                    packed = codec._bitpath(e.device).pack(e, p, ec, cfg.n, cfg.levels)
                except Exception as exc:  # noqa: BLE001
                    for i, _, _ in chunk:
                        results[i] = exc
                    continue
                for (i, rgb, color), pk in zip(chunk, packed):
                    pending.append((i, pool.submit(codec._serialize, mdl, pk, rgb.shape[0], rgb.shape[1], color)))
        for i, fut in pending:
            try:
                results[i] = fut.result()
            except Exception as exc:  # noqa: BLE001
                results[i] = exc
            if progress:
                progress(1)
    finally:
        pool.shutdown(wait=True)
    return _finish(results, errors)


def decompress_batch(codec, blobs, batch_size: int = 8, errors: str = "raise", workers: int | None = None,
                     progress=None) -> list:
    """-> list of (H, W, 3) uint8 arrays (or exceptions with errors="return")."""
    _check_errors(errors)
    blobs = list(blobs)
    results: list = [None] * len(blobs)
    pool = ThreadPoolExecutor(max_workers=workers or max(1, (os.cpu_count() or 2) - 1))
    try:
        parsed = [pool.submit(codec.parse, b) for b in blobs]
        buckets: dict[tuple, list] = defaultdict(list)
        for i, fut in enumerate(parsed):
            try:
                hdr, mdl, dec = fut.result()
            except Exception as exc:  # noqa: BLE001
                results[i] = exc
                if progress:
                    progress(1)
                continue
            mult = mdl.q.config.multiple
            buckets[(mdl.q.quality, -(-hdr.height // mult), -(-hdr.width // mult))].append((i, hdr, mdl, dec))
    finally:
        pool.shutdown(wait=True)
    for items in buckets.values():
        mdl = items[0][2]
        cfg = mdl.q.config
        dev = mdl.runner.device
        for s in range(0, len(items), batch_size):
            chunk = items[s:s + batch_size]
            try:
                lv, bits, cbits = [], [], []
                raw = [d for _, _, _, d in chunk if not isinstance(d, tuple)]
                if raw:
                    lv_r, b_r, c_r = codec._bitpath(dev).unpack(raw, cfg.n, cfg.m, cfg.levels, device=dev)
                    it = iter(range(len(raw)))
                for _, _, _, d in chunk:
                    if isinstance(d, tuple):
                        levels, yd, cd = d
                        lv.append(torch.from_numpy(levels).to(dev)[None, None].float())
                        bits.append(torch.from_numpy(yd).to(dev)[None].float())
                        cbits.append(torch.from_numpy(cd).to(dev)[None].float())
                    else:
                        j = next(it)
                        lv.append(lv_r[j:j + 1]); bits.append(b_r[j:j + 1]); cbits.append(c_r[j:j + 1])
                ycc = mdl.runner.decode(torch.cat(bits), torch.cat(lv), torch.cat(cbits))
                for k, (i, hdr, _, _) in enumerate(chunk):
                    results[i] = postprocess(ycc[k:k + 1], hdr.height, hdr.width, gray=hdr.color == COLOR_GRAY)
            except Exception as exc:  # noqa: BLE001
                for i, _, _, _ in chunk:
                    results[i] = exc
            if progress:
                progress(len(chunk))
    return _finish(results, errors)
