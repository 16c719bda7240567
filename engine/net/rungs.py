"""The rungs a codec runs: a checkpoint quality, its entropy tables, its stream id and
(when it runs networks) its runner.

Two views of one rung, because two kinds of worker need it:
  * :class:`Coding` -- what the entropy stages need (config, tables, stream id); small,
    picklable, no network.  Entropy worker processes hold only these.
  * :class:`Rung` -- a Coding plus the runner that runs the networks (and, for
    ``effort`` > 0, the code search), built once per codec and quality.

A file names its model, quality and stream id; :meth:`Codings.for_header` is the
one place that checks them.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint
from .. import settings
from ..format import context_coder
from ..errors import BitstreamError
from .model import ModelConfig


@dataclass(frozen=True)
class Coding:
    model: str
    quality: int
    config: ModelConfig
    tables: context_coder.Tables
    stream_id: bytes          # 8 bytes every file of this rung carries


def load_tables(q: checkpoint.Quality) -> context_coder.Tables:
    """The rung's context tables (``entropy.safetensors`` beside the weights), else flat ones."""
    cfg = q.config
    path = q.weights.parent / "entropy.safetensors"
    if path.exists():
        from safetensors.numpy import load_file
        d = load_file(str(path))
        key = f"q{q.quality}."
        if key + "map" in d:
            return context_coder.Tables(d[key + "map"].astype(np.uint32), d[key + "y"], d[key + "c"])
    return context_coder.Tables.flat(cfg.n, cfg.levels, cfg.m)


def coding_for(q: checkpoint.Quality) -> Coding:
    tables = load_tables(q)
    h = hashlib.sha256(q.fingerprint.encode())
    for v in tables.as_dict().values():
        h.update(np.ascontiguousarray(v).tobytes())
    return Coding(q.model, q.quality, q.config, tables, h.digest()[:8])


class Codings:
    """One model's codings by quality, loaded on first use (no networks)."""

    def __init__(self, model: str = checkpoint.DEFAULT_MODEL, root: str | Path | None = None):
        self.model = model
        self.root = Path(root) if root else None
        self.checkpoints: dict[tuple[int | None, bool], checkpoint.Quality] = {}
        self.by_quality: dict[int, Coding] = {}

    def resolve(self, quality: int | None, decode: bool = False) -> checkpoint.Quality:
        key = (quality, decode)
        q = self.checkpoints.get(key)
        if q is None:
            q = self.checkpoints[key] = checkpoint.resolve(self.model, quality, root=self.root, decode=decode)
        return q

    def get(self, quality: int | None, decode: bool = False) -> Coding:
        q = self.resolve(quality, decode)
        c = self.by_quality.get(q.quality)
        if c is None:
            c = self.by_quality[q.quality] = coding_for(q)
        return c

    def for_header(self, hdr) -> Coding:
        """The coding a file's header asks for, or a BitstreamError saying why this
        engine cannot decode it."""
        if hdr.model != self.model:
            raise BitstreamError(f"file was made by model {hdr.model!r} quality {hdr.quality}; this codec runs "
                                 f"model {self.model!r}: use engine.Codec(model={hdr.model!r}) (CLI: --model {hdr.model!r})")
        try:
            c = self.get(hdr.quality, decode=True)
        except ValueError as e:
            raise BitstreamError(f"file needs model {hdr.model!r} quality {hdr.quality}, which is not "
                                 f"available here: {e}") from None
        if c.stream_id != hdr.stream_id:
            raise BitstreamError(f"file was made by a different version of model {hdr.model!r} quality "
                                 f"{hdr.quality} (stream id {hdr.stream_id.hex()}, installed "
                                 f"{c.stream_id.hex()}): decode it with the engine version that wrote it")
        return c


@dataclass
class Rung:
    q: checkpoint.Quality
    coding: Coding
    runner: object
    search: object = None     # engine.net.search.CodeSearch, made on the first effort > 0 call

    @property
    def tables(self) -> context_coder.Tables:
        return self.coding.tables

    @property
    def stream_id(self) -> bytes:
        return self.coding.stream_id



def resolve_precision(precision: str | None, backend: str, device) -> str:
    """``precision``/``ENGINE_PRECISION`` -> "fp32", "fp16", "bf16" or "auto".  auto: fp16
    when the networks run on CUDA in torch (or a backend auto picks: a TensorRT engine
    built with ``--precision fp16``); on the CPU with backend auto or openvino it stays
    "auto", for the backend to resolve (OpenVINO: bf16 where the CPU has bf16 matrix
    units; every other runner: fp32); fp32 everywhere else.  fp32 stays the reference
    (README, "Precision").  bf16 is the openvino backend's only."""
    p = settings.check("precision", settings.pick(precision, "ENGINE_PRECISION", "auto"), "precision/ENGINE_PRECISION")
    b = (backend or "auto").lower()
    if p == "bf16" and b not in ("auto", "openvino"):
        raise ValueError(f"precision 'bf16' is for the openvino backend, not {backend!r}")
    if p != "auto":
        return p
    import torch
    on_cuda = str(device).startswith("cuda") if device is not None else torch.cuda.is_available()
    if on_cuda and b in ("auto", "torch"):
        return "fp16"
    return "auto" if b == "openvino" or (b == "auto" and not on_cuda) else "fp32"


def resolve_compile(compile: str | None, backend: str) -> str:
    """``compile``/``ENGINE_TORCH_COMPILE`` -> a TorchRunner compile mode ("off" unless
    asked: it is measured on the card before it becomes anyone's default)."""
    c = settings.check("compile", settings.pick(compile, "ENGINE_TORCH_COMPILE", "off"), "compile/ENGINE_TORCH_COMPILE")
    if c != "off" and (backend or "auto") not in ("auto", "torch"):
        raise ValueError(f"compile={c!r} is for the torch backend, not {backend!r}")
    return c


class Rungs:
    """The rungs one codec has loaded: runners are built once per quality."""

    def __init__(self, model: str, root=None, backend: str = "auto", device=None, threads: int | None = None,
                 precision: str | None = None, compile: str | None = None, build_dir=None):
        self.codings = Codings(model, root)
        self.backend, self.device, self.threads = backend, device, threads
        self.build_dir = build_dir          # None: ENGINE_BUILD_DIR, else build/
        self.precision = resolve_precision(precision, backend, device)
        self.compile = resolve_compile(compile, backend)
        self.loaded: dict[int, Rung] = {}

    @property
    def model(self) -> str:
        return self.codings.model

    def get(self, quality: int | None, decode: bool = False) -> Rung:
        from ..runners import make_runner
        q = self.codings.resolve(quality, decode)
        r = self.loaded.get(q.quality)
        if r is None:
            coding = self.codings.get(q.quality, decode)
            runner = make_runner(q, self.backend, self.device, threads=self.threads, precision=self.precision,
                                 compile=self.compile, build_dir=self.build_dir)
            r = self.loaded[q.quality] = Rung(q, coding, runner)
        return r

    def for_header(self, hdr) -> Rung:
        self.codings.for_header(hdr)
        return self.get(hdr.quality, decode=True)
