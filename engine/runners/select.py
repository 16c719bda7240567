"""``backend="auto"``: the fastest backend whose artifacts are usable here.

Order, for checkpoint quality ``q``:

1. **tensorrt** when ``import tensorrt`` works, torch sees a CUDA GPU, the
   device is CUDA (or unspecified), and the engines in the build dir match ``q``
   (fingerprint, TensorRT version, GPU model).
2. **openvino** on the CPU (no CUDA device asked for or visible) when the networks may
   run in bf16 (``precision`` "auto" on a CPU with bf16 matrix units, or "bf16"),
   OpenVINO is installed and its artifacts match ``q``: there it is several times
   faster than ONNX Runtime (README, "Speed").  Without the units OpenVINO would run
   fp32, measured no faster than ONNX Runtime end to end, so ONNX Runtime stays.
3. **onnxruntime** when it is installed and its artifacts in the build dir match
   ``q`` (on a CUDA device only if onnxruntime has the CUDA execution provider:
   the CPU provider would be slower than torch on the GPU).
4. **torch** otherwise.

When OpenVINO would have been chosen but cannot be (not installed, broken, not built)
and ONNX Runtime runs instead, a one-line warning says why.

Missing artifacts are not an error: auto falls through to the next backend
(ultimately torch, which needs nothing built).  *Stale* artifacts are: when a
backend's folder exists but was built from another checkpoint (or its files
changed), ``ArtifactMismatch`` is raised with the rebuild command instead of
silently running something slower or wrong.  Run ``python -m engine.build``
again, or delete the folder, to clear it.
"""
from __future__ import annotations

import warnings

import torch

from ..errors import ArtifactMismatch, BackendUnavailable


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


def _on_cpu(device: str | None) -> bool:
    if device is None:
        return not torch.cuda.is_available()
    return torch.device(device).type == "cpu"


def openvino_preferred(device: str | None, precision: str) -> tuple[bool, str]:
    """(True, "") where auto should run OpenVINO, given its artifacts; else (False, why
    not): "" where it is simply not the better choice (a GPU, fp32/fp16 asked for, a CPU
    without bf16 matrix units), else one line (OpenVINO missing or broken)."""
    if not _on_cpu(device) or precision not in ("auto", "bf16"):
        return False, ""
    if precision == "auto":
        from ..cpu import has_bf16_matrix
        if not has_bf16_matrix():
            return False, ""
    from .ov_runner import import_openvino
    try:
        import_openvino()
    except BackendUnavailable as ex:
        return False, str(ex)
    return True, ""


def fallback_note(why: str, to: str = "onnxruntime") -> None:
    """The one line that says OpenVINO was passed over, and why."""
    warnings.warn(f"backend auto: OpenVINO (bf16) not used, running {to}: {why}", RuntimeWarning, stacklevel=4)


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


def auto_backend(q, device: str | None = None, build_dir=None, precision: str = "fp32",
                 openvino: bool = True) -> str:
    """The backend ``backend="auto"`` runs (see the module doc).  ``precision`` is the
    codec's ("auto" = the chosen backend's own default); ``openvino=False`` skips
    OpenVINO (after its runner failed to start)."""
    why = ""
    if openvino:
        ok, why = openvino_preferred(device, precision)
        if ok:
            from ..artifacts import OPENVINO_IR_PRECISION, rebuild_hint
            if _check(q, "openvino", OPENVINO_IR_PRECISION, build_dir):
                return "openvino"
            why = f"no openvino artifacts; build them with: {rebuild_hint(q, 'openvino', OPENVINO_IR_PRECISION, build_dir)}"
    if precision == "bf16":
        raise BackendUnavailable(f"precision bf16 runs on the openvino backend only, which cannot run here: "
                                 f"{why or 'a GPU is in use'}")
    precision = "fp32" if precision == "auto" else precision
    backend = _auto_without_openvino(q, device, build_dir, precision)
    if why and backend == "onnxruntime":
        fallback_note(why)
    return backend


def _auto_without_openvino(q, device: str | None, build_dir, precision: str) -> str:
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
