"""Synchronous CPU stand-ins for the CUDA calls of engine.runtime.executors.StreamExecutor.

Passed as its ``api`` parameter (``Codec.compress_batch(..., pipeline={"api": FakeCuda()})``),
they run the stream executor's logic -- slots round-robin, per-slot staging buffers,
deferred finishers, error handling -- and the same stages on the CPU, so its bytes
can be compared with the single-image path without a GPU.
"""
import contextlib

import torch

from engine.runtime.executors import CudaApi


class FakeStream:
    def __init__(self, device=None):
        self.device, self.cuda_stream = device, id(self)

    def wait_stream(self, other):
        pass

    def synchronize(self):
        pass


class FakeEvent:
    def record(self, stream=None):
        self.stream = stream

    def synchronize(self):
        pass


class FakeCuda(CudaApi):
    """Counts the streams and pinned buffers it hands out."""

    def __init__(self, free_bytes: int = 8 * 2 ** 30):
        self.streams: list[FakeStream] = []
        self.pinned_allocs = 0
        self.free = free_bytes

    def is_cuda(self, device) -> bool:
        return True

    def new_stream(self, device):
        self.streams.append(FakeStream(device))
        return self.streams[-1]

    def current_stream(self, device):
        return FakeStream(device)

    def use_stream(self, stream):
        return contextlib.nullcontext()

    def new_event(self):
        return FakeEvent()

    def free_bytes(self, device) -> int:
        return self.free

    def pinned(self, nbytes: int) -> torch.Tensor:
        self.pinned_allocs += 1
        return torch.empty(nbytes, dtype=torch.uint8)
