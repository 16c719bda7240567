from __future__ import annotations

import torch


class BackendUnavailable(RuntimeError):
    """The requested backend (or its artifacts) is not available on this machine."""


class Runner:
    name = "base"
    device: torch.device

    def encode(self, ycc: torch.Tensor):
        raise NotImplementedError

    def decode(self, bits: torch.Tensor, levels: torch.Tensor, cbits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
