"""Decoding (and encoding) in forked children: Linux ``multiprocessing`` pools,
DataLoader workers, ``os.fork()`` (issue #28, item 7).

torch's CPU ops run their parallel loops on GNU OpenMP, whose thread pool does not
survive ``fork()``: once the parent has run a parallel region, the child's first one
waits forever for threads that were not copied.  Both backends hit it (ONNX Runtime
runs torch ops around its networks too).  ``import engine`` registers a fork handler
that, in a child forked while torch is loaded, sets torch to one thread (what PyTorch's
own DataLoader does in its workers), so the child's torch ops run on the calling
thread; torch thread counts asked for later in that child (``Codec(threads=...)``)
stay at one.  ONNX Runtime sessions, the native coder and the entropy thread pools
start their own threads after the fork and keep their thread counts.  Tested with
``multiprocessing``'s fork context after the parent decoded (tests/test_codec.py).
Spawned or forkserver children start fresh and are not limited.
"""
from __future__ import annotations

import os
import sys

_forked_with_torch = False


def _after_fork_in_child() -> None:
    global _forked_with_torch
    torch = sys.modules.get("torch")
    if torch is not None:
        _forked_with_torch = True
        torch.set_num_threads(1)


def torch_threads(threads: int | None) -> int | None:
    """The torch thread count to set for ``threads`` in this process: 1 in a child forked
    with torch loaded (more would wait forever on GNU OpenMP's lost pool), else as asked."""
    return 1 if _forked_with_torch and threads else threads


def forked_with_torch() -> bool:
    return _forked_with_torch


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
