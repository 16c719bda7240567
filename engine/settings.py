"""Settings: the one module that reads ``ENGINE_*`` environment variables, the
registry of every named choice, and the frozen per-call choices the stages read.

* :data:`ENV`: every variable the engine reads, and what it sets.  :func:`env` refuses
  a name that is not here, so a new knob is registered (and documented) before use.
  Variables are read when a setting is resolved (a Codec, a runner, a build), never at
  import, so a process (or a test) may set them late.
* :data:`CHOICES`: each named choice's values, and the registries that read it
  (:func:`available_backends`, :func:`available_coders`, ... as CompressAI's
  ``available_entropy_coders()`` lists its coders; the formats' registry is
  :func:`engine.format.registry.available_formats`).  The CLI's ``choices=``, the
  Codec's and the Pillow plugin's checks (:func:`check_choices`), the resolvers and the
  bench scripts all read them from here.
* :class:`Settings`: what a Codec resolved for its calls (kernels, entropy mode,
  coder, effort, tiles, pixel limit); the scheduler and the stages read only this.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

ENV = {
    "ENGINE_KERNELS": "the bit path: auto | torch | triton",
    "ENGINE_CODER": "bitstream v2's entropy coder: auto | native | triton",
    "ENGINE_PRECISION": "the networks' precision: auto | fp32 | fp16 | bf16",
    "ENGINE_TORCH_COMPILE": "torch.compile for the torch backend: off | default | reduce-overhead",
    "ENGINE_ENTROPY_POOL": "where the batch APIs entropy-code: auto | threads | processes",
    "ENGINE_TILE_PIXELS": "tile the networks above this many padded pixels (0: never)",
    "ENGINE_TILE_SIZE": "the core tile side in pixels, a multiple of 16",
    "ENGINE_MAX_PIXELS": "the largest image (and file) in pixels",
    "ENGINE_BUILD_DIR": "where the build artifacts (ONNX, TensorRT engines, OpenVINO IR) live",
    "ENGINE_ORT_SPIN": "ONNX Runtime's spinning intra-op threads: off | on",
    "ENGINE_CPU_BF16": "override the detection of the CPU's bf16 matrix units: 0 | 1",
    "ENGINE_SEARCH_PRECISION": "the code search's gradient steps (effort > 0): auto | fp32 | bf16",
    "ENGINE_NATIVE_PIXELS": "0: the torch pixel conversions instead of native/pixels.cpp",
}

CHOICES = {
    "backend": ("auto", "torch", "onnxruntime", "openvino", "tensorrt"),
    "kernels": ("auto", "torch", "triton"),
    "coder": ("auto", "native", "triton"),
    "precision": ("auto", "fp32", "fp16", "bf16"),
    "compile": ("off", "default", "reduce-overhead"),
    "entropy_pool": ("auto", "threads", "processes"),
    "entropy": ("rans", "context", "none"),         # the CLI's names; "raw" is "none"'s other name
    # what a model is trained for (model.json "metric"; mse when unsaid), as CompressAI's
    # metric=: Codec(metric=...) picks the installed model trained for it
    "metric": ("mse", "ms-ssim"),
    "ort_spin": ("off", "on"),
    # the code search's gradient steps (engine/net/search.py): auto = bf16 on a CPU with bf16 matrix units
    "search_precision": ("auto", "fp32", "bf16"),
}
ALIASES = {"entropy": {"raw": "none"}}     # accepted, not listed (bitstream.ENTROPY_NAMES)
# The Codec's arguments that name a choice (each its CHOICES key): what check_choices checks.
CODEC_CHOICES = ("backend", "kernels", "coder", "precision", "compile", "entropy_pool", "entropy", "metric",
                 "search_precision")


def available(kind: str) -> tuple[str, ...]:
    """The values of one named choice (a :data:`CHOICES` key)."""
    if kind not in CHOICES:
        raise KeyError(f"{kind!r} is not a named choice (engine/settings.py CHOICES: {sorted(CHOICES)})")
    return CHOICES[kind]


def available_backends() -> tuple[str, ...]:
    """The networks' backends ("auto" picks one: engine/runners/select.py)."""
    return available("backend")


def available_kernels() -> tuple[str, ...]:
    """The bit path's implementations."""
    return available("kernels")


def available_coders() -> tuple[str, ...]:
    """Bitstream v2's entropy coders."""
    return available("coder")


def available_precisions() -> tuple[str, ...]:
    """The networks' precisions."""
    return available("precision")


def available_compile_modes() -> tuple[str, ...]:
    """torch.compile modes of the torch backend."""
    return available("compile")


def available_entropy_pools() -> tuple[str, ...]:
    """Where the batch APIs entropy-code."""
    return available("entropy_pool")


def available_entropy_modes() -> tuple[str, ...]:
    """The entropy modes a file is written with (each has a format in
    engine/format/registry.py; tests/test_settings.py holds them together)."""
    return available("entropy")


def available_search_precisions() -> tuple[str, ...]:
    """The code search's precisions (effort > 0)."""
    return available("search_precision")


def available_metrics() -> tuple[str, ...]:
    """What a model may be trained for (those an installed model is:
    :func:`engine.net.checkpoint.installed_metrics`)."""
    return available("metric")


def check(kind: str, value, name: str | None = None) -> str:
    """``value`` (lower-cased) if it is one of ``kind``'s choices or their aliases, else a
    ValueError naming ``name`` (default: the choice's own name) and the choices."""
    choices = available(kind)
    v = value.strip().lower() if isinstance(value, str) else value
    if v in choices or v in ALIASES.get(kind, {}):
        return v
    raise ValueError(f"{name or kind} must be one of {choices}, got {value!r}")


def check_choices(**named) -> dict:
    """Each given choice (``backend=``, ``coder=``, ...: :data:`CODEC_CHOICES`, None: not
    given) checked by :func:`check`; returns them, lower-cased."""
    unknown = set(named) - set(CODEC_CHOICES)
    if unknown:
        raise TypeError(f"{sorted(unknown)} are not named choices ({CODEC_CHOICES})")
    return {k: (None if v is None else check(k, v)) for k, v in named.items()}

# The tile settings' defaults (engine/io/tiling.py says why these sizes).
DEFAULT_TILE_PIXELS = 2 * 2048 * 2048
DEFAULT_TILE_SIZE = 2048


def env(name: str, default: str | None = None) -> str | None:
    """The variable's value, else ``default``; only registered names are read."""
    if name not in ENV:
        raise KeyError(f"{name} is not an engine setting (engine/settings.py ENV)")
    return os.environ.get(name, default)


def pick(value: str | None, name: str, default: str) -> str:
    """A named choice: the argument, else the variable, else ``default``, lower-cased."""
    return (value or env(name) or default).strip().lower()


def tile_pixels_setting(value: int | None = None) -> int:
    return int(env("ENGINE_TILE_PIXELS", DEFAULT_TILE_PIXELS) if value is None else value)


def tile_size_setting(value: int | None = None) -> int:
    return int(env("ENGINE_TILE_SIZE", DEFAULT_TILE_SIZE) if value is None else value)


@dataclass(frozen=True)
class Settings:
    """One codec's resolved choices for its calls; a call that changes one (a target
    size search's effort) gets a copy through :meth:`with_`."""
    kernels: str
    entropy_mode: int
    coder: str              # "native" or "triton": which format writes and reads version 2
    effort: int
    tile_pixels: int
    tile_size: int
    max_pixels: int
    search_precision: str = "auto"   # effort > 0: auto | fp32 | bf16 (engine/net/search.py)

    def with_(self, **changes) -> Settings:
        return replace(self, **changes)
