from __future__ import annotations

import torch


class BackendUnavailable(RuntimeError):
    """The requested backend (or its artifacts) is not available on this machine."""


class ArtifactMismatch(BackendUnavailable):
    """Build artifacts exist but do not belong to the checkpoint (or options) asked for.

    Raised instead of silently running stale ONNX graphs / TensorRT engines; the
    message carries the ``python -m engine.build ...`` command that rebuilds them.
    """


class Runner:
    name = "base"
    device: torch.device

    def encode(self, ycc: torch.Tensor):
        raise NotImplementedError

    def decode(self, bits: torch.Tensor, levels: torch.Tensor, cbits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GraphRunner(Runner):
    """A runner over two exported graphs, "encoder" and "decoder", run by ``_run(net, inputs)``."""

    def _run(self, net: str, inputs: tuple) -> tuple:
        raise NotImplementedError

    @torch.inference_mode()
    def encode(self, ycc):
        return self._run("encoder", (ycc,))

    @torch.inference_mode()
    def decode(self, bits, levels, cbits):
        return self._run("decoder", (bits, levels, cbits))[0]
