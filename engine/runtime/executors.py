"""Executors: where the stages (engine/runtime/stages.py) run.  They decide nothing else.

* :class:`InlineExecutor` runs each chunk on the calling thread, on the device's
  current stream, and finishes it before the next one starts: a single image, the
  CPU, or any device when overlap does not matter.
* :class:`StreamExecutor` round-robins chunks over N CUDA streams, each with its own
  pinned staging buffers.  The host waits for a stream only when it needs that
  stream's buffers again (N chunks later), so the CPU finishes chunk k (unpacks its
  bits, submits its entropy coding) while the GPU runs chunks k+1 .. k+N-1.

Both hand the same *slots* to the same stage code: ``slot.device``, ``slot.host(name,
shape, dtype)`` (a staging buffer reused per slot), ``slot.stage(name)`` (the stage
timer); the executor makes the slot's stream current around ``enqueue``.  A chunk is
``submit(indices, enqueue)``: ``enqueue(slot)`` queues the device work and returns the
host-side finisher (or None); an exception in either is reported for the chunk's
items through ``on_error(indices, exc)``.

Every CUDA call the stream executor makes goes through its ``api``
(:class:`CudaApi`), a parameter: a test passes synchronous CPU stand-ins and runs
the same executor without a GPU.

Sizing (pure, tested on the CPU): :func:`activation_bytes` estimates one image's
peak device memory from the model config; :func:`plan` picks streams and the batch
so that ``streams x batch x per-image`` fits a budget (a fraction of the free device
memory, less a reserve for cuDNN/TensorRT workspaces).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..timing import stage

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

    Counted in elements per pixel (P = height x width), following engine/net/model.py:
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


def runner_max_batch(runner) -> int | None:
    """The largest batch a runner accepts (a TensorRT engine's profile), else None."""
    prof = getattr(runner, "profiles", None)     # declared by every Runner; duck-typed stand-ins may lack it
    try:
        return int(prof["encoder"]["ycc"]["max"][0]) if prof else None
    except (KeyError, TypeError, IndexError):
        return None


class CudaApi:
    """The CUDA calls of :class:`StreamExecutor`."""

    is_cuda = staticmethod(lambda device: torch.device(device).type == "cuda")
    new_stream = staticmethod(lambda device: torch.cuda.Stream(device))
    current_stream = staticmethod(lambda device: torch.cuda.current_stream(device))
    use_stream = staticmethod(lambda stream: torch.cuda.stream(stream))
    new_event = staticmethod(lambda: torch.cuda.Event())
    free_bytes = staticmethod(lambda device: torch.cuda.mem_get_info(device)[0])
    pinned = staticmethod(lambda nbytes: torch.empty(nbytes, dtype=torch.uint8, pin_memory=True))




CUDA = CudaApi()


class Slot:
    """Where one chunk runs: a device, a stream (None: the current one), staging buffers."""

    def __init__(self, device, stream=None, timer=None, pinned=None):
        self.device = torch.device(device)
        self.stream = stream
        self.timer = timer
        self.done = None             # event after the chunk's last copy to the host
        self.finish = None           # host-side completion of the chunk in flight
        self.indices: list = []
        self._pinned = pinned        # pinned allocator (a stream slot), else plain memory
        self._host: dict[str, torch.Tensor] = {}

    def host(self, name: str, shape, dtype=torch.uint8) -> torch.Tensor:
        """A host tensor of this shape, reusing (growing) the slot's named buffer.  Only
        valid until the slot's next chunk, i.e. until its finisher has run."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        nbytes = int(np.prod(shape)) * itemsize
        buf = self._host.get(name)
        if buf is None or buf.numel() < nbytes:
            size = max(nbytes, 1)
            buf = self._host[name] = self._pinned(size) if self._pinned else torch.empty(size, dtype=torch.uint8)
        return buf[:nbytes].view(dtype).view(tuple(shape))

    def stage(self, name: str):
        if self.stream is not None:
            return stage(self.timer, name, stream=self.stream)
        return stage(self.timer, name, device=self.device)


class InlineExecutor:
    """Each chunk on the calling thread, finished before the next (see the module docstring)."""

    kind = "inline"

    def __init__(self, device, timer=None, on_error=None):
        self.slot = Slot(device, timer=timer)
        self.on_error = on_error

    @property
    def device(self):
        return self.slot.device

    def batch_for(self, key, cfg, height: int, width: int, n_images: int, op: str, max_batch: int) -> int:
        return max_batch

    def submit(self, indices: list, enqueue) -> None:
        slot = self.slot
        slot.indices = list(indices)
        try:
            fn = enqueue(slot)
            if fn is not None:
                if slot.device.type == "cuda":
                    with slot.stage("wait"):
                        torch.cuda.current_stream(slot.device).synchronize()
                fn()
        except Exception as exc:  # noqa: BLE001 - reported per item
            self.on_error(slot.indices, exc)

    def drain(self) -> None:
        pass

    def close(self) -> None:
        pass


class StreamExecutor:
    """Chunks round-robin over CUDA streams with pinned staging (see the module docstring).

    streams          CUDA streams, i.e. chunks in flight (default 2)
    budget_bytes     device bytes to plan for; default ``memory_fraction`` of the free
                     memory less ``reserve_bytes``
    timer            a StageTimer: each stage is timed by CUDA events on its stream
    api              the CUDA calls (default :data:`CUDA`)
    """

    kind = "streams"

    def __init__(self, device, streams: int = DEFAULT_STREAMS, budget_bytes: int | None = None,
                 memory_fraction: float = DEFAULT_MEMORY_FRACTION, reserve_bytes: int = DEFAULT_RESERVE,
                 timer=None, api: CudaApi | None = None, on_error=None):
        self.api = api or CUDA
        if not self.api.is_cuda(device):
            raise ValueError(f"StreamExecutor needs a CUDA device, got {device}")
        self.device = torch.device(device)
        self.max_streams = max(1, int(streams))
        self.memory_fraction = memory_fraction
        self.reserve_bytes = reserve_bytes
        self.fixed_budget = budget_bytes
        self.timer = timer
        self.on_error = on_error
        self.slots: list[Slot] = []
        self.active = 1               # slots in use: the largest plan's streams so far
        self.turn = 0
        self.plans: list[tuple[object, Plan]] = []     # what was chosen, per bucket (for logs/tests)

    # -- planning -----------------------------------------------------------
    def budget(self) -> int:
        if self.fixed_budget is not None:
            return int(self.fixed_budget)
        return memory_budget(self.api.free_bytes(self.device), self.memory_fraction, self.reserve_bytes)

    def batch_for(self, key, cfg, height: int, width: int, n_images: int, op: str, max_batch: int) -> int:
        """The memory plan's batch for a bucket (recorded in ``plans``); the slots in use
        grow to the largest plan's streams."""
        p = plan(activation_bytes(cfg, height, width, op), n_images, self.budget(), max_batch, self.max_streams)
        self.plans.append((key, p))
        self.active = max(self.active, p.streams)
        return p.batch

    # -- running ------------------------------------------------------------
    def _slot(self) -> Slot:
        k = self.turn % self.active
        self.turn += 1
        while len(self.slots) <= k:
            s = self.api.new_stream(self.device)
            s.wait_stream(self.api.current_stream(self.device))   # model weights, earlier work
            self.slots.append(Slot(self.device, s, self.timer, pinned=self.api.pinned))
        return self.slots[k]

    def _finish(self, slot: Slot) -> None:
        if slot.finish is None:
            return
        fn, slot.finish = slot.finish, None
        try:
            with stage(self.timer, "wait"):
                slot.done.synchronize()
            fn()
        except Exception as exc:  # noqa: BLE001 - asynchronous CUDA errors surface here
            self.on_error(slot.indices, exc)

    def submit(self, indices: list, enqueue) -> None:
        slot = self._slot()
        self._finish(slot)             # its buffers are free again after this
        slot.indices = list(indices)
        try:
            with self.api.use_stream(slot.stream):
                slot.finish = enqueue(slot)
                if slot.finish is not None:
                    slot.done = self.api.new_event()
                    slot.done.record(slot.stream)
        except Exception as exc:  # noqa: BLE001 - reported per item
            slot.finish = None
            self.on_error(slot.indices, exc)

    def drain(self) -> None:
        for slot in self.slots:
            self._finish(slot)

    def close(self) -> None:
        """Never leave work behind, also after an error."""
        for slot in self.slots:
            slot.stream.synchronize()
