"""Batch compression: many images through one codec, same bytes as one at a time.

Images are bucketed by their padded shape (sides rounded up to the model's
multiple of 16).  Only images with the *same* padded shape share a network
batch, so no image gets extra padding: the padding waste is exactly what the
single-image API has, and the bytes are identical.  Network batches run in the
calling thread while a pool entropy-codes the previous batch (encode) or parses
the next ones (decode), so the two stages overlap; the pool is threads or worker processes
(:mod:`engine.entropy_pool`, ``Codec(entropy_pool=...)``).

On a CUDA runner (torch on CUDA, TensorRT) both functions hand the buckets to
:mod:`engine.pipeline_cuda` (CUDA streams, pinned buffers, batch sized by a
device-memory budget); the bytes are the same.  Images over the codec's
``tile_pixels`` go through the tiled networks one at a time on either path.
"""
from __future__ import annotations

from collections import defaultdict, deque
from concurrent.futures import Future

import numpy as np
import torch

from . import entropy_pool
from .codec import padded_size, postprocess, preprocess
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


def _on_cuda(runner) -> bool:
    return getattr(getattr(runner, "device", None), "type", None) == "cuda"


def _chunk_size(codec, mdl, key_hw: tuple[int, int], mult: int, batch_size: int, net: str) -> int:
    """Images that need tiling run one at a time (their tiles are the batch)."""
    return 1 if codec._should_tile(mdl, key_hw[0] * mult, key_hw[1] * mult, net) else max(1, batch_size)


def compress_batch(codec, images, batch_size: int = 8, errors: str = "raise", workers: int | None = None,
                   progress=None, pipeline: dict | None = None) -> list:
    """-> list of bytes (or, with errors="return", the exception in a failed item's place).
    ``pipeline``: keyword options for :class:`engine.pipeline_cuda.CudaPipeline` (CUDA only)."""
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
        H, W = padded_size(*rgb.shape[:2], mult)
        buckets[(H // mult, W // mult)].append((i, rgb, color))
    pending: list[tuple[int, Future]] = []
    dev = mdl.runner.device
    with entropy_pool.for_batch(codec, _on_cuda(mdl.runner), workers) as pool:
        if _on_cuda(mdl.runner):
            from .pipeline_cuda import CudaPipeline
            pending = CudaPipeline(codec, max_batch=batch_size, **(pipeline or {})).compress(buckets, results, pool)
            buckets = {}
        for key, items in buckets.items():
            bs = _chunk_size(codec, mdl, key, mult, batch_size, "encoder")
            for s in range(0, len(items), bs):
                chunk = items[s:s + bs]
                try:
                    with codec._stage("preprocess", dev):
                        ycc = torch.cat([preprocess(rgb, mult, dev) for _, rgb, _ in chunk])
                    with codec._stage("network", dev):
                        e, p, ec = codec.encode_latents(mdl, ycc, [rgb.shape[:2] for _, rgb, _ in chunk],
                                                        [color for _, _, color in chunk])
                    del ycc
                    with codec._stage("bitpath", dev):
                        packed = codec._bitpath(e.device).pack(e, p, ec, cfg.n, cfg.levels)
                    del e, p, ec
                except Exception as exc:  # noqa: BLE001
                    for i, _, _ in chunk:
                        results[i] = exc
                    continue
                for (i, rgb, color), pk in zip(chunk, packed):
                    pending.append((i, pool.serialize(mdl, pk, rgb.shape[0], rgb.shape[1], color)))
        for i, fut in pending:
            try:
                results[i] = fut.result()
            except Exception as exc:  # noqa: BLE001
                results[i] = exc
            if progress:
                progress(1)
    return _finish(results, errors)


def decompress_batch(codec, blobs, batch_size: int = 8, errors: str = "raise", workers: int | None = None,
                     progress=None, pipeline: dict | None = None) -> list:
    """-> list of (H, W, 3) uint8 arrays (or exceptions with errors="return")."""
    _check_errors(errors)
    blobs = list(blobs)
    results: list = [None] * len(blobs)
    if _on_cuda(codec.runner):
        from .pipeline_cuda import CudaPipeline
        with entropy_pool.for_batch(codec, True, workers) as pool:
            CudaPipeline(codec, max_batch=batch_size, **(pipeline or {})).decompress(blobs, results, pool, progress)
        return _finish(results, errors)
    # CPU: parses run in the pool a window ahead while the network decodes what has
    # arrived; a bucket (same model quality and padded shape) runs once it holds a
    # full chunk, in arrival order, so chunks are the same as bucketing everything first.
    buckets: dict[tuple, list] = defaultdict(list)
    with entropy_pool.for_batch(codec, False, workers) as pool:
        todo = iter(enumerate(blobs))
        window: deque = deque()

        def refill():
            while len(window) < max(2 * batch_size, 4):
                nxt = next(todo, None)
                if nxt is None:
                    return
                window.append((nxt[0], pool.parse(nxt[1])))

        refill()
        while window:
            i, fut = window.popleft()
            refill()
            try:
                hdr, mdl, dec = fut.result()
            except Exception as exc:  # noqa: BLE001
                results[i] = exc
                if progress:
                    progress(1)
                continue
            mult = mdl.q.config.multiple
            H, W = padded_size(hdr.height, hdr.width, mult)
            key = (mdl.q.quality, H // mult, W // mult)
            items = buckets[key]
            items.append((i, hdr, mdl, dec))
            if len(items) >= _chunk_size(codec, mdl, key[1:], mult, batch_size, "decoder"):
                _decode_chunk(codec, buckets.pop(key), results, progress)
    for items in buckets.values():
        _decode_chunk(codec, items, results, progress)
    return _finish(results, errors)


def _decode_chunk(codec, chunk: list, results: list, progress) -> None:
    """Parsed items of one model quality and padded shape -> images in ``results``."""
    mdl = chunk[0][2]
    cfg = mdl.q.config
    dev = mdl.runner.device
    try:
        with codec._stage("bitpath", dev):
            lv, bits, cbits = latents_for(codec, mdl, [d for _, _, _, d in chunk], dev)
        with codec._stage("network", dev):
            ycc = codec._decode(mdl, bits, lv, cbits)
        del lv, bits, cbits
        with codec._stage("postprocess", dev):
            for k, (i, hdr, _, _) in enumerate(chunk):
                results[i] = postprocess(ycc[k:k + 1], hdr.height, hdr.width, gray=hdr.color == COLOR_GRAY)
    except Exception as exc:  # noqa: BLE001
        for i, _, _, _ in chunk:
            results[i] = exc
    if progress:
        progress(len(chunk))


def latents_for(codec, mdl, decs: list, dev):
    """Parsed items of one shape (dense (levels, ydense, cdense) numpy tuples from the
    context coder, or Packed records from raw files) -> decoder inputs (bits, levels,
    cbits) as float tensors on ``dev``, in order."""
    cfg = mdl.q.config
    lv, bits, cbits = [], [], []
    raw = [d for d in decs if not isinstance(d, tuple)]
    if raw:
        lv_r, b_r, c_r = codec._bitpath(dev).unpack(raw, cfg.n, cfg.m, cfg.levels, device=dev)
        it = iter(range(len(raw)))
    for d in decs:
        if isinstance(d, tuple):
            levels, yd, cd = d
            lv.append(torch.from_numpy(levels).to(dev)[None, None].float())
            bits.append(torch.from_numpy(yd).to(dev)[None].float())
            cbits.append(torch.from_numpy(cd).to(dev)[None].float())
        else:
            j = next(it)
            lv.append(lv_r[j:j + 1]); bits.append(b_r[j:j + 1]); cbits.append(c_r[j:j + 1])
    return torch.cat(lv), torch.cat(bits), torch.cat(cbits)
