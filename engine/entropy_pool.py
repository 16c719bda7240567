"""Where the batch APIs run entropy coding + container work: threads or processes.

The entropy coder (numpy + constriction over many small arrays) holds the GIL for
most of its time, so a thread pool gives about one core's worth of coding however
many threads it has.  Measured on a lent H100 host (16 cores): the CUDA pipeline
encoded 30 images/s of 768x512 while its GPU was busy a third of the time, all of it
waiting on 15 GIL-bound coding threads (bench/results/gpu-nvidia-h100/README.md).

* ``"threads"``: a thread pool over the codec's own coder (no start-up cost; right for
  a 2-core CPU machine, where the network already uses both cores).
* ``"processes"``: a pool of spawned worker processes, each holding a CPU-only
  ``Codec`` of the same model (torch runner, one thread, built once per worker; it is
  never run, only its tables and header checks are used).  Same functions, so the
  bytes are the same; the workers are started once per ``Codec`` and reused until
  ``codec.close()``.
* ``"auto"`` (default): processes when the networks run on CUDA, the host has at
  least 4 CPUs and spawning is safe for the running program (started with ``-m``, e.g.
  ``python -m engine``, or interactively), else threads.  A plain ``python script.py``
  gets threads: spawned workers re-import a script, which is only safe when its top
  level is guarded by ``if __name__ == "__main__":`` -- something that cannot be
  checked; such a script can ask for ``entropy_pool="processes"`` itself.

Both return futures: ``serialize(...) -> bytes`` and ``parse(blob) -> (header, model,
decoded)``, exactly what ``Codec._serialize`` and ``Codec.parse`` return.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

KINDS = ("auto", "threads", "processes")

_WORKER = None  # the Codec of a worker process


def spawn_safe() -> bool:
    """True when spawned workers will not re-run the user's top-level code: the program
    was started with ``-m`` (``__main__`` has a module spec) or has no main file."""
    main = sys.modules.get("__main__")
    return getattr(main, "__spec__", None) is not None or not getattr(main, "__file__", None)


def resolve_kind(kind: str | None, on_cuda: bool) -> str:
    kind = kind or os.environ.get("ENGINE_ENTROPY_POOL", "auto")
    if kind not in KINDS:
        raise ValueError(f"entropy pool must be one of {KINDS}, got {kind!r}")
    if kind == "auto":
        return "processes" if on_cuda and (os.cpu_count() or 1) >= 4 and spawn_safe() else "threads"
    return kind


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def _init_worker(spec: dict) -> None:
    global _WORKER
    import torch

    torch.set_num_threads(1)
    from .codec import Codec

    _WORKER = Codec(backend="torch", device="cpu", kernels="torch", threads=1, entropy_pool="threads", **spec)


def _serialize_task(quality: int, packed, h: int, w: int, color: int):
    t0 = time.perf_counter()
    out = _WORKER._serialize(_WORKER._load(quality), packed, h, w, color)
    return out, os.getpid(), t0, time.perf_counter()


def _parse_task(blob: bytes):
    t0 = time.perf_counter()
    hdr, _, dec = _WORKER.parse(blob)
    return hdr, dec, os.getpid(), t0, time.perf_counter()


class _Mapped:
    """A future whose result is ``fn(inner.result())`` (computed in the caller's thread)."""

    def __init__(self, inner: Future, fn):
        self._inner, self._fn = inner, fn

    def result(self, timeout=None):
        return self._fn(self._inner.result(timeout))


class ProcessEntropyPool:
    """Worker processes for one codec; see the module docstring."""

    kind = "processes"

    def __init__(self, codec, workers: int | None = None):
        # A weak reference: no codec <-> pool cycle, so dropping the codec drops the pool,
        # and ProcessPoolExecutor shuts its workers down when it is collected.
        self._codec = weakref.ref(codec)
        self.workers = workers or default_workers()
        spec = dict(quality=codec.quality, model=codec.model_name, root=str(codec.root) if codec.root else None,
                    entropy=codec.entropy_name, max_pixels=codec.max_pixels)
        # spawn, not fork: the parent may hold a CUDA context, which a forked child cannot use.
        self._ex = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker, initargs=(spec,))

    def _record(self, name: str, pid: int, t0: float, t1: float) -> None:
        timer = self._codec().timer
        if timer is not None:
            timer.record(name, f"cpu:process-{pid}", t0, t1)

    def serialize(self, mdl, packed, h: int, w: int, color: int):
        def done(r):
            out, pid, t0, t1 = r
            self._record("entropy", pid, t0, t1)
            return out
        return _Mapped(self._ex.submit(_serialize_task, mdl.q.quality, packed, h, w, color), done)

    def parse(self, blob: bytes):
        def done(r):
            hdr, dec, pid, t0, t1 = r
            self._record("entropy", pid, t0, t1)
            return hdr, self._codec()._model_for(hdr), dec
        return _Mapped(self._ex.submit(_parse_task, blob), done)

    def close(self) -> None:
        self._ex.shutdown(wait=True, cancel_futures=True)


class ThreadEntropyPool:
    """A thread pool over the codec's own coder, for one batch call."""

    kind = "threads"

    def __init__(self, codec, workers: int | None = None):
        self.codec = codec
        self._ex = ThreadPoolExecutor(max_workers=workers or default_workers())

    def serialize(self, mdl, packed, h: int, w: int, color: int) -> Future:
        return self._ex.submit(self.codec._serialize, mdl, packed, h, w, color)

    def parse(self, blob: bytes) -> Future:
        return self._ex.submit(self.codec.parse, blob)

    def close(self) -> None:
        self._ex.shutdown(wait=True)


_LOCK = threading.Lock()


@contextmanager
def for_batch(codec, on_cuda: bool, workers: int | None = None):
    """The pool one batch call uses: a thread pool closed when the call ends, or the
    codec's worker processes, which live until ``codec.close()``."""
    if resolve_kind(codec.entropy_pool, on_cuda) == "threads":
        pool = ThreadEntropyPool(codec, workers)
        try:
            yield pool
        finally:
            pool.close()
        return
    with _LOCK:
        pool = codec._process_pool
        if pool is None or (workers and pool.workers != workers):
            if pool is not None:
                pool.close()
            pool = codec._process_pool = ProcessEntropyPool(codec, workers)
    yield pool
