"""Build artifacts on disk: where they live, their manifests, and whether they match a
checkpoint.  Runners load through :func:`load_artifacts`; ``python -m engine.build``
(engine/build.py) writes them.  See engine/build.py for the layout.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path

from . import settings
from .net.checkpoint import CHECKPOINT_DIR
from .errors import ArtifactMismatch, BackendUnavailable
from .io.atomic import atomic_write_bytes

ARTIFACT_FORMAT = 1          # bump when the export code changes what a build produces
MANIFEST = "manifest.json"
BUILD_BACKENDS = settings.available_backends()     # what python -m engine.build builds for
BUILD_DIR_ENV = "ENGINE_BUILD_DIR"

# How each backend's graphs write pixel (un)shuffles (export.shuffles_as_convolutions).
# ONNX Runtime's CPU DepthToSpace is a generic strided transpose; the exact one-hot
# (transposed) convolution is faster there.  TensorRT keeps the native ops it maps
# to shuffle layers.  OpenVINO's CPU plugin runs the native DepthToSpace well: with
# the convolution form its bf16 decoder took 1.5x as long (engine/ov_build.py).
GRAPH_SHUFFLES = {"onnxruntime": "conv", "openvino": "native", "tensorrt": "native"}
# OpenVINO's IR is stored in float32 whatever precision it later runs in: bf16 (or
# fp32) is chosen when the runner compiles it (engine/runners/ov_runner.py).
OPENVINO_IR_PRECISION = "fp32"

ARTIFACT_FILES = {
    "torch": (),
    "onnxruntime": ("encoder.onnx", "decoder.onnx"),
    "openvino": ("encoder.xml", "encoder.bin", "decoder.xml", "decoder.bin"),
    "tensorrt": ("encoder.onnx", "decoder.onnx", "encoder.engine", "decoder.engine"),
}


# ---------------------------------------------------------------------------
# Layout and manifests (pure functions)
# ---------------------------------------------------------------------------

def default_build_dir() -> Path:
    env = settings.env(BUILD_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "build"


def artifact_dir(model: str, quality: int, backend: str, precision: str = "fp32",
                 build_dir: str | os.PathLike | None = None) -> Path:
    if backend not in ARTIFACT_FILES:
        raise ValueError(f"backend must be one of {tuple(ARTIFACT_FILES)}, got {backend!r}")
    return Path(build_dir or default_build_dir()) / model / f"q{int(quality)}" / f"{backend}-{precision}"


def model_root(q) -> Path | None:
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
    return rebuild_command(q.model, q.quality, backend, precision, build_dir, model_root(q))


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
