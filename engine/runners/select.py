"""``backend="auto"``: the fastest backend whose artifacts are usable here.

Order, for checkpoint quality ``q``:

1. **tensorrt** when ``import tensorrt`` works, torch sees a CUDA GPU, the
   device is CUDA (or unspecified), and the engines in the build dir match ``q``
   (fingerprint, TensorRT version, GPU model).
2. **onnxruntime** when it is installed and its artifacts in the build dir match
   ``q`` (on a CUDA device only if onnxruntime has the CUDA execution provider:
   the CPU provider would be slower than torch on the GPU).
3. **torch** otherwise.

Missing artifacts are not an error: auto falls through to the next backend
(ultimately torch, which needs nothing built).  *Stale* artifacts are: when a
backend's folder exists but was built from another checkpoint (or its files
changed), ``ArtifactMismatch`` is raised with the rebuild command instead of
silently running something slower or wrong.  Run ``python -m engine.build``
again, or delete the folder, to clear it.
"""
from __future__ import annotations

import torch

from .base import ArtifactMismatch


def _ort_ready(device: str | None) -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    if device is not None and torch.device(device).type == "cuda":
        return "CUDAExecutionProvider" in ort.get_available_providers()
    return device is None or torch.device(device).type == "cpu"


def _trt_ready(device: str | None) -> bool:
    if device is not None and torch.device(device).type != "cuda":
        return False
    from ..trt_build import tensorrt_importable

    return tensorrt_importable() and torch.cuda.is_available()


def _check(q, backend: str, precision: str, build_dir, expect=None) -> bool:
    """True when usable, False when missing; ArtifactMismatch when stale."""
    from ..artifacts import artifact_dir, artifact_status, rebuild_hint

    status, reason = artifact_status(q, backend, precision, build_dir, expect)
    if status == "stale":
        raise ArtifactMismatch(
            f"{backend} {precision} artifacts for model {q.model!r} quality {q.quality} in "
            f"{artifact_dir(q.model, q.quality, backend, precision, build_dir)} do not match ({reason}); "
            f"rebuild with: {rebuild_hint(q, backend, precision, build_dir)}")
    return status == "ok"


def auto_backend(q, device: str | None = None, build_dir=None, precision: str = "fp32") -> str:
    if _trt_ready(device):
        from ..trt_build import tensorrt_environment

        env = tensorrt_environment(torch.device(device).index if device else None)
        if _check(q, "tensorrt", precision, build_dir,
                  {"backend_version": env["backend_version"], "device": env["device"]}):
            return "tensorrt"
    # ORT on the CPU while torch could use a GPU would be a step down.
    if device is None and torch.cuda.is_available():
        ort_device = "cuda"
    else:
        ort_device = device
    if _ort_ready(ort_device) and _check(q, "onnxruntime", precision, build_dir):
        return "onnxruntime"
    return "torch"
