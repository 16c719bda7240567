"""Triton bit path (kernels/pack_triton.py, kernels/unpack_triton.py) == the torch reference, bit for bit.

Runs on the CPU through the Triton interpreter (conftest sets TRITON_INTERPRET=1
when there is no CUDA) and, where CUDA is available, on the GPU with whatever
mode the session has (compiled when TRITON_INTERPRET is unset/0, see
bench/gpu_check.sh).  Random cases draw a fresh seed from os.urandom and print
it on failure; rerun one with KERNEL_TEST_SEED=<seed>.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from kernels import get_bitpath, reference
from kernels import pack_triton, unpack_triton

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"small": (60, 16, 8), "tiny": (15, 4, 4)}   # n, L, m


def _devices():
    cpu_skip = [] if pack_triton.interpreter_active() else [pytest.mark.skip(
        reason="CPU tensors need the Triton interpreter (TRITON_INTERPRET=1 not set)")]
    cuda_skip = [pytest.mark.gpu] + ([] if torch.cuda.is_available() else [pytest.mark.skip(reason="no CUDA device")])
    return [pytest.param("cpu", marks=cpu_skip), pytest.param("cuda", marks=cuda_skip)]


DEVICES = _devices()


def fresh_seed() -> int:
    env = os.environ.get("KERNEL_TEST_SEED")
    return int(env) if env else int.from_bytes(os.urandom(4), "little")


def make_inputs(seed, B, n, m, h, w, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    e = torch.rand(B, n, h, w, generator=g)
    p = torch.rand(B, 1, h, w, generator=g)
    ec = torch.rand(B, m, (h + 1) // 2, (w + 1) // 2, generator=g)
    return e.to(device), p.to(device), ec.to(device)


def assert_same_packed(got, want, msg):
    assert len(got) == len(want), msg
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.levels.dtype == np.uint8 and a.levels.shape == b.levels.shape, f"{msg} image {i}"
        assert np.array_equal(a.levels, b.levels), f"{msg} image {i}: levels differ"
        assert a.ynbits == b.ynbits, f"{msg} image {i}: ynbits {a.ynbits} != {b.ynbits}"
        assert a.ybits == b.ybits, f"{msg} image {i}: Y payload differs"
        assert a.cnbits == b.cnbits, f"{msg} image {i}: cnbits {a.cnbits} != {b.cnbits}"
        assert a.cbits == b.cbits, f"{msg} image {i}: CbCr payload differs"


def check_pack(e, p, ec, n, L, msg, **blocks):
    want = reference.pack(e.cpu(), p.cpu(), ec.cpu(), n, L)
    got = pack_triton.pack(e, p, ec, n, L, **blocks)
    assert_same_packed(got, want, msg)
    return want


def check_unpack(items, n, m, L, device, msg, dtype=torch.float32, **blocks):
    want = reference.unpack(items, n, m, L, dtype=dtype)
    got = unpack_triton.unpack(items, n, m, L, dtype=dtype, device=device, **blocks)
    for name, a, b in zip(("levels", "ybits", "cbits"), got, want):
        assert a.device.type == torch.device(device).type, f"{msg}: {name} on {a.device}"
        assert a.dtype == b.dtype and a.shape == b.shape, f"{msg}: {name} {a.dtype}{tuple(a.shape)}"
        assert torch.equal(a.cpu(), b), f"{msg}: {name} differ"
    return got


# --------------------------------------------------------------------------- random, both configs

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("shape", [(1, 8, 12), (3, 7, 5), (2, 12, 11), (2, 1, 1), (1, 1, 9)])
def test_pack_unpack_random(config, shape, device):
    n, L, m = CONFIGS[config]
    B, h, w = shape
    seed = fresh_seed()
    msg = f"seed={seed} config={config} B,h,w={shape} device={device}"
    e, p, ec = make_inputs(seed, B, n, m, h, w, device)
    items = check_pack(e, p, ec, n, L, msg)
    check_unpack(items, n, m, L, device, msg)


@pytest.mark.parametrize("device", DEVICES)
def test_multi_program_blocks(device):
    """Small launch blocks: several programs per image and a multi-chunk scan carry."""
    n, L, m = CONFIGS["small"]
    seed = fresh_seed()
    msg = f"seed={seed} device={device}"
    e, p, ec = make_inputs(seed, 2, n, m, 9, 11, device)
    items = check_pack(e, p, ec, n, L, msg, scan_block=32, block_bytes=64)
    check_unpack(items, n, m, L, device, msg, block_l=32)


# --------------------------------------------------------------------------- edges

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_edges(config, device):
    n, L, m = CONFIGS[config]
    B, h, w = 2, 5, 7
    seed = fresh_seed()
    e, p, ec = make_inputs(seed, B, n, m, h, w)
    cases = {
        "p=0": torch.zeros_like(p),
        "p=1": torch.ones_like(p),
        # every level boundary k/L exactly, and the float just below it
        "p=k/L": (torch.arange(B * h * w) % (L + 1)).float().view_as(p) / L,
        "p=k/L-ulp": torch.nextafter((torch.arange(B * h * w) % (L + 1)).float().view_as(p) / L,
                                     torch.tensor(-1.0)),
        "p<0,>1": torch.linspace(-2, 3, B * h * w).view_as(p),
    }
    e_half = e.clone()
    e_half.view(-1)[::3] = 0.5                      # exactly 0.5 -> bit 0
    e_half.view(-1)[1::3] = torch.nextafter(torch.tensor(0.5), torch.tensor(1.0))
    ec_half = ec.clone()
    ec_half.view(-1)[::2] = 0.5
    for name, pp in cases.items():
        for ename, ee, cc in (("e", e, ec), ("e=0.5", e_half, ec_half)):
            msg = f"seed={seed} config={config} case={name},{ename} device={device}"
            items = check_pack(ee.to(device), pp.to(device), cc.to(device), n, L, msg)
            check_unpack(items, n, m, L, device, msg)
            if name == "p=0":
                assert all(it.ynbits == 0 and it.ybits == b"" for it in items), msg
            if name == "p=1":
                assert all(it.ynbits == n * h * w for it in items), msg


@pytest.mark.parametrize("device", DEVICES)
def test_unpack_dtypes(device):
    n, L, m = CONFIGS["tiny"]
    seed = fresh_seed()
    e, p, ec = make_inputs(seed, 2, n, m, 6, 9)
    items = reference.pack(e, p, ec, n, L)
    for dtype in (torch.float16, torch.bfloat16, torch.float64, torch.uint8):
        check_unpack(items, n, m, L, device, f"seed={seed} dtype={dtype} device={device}", dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_half_precision_inputs(device):
    """fp16 e/ec compare like the reference (0.5 is exact in fp16)."""
    n, L, m = CONFIGS["small"]
    seed = fresh_seed()
    e, p, ec = make_inputs(seed, 2, n, m, 6, 5)
    check_pack(e.half().to(device), p.to(device), ec.half().to(device), n, L, f"seed={seed} device={device}")


# --------------------------------------------------------------------------- round trip / API

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_round_trip(config, device):
    """unpack(pack(x)) gives back the levels and the masked binarized features."""
    n, L, m = CONFIGS[config]
    seed = fresh_seed()
    msg = f"seed={seed} config={config} device={device}"
    e, p, ec = make_inputs(seed, 3, n, m, 7, 10, device)
    bp = get_bitpath("triton")
    items = bp.pack(e, p, ec, n, L)
    lv, y, c = bp.unpack(items, n, m, L, device=device)
    q = reference.quantize(p.cpu(), L)
    from engine import importance
    mask = importance.channel_mask(q.long(), n, L)
    assert torch.equal(lv.cpu(), q.float()), msg
    assert torch.equal(y.cpu(), (e.cpu() > 0.5).float() * mask), msg
    assert torch.equal(c.cpu(), (ec.cpu() > 0.5).float()), msg


def test_dispatcher_and_validation():
    t = get_bitpath("triton")
    assert (t.name, t.pack, t.unpack, t.pack_device) == \
        ("triton", pack_triton.pack, unpack_triton.unpack, pack_triton.pack_device)
    r = get_bitpath("torch")
    assert (r.name, r.pack, r.unpack, r.pack_device) == ("torch", reference.pack, reference.unpack, None)
    assert get_bitpath("auto", "cpu").name == "torch" and get_bitpath("auto", "cuda:0").name == "triton"
    with pytest.raises(ValueError, match="ENGINE_KERNELS"):
        get_bitpath("cuda")
    n, L, m = CONFIGS["tiny"]
    e, p, ec = make_inputs(0, 1, n, m, 4, 4)
    items = reference.pack(e, p, ec, n, L)
    bad = [reference.Packed(items[0].levels, items[0].ybits, items[0].ynbits + 1, items[0].cbits, items[0].cnbits)]
    with pytest.raises(ValueError):
        unpack_triton.unpack(bad, n, m, L, device="cuda" if not pack_triton.interpreter_active() else "cpu")
    with pytest.raises(ValueError):
        pack_triton.pack_device(e[:, :5], p, ec, n, L)


# --------------------------------------------------------------------------- without the interpreter

_SUBPROCESS = textwrap.dedent("""
    import torch
    from kernels import pack_triton, unpack_triton
    assert not pack_triton.interpreter_active()
    e, p, ec = torch.rand(1, 15, 4, 4), torch.rand(1, 1, 4, 4), torch.rand(1, 4, 2, 2)
    try:
        pack_triton.pack(e, p, ec, 15, 4)
    except RuntimeError as err:
        assert "TRITON_INTERPRET=1" in str(err), err
        print("RuntimeError OK")
    else:
        raise SystemExit("no RuntimeError")

    # Compile every kernel for sm_90 (no GPU needed; catches what the lenient interpreter lets through).
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    P, U = pack_triton, unpack_triton
    jobs = [
        (P._level_scan_kernel, dict(src_ptr="*fp32", levels_ptr="*u8", cum_ptr="*i32", HW="i32"),
         dict(L=16, G=4, FROM_P=True, BLOCK=1024)),
        (P._level_scan_kernel, dict(src_ptr="*u8", levels_ptr="*u8", cum_ptr="*i32", HW="i32"),
         dict(L=16, G=4, FROM_P=False, BLOCK=1024)),
        (P._pack_y_kernel, dict(e_ptr="*fp16", cum_ptr="*i32", out_ptr="*u8", HW="i32", OUT_STRIDE="i32"),
         dict(N=60, NSTEPS=13, BLOCK_BYTES=128)),
        (P._pack_dense_kernel, dict(x_ptr="*fp32", out_ptr="*u8", HW="i32", OUT_STRIDE="i32"),
         dict(M=8, BLOCK_BYTES=128)),
        (U._unpack_y_kernel, dict(levels_ptr="*u8", cum_ptr="*i32", buf_ptr="*u8", lev_out_ptr="*fp32",
                                  dense_ptr="*bf16", HW="i32", BUF_STRIDE="i32"),
         dict(N=60, NPAD=64, L=16, G=4, BLOCK_L=128)),
        (U._unpack_dense_kernel, dict(buf_ptr="*u8", out_ptr="*fp32", HW="i32", BUF_STRIDE="i32"),
         dict(M=8, MPAD=8, BLOCK_L=128)),
    ]
    for fn, sig, const in jobs:
        sig = dict(sig, **{k: "constexpr" for k in const})
        triton.compile(ASTSource(fn, signature=sig, constexprs=const),
                       target=GPUTarget("cuda", 90, 32), options=dict(debug=False))
    print("compiled", len(jobs))
""")


def test_without_interpreter_errors_and_compiles():
    """No TRITON_INTERPRET and no CUDA: CPU calls raise a clear RuntimeError (no
    silent torch fallback), and every kernel compiles for sm_90 (PTX + cubin)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(CUDA_VISIBLE_DEVICES="", TRITON_DEFAULT_FP_FUSION="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _SUBPROCESS], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "RuntimeError OK" in r.stdout and "compiled 6" in r.stdout, r.stdout + r.stderr
