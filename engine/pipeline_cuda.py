"""The CUDA batch pipeline: N streams, pinned host buffers, CPU entropy coding alongside.

Used by :mod:`engine.batch` when the codec's runner is on a CUDA device (torch on
CUDA, TensorRT; ONNX Runtime's CUDA provider works too but synchronizes around
every call, so it overlaps less).  Bytes are the single-image API's: every
image is preprocessed by the same ops (:func:`engine.codec.preprocess_tensor`),
and the bit path and the entropy coder are the ones ``Codec.compress`` uses.

Compress, per chunk of same-padded-shape images, all on one stream::

    host: copy the uint8 images into the stream's pinned buffer
    h2d         pinned -> device, non_blocking
    preprocess  per image, on the GPU (uint8 -> YCbCr float, replicate pad)
    network     runner.encode (torch: the current stream; TensorRT: enqueued on it)
    bitpath     kernels' pack_device (Triton): levels, packed Y / CbCr bits on the device
    d2h         levels + packed bytes -> the stream's pinned buffers, non_blocking
    event       recorded; the host moves on to the next chunk / stream

The host only waits for a stream when it needs that stream's buffers again
(``streams`` chunks later).  It then turns the pinned results into ``Packed``
records and submits the entropy coding + container to the CPU pool (worker
processes by default on CUDA, :mod:`engine.entropy_pool`: the coder is GIL-bound, so
threads give about one core), so the CPU codes chunk k while the GPU runs chunks
k+1 .. k+streams-1.

Decompress runs the reverse: headers are read first (to bucket by shape), the
entropy decoding of every file is submitted to the CPU pool in chunk order, and
each chunk's stream waits only for its own files: pinned dense bits -> h2d ->
runner.decode -> postprocess to uint8 on the GPU -> d2h -> event.

Sizing: :func:`activation_bytes` estimates one image's peak device memory from
the model config; :func:`plan` picks streams and the batch so that ``streams x
batch x per-image`` fits a budget (a fraction of the free device memory, less a
reserve for cuDNN/TensorRT workspaces), capped by the caller's batch size and by
a TensorRT engine's profile.  Images over the codec's ``tile_pixels`` bypass the
pipeline and go through the tiled single-image path.

Stage times: ``codec.timer = engine.timing.StageTimer()`` (or ``timer=``) records
each stage above as CUDA events on its stream, and the CPU stages as wall times,
so ``timer.spans()`` shows how the streams and the CPU overlapped.

The plain functions (sizing, planning, chunking) are tested on the CPU
(tests/test_pipeline.py); the pipeline itself needs a GPU
(tests/test_pipeline_cuda.py).
"""
from __future__ import annotations

import math
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import torch

from .codec import padded_size, postprocess_tensor, preprocess_tensor
from .imageio import COLOR_GRAY
from .timing import stage

MiB = 2 ** 20
DEFAULT_STREAMS = 2
DEFAULT_MEMORY_FRACTION = 0.5
DEFAULT_RESERVE = 1024 * MiB        # cuDNN / TensorRT workspaces, fragmentation
SAFETY = 1.25                       # on top of the counted tensors


# ---------------------------------------------------------------------------
# Device-memory sizing (pure)
# ---------------------------------------------------------------------------

def activation_bytes(cfg, height: int, width: int, op: str = "encode", dtype_bytes: int = 4) -> int:
    """Estimated peak device bytes of one padded ``height x width`` image through the
    encoder (``op="encode"``) or the decoder (``"decode"``), eager execution.

    Counted in elements per pixel (P = height x width), following engine/model.py:
    a ResBlock holds its input, the conv output and the ReLU output at once, so a
    stage of C channels on a grid of stride s peaks at 3 C P / s^2.

    encode: ycc and ycc - 0.5 (3 + 3) are alive throughout; the Y stream peaks at
        its widest stage; then the CbCr stream runs while the Y features (c3 at
        1/8) and outputs (n + 1 at 1/8) stay alive.
    decode: the latents (n + 1 at 1/8, m at 1/16) and the Y-decoder features that
        the CbCr decoder fuses (c3 at 1/8, c2 at 1/4) stay alive; the Y decoder
        peaks at 1/2 resolution (c1); the CbCr decoder then holds Y (1) and
        ends with concatenation and +0.5 (3 + 3).
    """
    P = height * width
    c1, c2, c3, cc, n, m = cfg.c1, cfg.c2, cfg.c3, cfg.cc, cfg.n, cfg.m
    if op == "encode":
        y_peak = 3 * max(c1 / 4, c2 / 16, c3 / 64)
        c_peak = 3 * max(cc / 2 / 4, cc / 2 / 16, cc / 64, cc / 256) + c3 / 64 + (n + 1) / 64
        per_px = 6 + max(y_peak, c_peak) + m / 256
    elif op == "decode":
        inputs = (n + 1) / 64 + m / 256
        kept = c3 / 64 + c2 / 16
        y_peak = 3 * max(c3 / 64, c2 / 16, c1 / 4) + 1
        c_peak = 1 + 3 * max(2 * cc / 64, cc / 16, cc / 2 / 4, cc / 4 / 4) + 3 + 3
        per_px = inputs + kept + max(y_peak, c_peak)
    else:
        raise ValueError(f"op must be 'encode' or 'decode', got {op!r}")
    return int(math.ceil(per_px * P * dtype_bytes * SAFETY))


def memory_budget(free_bytes: int, fraction: float = DEFAULT_MEMORY_FRACTION,
                  reserve_bytes: int = DEFAULT_RESERVE) -> int:
    """Bytes the pipeline may plan for: ``fraction`` of the free memory after a reserve."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(0, int((free_bytes - reserve_bytes) * fraction))


@dataclass(frozen=True)
class Plan:
    batch: int              # images per network call
    streams: int            # CUDA streams (chunks in flight)
    per_image_bytes: int
    budget_bytes: int

    @property
    def planned_bytes(self) -> int:
        return self.batch * self.streams * self.per_image_bytes


def plan(per_image_bytes: int, n_images: int, budget_bytes: int, max_batch: int = 8,
         max_streams: int = DEFAULT_STREAMS) -> Plan:
    """Streams and batch so that ``streams x batch x per_image_bytes <= budget_bytes``.

    Streams first (overlap needs at least two chunks in flight), then the largest
    batch that fits, capped by ``max_batch`` and by an even share of the images
    (so every stream gets work).  When not even one image per stream fits, the
    streams drop to one; one image is always allowed (the caller tiles images
    that are too large for any budget)."""
    if per_image_bytes <= 0:
        raise ValueError("per_image_bytes must be positive")
    n_images = max(1, int(n_images))
    streams = max(1, min(int(max_streams), n_images))
    while streams > 1 and budget_bytes < streams * per_image_bytes:
        streams -= 1
    batch = budget_bytes // (streams * per_image_bytes)
    batch = int(max(1, min(batch, max(1, int(max_batch)), math.ceil(n_images / streams))))
    return Plan(batch, streams, int(per_image_bytes), int(budget_bytes))


def chunk_plan(buckets: dict, batch_for) -> list[tuple[object, list]]:
    """[(bucket key, items)] in bucket order, each bucket cut into chunks of
    ``batch_for(key, n_items)`` items (an int or a callable)."""
    out = []
    for key, items in buckets.items():
        b = batch_for(key, len(items)) if callable(batch_for) else batch_for
        b = max(1, int(b))
        out += [(key, items[s:s + b]) for s in range(0, len(items), b)]
    return out


def runner_max_batch(runner) -> int | None:
    """The largest batch a runner accepts (a TensorRT engine's profile), else None."""
    prof = getattr(runner, "profiles", None)
    try:
        return int(prof["encoder"]["ycc"]["max"][0]) if prof else None
    except (KeyError, TypeError, IndexError):
        return None


# ---------------------------------------------------------------------------
# The pipeline (CUDA only)
# ---------------------------------------------------------------------------
# Every CUDA call the pipeline makes goes through this small table, so that a
# CPU test can swap in synchronous stand-ins and run the pipeline's logic
# (chunking, buffers, ordering, error handling, bytes) without a GPU.

class CudaApi:
    is_cuda = staticmethod(lambda device: torch.device(device).type == "cuda")
    new_stream = staticmethod(lambda device: torch.cuda.Stream(device))
    current_stream = staticmethod(lambda device: torch.cuda.current_stream(device))
    use_stream = staticmethod(lambda stream: torch.cuda.stream(stream))
    new_event = staticmethod(lambda: torch.cuda.Event())
    free_bytes = staticmethod(lambda device: torch.cuda.mem_get_info(device)[0])
    pinned = staticmethod(lambda nbytes: torch.empty(nbytes, dtype=torch.uint8, pin_memory=True))


api = CudaApi


class _Slot:
    """One CUDA stream, its pinned host buffers and the chunk it has in flight."""

    def __init__(self, device):
        self.stream = api.new_stream(device)
        self.done = None            # event after the chunk's last copy to the host
        self.finish = None          # host-side completion of the chunk in flight
        self.indices: list[int] = []
        self._host: dict[str, torch.Tensor] = {}

    def host(self, name: str, shape, dtype=torch.uint8) -> torch.Tensor:
        """A pinned host tensor of this shape, reusing (growing) the named buffer.
        Only valid until the stream's next chunk: the caller waited for ``done``."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        nbytes = int(np.prod(shape)) * itemsize
        buf = self._host.get(name)
        if buf is None or buf.numel() < nbytes:
            buf = self._host[name] = api.pinned(max(nbytes, 1))
        return buf[:nbytes].view(dtype).view(tuple(shape))

    def record(self):
        self.done = api.new_event()
        self.done.record(self.stream)


def _completed(value) -> Future:
    f: Future = Future()
    if isinstance(value, BaseException):
        f.set_exception(value)
    else:
        f.set_result(value)
    return f


class CudaPipeline:
    """``CudaPipeline(codec).compress(buckets, results, pool)`` — see the module docstring.

    max_batch        upper bound on the batch (the caller's batch_size)
    streams          CUDA streams, i.e. chunks in flight (default 2)
    budget_bytes     device bytes to plan for; default ``memory_fraction`` of the free
                     memory (torch.cuda.mem_get_info) less ``reserve_bytes``
    timer            a StageTimer (default: ``codec.timer``)
    """

    def __init__(self, codec, max_batch: int = 8, streams: int = DEFAULT_STREAMS, budget_bytes: int | None = None,
                 memory_fraction: float = DEFAULT_MEMORY_FRACTION, reserve_bytes: int = DEFAULT_RESERVE, timer=None):
        self.codec = codec
        self.device = codec.runner.device
        if not api.is_cuda(self.device):
            raise ValueError(f"CudaPipeline needs a CUDA runner, got device {self.device}")
        self.max_batch = max(1, int(max_batch))
        cap = runner_max_batch(codec.runner)
        if cap:
            self.max_batch = min(self.max_batch, cap)
        self.max_streams = max(1, int(streams))
        self.memory_fraction = memory_fraction
        self.reserve_bytes = reserve_bytes
        self.fixed_budget = budget_bytes
        self.timer = timer if timer is not None else codec.timer
        self.plans: list[tuple[object, Plan]] = []     # what was chosen, per bucket (for logs/tests)

    # -- planning -----------------------------------------------------------
    def budget(self) -> int:
        if self.fixed_budget is not None:
            return int(self.fixed_budget)
        return memory_budget(api.free_bytes(self.device), self.memory_fraction, self.reserve_bytes)

    def _plan(self, cfg, H: int, W: int, n: int, op: str) -> Plan:
        return plan(activation_bytes(cfg, H, W, op), n, self.budget(), self.max_batch, self.max_streams)

    def _stage(self, name: str, slot: _Slot | None = None):
        return stage(self.timer, name, stream=slot.stream if slot else None)

    # -- the driver ---------------------------------------------------------
    def _drive(self, chunks: list, n_streams: int, enqueue, results: list):
        """Round-robin the chunks over the streams.  ``enqueue(slot, chunk)`` queues
        the GPU work, records ``slot.done`` and returns the host-side finisher
        (or None when nothing was queued)."""
        slots = [_Slot(self.device) for _ in range(max(1, n_streams))]
        origin = api.current_stream(self.device)
        for s in slots:
            s.stream.wait_stream(origin)     # model weights, earlier work

        def finish(slot: _Slot):
            if slot.finish is None:
                return
            fn, slot.finish = slot.finish, None
            try:
                with self._stage("wait"):
                    slot.done.synchronize()
                fn()
            except Exception as exc:  # noqa: BLE001 - asynchronous CUDA errors surface here
                for i in slot.indices:
                    results[i] = exc

        try:
            for k, chunk in enumerate(chunks):
                slot = slots[k % len(slots)]
                finish(slot)                 # its buffers are free again after this
                slot.indices = [it[0] for it in chunk[1]]
                try:
                    slot.finish = enqueue(slot, chunk)
                except Exception as exc:  # noqa: BLE001 - reported per item
                    slot.finish = None
                    for i in slot.indices:
                        results[i] = exc
            for slot in slots:
                finish(slot)
        finally:
            for slot in slots:               # never leave work behind, also on an error
                slot.stream.synchronize()

    # -- compress -----------------------------------------------------------
    def compress(self, buckets: dict, results: list, pool) -> list[tuple[int, Future]]:
        """``buckets``: {(H'/16, W'/16): [(index, rgb, color)]} from engine.batch.
        Fills failures into ``results``; returns [(index, Future of bytes)]."""
        codec = self.codec
        mdl = codec._main
        cfg = mdl.q.config
        mult = cfg.multiple
        pending: list[tuple[int, Future]] = []
        small = {}
        for key, items in buckets.items():
            if codec._should_tile(mdl, key[0] * mult, key[1] * mult, "encoder"):
                for i, rgb, color in items:          # tiled, one at a time, on the default stream
                    try:
                        pending.append((i, _completed(codec._compress_rgb(rgb, color))))
                    except Exception as exc:  # noqa: BLE001
                        results[i] = exc
            else:
                small[key] = items
        if not small:
            return pending
        plans = {key: self._plan(cfg, key[0] * mult, key[1] * mult, len(items), "encode")
                 for key, items in small.items()}
        self.plans += list(plans.items())
        chunks = chunk_plan(small, lambda key, n: plans[key].batch)
        bitpath = codec._bitpath(self.device)
        pack_device = getattr(bitpath, "pack_device", None)

        def enqueue(slot: _Slot, chunk):
            key, items = chunk
            st = slot.stream
            sizes = [rgb.nbytes for _, rgb, _ in items]
            offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            host = slot.host("rgb", (int(offs[-1]),))
            hv = host.numpy()
            for (_, rgb, _), o, nb in zip(items, offs, sizes):
                hv[o:o + nb] = rgb.reshape(-1)
            with api.use_stream(st):
                with self._stage("h2d", slot):
                    dev = host.to(self.device, non_blocking=True)
                with self._stage("preprocess", slot):
                    ycc = torch.cat([preprocess_tensor(dev[o:o + nb].view(rgb.shape), mult)
                                     for (_, rgb, _), o, nb in zip(items, offs, sizes)])
                with self._stage("network", slot):
                    e, p, ec = codec.encode_latents(mdl, ycc, [rgb.shape[:2] for _, rgb, _ in items],
                                                    [color for _, _, color in items])
                if pack_device is None:              # the torch bit path: synchronous
                    with self._stage("bitpath", slot):
                        packed = bitpath.pack(e, p, ec, cfg.n, cfg.levels)
                    slot.record()
                    return lambda: self._submit(pool, mdl, items, packed, pending)
                with self._stage("bitpath", slot):
                    lv, ynbits, ybuf, cnbits, cbuf = pack_device(e, p, ec, cfg.n, cfg.levels)
                with self._stage("d2h", slot):
                    h_lv = slot.host("lv", lv.shape).copy_(lv, non_blocking=True)
                    h_nb = slot.host("ynbits", ynbits.shape, torch.int32).copy_(ynbits, non_blocking=True)
                    h_y = slot.host("ybuf", ybuf.shape).copy_(ybuf, non_blocking=True)
                    h_c = slot.host("cbuf", cbuf.shape).copy_(cbuf, non_blocking=True)
                slot.record()

            def done():
                packed = packed_from_host(h_lv.numpy(), h_nb.numpy(), h_y.numpy(), int(cnbits), h_c.numpy())
                self._submit(pool, mdl, items, packed, pending)
            return done

        self._drive(chunks, max(p.streams for p in plans.values()), enqueue, results)
        return pending

    def _submit(self, pool, mdl, items, packed, pending):
        for (i, rgb, color), pk in zip(items, packed):
            pending.append((i, pool.serialize(mdl, pk, rgb.shape[0], rgb.shape[1], color)))

    # -- decompress ---------------------------------------------------------
    def decompress(self, blobs: list, results: list, pool, progress=None) -> None:
        """Decode ``blobs`` into ``results`` (arrays, or exceptions for failed items)."""
        from . import bitstream

        codec = self.codec
        buckets: dict[tuple, list] = defaultdict(list)
        tiled = []
        for i, data in enumerate(blobs):
            try:
                hdr = bitstream.read(data, codec.max_pixels)[0]
                mdl = codec._model_for(hdr)
            except Exception as exc:  # noqa: BLE001
                results[i] = exc
                if progress:
                    progress(1)
                continue
            H, W = padded_size(hdr.height, hdr.width, mdl.q.config.multiple)
            if codec._should_tile(mdl, H, W, "decoder"):
                tiled.append(i)
            else:
                buckets[(mdl.q.quality, H, W)].append((i, hdr, mdl))
        for i in tiled:
            try:
                results[i] = codec.decompress(blobs[i])
            except Exception as exc:  # noqa: BLE001
                results[i] = exc
            if progress:
                progress(1)
        if not buckets:
            return
        plans = {key: self._plan(items[0][2].q.config, key[1], key[2], len(items), "decode")
                 for key, items in buckets.items()}
        self.plans += list(plans.items())
        chunks = chunk_plan(buckets, lambda key, n: plans[key].batch)
        # entropy decoding of every file, submitted in the order the GPU will want them
        futures = {i: pool.parse(blobs[i]) for _, items in chunks for i, _, _ in items}

        def enqueue(slot: _Slot, chunk):
            _, items = chunk
            ok = []
            with self._stage("wait"):
                for i, hdr, mdl in items:
                    try:
                        ok.append((i, hdr, futures.pop(i).result()[2]))
                    except Exception as exc:  # noqa: BLE001
                        results[i] = exc
                        if progress:
                            progress(1)
            if not ok:
                return None
            slot.indices = [i for i, _, _ in ok]
            mdl = items[0][2]
            with api.use_stream(slot.stream):
                with self._stage("h2d", slot):
                    lv, bits, cbits = self._upload_latents(slot, mdl, [d for _, _, d in ok])
                with self._stage("network", slot):
                    ycc = mdl.runner.decode(bits, lv, cbits)
                with self._stage("postprocess", slot):
                    outs = [postprocess_tensor(ycc[k:k + 1], hdr.height, hdr.width, gray=hdr.color == COLOR_GRAY)
                            for k, (_, hdr, _) in enumerate(ok)]
                with self._stage("d2h", slot):
                    total = sum(o.numel() for o in outs)
                    host = slot.host("rgb_out", (total,))
                    views, o0 = [], 0
                    for o in outs:
                        v = host[o0:o0 + o.numel()].view(o.shape)
                        v.copy_(o, non_blocking=True)
                        views.append(v)
                        o0 += o.numel()
                slot.record()

            def done():
                for (i, _, _), v in zip(ok, views):
                    results[i] = v.numpy().copy()
                if progress:
                    progress(len(ok))
            return done

        self._drive(chunks, max(p.streams for p in plans.values()), enqueue, results)

    def _upload_latents(self, slot: _Slot, mdl, decs: list):
        """Dense (levels, ydense, cdense) uint8 arrays -> pinned -> device floats, the
        values ``Codec.decompress`` builds; raw-mode files go through the bit path."""
        if not all(isinstance(d, tuple) for d in decs):
            from .batch import latents_for
            return latents_for(self.codec, mdl, decs, self.device)
        B = len(decs)
        lv_h = slot.host("lv_in", (B, *decs[0][0].shape))
        y_h = slot.host("y_in", (B, *decs[0][1].shape))
        c_h = slot.host("c_in", (B, *decs[0][2].shape))
        for k, (levels, yd, cd) in enumerate(decs):
            lv_h.numpy()[k] = levels
            y_h.numpy()[k] = yd
            c_h.numpy()[k] = cd
        dev = self.device
        lv = lv_h.to(dev, non_blocking=True)[:, None].float()
        bits = y_h.to(dev, non_blocking=True).float()
        cbits = c_h.to(dev, non_blocking=True).float()
        return lv, bits, cbits


def packed_from_host(lv: np.ndarray, ynbits: np.ndarray, ybuf: np.ndarray, cnbits: int, cbuf: np.ndarray) -> list:
    """``kernels.pack_triton.to_packed`` for results already copied to (reused) host
    buffers: every field is copied out."""
    from kernels.reference import Packed

    nb = ynbits.astype(np.int64)
    cbytes = (cnbits + 7) // 8
    return [Packed(lv[i, 0].copy(), ybuf[i, :(nb[i] + 7) // 8].tobytes(), int(nb[i]),
                   cbuf[i, :cbytes].tobytes(), int(cnbits)) for i in range(lv.shape[0])]
