from __future__ import annotations

import torch


class Runner:
    """A backend behind one interface, as Polygraphy's BaseRunner: ``encode`` /
    ``decode``, a lifecycle (``close()``, or a ``with`` block), and capabilities
    declared here rather than probed: ``precision`` (what the networks run in, once
    resolved) and ``profiles`` (the shapes a TensorRT build accepts: ``{net: {input:
    {"min", "opt", "max"}}}``; None where any shape runs, engine/io/tiling.py and
    engine/runtime/executors.py read it)."""
    name = "base"
    device: torch.device
    precision: str | None = None
    profiles: dict | None = None
    closed = False

    def encode(self, ycc: torch.Tensor):
        raise NotImplementedError

    def decode(self, bits: torch.Tensor, levels: torch.Tensor, cbits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _release(self) -> None:
        """Drop the backend's sessions, engines or networks (each runner says which)."""

    def close(self) -> None:
        """Free what the runner holds; a closed runner does not run again.  Safe to call twice."""
        if not self.closed:
            self._release()
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
