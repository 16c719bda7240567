"""The scheduler: which items go through the stages together, and in what order.

It owns
  * bucketing: only images of the same rung and the same padded shape share a
    chunk, so no image gets extra padding and the bytes are the single-image ones;
  * chunk sizes: the caller's batch size, a TensorRT profile's limit, the stream
    executor's memory plan, and one image per chunk when the networks run in tiles;
  * bounded windows: at most ``window`` inputs wait in buckets, and at most about
    ``2 x window`` results are in flight, however many items come in, so
    :func:`compress_iter` and :func:`decompress_iter` stream any number of inputs in
    bounded memory;
  * per-item errors: a failed item yields its exception (or raises it, with
    ``errors="raise"``) and the others go on.

Where the stages run is the executor's business (engine/runtime/executors.py), and where the
CPU stages run the pool's (engine/runtime/entropy_pool.py).  Results come out in input order.
An exception object in place of an input is passed through as that item's error
(the CLI hands over files it could not read this way).
"""
from __future__ import annotations

from collections import defaultdict, deque
from concurrent.futures import Future
from typing import Iterable, Iterator

from .. import roi
from ..format import registry
from ..io.imageio import to_rgb
from ..io.planes import padded_size
from . import stages
from .entropy_pool import done
from .executors import runner_max_batch

ERRORS = ("raise", "return")
_NO_MASK = object()


def check_errors(errors: str) -> str:
    if errors not in ERRORS:
        raise ValueError(f"errors must be one of {ERRORS}, got {errors!r}")
    return errors


def default_window(batch_size: int) -> int:
    return max(4 * batch_size, 16)


class _Results:
    """Results by input index, yielded in input order; futures are waited for only when
    their turn comes, or when too many are in flight."""

    def __init__(self, errors: str, progress, limit: int):
        self.errors, self.progress, self.limit = errors, progress, limit
        self.items: dict[int, object] = {}
        self.next = 0
        self.seen = 0

    def put(self, i: int, value) -> None:
        self.items[i] = value

    def fail(self, indices, exc) -> None:
        for i in indices:
            self.items[i] = exc

    def drain(self, block: bool = False) -> Iterator:
        """Yield what is ready, in order.  A future is waited for when ``block`` (the
        end), or when more than ``limit`` results are held."""
        while self.next < self.seen and self.next in self.items:
            v = self.items[self.next]
            if hasattr(v, "result") and not (block or v.done() or len(self.items) > self.limit):
                return
            del self.items[self.next]
            self.next += 1
            if hasattr(v, "result"):
                try:
                    v = v.result()
                except Exception as exc:  # noqa: BLE001 - the item's own error
                    v = exc
            if self.progress:
                self.progress(1)
            if isinstance(v, BaseException) and self.errors == "raise":
                raise v
            yield v


class _Buckets:
    """Items waiting for a chunk, by key.  ``add`` returns the chunks to run now: a
    bucket once it holds ``size`` items, or the fullest bucket once ``window`` items
    wait in all (so memory stays bounded); ``rest`` returns what is left at the end."""

    def __init__(self, window: int):
        self.window, self.waiting = window, 0
        self.items: dict[tuple, list] = defaultdict(list)

    def add(self, key, item, size: int) -> list:
        self.items[key].append(item)
        self.waiting += 1
        if len(self.items[key]) < size:
            if self.waiting < self.window:
                return []
            key = max(self.items, key=lambda k: len(self.items[k]))
        chunk = self.items.pop(key)
        self.waiting -= len(chunk)
        return [chunk]

    def rest(self) -> list:
        chunks, self.items, self.waiting = list(self.items.values()), defaultdict(list), 0
        return chunks


class _ChunkSizes:
    """Images per chunk, by bucket key: one when the network runs in tiles, else the
    caller's batch size capped by the runner's profile and by the executor's plan."""

    def __init__(self, settings, executor, batch_size: int, window: int, op: str):
        self.settings, self.executor, self.batch, self.window, self.op = settings, executor, max(1, int(batch_size)), window, op
        self.net = "encoder" if op == "encode" else "decoder"
        self.sizes: dict[tuple, int] = {}

    def __call__(self, key, rung, height: int, width: int) -> int:
        if key not in self.sizes:
            cap = runner_max_batch(rung.runner)
            batch = min(self.batch, cap) if cap else self.batch
            tiled = stages.needs_tiles(self.settings, rung, height, width, self.net)
            self.sizes[key] = 1 if tiled else self.executor.batch_for(key, rung.q.config, height, width,
                                                                      self.window, self.op, batch)
        return self.sizes[key]


def _start(settings, executor, batch_size: int, errors: str, window: int | None, progress, op: str):
    """A stream's state: its window, results (the executor reports failures there),
    buckets and chunk sizes."""
    check_errors(errors)
    window = window or default_window(batch_size)
    out = _Results(errors, progress, 2 * window)
    executor.on_error = out.fail
    return window, out, _Buckets(window), _ChunkSizes(settings, executor, batch_size, window, op)


def _last(buckets: _Buckets, run, executor, out: _Results) -> Iterator:
    """The end of a stream: run the partial buckets, wait for the slots, yield the rest."""
    for chunk in buckets.rest():
        run(chunk)
    executor.drain()
    yield from out.drain(block=True)


def compress_iter(settings, rung, images: Iterable, executor, pool, batch_size: int = 8, errors: str = "raise",
                  window: int | None = None, progress=None, rois=None, roi_boost=None) -> Iterator:
    """Images -> file bytes in input order (or, with ``errors="return"``, the exception
    in a failed item's place).  ``settings``: the codec's choices for this call (engine/settings.py Settings).
    ``rois``: None, or an iterator of each image's region-of-interest mask (None for
    none; engine/roi.py), boosted by ``roi_boost``; a bad mask is its item's error."""
    mult = rung.q.config.multiple
    fmt = registry.for_encode(settings.entropy_mode, settings.coder)
    window, out, buckets, chunk_size = _start(settings, executor, batch_size, errors, window, progress, "encode")

    def run(items: list) -> None:
        def enqueue(slot):
            rgbs = [rgb for _, rgb, _, _ in items]
            ycc = stages.stage_images(slot, rgbs, mult, stages.lazy_planes(settings, rung, rgbs, mult))
            bits = stages.encode_chunk(settings, fmt, rung, slot, ycc, [r.shape[:2] for r in rgbs],
                                       [c for _, _, c, _ in items], [b for _, _, _, b in items])
            del ycc
            host = fmt.to_host(slot, bits)

            def finish():
                for (i, rgb, color, _), rec in zip(items, host.records()):
                    h, w = rgb.shape[:2]
                    # CPU entropy coding goes to the pool; a device coder's container is written here
                    out.put(i, pool.serialize(rung.coding, rec, h, w, color, settings.entropy_mode) if fmt.host_entropy
                            else fmt.serialize(rung.coding, rec, h, w, color, pool.timer))
            return finish
        executor.submit([i for i, _, _, _ in items], enqueue)

    try:
        for i, img in enumerate(images):
            out.seen = i + 1
            mask = None
            if rois is not None:
                mask = next(rois, _NO_MASK)
                if mask is _NO_MASK:
                    raise ValueError(f"roi has fewer masks than images: none for image {i}")
            try:
                if isinstance(img, BaseException):     # the caller's own error for this item (a read failed)
                    raise img
                rgb, color = to_rgb(img, settings.max_pixels)
                if isinstance(mask, BaseException):    # the caller's own error for this item's mask
                    raise mask
                boost = roi.prepare(mask, roi_boost, *rgb.shape[:2])
            except Exception as exc:  # noqa: BLE001 - reported per item
                out.put(i, exc)
            else:
                H, W = padded_size(*rgb.shape[:2], mult)
                key = (H // mult, W // mult)
                for chunk in buckets.add(key, (i, rgb, color, boost), chunk_size(key, rung, H, W)):
                    run(chunk)
            yield from out.drain()
        yield from _last(buckets, run, executor, out)
    finally:
        executor.close()


def decompress_iter(settings, rungs, blobs: Iterable, executor, pool, batch_size: int = 8, errors: str = "raise",
                    window: int | None = None, progress=None) -> Iterator:
    """File bytes -> (h, w, 3) uint8 arrays in input order (or exceptions).  Parses run
    in the pool up to ``window`` files ahead of the network."""
    window, out, buckets, chunk_size = _start(settings, executor, batch_size, errors, window, progress, "decode")

    def run(items: list) -> None:
        rung = items[0][2]

        def enqueue(slot):
            lv, bits, cbits, errors = stages.latents_to_device(settings, rung, slot, [(h, d) for _, h, _, d in items])
            images = stages.decode_images(settings, rung, slot, lv, bits, cbits, [h for _, h, _, _ in items])
            del lv, bits, cbits
            views = stages.images_to_host(slot, images)
            del images

            def finish():
                for (i, _, _, _), v, err in zip(items, views, errors()):
                    out.put(i, err if err is not None else v.numpy().copy())
            return finish
        executor.submit([i for i, _, _, _ in items], enqueue)

    todo = iter(enumerate(blobs))
    ahead: deque[tuple[int, Future]] = deque()

    def refill():
        while len(ahead) < window:
            nxt = next(todo, None)
            if nxt is None:
                return
            out.seen = nxt[0] + 1
            blob = nxt[1]
            # an exception in place of a file is that item's error (the caller could not read it)
            ahead.append((nxt[0], done(blob) if isinstance(blob, BaseException) else pool.parse(blob)))

    try:
        refill()
        while ahead:
            i, fut = ahead.popleft()
            refill()
            try:
                hdr, dec = fut.result()
                rung = rungs.for_header(hdr)
            except Exception as exc:  # noqa: BLE001 - reported per item
                out.put(i, exc)
            else:
                mult = rung.q.config.multiple
                H, W = padded_size(hdr.height, hdr.width, mult)
                key = (rung.q.quality, H // mult, W // mult)
                for chunk in buckets.add(key, (i, hdr, rung, dec), chunk_size(key, rung, H, W)):
                    run(chunk)
            yield from out.drain()
        yield from _last(buckets, run, executor, out)
    finally:
        executor.close()
