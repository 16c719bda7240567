"""Per-stage timing hook: ``codec.timer = StageTimer()``, run, then ``timer.totals()``.

Stages used by the codec, the batch API and the CUDA pipeline::

    preprocess  network  bitpath  entropy  container  postprocess  (+ h2d, d2h in the CUDA pipeline)

Each ``with timer.stage(name, ...)`` records one span:

* on the CPU (no ``stream`` and a non-CUDA ``device``): wall time from
  ``time.perf_counter``;
* on CUDA (a ``stream``, or a CUDA ``device`` meaning its current stream): a pair of
  ``torch.cuda.Event(enable_timing=True)`` recorded on that stream, so the span
  is the GPU's time for the work enqueued inside the block, not the host's
  enqueue time.  Events are resolved (synchronized) only by :meth:`spans` /
  :meth:`totals`, so timing does not serialize the pipeline.

Spans also carry a *lane* (the CUDA stream, or "cpu:<thread name>") and start/end
offsets on one time axis, so a run's timeline shows which stages overlapped
(CUDA offsets are measured from a reference event recorded when the timer
first saw that device, CPU offsets from the timer's creation; the two axes are
aligned to within the GPU's queue delay at that moment).

Totals are sums of span durations per stage.  Stages that run in several threads
or streams at once (entropy coding in the thread pool, the network on N
streams) can therefore add up to more than the elapsed time: that is the
overlap, which is the point of the pipeline.  The timer is thread safe.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager, nullcontext


class StageTimer:
    def __init__(self):
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self._cpu: list[tuple[str, str, float, float]] = []
        self._cuda: list[tuple[str, str, object, object, object]] = []
        self._ref: dict[str, tuple[object, float]] = {}

    def reset(self) -> None:
        with self._lock:
            self._t0 = time.perf_counter()
            self._cpu.clear()
            self._cuda.clear()
            self._ref.clear()

    def _cuda_ref(self, device):
        key = str(device)
        ref = self._ref.get(key)
        if ref is None:
            import torch
            ev = torch.cuda.Event(enable_timing=True)
            ev.record(torch.cuda.current_stream(device))
            ref = self._ref[key] = (ev, time.perf_counter() - self._t0)
        return ref

    @contextmanager
    def stage(self, name: str, device=None, stream=None):
        import torch

        if stream is None and device is not None and torch.device(device).type == "cuda":
            stream = torch.cuda.current_stream(device)
        if stream is None:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                t1 = time.perf_counter()
                with self._lock:
                    self._cpu.append((name, "cpu:" + threading.current_thread().name, t0 - self._t0, t1 - self._t0))
            return
        with self._lock:
            ref = self._cuda_ref(stream.device)
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record(stream)
        try:
            yield
        finally:
            b.record(stream)
            with self._lock:
                self._cuda.append((name, f"{stream.device}/stream{stream.cuda_stream:x}", a, b, ref))

    def record(self, name: str, lane: str, t0: float, t1: float) -> None:
        """A CPU span timed elsewhere: ``time.perf_counter`` values, which on Linux read
        the system-wide monotonic clock, so spans from worker processes line up."""
        with self._lock:
            self._cpu.append((name, lane, t0 - self._t0, t1 - self._t0))

    def spans(self) -> list[dict]:
        """[{stage, lane, start, end}] in seconds on the timer's axis, sorted by start.
        Synchronizes on the recorded CUDA events."""
        with self._lock:
            cpu = list(self._cpu)
            cuda = list(self._cuda)
        out = [{"stage": n, "lane": lane, "start": s, "end": e} for n, lane, s, e in cpu]
        for n, lane, a, b, (ref, ref_t) in cuda:
            ref.synchronize()
            b.synchronize()
            s = ref_t + ref.elapsed_time(a) / 1e3
            out.append({"stage": n, "lane": lane, "start": s, "end": s + a.elapsed_time(b) / 1e3})
        out.sort(key=lambda d: d["start"])
        return out

    def totals(self) -> dict[str, float]:
        """{stage: summed seconds} over all spans."""
        tot: dict[str, float] = {}
        for sp in self.spans():
            tot[sp["stage"]] = tot.get(sp["stage"], 0.0) + sp["end"] - sp["start"]
        return tot

    def counts(self) -> dict[str, int]:
        with self._lock:
            names = [s[0] for s in self._cpu] + [s[0] for s in self._cuda]
        out: dict[str, int] = {}
        for n in names:
            out[n] = out.get(n, 0) + 1
        return out


def stage(timer: StageTimer | None, name: str, device=None, stream=None):
    """``timer.stage(...)`` or a no-op when no timer is set."""
    return nullcontext() if timer is None else timer.stage(name, device=device, stream=stream)
