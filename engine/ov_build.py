"""OpenVINO build steps for ``python -m engine.build --backend openvino``.

The networks are exported to ONNX as for every backend (engine/net/export.py, pixel
shuffles as native DepthToSpace: ``GRAPH_SHUFFLES``), read by OpenVINO's ONNX
frontend and saved as OpenVINO IR (``encoder.xml`` + ``encoder.bin``, the same for the
decoder) with float32 weights (``compress_to_fp16=False``: fp16 weights would change
the fp32 runner's results).  The ONNX file is a step on the way and is deleted.

Why ONNX and not ``ov.convert_model(torch module)``: the same graphs as the other
backends, and ``convert_model`` is the one OpenVINO entry point that sends usage
telemetry by default; the runtime calls used here send nothing.

Measured choice (``python -m bench.ov_variants``, Intel Xeon VM, family 6 model 167, 2
cores, AMX-bf16; bf16, Kodak, batch 1, paired rounds): with the one-hot convolution
shuffles that ONNX Runtime prefers, the round trip takes 1.39x as long (0.72x the speed)
as with native DepthToSpace; network-only probes put the difference in the decoder.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .net.export import IO_NAMES, TOLERANCE, example_inputs
from .net.model import ModelConfig


def openvino_version() -> str:
    from .runners.ov_runner import import_openvino
    return import_openvino().get_version()


def onnx_to_ir(onnx_path: str | Path, xml_path: str | Path) -> None:
    """ONNX graph -> OpenVINO IR (xml + bin beside it), float32 weights, written atomically
    enough for the manifest: the manifest is written last and hashes both files."""
    from .runners.ov_runner import import_openvino
    ov = import_openvino()
    xml_path = Path(xml_path)
    model = ov.Core().read_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)


def check_ir_against_torch(net: str, xml_path: str | Path, module: nn.Module, cfg: ModelConfig,
                           b: int = 1, h: int = 48, w: int = 64) -> dict:
    """Run the IR in OpenVINO fp32 at a size other than the export size and compare with
    the torch module; RuntimeError above ``TOLERANCE["fp32"]`` (a smoke check against a
    broken conversion, not the parity test)."""
    from .runners.ov_runner import import_openvino
    ov = import_openvino()
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml_path)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    args = example_inputs(net, cfg, b, h, w, seed=1)
    in_names, out_names = IO_NAMES[net]
    res = compiled({n: a.numpy() for n, a in zip(in_names, args)})
    got = [res[compiled.output(n)] for n in out_names]
    with torch.no_grad():
        ref = module.eval()(*args)
    ref = ref if isinstance(ref, tuple) else (ref,)
    diffs = {n: float((torch.from_numpy(g) - r).abs().max()) for n, g, r in zip(out_names, got, ref)}
    tol = TOLERANCE["fp32"]
    bad = {n: d for n, d in diffs.items() if not d <= tol}
    if bad:
        raise RuntimeError(f"{net} OpenVINO IR {xml_path} differs from torch by {bad} (> {tol}) at {args[0].shape}")
    return {"max_abs_diff": diffs, "input": [b, h, w], "tolerance": tol, "runtime": "openvino fp32"}
