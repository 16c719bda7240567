"""ONNX Runtime: runs the exported graphs (``python -m engine.build --backend onnxruntime``).

CPU execution provider by default; the CUDA execution provider when the device
is CUDA (explicitly, or by default when torch sees a GPU and onnxruntime-gpu is
installed).  On CUDA, torch tensors are bound in place with IO binding (no host
round trip); on the CPU they go through numpy without copies where possible.

Intra-op threads do not spin-wait (``spin="off"``; ``spin="on"`` or
``ENGINE_ORT_SPIN=on`` restores ORT's default): the batch APIs entropy-code on other threads
while a network runs, and spinning ORT threads took the CPU from them.  Measured
on the 2-core CPU box, batch 1, end to end, 12 paired rounds (``python -m
bench.ort_variants``): with spinning, encode takes 10% longer, decode 2%.

The artifacts are verified against the checkpoint before anything runs: a
manifest fingerprint that differs from ``q.fingerprint`` raises
``ArtifactMismatch``, missing artifacts raise ``BackendUnavailable``; both
messages carry the ``python -m engine.build ...`` command to run.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from .. import settings
from ..net.export import IO_NAMES, check_io_names, output_shapes
from ..errors import BackendUnavailable
from .base import GraphRunner

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"


def _provider_name(p) -> str:
    return p[0] if isinstance(p, (tuple, list)) else str(p)


def choose_providers(device: str | None, providers, available, cuda_visible: bool):
    """(torch device, providers list) for a requested device/providers.

    * ``providers`` given: used as is; the device is CUDA iff the CUDA EP leads them.
    * ``device`` None: CUDA when torch sees a GPU and the CUDA EP is installed, else CPU.
    * ``device`` "cuda[:i]" without the CUDA EP: BackendUnavailable (no silent CPU fallback).
    """
    if providers:
        providers = list(providers)
        first = _provider_name(providers[0])
        if device is None:
            device = "cuda" if first == CUDA_EP else "cpu"
        if torch.device(device).type == "cuda" and first != CUDA_EP:
            raise ValueError(f"device {device!r} needs {CUDA_EP} first in providers, got {providers}")
        return torch.device(device), providers
    if device is None:
        device = "cuda" if cuda_visible and CUDA_EP in available else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if CUDA_EP not in available:
            raise BackendUnavailable(
                f"onnxruntime here has no {CUDA_EP} (available: {list(available)}): "
                "pip install onnxruntime-gpu, or run on the CPU")
        idx = dev.index if dev.index is not None else 0
        return torch.device("cuda", idx), [(CUDA_EP, {"device_id": idx}), CPU_EP]
    if dev.type != "cpu":
        raise ValueError(f"onnxruntime runner supports cpu and cuda devices, got {device!r}")
    return dev, [CPU_EP]


SPIN_MODES = settings.available("ort_spin")
SHRINK_PIXELS = 1 << 21     # runs on images of this many pixels or more release their arena memory at the end


def spin_mode(v) -> str:
    """"off" (no spin-waiting) or "on" (ORT's default: workers spin between and after
    runs); True/False and "1"/"0" map to on/off."""
    m = {True: "on", False: "off", "1": "on", "0": "off", "": "off"}.get(v, v)
    if m not in SPIN_MODES:
        raise ValueError(f"spin must be one of {SPIN_MODES}, got {v!r}")
    return m


class OrtRunner(GraphRunner):
    name = "onnxruntime"

    def __init__(self, q, device: str | None = None, threads: int | None = None, build_dir=None,
                 providers=None, precision: str = "fp32", spin: str | bool | None = None, **_):
        try:
            import onnxruntime as ort
        except ImportError as ex:
            raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from ex
        from ..artifacts import load_artifacts

        self.q, self.cfg, self.precision = q, q.config, precision
        self.directory, self.manifest = load_artifacts(q, "onnxruntime", precision, build_dir)
        self.device, providers = choose_providers(device, providers, ort.get_available_providers(),
                                                  torch.cuda.is_available())
        self.threads = int(threads or os.cpu_count() or 1)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.spin = spin_mode(settings.env("ENGINE_ORT_SPIN", "off") if spin is None else spin)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0" if self.spin == "off" else "1")
        self.sessions = {}
        for net in IO_NAMES:
            sess = ort.InferenceSession(str(self.directory / f"{net}.onnx"), so, providers=providers)
            check_io_names(net, [i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()])
            self.sessions[net] = sess
        self.providers = self.sessions["encoder"].get_providers()
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    # -- execution ---------------------------------------------------------
    def _release(self) -> None:
        self.sessions.clear()

    def _run(self, net: str, inputs: tuple[torch.Tensor, ...]):
        in_names, out_names = IO_NAMES[net]
        xs = [x.detach().to(self.device, torch.float32).contiguous() for x in inputs]
        shapes = output_shapes(net, self.cfg, {n: tuple(x.shape) for n, x in zip(in_names, xs)})
        sess = self.sessions[net]
        if self.device.type == "cpu":
            # A large image's run (a tile) hands its arena memory back when it ends: tiles of
            # several shapes otherwise leave the arena fragmented at ~2 GB (issue #13).
            big = xs[0].shape[-2] * xs[0].shape[-1] * (64 if net == "decoder" else 1) >= SHRINK_PIXELS
            outs = sess.run(list(out_names), {n: x.numpy() for n, x in zip(in_names, xs)},
                            self._shrink if big else None)
            return tuple(torch.from_numpy(np.ascontiguousarray(o)) for o in outs)
        # CUDA: bind torch memory directly.  ORT runs on its own stream, so wait
        # for the producer of the inputs first and for ORT's outputs after.
        idx = self.device.index or 0
        binding = sess.io_binding()
        for n, x in zip(in_names, xs):
            binding.bind_input(n, "cuda", idx, np.float32, tuple(x.shape), x.data_ptr())
        outs = [torch.empty(shapes[n], device=self.device, dtype=torch.float32) for n in out_names]
        for n, o in zip(out_names, outs):
            binding.bind_output(n, "cuda", idx, np.float32, tuple(o.shape), o.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()
        binding.synchronize_inputs()
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return tuple(outs)
