"""Importance map -> quantized levels -> channel mask (Li et al., CVPR 2018).

Convention (the bitstream depends on it, see docs/bitstream.md):

* ``L`` levels, ``n`` binary channels, ``n`` must be a multiple of ``L - 1``;
  ``g = n // (L - 1)`` channels per level step.
* level ``q = min(floor(p * L), L - 1)`` for an importance ``p`` in [0, 1]
  (so p in [k/L, (k+1)/L) gives level k, and p = 1 gives L - 1).
* level ``q`` keeps the first ``q * g`` channels: level 0 keeps none (flat
  regions cost only their level), level ``L - 1`` keeps all ``n``.
* channel ``k`` is kept iff ``q >= k // g + 1``.
"""
from __future__ import annotations

import torch


def group_size(n: int, levels: int) -> int:
    if levels < 2 or n % (levels - 1):
        raise ValueError(f"n={n} must be a multiple of levels-1={levels - 1}")
    return n // (levels - 1)


def quantize_levels(p: torch.Tensor, levels: int) -> torch.Tensor:
    """Importance in [0, 1] -> integer level in [0, L-1] (same dtype as input is not kept: int64)."""
    return torch.clamp(torch.floor(p * levels), 0, levels - 1).to(torch.int64)


def required_level(n: int, levels: int, device=None) -> torch.Tensor:
    """(n,) level a location needs for channel k to be kept."""
    g = group_size(n, levels)
    return torch.arange(n, device=device) // g + 1


def channel_mask(q: torch.Tensor, n: int, levels: int) -> torch.Tensor:
    """Hard mask (B, n, h, w) of 0/1 floats from integer levels (B, 1, h, w)."""
    r = required_level(n, levels, q.device).view(1, n, 1, 1)
    return (q >= r).to(torch.float32)


def soft_mask(p: torch.Tensor, n: int, levels: int) -> torch.Tensor:
    """Mask with the hard value forward and Li et al.'s ramp gradient backward.

    Channel k ramps from 0 to 1 while p*L goes from r_k - 1 to r_k, where r_k
    is its required level; the forward value equals :func:`channel_mask`.
    """
    r = required_level(n, levels, p.device).view(1, n, 1, 1).to(p.dtype)
    ramp = torch.clamp(p * levels - r + 1, 0.0, 1.0)
    hard = channel_mask(quantize_levels(p, levels), n, levels).to(p.dtype)
    return hard + ramp - ramp.detach()


def boost(p: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Importance ``p`` with its logit raised by ``b`` (broadcast to p; regions of interest,
    engine/roi.py): ``sigmoid(logit(p) + b)`` where ``b`` != 0, ``p`` itself (the same
    values, bit for bit) where ``b`` == 0.  Computed in float32, returned in p's dtype."""
    pf = p.float()
    # logit of a saturated sigmoid output: p is clamped into float32's open (0, 1) first
    pc = pf.clamp(1e-30, 1 - 2.0 ** -24)
    raised = torch.sigmoid(torch.log(pc) - torch.log1p(-pc) + b.to(pf.dtype))
    return torch.where(b != 0, raised, pf).to(p.dtype)
