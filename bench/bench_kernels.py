"""Microbenchmarks of the bit path: pack and unpack, torch reference vs Triton.

Not part of the default test run (pytest's testpaths is ``tests``); run with::

    python -m pytest bench/bench_kernels.py                 # CPU reference; Triton rows skip
    BENCH_BATCHES=1,8,32 python -m pytest bench/bench_kernels.py --benchmark-json out.json

Shapes are the "small" config at Kodak size: n = 60, L = 16, m = 8 and a
768x512 image -> h, w = 64, 96 (CbCr 32x48).  Each row stores in
``benchmark.extra_info`` the bytes it must read and write at the least
(inputs read once, outputs written once; ``bytes_e_kept`` is the part of e
that the kept channels alone need) and the achieved GB/s on that floor, from
the fastest and the mean round.

* ``*_torch_cpu``  -- kernels/reference.py on CPU tensors.
* ``*_torch_cuda`` -- the same reference on CUDA tensors (for comparison).
* ``*_triton_cuda_device`` -- the compiled kernels alone, device tensors in and
  out, synchronised (this is the row to hold against the copy bandwidth).
* ``*_triton_cuda`` -- the full drop-in call incl. the host <-> device copies
  of the Packed records.

The Triton rows need CUDA and compiled kernels: they skip without a GPU and
when TRITON_INTERPRET=1 (interpreter timings mean nothing).
"""
from __future__ import annotations

import os

import pytest
import torch

from kernels import reference

N, L, M, H, W = 60, 16, 8, 64, 96
BATCHES = [int(b) for b in os.environ.get("BENCH_BATCHES", "1,8").split(",") if b.strip()]


def _triton_skip():
    if not torch.cuda.is_available():
        return "no CUDA device: the Triton path is benchmarked compiled on a GPU only"
    if os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes"):
        return "TRITON_INTERPRET=1: interpreter timings are meaningless, unset it"
    return None


TRITON_SKIP = _triton_skip()
needs_triton_cuda = pytest.mark.skipif(TRITON_SKIP is not None, reason=TRITON_SKIP or "")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def inputs(B, device):
    g = torch.Generator().manual_seed(B)
    e = torch.rand(B, N, H, W, generator=g)
    p = torch.rand(B, 1, H, W, generator=g)     # uniform: on average half the channels kept
    ec = torch.rand(B, M, H // 2, W // 2, generator=g)
    return e.to(device), p.to(device), ec.to(device)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def pack_bytes(e, p, ec, items):
    kept = sum(it.ynbits for it in items)
    read = _nbytes(e) + _nbytes(p) + _nbytes(ec)
    written = sum(it.levels.size + len(it.ybits) + len(it.cbits) for it in items)
    return dict(bytes_read=read, bytes_written=written, bytes_total=read + written,
                bytes_e_kept=kept * e.element_size())


def unpack_bytes(items, outs):
    read = sum(it.levels.size + len(it.ybits) + len(it.cbits) for it in items)
    written = sum(_nbytes(o) for o in outs)
    return dict(bytes_read=read, bytes_written=written, bytes_total=read + written)


def report(benchmark, counts: dict, **extra):
    benchmark.extra_info.update(counts, shape=f"n={N} h={H} w={W} m={M} L={L}", **extra)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        s = stats.stats
        benchmark.extra_info["GBps_best"] = round(counts["bytes_total"] / s.min / 1e9, 3)
        benchmark.extra_info["GBps_mean"] = round(counts["bytes_total"] / s.mean / 1e9, 3)


def cuda_timed(fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


def pedantic(benchmark, fn, rounds=30):
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=3)


# --------------------------------------------------------------------------- torch reference

@pytest.mark.parametrize("B", BATCHES)
def test_pack_torch_cpu(benchmark, B):
    e, p, ec = inputs(B, "cpu")
    items = benchmark(reference.pack, e, p, ec, N, L)
    report(benchmark, pack_bytes(e, p, ec, items), batch=B, device="cpu")


@pytest.mark.parametrize("B", BATCHES)
def test_unpack_torch_cpu(benchmark, B):
    items = reference.pack(*inputs(B, "cpu"), N, L)
    outs = benchmark(reference.unpack, items, N, M, L)
    report(benchmark, unpack_bytes(items, outs), batch=B, device="cpu")


@needs_cuda
@pytest.mark.parametrize("B", BATCHES)
def test_pack_torch_cuda(benchmark, B):
    e, p, ec = inputs(B, "cuda")
    items = pedantic(benchmark, cuda_timed(lambda: reference.pack(e, p, ec, N, L)))
    report(benchmark, pack_bytes(e, p, ec, items), batch=B, device=torch.cuda.get_device_name())


@needs_cuda
@pytest.mark.parametrize("B", BATCHES)
def test_unpack_torch_cuda(benchmark, B):
    items = reference.pack(*inputs(B, "cpu"), N, L)
    outs = pedantic(benchmark, cuda_timed(lambda: reference.unpack(items, N, M, L, device="cuda")))
    report(benchmark, unpack_bytes(items, outs), batch=B, device=torch.cuda.get_device_name())


# --------------------------------------------------------------------------- Triton (compiled, CUDA)

@needs_triton_cuda
@pytest.mark.parametrize("B", BATCHES)
def test_pack_triton_cuda_device(benchmark, B):
    from kernels import pack_triton
    e, p, ec = inputs(B, "cuda")
    out = pedantic(benchmark, cuda_timed(lambda: pack_triton.pack_device(e, p, ec, N, L)), rounds=100)
    items = pack_triton.to_packed(*out)
    assert [it.ybits for it in items] == [it.ybits for it in reference.pack(e, p, ec, N, L)]
    report(benchmark, pack_bytes(e, p, ec, items), batch=B, device=torch.cuda.get_device_name())


@needs_triton_cuda
@pytest.mark.parametrize("B", BATCHES)
def test_pack_triton_cuda(benchmark, B):
    from kernels import pack_triton
    e, p, ec = inputs(B, "cuda")
    items = pedantic(benchmark, cuda_timed(lambda: pack_triton.pack(e, p, ec, N, L)))
    report(benchmark, pack_bytes(e, p, ec, items), batch=B, device=torch.cuda.get_device_name())


@needs_triton_cuda
@pytest.mark.parametrize("B", BATCHES)
def test_unpack_triton_cuda_device(benchmark, B):
    from kernels import pack_triton, unpack_triton
    e, p, ec = inputs(B, "cuda")
    lv, ynbits, ybuf, cnbits, cbuf = pack_triton.pack_device(e, p, ec, N, L)
    items = pack_triton.to_packed(lv, ynbits, ybuf, cnbits, cbuf)
    outs = pedantic(benchmark, cuda_timed(lambda: unpack_triton.unpack_device(lv, ybuf, cbuf, N, M, L)),
                    rounds=100)
    ref = reference.unpack(items, N, M, L, device="cuda")
    assert all(torch.equal(a, b) for a, b in zip(outs, ref))
    report(benchmark, unpack_bytes(items, outs), batch=B, device=torch.cuda.get_device_name())


@needs_triton_cuda
@pytest.mark.parametrize("B", BATCHES)
def test_unpack_triton_cuda(benchmark, B):
    from kernels import unpack_triton
    items = reference.pack(*inputs(B, "cpu"), N, L)
    outs = pedantic(benchmark, cuda_timed(lambda: unpack_triton.unpack(items, N, M, L, device="cuda")))
    report(benchmark, unpack_bytes(items, outs), batch=B, device=torch.cuda.get_device_name())
