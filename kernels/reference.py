"""Plain-torch bit path: the reference every fast path is checked against.

Layout (docs/bitstream.md, "payload"): for one image, locations in raster order
(row y, then column x); at each location the *kept* channels 0..k-1 in channel
order, k = level * n // (L - 1); one bit each, ``e > 0.5``; packed MSB-first into
bytes, the last byte zero-padded.  CbCr codes use the same order with all m
channels kept.  Masked-out bits never reach the payload.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine import importance


@dataclass
class Packed:
    """One image's bit-path output."""
    levels: np.ndarray        # (h, w) uint8
    ybits: bytes              # kept Y bits, packed MSB-first
    ynbits: int               # number of valid bits in ybits
    cbits: bytes              # CbCr bits, packed MSB-first
    cnbits: int


def packed_from_arrays(lv: np.ndarray, ynbits: np.ndarray, ybuf: np.ndarray, cnbits: int,
                       cbuf: np.ndarray) -> list[Packed]:
    """Host arrays of a batch -- levels (B, 1, h, w) uint8, valid Y bits per image (B,),
    Y payloads (B, Ymax) and CbCr payloads (B, Cmax) uint8, each row zero-padded -- ->
    one :class:`Packed` per image.  Every field is copied out, so the arrays may be
    reused buffers."""
    nb = np.asarray(ynbits).astype(np.int64)
    cbytes = (int(cnbits) + 7) // 8
    return [Packed(lv[i, 0].copy(), ybuf[i, :(nb[i] + 7) // 8].tobytes(), int(nb[i]),
                   cbuf[i, :cbytes].tobytes(), int(cnbits)) for i in range(lv.shape[0])]


def quantize(p: torch.Tensor, levels: int) -> torch.Tensor:
    """(B, 1, h, w) importance -> uint8 levels."""
    return importance.quantize_levels(p, levels).to(torch.uint8)


def pack(e: torch.Tensor, p: torch.Tensor, ec: torch.Tensor, n: int, levels: int) -> list[Packed]:
    """Sigmoid features e (B, n, h, w), importance p (B, 1, h, w), CbCr features
    ec (B, m, h/2, w/2) -> one :class:`Packed` per image.

    The thresholds run where the tensors are; the selection and packing in numpy on the
    host.  CPU tensors go to numpy at once: torch's boolean indexing of the permuted
    bits, and its intra-op threads on a busy machine, made this stage cost as much as a
    bf16 encoder (issue #25); numpy gives the same values on one thread."""
    q = _host(p, lambda t: quantize(t, levels), lambda a: _quantize_np(a, levels))
    yb = _host(e, lambda t: t > 0.5, lambda a: a > 0.5)
    cb = _host(ec, lambda t: t > 0.5, lambda a: a > 0.5)
    need = importance.required_level(n, levels).numpy().astype(np.uint8)    # (n,) level channel k needs
    out = []
    for i in range(yb.shape[0]):
        keep = q[i, 0][:, :, None] >= need                                  # channel_mask, (h, w, n)
        ysel = yb[i].transpose(1, 2, 0)[keep]
        csel = cb[i].transpose(1, 2, 0).reshape(-1)
        out.append(Packed(q[i, 0].copy(), np.packbits(ysel).tobytes(), int(ysel.size),
                          np.packbits(csel).tobytes(), int(csel.size)))
    return out


def _host(t: torch.Tensor, on_device, on_host) -> np.ndarray:
    """``on_host(numpy array)`` for a CPU tensor, else ``on_device(t)`` copied to the host."""
    if t.device.type == "cpu":
        return on_host(t.detach().numpy())
    return on_device(t).cpu().numpy()


def _quantize_np(p: np.ndarray, levels: int) -> np.ndarray:
    """:func:`quantize` in numpy: the same float32 product, floor and clamp."""
    return np.clip(np.floor(p * np.float32(levels)), 0, levels - 1).astype(np.uint8)


def expected_ybits(levels: np.ndarray, n: int, L: int) -> int:
    return int(levels.astype(np.int64).sum()) * importance.group_size(n, L)


def unpack(items: list[Packed], n: int, m: int, levels: int, dtype=torch.float32, device="cpu"):
    """Packed images (all the same h, w) -> levels (B, 1, h, w) float, dense Y bits
    (B, n, h, w) with zeros where masked, CbCr bits (B, m, h/2, w/2)."""
    B = len(items)
    h, w = items[0].levels.shape
    q = torch.from_numpy(np.stack([it.levels for it in items])).to(device).view(B, 1, h, w)
    mask = importance.channel_mask(q.to(torch.int64), n, levels).bool().permute(0, 2, 3, 1)
    ybits = np.concatenate([np.unpackbits(np.frombuffer(it.ybits, np.uint8), count=it.ynbits) for it in items])
    dense = torch.zeros(B, h, w, n, dtype=dtype, device=device)
    dense[mask] = torch.from_numpy(ybits).to(device=device, dtype=dtype)
    hc, wc = (h + 1) // 2, (w + 1) // 2
    cbits = np.stack([np.unpackbits(np.frombuffer(it.cbits, np.uint8), count=it.cnbits) for it in items])
    cdense = torch.from_numpy(cbits).to(device=device, dtype=dtype).view(B, hc, wc, m).permute(0, 3, 1, 2)
    return q.to(dtype), dense.permute(0, 3, 1, 2).contiguous(), cdense.contiguous()
