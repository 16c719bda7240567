"""Build inference artifacts: ``python -m engine.build``.

    python -m engine.build [--model small] [--quality 1 2 ...] [--backend auto|onnxruntime|openvino|tensorrt|torch]
                           [--precision fp32|fp16] [--out DIR] [--root DIR] [--force]
                           [--profile-batch 1,1,8] [--profile-height 16,512,2048] [--profile-width 16,768,2048]

Layout (one folder per model, quality, backend and precision)::

    <build dir>/<model>/q<quality>/<backend>-<precision>/
        manifest.json                  always (the torch backend has nothing else)
        encoder.onnx, decoder.onnx     onnxruntime and tensorrt
        encoder.engine, decoder.engine tensorrt (serialized plans)
        encoder.xml/.bin, decoder.xml/.bin   openvino (IR, float32 weights; its folder is
                                       always openvino-fp32: bf16 is chosen when it runs)
    <build dir>/tensorrt/timing-<trt version>-<gpu>.cache   TensorRT timing cache, shared

The build dir is ``$ENGINE_BUILD_DIR`` or the repository's top-level ``build/``.
All qualities of a model share weights except the importance map's last bias,
so the graphs are exported per quality.

A build is skipped ("up to date") when the folder's manifest has the same
checkpoint fingerprint and the same options and every file matches its recorded
sha256.  Runners call :func:`load_artifacts`, which refuses missing artifacts
(``BackendUnavailable``) and stale ones (``ArtifactMismatch``) with the command
that (re)builds them.

``--backend auto`` builds for TensorRT when ``import tensorrt`` works and a CUDA
GPU is visible, else for ONNX Runtime, and also for OpenVINO where ``backend="auto"``
would run it (:func:`auto_build_backends`: OpenVINO installed and a CPU with bf16
matrix units).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import engine

from .net.checkpoint import CHECKPOINT_DIR, DEFAULT_MODEL, qualities as list_qualities, resolve
from .errors import BackendUnavailable
from .artifacts import (  # noqa: F401 - the build's public names, defined beside the runners' loader
    ARTIFACT_FORMAT, MANIFEST, BUILD_BACKENDS, BUILD_DIR_ENV, GRAPH_SHUFFLES, ARTIFACT_FILES, OPENVINO_IR_PRECISION,
    default_build_dir, artifact_dir, model_root, rebuild_command, rebuild_hint, file_sha256, file_record,
    read_manifest, write_manifest, build_options, file_problems, manifest_status, artifact_status,
    load_artifacts)

# ---------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------

@dataclass
class BuildResult:
    model: str
    quality: int
    backend: str
    precision: str
    directory: Path
    status: str                     # "built" | "up to date"
    seconds: float = 0.0
    manifest: dict = field(default_factory=dict, repr=False)


def resolve_backend(backend: str = "auto") -> str:
    """``auto``: tensorrt when importable and CUDA is available, else onnxruntime."""
    backend = (backend or "auto").lower()
    if backend not in BUILD_BACKENDS:
        raise ValueError(f"backend must be one of {BUILD_BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    from .trt_build import tensorrt_importable
    import torch

    return "tensorrt" if tensorrt_importable() and torch.cuda.is_available() else "onnxruntime"


def auto_build_backends() -> list[str]:
    """What ``--backend auto`` builds: :func:`resolve_backend`'s choice, plus OpenVINO
    where the runtime would pick it (engine/runners/select.py): then ONNX Runtime stays
    built as its fallback."""
    from .runners.select import openvino_preferred

    first = resolve_backend("auto")
    return [first, "openvino"] if first == "onnxruntime" and openvino_preferred(None, "auto")[0] else [first]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _base_manifest(q, backend: str, precision: str, options: dict) -> dict:
    import torch

    return {
        "format": ARTIFACT_FORMAT,
        "model": q.model,
        "quality": q.quality,
        "imp_bias": q.imp_bias,
        "fingerprint": q.fingerprint,
        "config": asdict(q.config),
        "backend": backend,
        "precision": precision,
        "options": options,
        "engine_version": engine.__version__,
        "torch_version": torch.__version__,
    }


def _export_pair(q, net, directory: Path, precision: str, opset: int, exporter: str,
                 check: bool, log, shuffles: str = "native") -> dict:
    """Export encoder.onnx and decoder.onnx; return the ORT smoke-check results."""
    from .net.export import check_onnx_against_torch, export_onnx

    meta = {"engine.net.model": q.model, "engine.quality": q.quality, "engine.fingerprint": q.fingerprint}
    checks = {}
    for name, module in (("encoder", net.encoder), ("decoder", net.decoder)):
        path = directory / f"{name}.onnx"
        t = time.perf_counter()
        export_onnx(name, module, q.config, path, precision=precision, opset=opset, exporter=exporter,
                    shuffles=shuffles, metadata=meta)
        log(f"  exported {path.name} in {time.perf_counter() - t:.1f}s")
        if check:
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                checks[name] = {"skipped": "onnxruntime is not installed"}
                continue
            checks[name] = check_onnx_against_torch(name, path, module, q.config, precision)
    return checks


def build_quality(q, backend: str = "onnxruntime", precision: str = "fp32", out=None, *,
                  profile=None, opset: int | None = None, exporter: str = "dynamo", force: bool = False,
                  check: bool = True, workspace_mib: int | None = None, shuffles: str | None = None,
                  log=print) -> BuildResult:
    """Build (or find up to date) the artifacts of one checkpoint quality.
    ``shuffles`` overrides ``GRAPH_SHUFFLES[backend]`` (for A/B measurements)."""
    from .net.export import DEFAULT_OPSET, DEFAULT_PROFILE, EXPORTERS, IO_DTYPE, PRECISIONS, net_profiles, symbolic_io

    backend = resolve_backend(backend)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if backend == "torch" and precision != "fp32":
        raise ValueError("the torch backend runs the checkpoint in fp32; use --precision fp32")
    if backend == "openvino" and precision != OPENVINO_IR_PRECISION:
        raise ValueError(f"OpenVINO's IR is built in {OPENVINO_IR_PRECISION} only (--precision "
                         f"{OPENVINO_IR_PRECISION}); bf16 is chosen when it runs: Codec(precision=...)")
    opset = int(opset or DEFAULT_OPSET)
    profile = profile or DEFAULT_PROFILE
    build_dir = Path(out) if out is not None else default_build_dir()
    directory = artifact_dir(q.model, q.quality, backend, precision, build_dir)
    label = f"{q.model} q{q.quality} {backend}-{precision}"

    extra: dict = {"shuffles": shuffles or GRAPH_SHUFFLES[backend]} if backend in GRAPH_SHUFFLES else {}
    trt_env: dict = {}
    if backend == "openvino":
        from .ov_build import openvino_version

        openvino_version()                   # raises BackendUnavailable without OpenVINO
    if backend == "tensorrt":
        from .trt_build import tensorrt_environment

        trt_env = tensorrt_environment()     # raises BackendUnavailable without TensorRT / CUDA
        extra = {**extra, "profile": profile.to_dict(), "tensorrt": trt_env["backend_version"],
                 "device": trt_env["device"], "workspace_mib": workspace_mib}
    options = build_options(backend, precision, opset, exporter, extra)

    old = read_manifest(directory)
    if not force and old and old.get("options") == options:
        status, _ = manifest_status(old, directory, q.fingerprint, backend, precision)
        if status == "ok":
            log(f"{label}: up to date ({directory})")
            return BuildResult(q.model, q.quality, backend, precision, directory, "up to date", 0.0, old)

    t0 = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)     # a half-done rebuild reads as "missing"
    manifest = _base_manifest(q, backend, precision, options)
    manifest["io"] = symbolic_io(q.config)
    manifest["io_dtype"] = IO_DTYPE

    if backend == "torch":
        import torch

        manifest.update(backend_version=torch.__version__, files={}, profiles=None,
                        note="nothing to build: the torch backend runs the checkpoint directly")
    else:
        from .net.checkpoint import load_net

        net = load_net(q)
        manifest.update(opset=opset, exporter=f"torch.onnx.export(dynamo={exporter == 'dynamo'})")
        manifest["checks"] = _export_pair(q, net, directory, precision, opset, exporter,
                                          check and backend != "openvino", log, options["shuffles"])
        if backend == "openvino":
            from .ov_build import check_ir_against_torch, onnx_to_ir, openvino_version

            for name, module in (("encoder", net.encoder), ("decoder", net.decoder)):
                onnx_path = directory / f"{name}.onnx"
                onnx_to_ir(onnx_path, directory / f"{name}.xml")
                onnx_path.unlink()
                if check:
                    manifest["checks"][name] = check_ir_against_torch(name, directory / f"{name}.xml", module,
                                                                      q.config)
            manifest.update(backend_version=openvino_version(),
                            profiles={"dynamic": True, "multiple": 16,
                                      "note": "OpenVINO takes any batch and any sides that are multiples of 16"})
        elif backend == "onnxruntime":
            import onnxruntime as ort

            manifest.update(backend_version=ort.__version__,
                            profiles={"dynamic": True, "multiple": 16,
                                      "note": "ONNX Runtime takes any batch and any sides that are multiples of 16"})
        else:
            from .trt_build import build_engine, timing_cache_path

            profiles = net_profiles(q.config, profile)
            cache = timing_cache_path(build_dir, trt_env["backend_version"], trt_env["device"])
            for name in ("encoder", "decoder"):
                t = time.perf_counter()
                build_engine(directory / f"{name}.onnx", directory / f"{name}.engine", name, profiles[name],
                             cache, workspace_mib=workspace_mib)
                log(f"  built {name}.engine in {time.perf_counter() - t:.1f}s")
            manifest.update(backend_version=trt_env["backend_version"], device=trt_env["device"],
                            compute_capability=trt_env.get("compute_capability"),
                            profiles=profiles, profile=profile.to_dict(),
                            timing_cache=os.path.relpath(cache, directory),
                            strongly_typed=True)
        manifest["files"] = {n: file_record(directory / n) for n in ARTIFACT_FILES[backend]}

    seconds = time.perf_counter() - t0
    manifest.update(built_at=_now(), build_seconds=round(seconds, 3),
                    command=rebuild_command(q.model, q.quality, backend, precision, build_dir, model_root(q)))
    write_manifest(directory, manifest)
    log(f"{label}: built in {seconds:.1f}s ({directory})")
    return BuildResult(q.model, q.quality, backend, precision, directory, "built", seconds, manifest)


def build(model: str = DEFAULT_MODEL, quality=None, backend: str = "auto", precision: str = "fp32",
          out=None, root=None, **kw) -> list[BuildResult]:
    """Build every requested quality (default: all of the model's ladder)."""
    root = Path(root) if root is not None else None
    if isinstance(quality, int):
        quals = [quality]
    elif quality is None:
        model_dir = Path(root or CHECKPOINT_DIR) / model
        if not (model_dir / "model.json").exists():
            resolve(model, None, root)     # raises the "unknown model" error
        quals = list_qualities(model, root, retired=True)   # retired rungs still decode
    else:
        quals = [int(x) for x in quality]
    if (backend or "auto").lower() == "auto":      # OpenVINO's IR is fp32 only (it runs bf16 from it)
        backends = [b for b in auto_build_backends() if b != "openvino" or precision == OPENVINO_IR_PRECISION]
    else:
        backends = [resolve_backend(backend)]
    return [build_quality(resolve(model, qq, root, decode=True), be, precision, out, **kw)
            for be in backends for qq in quals]


def _qualities_arg(values) -> list[int] | None:
    if not values:
        return None
    out = []
    for v in values:
        out += [int(x) for x in str(v).split(",") if x.strip()]
    return out


def main(argv=None) -> int:
    from .net.export import DEFAULT_OPSET, DEFAULT_PROFILE, EXPORTERS, PRECISIONS, ShapeProfile

    ap = argparse.ArgumentParser(prog="python -m engine.build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model name (default: %(default)s)")
    ap.add_argument("--quality", nargs="+", help="qualities to build (default: every quality of the model)")
    ap.add_argument("--backend", default="auto", choices=BUILD_BACKENDS)
    ap.add_argument("--precision", default="fp32", choices=PRECISIONS)
    ap.add_argument("--out", default=None, help=f"build dir (default: ${BUILD_DIR_ENV} or {default_build_dir()})")
    ap.add_argument("--root", default=None, help=f"models root (default: {CHECKPOINT_DIR})")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    ap.add_argument("--exporter", default="dynamo", choices=EXPORTERS)
    ap.add_argument("--profile-batch", default=",".join(map(str, DEFAULT_PROFILE.batch)), metavar="MIN,OPT,MAX")
    ap.add_argument("--profile-height", default=",".join(map(str, DEFAULT_PROFILE.height)), metavar="MIN,OPT,MAX")
    ap.add_argument("--profile-width", default=",".join(map(str, DEFAULT_PROFILE.width)), metavar="MIN,OPT,MAX")
    ap.add_argument("--workspace-mib", type=int, default=None, help="TensorRT workspace pool limit")
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    ap.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs torch smoke check")
    a = ap.parse_args(argv)
    try:
        profile = ShapeProfile(a.profile_batch, a.profile_height, a.profile_width)
        build(a.model, _qualities_arg(a.quality), a.backend, a.precision, a.out, a.root,
              profile=profile, opset=a.opset, exporter=a.exporter, force=a.force, check=not a.no_check,
              workspace_mib=a.workspace_mib)
    except (BackendUnavailable, ValueError) as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
