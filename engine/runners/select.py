"""``backend="auto"``: the fastest backend whose artifacts are usable here."""
from __future__ import annotations


def auto_backend(q, device: str | None = None) -> str:
    # engine.build (issue 5) extends this: TensorRT on a GPU with TensorRT,
    # ONNX Runtime on the CPU when its artifacts exist.
    return "torch"
