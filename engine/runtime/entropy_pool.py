"""Where the CPU stages (serialize, parse: engine/format/registry.py) run: inline, threads or processes.

The entropy coder (numpy + constriction over many small arrays) holds the GIL for
most of its time, so a thread pool gives about one core's worth of coding however
many threads it has.  Measured on a lent H100 host (16 cores): the CUDA pipeline
encoded 30 images/s of 768x512 while its GPU was busy a third of the time, all of it
waiting on 15 GIL-bound coding threads (bench/results/gpu-nvidia-h100/README.md).

* ``InlinePool``: on the calling thread (one image; nothing to overlap with).
* ``"threads"``: a thread pool (no start-up cost; right for a 2-core CPU machine,
  where the network already uses both cores).
* ``"processes"``: spawned worker processes, each holding only the model's codings
  (config, entropy tables, stream ids: engine/net/rungs.py), no network.  Same functions,
  so the bytes are the same; the workers are started once per ``Codec`` and reused
  until ``codec.close()``.
* ``"auto"`` (default): threads when the codec writes bitstream v2 with the native
  coder (it releases the GIL, so threads code in parallel: bench/results/entropy-*.md);
  otherwise processes when the networks run on CUDA, the host has at
  least 4 CPUs and spawning is safe for the running program (started with ``-m``, e.g.
  ``python -m engine``, or interactively), else threads.  A plain ``python script.py``
  gets threads: spawned workers re-import a script, which is only safe when its top
  level is guarded by ``if __name__ == "__main__":`` -- something that cannot be
  checked; such a script can ask for ``entropy_pool="processes"`` itself.

Every pool returns futures: ``serialize(coding, packed, h, w, color, entropy_mode)
-> bytes`` and ``parse(blob) -> (header, decoded)``.  ``pool.timer`` (a StageTimer or
None) records the stages, worker processes' spans included.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

from .. import settings
from ..format import registry
from ..net.rungs import Codings


def spawn_safe() -> bool:
    """True when spawned workers will not re-run the user's top-level code: the program
    was started with ``-m`` (``__main__`` has a module spec) or has no main file."""
    main = sys.modules.get("__main__")
    return getattr(main, "__spec__", None) is not None or not getattr(main, "__file__", None)


def resolve_kind(kind: str | None, on_cuda: bool, gil_free: bool = False) -> str:
    """``gil_free``: the coder releases the GIL (bitstream v2's native coder), so
    threads scale and "auto" never spawns processes."""
    kind = settings.check("entropy_pool", kind or settings.env("ENGINE_ENTROPY_POOL", "auto"),
                          "entropy_pool/ENGINE_ENTROPY_POOL")
    if kind == "auto":
        return ("processes" if on_cuda and not gil_free and (os.cpu_count() or 1) >= 4 and spawn_safe()
                else "threads")
    return kind


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def done(value) -> Future:
    """A completed future holding ``value`` (an exception is set as the future's error)."""
    f: Future = Future()
    if isinstance(value, BaseException):
        f.set_exception(value)
    else:
        f.set_result(value)
    return f


class InlinePool:
    """The CPU stages on the calling thread."""

    kind = "inline"

    def __init__(self, codings: Codings, max_pixels: int, lanes_on_device: bool = False):
        self.codings, self.max_pixels, self.timer = codings, max_pixels, None
        self.lanes_on_device = lanes_on_device     # v2 files: the container only (registry.parse)

    def _call(self, fn, *args) -> Future:
        try:
            return done(fn(*args))
        except Exception as exc:  # noqa: BLE001 - the item's error, in its future
            return done(exc)

    def serialize(self, coding, packed, h: int, w: int, color: int, entropy_mode: int) -> Future:
        return self._call(registry.serialize, coding, packed, h, w, color, entropy_mode, self.timer)

    def parse_here(self, blob: bytes):
        hdr, _, dec = registry.parse(blob, self.codings.for_header, self.max_pixels, self.timer, self.lanes_on_device)
        return hdr, dec

    def parse(self, blob: bytes) -> Future:
        return self._call(self.parse_here, blob)

    def close(self) -> None:
        pass


class ThreadEntropyPool(InlinePool):
    """A thread pool, for one batch call."""

    kind = "threads"

    def __init__(self, codings: Codings, max_pixels: int, workers: int | None = None, lanes_on_device: bool = False):
        super().__init__(codings, max_pixels, lanes_on_device)
        self._ex = ThreadPoolExecutor(max_workers=workers or default_workers())

    def serialize(self, coding, packed, h: int, w: int, color: int, entropy_mode: int) -> Future:
        return self._ex.submit(registry.serialize, coding, packed, h, w, color, entropy_mode, self.timer)

    def parse(self, blob: bytes) -> Future:
        return self._ex.submit(self.parse_here, blob)

    def close(self) -> None:
        self._ex.shutdown(wait=True)


# ----------------------------------------------------------------------------- worker processes

_CODINGS: Codings | None = None      # the worker process's codings
_MAX_PIXELS = 0


def _init_worker(model: str, root: str | None, max_pixels: int) -> None:
    global _CODINGS, _MAX_PIXELS
    import torch

    torch.set_num_threads(1)
    _CODINGS, _MAX_PIXELS = Codings(model, root), max_pixels


def _serialize_task(quality: int, packed, h: int, w: int, color: int, entropy_mode: int):
    t0 = time.perf_counter()
    out = registry.serialize(_CODINGS.get(quality, decode=True), packed, h, w, color, entropy_mode)
    return out, os.getpid(), t0, time.perf_counter()


def _parse_task(blob: bytes):
    t0 = time.perf_counter()
    hdr, _, dec = registry.parse(blob, _CODINGS.for_header, _MAX_PIXELS)
    return hdr, dec, os.getpid(), t0, time.perf_counter()


class _Mapped:
    """A future whose result is ``fn(inner.result())`` (computed in the caller's thread)."""

    def __init__(self, inner: Future, fn):
        self._inner, self._fn = inner, fn

    def result(self, timeout=None):
        return self._fn(self._inner.result(timeout))

    def done(self) -> bool:
        return self._inner.done()


class ProcessEntropyPool:
    """Worker processes for one codec's model; see the module docstring."""

    kind = "processes"

    def __init__(self, model: str, root, max_pixels: int, workers: int | None = None):
        self.workers = workers or default_workers()
        self.timer = None
        # spawn, not fork: the parent may hold a CUDA context, which a forked child cannot use.
        self._ex = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker,
                                       initargs=(model, str(root) if root else None, max_pixels))

    def _record(self, name: str, pid: int, t0: float, t1: float) -> None:
        if self.timer is not None:
            self.timer.record(name, f"cpu:process-{pid}", t0, t1)

    def serialize(self, coding, packed, h: int, w: int, color: int, entropy_mode: int):
        def finish(r):
            out, pid, t0, t1 = r
            self._record("entropy", pid, t0, t1)
            return out
        return _Mapped(self._ex.submit(_serialize_task, coding.quality, packed, h, w, color, entropy_mode), finish)

    def parse(self, blob: bytes):
        def finish(r):
            hdr, dec, pid, t0, t1 = r
            self._record("entropy", pid, t0, t1)
            return hdr, dec
        return _Mapped(self._ex.submit(_parse_task, blob), finish)

    def pids(self) -> list[int]:
        """The worker processes' ids (started on the first task)."""
        return sorted(self._ex._processes or {})  # noqa: SLF001 - the stdlib exposes no public list

    def close(self) -> None:
        self._ex.shutdown(wait=True, cancel_futures=True)
