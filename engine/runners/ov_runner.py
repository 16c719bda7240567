"""OpenVINO on the CPU: runs the IR of ``python -m engine.build --backend openvino``.

Why: ONNX Runtime's CPU provider runs these networks in float32, and the README
measures them at ~90% of the CPU's float32 peak.  Many x86 servers have bf16 matrix
units (Intel AMX, ``amx_bf16`` in ``lscpu``); OpenVINO's CPU plugin runs the
convolutions on them when its inference precision is bf16.

Precision (``precision=``):
  * ``"fp32"``: float32 everywhere; the files are the reference's (tests/test_openvino.py
    checks the golden bytes).
  * ``"bf16"``: both networks in bf16 (OpenVINO keeps some layers in fp32 on its own).
  * ``"auto"`` (the codec's default): :data:`AUTO_POLICY` where the CPU has bf16 matrix
    units (:func:`engine.cpu.has_bf16_matrix`, ``ENGINE_CPU_BF16=0|1`` overrides),
    fp32 elsewhere.  The policy and the tolerances it keeps are in the README
    ("Precision") and measured by ``python -m bench.ov_precision``.

``runner.precision`` (and ``runner.net_precision``, per network) says what the plugin
chose: on a CPU without bf16 support OpenVINO runs a bf16 request in fp32.

Either way inputs and outputs are float32 torch tensors on the CPU, shared with
OpenVINO without copies: the inputs are wrapped as OpenVINO tensors in place, and the
outputs are allocated here (their shapes follow from the inputs) and handed to the
request, so the networks write straight into them.

Threads: ``threads`` (default: every CPU) intra-op threads, one stream, no CPU pinning
(see :data:`PIN_THREADS`).  Each calling thread gets its own infer request.  Measured by
``python -m bench.ov_variants`` (round trips end to end, Kodak, paired rounds, Intel Xeon
VM family 6 model 167, 2 cores, AMX-bf16): at batch 1 one thread ran at 0.80x and pinned
threads at 0.70x the speed of these settings; at batch 8 (the batch APIs, entropy coding
beside the networks) 0.80x and 1.06x (within the run's noise, so pinning stays off).

The artifacts are verified before anything runs (engine/artifacts.py): a manifest
fingerprint that differs from ``q.fingerprint`` raises ``ArtifactMismatch``, missing
artifacts raise ``BackendUnavailable``; both carry the ``python -m engine.build ...``
command.  ``openvino`` is imported here, when a runner is made, never at engine import.

Telemetry: only OpenVINO's model conversion tool (``ov.convert_model`` / ``ovc``) sends
usage data; the engine uses the runtime alone (``read_model``, ``save_model``,
``compile_model``), which sends nothing (tests/test_openvino.py checks it).
"""
from __future__ import annotations

import os
import threading

import numpy as np
import torch

from ..net.export import IO_NAMES, check_io_names, output_shapes
from ..errors import BackendUnavailable
from .base import GraphRunner

PRECISIONS = ("auto", "fp32", "bf16")
# precision="auto" on a CPU with bf16 matrix units: each network's inference precision.
# Both bf16 (python -m bench.ov_precision, 20 held-out training images, every rung;
# bench/results/ov-precision-*): against ONNX Runtime fp32 the mean PSNR moved by
# +0.007..+0.016 dB for small16 and -0.008..+0.004 dB for small, bpp by at most 0.05%;
# an fp32 encoder with a bf16 decoder moves it by 0.000..-0.001 dB, but the encoder is
# where bf16 gains the most (README, "Precision").
AUTO_POLICY = {"encoder": "bf16", "decoder": "bf16"}
_OV_TYPES = {"fp32": "f32", "bf16": "bf16"}
# OpenVINO pins its threads to cores by default.  Off: the batch APIs entropy-code on
# other threads while a network runs, and pinned threads cannot make way for them
# (measured: see the module docstring).
PIN_THREADS = False


def import_openvino():
    """The openvino module, or BackendUnavailable saying why not (one line)."""
    try:
        import openvino as ov
    except ImportError as ex:
        raise BackendUnavailable("openvino is not installed: pip install openvino "
                                 "(or pip install -e \".[openvino]\")") from ex
    except Exception as ex:  # noqa: BLE001 - a broken install: say so, fall back
        raise BackendUnavailable(f"openvino does not import: {type(ex).__name__}: "
                                 f"{' '.join(str(ex).split())[:300]}") from ex
    return ov


def net_precisions(precision: str, bf16_units: bool | None = None) -> dict[str, str]:
    """{"encoder": p, "decoder": p} for a runner precision ("auto" | "fp32" | "bf16")."""
    if precision not in PRECISIONS:
        raise ValueError(f"openvino precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if bf16_units is None:
            from ..cpu import has_bf16_matrix
            bf16_units = has_bf16_matrix()
        return dict(AUTO_POLICY) if bf16_units else {"encoder": "fp32", "decoder": "fp32"}
    return {"encoder": precision, "decoder": precision}


def precision_label(per_net: dict[str, str]) -> str:
    """"fp32", "bf16", or "fp32+bf16" (encoder+decoder) when they differ."""
    e, d = per_net["encoder"], per_net["decoder"]
    return e if e == d else f"{e}+{d}"


class OvRunner(GraphRunner):
    name = "openvino"

    def __init__(self, q, device: str | None = None, threads: int | None = None, build_dir=None,
                 precision: str = "auto", **_):
        if device is not None and torch.device(device).type != "cpu":
            raise BackendUnavailable(f"the openvino runner runs on the CPU, not {device!r}")
        per_net = net_precisions(precision)
        ov = import_openvino()
        from ..artifacts import OPENVINO_IR_PRECISION, load_artifacts

        self.q, self.cfg = q, q.config
        self.device = torch.device("cpu")
        self.directory, self.manifest = load_artifacts(q, "openvino", OPENVINO_IR_PRECISION, build_dir)
        self.threads = int(threads or os.cpu_count() or 1)
        self._ov = ov
        core = ov.Core()
        self.compiled = {}
        for net in IO_NAMES:
            model = core.read_model(str(self.directory / f"{net}.xml"))
            compiled = core.compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": _OV_TYPES[per_net[net]],
                "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": 1,
                "INFERENCE_NUM_THREADS": self.threads,
                "ENABLE_CPU_PINNING": PIN_THREADS,
            })
            check_io_names(net, [i.get_any_name() for i in compiled.inputs],
                           [o.get_any_name() for o in compiled.outputs])
            self.compiled[net] = compiled
            # what the plugin chose: bf16 asked for on a CPU without bf16 support runs fp32
            ran = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
            per_net[net] = {v: k for k, v in _OV_TYPES.items()}.get(ran, ran)
        self.net_precision = per_net
        self.precision = precision_label(per_net)
        self.version = ov.get_version()
        self._local = threading.local()

    def _release(self) -> None:
        self.compiled.clear()
        self._local = threading.local()     # the infer requests hold the compiled models

    def _request(self, net: str):
        reqs = getattr(self._local, "requests", None)
        if reqs is None:
            reqs = self._local.requests = {}
        r = reqs.get(net)
        if r is None:
            r = reqs[net] = self.compiled[net].create_infer_request()
        return r

    def _run(self, net: str, inputs: tuple[torch.Tensor, ...]):
        in_names, out_names = IO_NAMES[net]
        xs = [x.detach().to("cpu", torch.float32).contiguous() for x in inputs]
        shapes = output_shapes(net, self.cfg, {n: tuple(x.shape) for n, x in zip(in_names, xs)})
        outs = [torch.empty(shapes[n], dtype=torch.float32) for n in out_names]
        req = self._request(net)
        Tensor = self._ov.Tensor
        for n, x in zip(in_names, xs):
            req.set_tensor(n, Tensor(x.numpy(), shared_memory=True))
        for n, o in zip(out_names, outs):
            req.set_tensor(n, Tensor(o.numpy(), shared_memory=True))
        req.infer()
        return tuple(outs)
