"""PyTorch eager: the reference runner (CPU, or CUDA when asked / available).

``precision="fp16"`` runs the networks in half precision (meant for CUDA, where it
is the fast path without TensorRT); inputs and outputs stay float32 like every
other runner's.

``precision="fp32"`` on CUDA means real float32: cuDNN's TF32 mode is switched off
(``torch.backends.cudnn.allow_tf32 = False``, process-wide, when the runner is
built).  TF32 rounds conv inputs to 10 mantissa bits; measured on an H100 it moved
encoder outputs by up to 1.1e-3 against the CPU, flipping 181 of 2.3 M code bits,
and made batched encodes differ from single-image ones.

``compile`` wraps both networks in ``torch.compile``: "default" (inductor kernels)
or "reduce-overhead" (the same, replayed as CUDA graphs: one launch per network
call instead of one per layer, which is where small batches lose time on a GPU).
"off" (default) is eager.  A compiled network is recompiled per input shape; the
outputs are the eager ones within float rounding (tests/test_compile.py).  Whether
it pays is measured on the card by bench/gpu_session.sh (``--compile``).
"""
from __future__ import annotations

import torch

from .. import settings
from ..net.checkpoint import load_net
from .base import Runner

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
COMPILE_MODES = settings.available_compile_modes()


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, q, device: str | None = None, threads: int | None = None, precision: str = "fp32",
                 compile: str = "off", **_):
        if precision not in _DTYPES:
            raise ValueError(f"precision must be one of {sorted(_DTYPES)}, got {precision!r}")
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, got {compile!r}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if threads:
            from ..forksafe import torch_threads
            torch.set_num_threads(torch_threads(threads))      # 1 in a forked child (engine/forksafe.py)
        self.precision = precision
        self.dtype = _DTYPES[precision]
        if self.device.type == "cuda" and precision == "fp32":
            torch.backends.cudnn.allow_tf32 = False
        self.net = load_net(q).to(self.device, self.dtype)
        self.compile = compile
        self._encoder, self._decoder = self.net.encoder, self.net.decoder
        if compile != "off":
            self._encoder = torch.compile(self.net.encoder, mode=compile, dynamic=False)
            self._decoder = torch.compile(self.net.decoder, mode=compile, dynamic=False)

    def _release(self) -> None:
        self.net = self._encoder = self._decoder = None

    @torch.inference_mode()
    def encode(self, ycc):
        return tuple(self._owned(t) for t in self._encoder(ycc.to(self.device, self.dtype)))

    @torch.inference_mode()
    def decode(self, bits, levels, cbits):
        d, t = self.device, self.dtype
        return self._owned(self._decoder(bits.to(d, t), levels.to(d, t), cbits.to(d, t)))

    def _owned(self, t):
        """float32 output the caller owns: a CUDA graph's outputs (reduce-overhead) live in
        its memory pool until the next replay, so fp32 ones are copied out (fp16 ones are
        copied by the cast anyway)."""
        return t.clone() if self.compile == "reduce-overhead" and t.dtype == torch.float32 else t.float()
