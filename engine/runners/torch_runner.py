"""PyTorch eager: the reference runner (CPU, or CUDA when asked / available)."""
from __future__ import annotations

import torch

from ..checkpoint import load_net
from .base import Runner


class TorchRunner(Runner):
    name = "torch"

    def __init__(self, q, device: str | None = None, threads: int | None = None, **_):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if threads:
            torch.set_num_threads(threads)
        self.net = load_net(q).to(self.device)

    @torch.inference_mode()
    def encode(self, ycc):
        return self.net.encoder(ycc.to(self.device, torch.float32))

    @torch.inference_mode()
    def decode(self, bits, levels, cbits):
        d = self.device
        return self.net.decoder(bits.to(d, torch.float32), levels.to(d, torch.float32), cbits.to(d, torch.float32))
