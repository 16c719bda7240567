"""ONNX export of the encoder and decoder, plus the shape logic every backend shares.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based
exporter, the default since torch 2.9) with ``dynamic_shapes``: batch, height
and width are symbolic in the graph, so one file serves every image size.  The
legacy TorchScript exporter (``dynamo=False`` + ``dynamic_axes``, deprecated
upstream) is kept as ``exporter="torchscript"`` for debugging only.

IO names (the contract of every runner and of the TensorRT engines)::

    encoder:  ycc (B,3,H,W)                      -> e (B,n,H/8,W/8), p (B,1,H/8,W/8), ec (B,m,H/16,W/16)
    decoder:  bits (B,n,h,w), levels (B,1,h,w), cbits (B,m,h/2,w/2) -> ycc (B,3,8h,8w)

Precision:
  * ``fp32``: the checkpoint as is.
  * ``fp16``: the *graph* is float16 (weights and all compute) while its inputs
    and outputs stay float32, with a Cast at each boundary.  This is what the
    TensorRT builder needs: our networks are built strongly typed, where the
    ONNX types decide each layer's precision and the ``BuilderFlag.FP16`` hint
    is not allowed.  Runners therefore feed float32 for both precisions.

Everything above ``export_onnx`` is plain Python (no torch.onnx, no TensorRT) so
that it can be unit-tested on any machine.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import ModelConfig

NETS = ("encoder", "decoder")
ENCODER_INPUTS = ("ycc",)
ENCODER_OUTPUTS = ("e", "p", "ec")
DECODER_INPUTS = ("bits", "levels", "cbits")
DECODER_OUTPUTS = ("ycc",)
IO_NAMES = {
    "encoder": (ENCODER_INPUTS, ENCODER_OUTPUTS),
    "decoder": (DECODER_INPUTS, DECODER_OUTPUTS),
}
PRECISIONS = ("fp32", "fp16")
EXPORTERS = ("dynamo", "torchscript")
SHUFFLES = ("native", "conv")
DEFAULT_OPSET = 18          # parsed by TensorRT 10.x and run by ONNX Runtime >= 1.14
MULTIPLE = 16               # input sides must be multiples of this (ModelConfig.multiple)
IO_DTYPE = "float32"        # graph inputs/outputs for both precisions

# Sizes used to trace the graphs.  Batch 2 (not 1) and H != W keep torch.export
# from specializing a symbolic dimension to a constant.
EXPORT_BATCH, EXPORT_HEIGHT, EXPORT_WIDTH = 2, 32, 48


# ---------------------------------------------------------------------------
# Shape profiles (TensorRT optimization profiles; advisory for ONNX Runtime)
# ---------------------------------------------------------------------------

def _triple(v, what: str) -> tuple[int, int, int]:
    if isinstance(v, str):
        v = [p for p in v.replace("x", ",").split(",") if p.strip()]
    t = tuple(int(x) for x in v)
    if len(t) != 3:
        raise ValueError(f"{what} must be MIN,OPT,MAX (3 integers), got {v!r}")
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max of the batch and of the image sides (pixels) the engines accept.

    Defaults: batch 1..8 optimized for 1 (a codec mostly sees one image at a
    time), sides 16..2048 optimized for 512x768 (HxW).  TensorRT reserves device
    memory for the *max* shape, so max batch x max area bounds each execution
    context's activation memory; raise them only as far as needed.
    """
    batch: tuple[int, int, int] = (1, 1, 8)
    height: tuple[int, int, int] = (16, 512, 2048)
    width: tuple[int, int, int] = (16, 768, 2048)

    def __post_init__(self):
        for name in ("batch", "height", "width"):
            t = _triple(getattr(self, name), name)
            object.__setattr__(self, name, t)
            lo, opt, hi = t
            if not (1 <= lo <= opt <= hi):
                raise ValueError(f"profile {name} needs 1 <= min <= opt <= max, got {t}")
            if name != "batch" and any(v % MULTIPLE for v in t):
                raise ValueError(f"profile {name} values must be multiples of {MULTIPLE}, got {t}")

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "ShapeProfile":
        return cls(**{k: tuple(v) for k, v in d.items()})

    def image_shape(self, which: str) -> tuple[int, int, int, int]:
        i = ("min", "opt", "max").index(which)
        return (self.batch[i], 3, self.height[i], self.width[i])


DEFAULT_PROFILE = ShapeProfile()


def encoder_input_shapes(cfg: ModelConfig, b: int, h: int, w: int) -> dict[str, tuple[int, ...]]:
    return {"ycc": (b, 3, h, w)}


def decoder_input_shapes(cfg: ModelConfig, b: int, h: int, w: int) -> dict[str, tuple[int, ...]]:
    """Decoder inputs for an image of h x w pixels (the latent is h/8 x w/8)."""
    return {
        "bits": (b, cfg.n, h // 8, w // 8),
        "levels": (b, 1, h // 8, w // 8),
        "cbits": (b, cfg.m, h // 16, w // 16),
    }


def net_profiles(cfg: ModelConfig, profile: ShapeProfile = DEFAULT_PROFILE) -> dict:
    """{net: {input: {"min": shape, "opt": shape, "max": shape}}}: the decoder's
    profile is the encoder's, expressed in latent units (sides / 8 and / 16)."""
    out: dict = {}
    for net, fn in (("encoder", encoder_input_shapes), ("decoder", decoder_input_shapes)):
        per: dict = {}
        for which in ("min", "opt", "max"):
            b, _, h, w = profile.image_shape(which)
            for name, shape in fn(cfg, b, h, w).items():
                per.setdefault(name, {})[which] = list(shape)
        out[net] = per
    return out


def encoder_output_shapes(cfg: ModelConfig, ycc_shape) -> dict[str, tuple[int, ...]]:
    b, c, h, w = (int(v) for v in ycc_shape)
    if c != 3:
        raise ValueError(f"encoder input must have 3 channels (YCbCr), got shape {tuple(ycc_shape)}")
    if h % MULTIPLE or w % MULTIPLE or h <= 0 or w <= 0:
        raise ValueError(f"encoder input sides must be positive multiples of {MULTIPLE}, got {h}x{w}")
    return {"e": (b, cfg.n, h // 8, w // 8), "p": (b, 1, h // 8, w // 8), "ec": (b, cfg.m, h // 16, w // 16)}


def decoder_output_shapes(cfg: ModelConfig, bits_shape, levels_shape, cbits_shape) -> dict[str, tuple[int, ...]]:
    b, n, h, w = (int(v) for v in bits_shape)
    if n != cfg.n:
        raise ValueError(f"bits must have {cfg.n} channels, got shape {tuple(bits_shape)}")
    if h % 2 or w % 2 or h <= 0 or w <= 0:
        raise ValueError(f"latent sides must be positive and even, got {h}x{w}")
    if tuple(int(v) for v in levels_shape) != (b, 1, h, w):
        raise ValueError(f"levels must be {(b, 1, h, w)}, got {tuple(levels_shape)}")
    if tuple(int(v) for v in cbits_shape) != (b, cfg.m, h // 2, w // 2):
        raise ValueError(f"cbits must be {(b, cfg.m, h // 2, w // 2)}, got {tuple(cbits_shape)}")
    return {"ycc": (b, 3, 8 * h, 8 * w)}


def output_shapes(net: str, cfg: ModelConfig, input_shapes: dict) -> dict[str, tuple[int, ...]]:
    if net == "encoder":
        return encoder_output_shapes(cfg, input_shapes["ycc"])
    if net == "decoder":
        return decoder_output_shapes(cfg, input_shapes["bits"], input_shapes["levels"], input_shapes["cbits"])
    raise ValueError(f"net must be one of {NETS}, got {net!r}")


def check_shape_in_profile(name: str, shape, spec: dict) -> None:
    """Raise ValueError when ``shape`` is outside ``spec`` = {"min", "opt", "max"}."""
    shape = tuple(int(v) for v in shape)
    lo, hi = tuple(spec["min"]), tuple(spec["max"])
    if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
        raise ValueError(
            f"{name} shape {shape} is outside the engine's profile min {lo} .. max {hi}; "
            "rebuild with a wider --profile-batch/--profile-height/--profile-width"
        )


def check_io_names(net: str, inputs, outputs) -> None:
    """Raise ValueError unless a graph/engine exposes exactly the IO names of ``net``."""
    want_in, want_out = IO_NAMES[net]
    inputs, outputs = list(inputs), list(outputs)
    if sorted(inputs) != sorted(want_in) or sorted(outputs) != sorted(want_out):
        raise ValueError(
            f"{net}: expected inputs {list(want_in)} and outputs {list(want_out)}, "
            f"got inputs {list(inputs)} and outputs {list(outputs)}"
        )


def symbolic_io(cfg: ModelConfig) -> dict:
    """IO shapes as recorded in manifests: ints are fixed, strings symbolic."""
    return {
        "encoder": {
            "ycc": ["B", 3, "H", "W"],
            "e": ["B", cfg.n, "H/8", "W/8"], "p": ["B", 1, "H/8", "W/8"], "ec": ["B", cfg.m, "H/16", "W/16"],
        },
        "decoder": {
            "bits": ["B", cfg.n, "H/8", "W/8"], "levels": ["B", 1, "H/8", "W/8"], "cbits": ["B", cfg.m, "H/16", "W/16"],
            "ycc": ["B", 3, "H", "W"],
        },
    }


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------

class _Fp16Encoder(nn.Module):
    """A float16 copy of the encoder behind float32 inputs/outputs."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.inner = copy.deepcopy(encoder).half()

    def forward(self, ycc):
        e, p, ec = self.inner(ycc.half())
        return e.float(), p.float(), ec.float()


class _Fp16Decoder(nn.Module):
    """A float16 copy of the decoder behind float32 inputs/outputs."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.inner = copy.deepcopy(decoder).half()

    def forward(self, bits, levels, cbits):
        return self.inner(bits.half(), levels.half(), cbits.half()).float()


def _one_hot_phases(channels: int, r: int) -> torch.Tensor:
    """(channels, 1, r, r) weights: channel c*r*r + i*r + j is 1 at (i, j), 0 elsewhere."""
    w = torch.zeros(channels, r * r)
    w[torch.arange(channels), torch.arange(channels) % (r * r)] = 1.0
    return w.view(channels, 1, r, r)


class _ShuffleAsConvTranspose(nn.Module):
    """nn.PixelShuffle(r) as a ConvTranspose (kernel r, stride r, one group per
    output channel) whose weights are one-hot: every output is one input times 1
    plus exact zeros, so the result is bit-identical.  Why: ONNX Runtime's CPU
    DepthToSpace is a generic strided transpose, about 2x slower than this
    convolution on our decoder's tensors (measured in bench/results)."""

    def __init__(self, r: int, channels_in: int):
        super().__init__()
        self.r, self.groups = r, channels_in // (r * r)
        self.register_buffer("weight", _one_hot_phases(channels_in, r))     # input channel c*r*r + i*r + j

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight.to(x.dtype), stride=self.r, groups=self.groups)


class _UnshuffleAsConv(nn.Module):
    """nn.PixelUnshuffle(r) as a one-hot strided Conv, bit-identical for the same
    reason; the exporter otherwise writes it as Reshape/Transpose with shape arithmetic."""

    def __init__(self, r: int, channels_in: int):
        super().__init__()
        self.r, self.groups = r, channels_in
        self.register_buffer("weight", _one_hot_phases(channels_in * r * r, r))  # output channel c*r*r + i*r + j

    def forward(self, x):
        return F.conv2d(x, self.weight.to(x.dtype), stride=self.r, groups=self.groups)


def shuffles_as_convolutions(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every PixelShuffle/PixelUnshuffle replaced by its
    exact convolution form.  Channel counts come from the layer before each
    shuffle (our networks put a Conv2d before every PixelShuffle) or, for the
    encoder's input unshuffles, from the planes they see (1 for Y, 2 for CbCr)."""
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        children = list(parent.named_children())
        for i, (name, child) in enumerate(children):
            if isinstance(child, nn.PixelShuffle):
                prev = children[i - 1][1] if i else None
                if not isinstance(prev, nn.Conv2d):
                    raise ValueError(f"PixelShuffle {name!r} does not follow a Conv2d; cannot size it")
                setattr(parent, name, _ShuffleAsConvTranspose(child.upscale_factor, prev.out_channels))
            elif isinstance(child, nn.PixelUnshuffle):
                nxt = children[i + 1][1] if i + 1 < len(children) else None
                if not isinstance(nxt, nn.Conv2d):
                    raise ValueError(f"PixelUnshuffle {name!r} is not followed by a Conv2d; cannot size it")
                r = child.downscale_factor
                setattr(parent, name, _UnshuffleAsConv(r, nxt.in_channels // (r * r)))
    return module


def example_inputs(net: str, cfg: ModelConfig, b: int = EXPORT_BATCH, h: int = EXPORT_HEIGHT,
                   w: int = EXPORT_WIDTH, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of the right kind: YCbCr in [0,1]; 0/1 bits; integer levels."""
    g = torch.Generator().manual_seed(seed)
    if net == "encoder":
        return (torch.rand(encoder_input_shapes(cfg, b, h, w)["ycc"], generator=g),)
    s = decoder_input_shapes(cfg, b, h, w)
    bits = torch.randint(0, 2, s["bits"], generator=g).float()
    levels = torch.randint(0, cfg.levels, s["levels"], generator=g).float()
    cbits = torch.randint(0, 2, s["cbits"], generator=g).float()
    return bits, levels, cbits


def export_module(net: str, module: nn.Module, cfg: ModelConfig, precision: str = "fp32",
                  shuffles: str = "native") -> nn.Module:
    """The module that is exported for ``net`` at ``precision`` (float32 IO either way).
    ``shuffles="conv"`` writes pixel (un)shuffles as their exact convolution form
    (:func:`shuffles_as_convolutions`); "native" keeps DepthToSpace/Reshape-Transpose."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if shuffles not in SHUFFLES:
        raise ValueError(f"shuffles must be one of {SHUFFLES}, got {shuffles!r}")
    module = module.eval()
    if shuffles == "conv":
        module = shuffles_as_convolutions(module).eval()
    if precision == "fp16":
        module = (_Fp16Encoder if net == "encoder" else _Fp16Decoder)(module).eval()
    return module


def _dynamic_shapes(net: str):
    batch = torch.export.Dim("batch", min=1, max=4096)
    # Sides in units of 16 pixels; the latent is 2x that, the chroma latent 1x.
    h16 = torch.export.Dim("h16", min=1, max=4096)
    w16 = torch.export.Dim("w16", min=1, max=4096)
    if net == "encoder":
        return ({0: batch, 2: 16 * h16, 3: 16 * w16},)
    return (
        {0: batch, 2: 2 * h16, 3: 2 * w16},
        {0: batch, 2: 2 * h16, 3: 2 * w16},
        {0: batch, 2: h16, 3: w16},
    )


def _dynamic_axes(net: str) -> dict:
    if net == "encoder":
        return {"ycc": {0: "batch", 2: "height", 3: "width"},
                "e": {0: "batch", 2: "h8", 3: "w8"}, "p": {0: "batch", 2: "h8", 3: "w8"},
                "ec": {0: "batch", 2: "h16", 3: "w16"}}
    return {"bits": {0: "batch", 2: "h8", 3: "w8"}, "levels": {0: "batch", 2: "h8", 3: "w8"},
            "cbits": {0: "batch", 2: "h16", 3: "w16"}, "ycc": {0: "batch", 2: "height", 3: "width"}}


@contextlib.contextmanager
def _quiet_torch_onnx():
    """Silence the exporter's progress/warning log lines (e.g. 'torchvision is not installed')."""
    lg = logging.getLogger("torch.onnx")
    level = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(level)


def export_onnx(net: str, module: nn.Module, cfg: ModelConfig, path: str | Path, *,
                precision: str = "fp32", opset: int = DEFAULT_OPSET, exporter: str = "dynamo",
                shuffles: str = "native", metadata: dict | None = None) -> Path:
    """Export ``module`` (an Encoder or Decoder) to ``path`` with dynamic batch/height/width.

    The file is written atomically and carries ``metadata`` (e.g. the checkpoint
    fingerprint) in its ``metadata_props``.
    """
    import onnx

    if net not in NETS:
        raise ValueError(f"net must be one of {NETS}, got {net!r}")
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mod = export_module(net, module, cfg, precision, shuffles)
    args = example_inputs(net, cfg)
    in_names, out_names = IO_NAMES[net]
    tmp = path.with_name(f".{path.name}.export.tmp")
    captured = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured), _quiet_torch_onnx(), torch.no_grad():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                torch.onnx.export(mod, args, str(tmp), dynamo=True, input_names=list(in_names),
                                  output_names=list(out_names), dynamic_shapes=_dynamic_shapes(net),
                                  opset_version=opset, external_data=False, optimize=True, verbose=False)
            else:
                torch.onnx.export(mod, args, str(tmp), dynamo=False, input_names=list(in_names),
                                  output_names=list(out_names), dynamic_axes=_dynamic_axes(net),
                                  opset_version=opset, do_constant_folding=True)
        model = onnx.load(str(tmp))
        check_io_names(net, [i.name for i in model.graph.input], [o.name for o in model.graph.output])
        meta = {"engine.net": net, "engine.precision": precision, "engine.shuffles": shuffles, **(metadata or {})}
        del model.metadata_props[:]
        for k, v in sorted(meta.items()):
            p = model.metadata_props.add()
            p.key, p.value = str(k), str(v)
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
        tmp.replace(path)
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def onnx_io_names(path: str | Path) -> tuple[list[str], list[str]]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return [i.name for i in m.graph.input], [o.name for o in m.graph.output]


TOLERANCE = {"fp32": 1e-3, "fp16": 1e-1}


def check_onnx_against_torch(net: str, path: str | Path, module: nn.Module, cfg: ModelConfig,
                             precision: str = "fp32", b: int = 1, h: int = 48, w: int = 64,
                             threads: int = 1) -> dict:
    """Run the graph in ONNX Runtime (CPU) at a size other than the export size and
    compare with the torch module.  Returns {"max_abs_diff": {output: d}, ...};
    raises RuntimeError if a difference exceeds ``TOLERANCE[precision]`` (a smoke
    check against broken exports, not the parity test)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as ex:  # e.g. an fp16 kernel missing on this CPU build
        if precision == "fp32":
            raise
        return {"skipped": f"ONNX Runtime CPU cannot run this graph: {str(ex).splitlines()[0][:200]}"}
    args = example_inputs(net, cfg, b, h, w, seed=1)
    in_names, out_names = IO_NAMES[net]
    got = sess.run(list(out_names), {n: a.numpy() for n, a in zip(in_names, args)})
    with torch.no_grad():
        ref = module.eval()(*args)
    ref = ref if isinstance(ref, tuple) else (ref,)
    diffs = {n: float((torch.from_numpy(g) - r).abs().max()) for n, g, r in zip(out_names, got, ref)}
    tol = TOLERANCE[precision]
    bad = {n: d for n, d in diffs.items() if not d <= tol}
    if bad:
        raise RuntimeError(f"{net} ONNX graph {path} differs from torch by {bad} (> {tol}) at {args[0].shape}")
    return {"max_abs_diff": diffs, "input": [b, h, w], "tolerance": tol}
