"""Backends that run the networks, one small runner each behind one interface.

A runner is built for one checkpoint quality (:class:`engine.net.checkpoint.Quality`)
and exposes::

    encode(ycc)                 # (B,3,H,W) float32 YCbCr in [0,1], H,W multiples of 16
        -> e (B,n,H/8,W/8), p (B,1,H/8,W/8), ec (B,m,H/16,W/16)   sigmoid outputs
    decode(bits, levels, cbits) # dense 0/1 Y bits, float levels, 0/1 CbCr bits
        -> ycc (B,3,H,W) float32 (unclamped)

Tensors in and out are torch tensors on ``runner.device``.  The bit path (mask,
binarize, pack) is not part of a runner: it lives in :mod:`kernels`.
"""
from __future__ import annotations

from .. import settings
from ..errors import ArtifactMismatch, BackendUnavailable  # noqa: F401 - the runners' errors, importable here
from .base import Runner  # noqa: F401


def runner_precision(backend: str, precision: str | None) -> str:
    """A codec's precision ("auto" = the backend's own default) -> what the runner gets:
    OpenVINO resolves "auto" itself (bf16 where the CPU has the units), every other
    runner takes fp32 for it; "bf16" is OpenVINO's alone."""
    p = precision or "fp32"
    if backend == "openvino":
        return p
    if p == "bf16":
        raise ValueError(f"precision 'bf16' is for the openvino backend, not {backend!r}")
    return "fp32" if p == "auto" else p


def make_runner(q, backend: str = "auto", device: str | None = None, **kw) -> Runner:
    backend = settings.check("backend", backend or "auto")
    precision = kw.get("precision") or "fp32"
    if backend == "auto":
        from .select import auto_backend, fallback_note
        backend = auto_backend(q, device, build_dir=kw.get("build_dir"), precision=precision)
        if backend == "openvino":
            from .ov_runner import OvRunner
            try:
                return OvRunner(q, device=device, **kw)
            except Exception as ex:  # noqa: BLE001 - a broken OpenVINO: one line, then ONNX Runtime
                backend = auto_backend(q, device, build_dir=kw.get("build_dir"), precision=precision,
                                       openvino=False)
                fallback_note(f"its runner failed: {type(ex).__name__}: {' '.join(str(ex).split())[:300]}", backend)
    kw["precision"] = runner_precision(backend, precision)
    if backend == "openvino":
        from .ov_runner import OvRunner
        return OvRunner(q, device=device, **kw)
    if backend == "torch":
        from .torch_runner import TorchRunner
        return TorchRunner(q, device=device, **kw)
    if backend == "onnxruntime":
        from .ort_runner import OrtRunner
        return OrtRunner(q, device=device, **kw)
    from .trt_runner import TrtRunner
    return TrtRunner(q, device=device, **kw)
