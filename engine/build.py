"""Build inference artifacts: ``python -m engine.build``.

    python -m engine.build [--model small] [--quality 1 2 ...] [--backend auto|onnxruntime|tensorrt|torch]
                           [--precision fp32|fp16] [--out DIR] [--root DIR] [--force]
                           [--profile-batch 1,1,8] [--profile-height 16,512,2048] [--profile-width 16,768,2048]

Layout (one folder per model, quality, backend and precision)::

    <build dir>/<model>/q<quality>/<backend>-<precision>/
        manifest.json                  always (the torch backend has nothing else)
        encoder.onnx, decoder.onnx     onnxruntime and tensorrt
        encoder.engine, decoder.engine tensorrt (serialized plans)
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
GPU is visible, else for ONNX Runtime.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import engine

from .checkpoint import CHECKPOINT_DIR, DEFAULT_MODEL, atomic_write_bytes, qualities as list_qualities, resolve
from .runners.base import ArtifactMismatch, BackendUnavailable

ARTIFACT_FORMAT = 1          # bump when the export code changes what a build produces
MANIFEST = "manifest.json"
BUILD_BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
BUILD_DIR_ENV = "ENGINE_BUILD_DIR"

# How each backend's graphs write pixel (un)shuffles (export.shuffles_as_convolutions).
# ONNX Runtime's CPU DepthToSpace is a generic strided transpose; the exact one-hot
# (transposed) convolution is faster there.  TensorRT keeps the native ops it maps
# to shuffle layers.
GRAPH_SHUFFLES = {"onnxruntime": "conv", "tensorrt": "native"}

ARTIFACT_FILES = {
    "torch": (),
    "onnxruntime": ("encoder.onnx", "decoder.onnx"),
    "tensorrt": ("encoder.onnx", "decoder.onnx", "encoder.engine", "decoder.engine"),
}


# ---------------------------------------------------------------------------
# Layout and manifests (pure functions)
# ---------------------------------------------------------------------------

def default_build_dir() -> Path:
    env = os.environ.get(BUILD_DIR_ENV)
    return Path(env) if env else Path(engine.__file__).resolve().parents[1] / "build"


def artifact_dir(model: str, quality: int, backend: str, precision: str = "fp32",
                 build_dir: str | os.PathLike | None = None) -> Path:
    if backend not in ARTIFACT_FILES:
        raise ValueError(f"backend must be one of {tuple(ARTIFACT_FILES)}, got {backend!r}")
    return Path(build_dir or default_build_dir()) / model / f"q{int(quality)}" / f"{backend}-{precision}"


def _model_root(q) -> Path | None:
    """The models root a Quality was resolved from (its weights sit in <root>/<model>/)."""
    model_dir = Path(q.weights).parent
    return model_dir.parent if model_dir.name == q.model else None


def rebuild_command(model: str, quality: int, backend: str = "onnxruntime", precision: str = "fp32",
                    build_dir: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> str:
    """The exact command that builds these artifacts (non-default paths spelled out)."""
    cmd = ["python", "-m", "engine.build", "--model", model, "--quality", str(int(quality)),
           "--backend", backend, "--precision", precision]
    if root is not None and Path(root).resolve() != CHECKPOINT_DIR.resolve():
        cmd += ["--root", str(root)]
    if build_dir is not None and Path(build_dir).resolve() != default_build_dir().resolve():
        cmd += ["--out", str(build_dir)]
    return " ".join(shlex.quote(c) for c in cmd)


def rebuild_hint(q, backend: str, precision: str, build_dir=None) -> str:
    return rebuild_command(q.model, q.quality, backend, precision, build_dir, _model_root(q))


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_record(path: Path) -> dict:
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


def read_manifest(directory: str | os.PathLike) -> dict | None:
    p = Path(directory) / MANIFEST
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}          # unreadable: treated as stale


def write_manifest(directory: str | os.PathLike, manifest: dict) -> Path:
    p = Path(directory) / MANIFEST
    atomic_write_bytes(p, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    return p


def build_options(backend: str, precision: str, opset: int, exporter: str, extra: dict | None = None) -> dict:
    """What, besides the checkpoint, decides a build's output: any change rebuilds."""
    opts = {"format": ARTIFACT_FORMAT, "backend": backend, "precision": precision}
    if backend != "torch":
        opts.update(opset=int(opset), exporter=exporter)
    opts.update(extra or {})
    return opts


def file_problems(manifest: dict, directory: Path) -> list[str]:
    """Files a manifest lists that are missing or differ from their recorded hash."""
    problems = []
    files = manifest.get("files") or {}
    for name in ARTIFACT_FILES.get(manifest.get("backend"), ()):
        if name not in files:
            problems.append(f"{name}: not in manifest")
    for name, rec in files.items():
        p = directory / name
        if not p.exists():
            problems.append(f"{name}: missing")
        elif p.stat().st_size != rec.get("bytes") or file_sha256(p) != rec.get("sha256"):
            problems.append(f"{name}: changed since the build")
    return problems


def manifest_status(manifest: dict | None, directory: Path, fingerprint: str, backend: str, precision: str,
                    expect: dict | None = None) -> tuple[str, str]:
    """("ok" | "missing" | "stale", reason) for one artifact folder.

    ``expect`` adds manifest fields that must match at run time (e.g. the
    TensorRT version and GPU an engine was built for)."""
    if manifest is None:
        return "missing", f"no {MANIFEST} in {directory}"
    if manifest.get("format") != ARTIFACT_FORMAT:
        return "stale", f"artifact format {manifest.get('format')!r}, this engine reads {ARTIFACT_FORMAT}"
    if manifest.get("backend") != backend or manifest.get("precision") != precision:
        return "stale", (f"folder holds {manifest.get('backend')}-{manifest.get('precision')}, "
                         f"not {backend}-{precision}")
    if manifest.get("fingerprint") != fingerprint:
        return "stale", (f"built from checkpoint fingerprint {str(manifest.get('fingerprint'))[:16]}..., "
                         f"the checkpoint is {fingerprint[:16]}...")
    for k, v in (expect or {}).items():
        if manifest.get(k) != v:
            return "stale", f"built for {k}={manifest.get(k)!r}, this machine has {v!r}"
    problems = file_problems(manifest, directory)
    if any(p.endswith(": missing") for p in problems):
        return "missing", "; ".join(problems)
    if problems:
        return "stale", "; ".join(problems)
    return "ok", ""


def artifact_status(q, backend: str, precision: str = "fp32", build_dir=None, expect: dict | None = None):
    d = artifact_dir(q.model, q.quality, backend, precision, build_dir)
    return manifest_status(read_manifest(d), d, q.fingerprint, backend, precision, expect)


def load_artifacts(q, backend: str, precision: str = "fp32", build_dir=None,
                   expect: dict | None = None) -> tuple[Path, dict]:
    """(folder, manifest) of q's artifacts, verified; else BackendUnavailable
    (missing) or ArtifactMismatch (stale), both naming the build command."""
    d = artifact_dir(q.model, q.quality, backend, precision, build_dir)
    manifest = read_manifest(d)
    status, reason = manifest_status(manifest, d, q.fingerprint, backend, precision, expect)
    cmd = rebuild_hint(q, backend, precision, build_dir)
    if status == "missing":
        raise BackendUnavailable(
            f"no {backend} {precision} artifacts for model {q.model!r} quality {q.quality} ({reason}); "
            f"build them with: {cmd}")
    if status == "stale":
        raise ArtifactMismatch(
            f"{backend} {precision} artifacts for model {q.model!r} quality {q.quality} in {d} do not match "
            f"({reason}); rebuild with: {cmd}")
    return d, manifest


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
    from .export import check_onnx_against_torch, export_onnx

    meta = {"engine.model": q.model, "engine.quality": q.quality, "engine.fingerprint": q.fingerprint}
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
    from .export import DEFAULT_OPSET, DEFAULT_PROFILE, EXPORTERS, IO_DTYPE, PRECISIONS, net_profiles, symbolic_io

    backend = resolve_backend(backend)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    if backend == "torch" and precision != "fp32":
        raise ValueError("the torch backend runs the checkpoint in fp32; use --precision fp32")
    opset = int(opset or DEFAULT_OPSET)
    profile = profile or DEFAULT_PROFILE
    build_dir = Path(out) if out is not None else default_build_dir()
    directory = artifact_dir(q.model, q.quality, backend, precision, build_dir)
    label = f"{q.model} q{q.quality} {backend}-{precision}"

    extra: dict = {"shuffles": shuffles or GRAPH_SHUFFLES[backend]} if backend in GRAPH_SHUFFLES else {}
    trt_env: dict = {}
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
        from .checkpoint import load_net

        net = load_net(q)
        manifest.update(opset=opset, exporter=f"torch.onnx.export(dynamo={exporter == 'dynamo'})")
        manifest["checks"] = _export_pair(q, net, directory, precision, opset, exporter, check, log,
                                          options["shuffles"])
        if backend == "onnxruntime":
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
                    command=rebuild_command(q.model, q.quality, backend, precision, build_dir, _model_root(q)))
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
    backend = resolve_backend(backend)
    return [build_quality(resolve(model, qq, root, decode=True), backend, precision, out, **kw) for qq in quals]


def _qualities_arg(values) -> list[int] | None:
    if not values:
        return None
    out = []
    for v in values:
        out += [int(x) for x in str(v).split(",") if x.strip()]
    return out


def main(argv=None) -> int:
    from .export import DEFAULT_OPSET, DEFAULT_PROFILE, EXPORTERS, PRECISIONS, ShapeProfile

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
