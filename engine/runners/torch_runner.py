"""PyTorch eager: the reference runner (CPU, or CUDA when asked / available).

``precision="fp16"`` runs the networks in half precision (meant for CUDA, where it
is the fast path without TensorRT); inputs and outputs stay float32 like every
other runner's.

``precision="fp32"`` on CUDA means real float32: cuDNN's TF32 mode is switched off
(``torch.backends.cudnn.allow_tf32 = False``, process-wide, when the runner is
built).  TF32 rounds conv inputs to 10 mantissa bits; measured on an H100 it moved
encoder outputs by up to 1.1e-3 against the CPU, flipping 181 of 2.3 M code bits,
and made batched encodes differ from single-image ones.
"""
from __future__ import annotations

import torch

from ..checkpoint import load_net
from .base import Runner

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, q, device: str | None = None, threads: int | None = None, precision: str = "fp32", **_):
        if precision not in _DTYPES:
            raise ValueError(f"precision must be one of {sorted(_DTYPES)}, got {precision!r}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if threads:
            torch.set_num_threads(threads)
        self.precision = precision
        self.dtype = _DTYPES[precision]
        if self.device.type == "cuda" and precision == "fp32":
            torch.backends.cudnn.allow_tf32 = False
        self.net = load_net(q).to(self.device, self.dtype)

    @torch.inference_mode()
    def encode(self, ycc):
        out = self.net.encoder(ycc.to(self.device, self.dtype))
        return tuple(t.float() for t in out)

    @torch.inference_mode()
    def decode(self, bits, levels, cbits):
        d, t = self.device, self.dtype
        return self.net.decoder(bits.to(d, t), levels.to(d, t), cbits.to(d, t)).float()
