"""Fused pre-/post-processing kernels (Triton) and their torch twins.

* ``preprocess``: uint8 HWC RGB (B, H, W, 3) -> float32 YCbCr planes
  (B, 3, H', W'), BT.601 full range (engine/color.py), replicate-padded to a
  multiple of ``multiple`` (16 in the codec).  One pass: each output pixel
  reads its (clamped) source pixel's 3 bytes and writes 3 floats; the torch
  path materialises the float RGB, the YCbCr and the padded copy.
* ``postprocess``: planes (B, 3, H', W') -> cropped (B, h, w, 3) uint8 RGB,
  clamped to [0, 1], times 255, rounded half to even (``torch.round``).

``preprocess_torch`` / ``postprocess_torch`` are the twins: the codec's own
arithmetic (engine.color + replicate pad / clamp-mul-round), batched.  The
Triton results agree with them to float rounding (a different summation order /
fused multiply-add), i.e. within ~1e-6 for the planes and at most one step at
an exact .5 tie for the uint8 output; see tests/test_kernels.py.

Same device rules as the bit path: CUDA (compiled) or CPU with the interpreter.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from engine.color import RGB2YCC, YCC2RGB, rgb_to_ycbcr, ycbcr_to_rgb

from .pack_triton import check_device, interpreter_active

GPU_BLOCK = 512
INTERPRETER_BLOCK = 8192


@triton.jit
def _preprocess_kernel(rgb_ptr, out_ptr, coef_ptr, H, W, HP, WP, BLOCK: tl.constexpr):
    """grid (cdiv(HP*WP, BLOCK), B); coef = RGB2YCC row-major (9) + offsets (3), fp32."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    npix = HP * WP
    valid = offs < npix
    yp = offs // WP
    xp = offs % WP
    src = b * H * W * 3 + (tl.minimum(yp, H - 1) * W + tl.minimum(xp, W - 1)) * 3
    r = tl.load(rgb_ptr + src, mask=valid, other=0).to(tl.float32) / 255.0
    g = tl.load(rgb_ptr + src + 1, mask=valid, other=0).to(tl.float32) / 255.0
    bl = tl.load(rgb_ptr + src + 2, mask=valid, other=0).to(tl.float32) / 255.0
    base = out_ptr + b * 3 * npix + offs
    for i in tl.static_range(3):
        v = (tl.load(coef_ptr + 3 * i) * r + tl.load(coef_ptr + 3 * i + 1) * g
             + tl.load(coef_ptr + 3 * i + 2) * bl + tl.load(coef_ptr + 9 + i))
        tl.store(base + i * npix, v, mask=valid)


@triton.jit
def _postprocess_kernel(ycc_ptr, out_ptr, coef_ptr, h, w, HP, WP, BLOCK: tl.constexpr):
    """grid (cdiv(h*w, BLOCK), B); coef = YCC2RGB row-major (9) + offsets (3), fp32."""
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    valid = offs < h * w
    y = offs // w
    x = offs % w
    src = ycc_ptr + b * 3 * HP * WP + y * WP + x
    c0 = tl.load(src, mask=valid, other=0.0).to(tl.float32) - tl.load(coef_ptr + 9)
    c1 = tl.load(src + HP * WP, mask=valid, other=0.0).to(tl.float32) - tl.load(coef_ptr + 10)
    c2 = tl.load(src + 2 * HP * WP, mask=valid, other=0.0).to(tl.float32) - tl.load(coef_ptr + 11)
    dst = out_ptr + b * h * w * 3 + offs * 3
    for i in tl.static_range(3):
        v = (tl.load(coef_ptr + 3 * i) * c0 + tl.load(coef_ptr + 3 * i + 1) * c1
             + tl.load(coef_ptr + 3 * i + 2) * c2)
        v = tl.minimum(tl.maximum(v, 0.0), 1.0) * 255.0
        rd = tl.floor(v + 0.5)                         # exact for v in [0, 255]
        odd = (rd.to(tl.int32) & 1) == 1
        rd = tl.where(((rd - v) == 0.5) & odd, rd - 1.0, rd)   # ties to even, like torch.round
        tl.store(dst + i, rd.to(tl.uint8), mask=valid)


def _coef(matrix: torch.Tensor, device) -> torch.Tensor:
    off = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float32)
    return torch.cat([matrix.to(torch.float32).reshape(-1), off]).to(device)


def _block() -> int:
    return INTERPRETER_BLOCK if interpreter_active() else GPU_BLOCK


def _batched_rgb(rgb: torch.Tensor) -> torch.Tensor:
    if rgb.dim() == 3:
        rgb = rgb[None]
    if rgb.dim() != 4 or rgb.shape[-1] != 3 or rgb.dtype != torch.uint8:
        raise ValueError(f"expected uint8 (B, H, W, 3) or (H, W, 3), got {rgb.dtype} {tuple(rgb.shape)}")
    return rgb


def preprocess(rgb: torch.Tensor, multiple: int = 16) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (H, W, 3) RGB -> float32 (B, 3, H', W') YCbCr, replicate-padded."""
    rgb = _batched_rgb(rgb)
    device = check_device(rgb.device)
    B, H, W, _ = rgb.shape
    HP, WP = H + (-H) % multiple, W + (-W) % multiple
    out = torch.empty(B, 3, HP, WP, dtype=torch.float32, device=device)
    if B and H and W:
        blk = min(_block(), triton.next_power_of_2(HP * WP))
        _preprocess_kernel[(triton.cdiv(HP * WP, blk), B)](
            rgb.contiguous(), out, _coef(RGB2YCC, device), H, W, HP, WP, BLOCK=blk)
    return out


def postprocess(ycc: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, 3, H', W') YCbCr planes -> uint8 (B, h, w, 3) RGB: cropped, clamped, rounded."""
    device = check_device(ycc.device)
    B, c, HP, WP = ycc.shape
    if c != 3 or h > HP or w > WP:
        raise ValueError(f"planes {tuple(ycc.shape)} cannot be cropped to {h}x{w}")
    out = torch.empty(B, h, w, 3, dtype=torch.uint8, device=device)
    if B and h and w:
        blk = min(_block(), triton.next_power_of_2(h * w))
        _postprocess_kernel[(triton.cdiv(h * w, blk), B)](
            ycc.contiguous(), out, _coef(YCC2RGB, device), h, w, HP, WP, BLOCK=blk)
    return out


# --------------------------------------------------------------------------- torch twins

def preprocess_torch(rgb: torch.Tensor, multiple: int = 16) -> torch.Tensor:
    """The codec's preprocessing (engine.codec.preprocess), batched."""
    rgb = _batched_rgb(rgb)
    H, W = rgb.shape[1:3]
    ycc = rgb_to_ycbcr(rgb.permute(0, 3, 1, 2).float().div(255))
    ph, pw = (-H) % multiple, (-W) % multiple
    if ph or pw:
        ycc = F.pad(ycc, (0, pw, 0, ph), mode="replicate")
    return ycc


def postprocess_torch(ycc: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The codec's postprocessing (engine.codec.postprocess, colour path), batched."""
    rgb = ycbcr_to_rgb(ycc[:, :, :h, :w].float()).clamp(0, 1).mul(255).round().to(torch.uint8)
    return rgb.permute(0, 2, 3, 1).contiguous()
