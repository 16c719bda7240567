"""TensorRT 10.x: runs the serialized engines of ``python -m engine.build --backend tensorrt``.

Thin by design: TensorRT objects are created here, every decision (IO names,
output shapes, profile bounds, dtypes) comes from plain functions in
:mod:`engine.net.export` and :mod:`engine.trt_build`.

Execution: torch CUDA tensors are bound by address (``set_tensor_address`` with
``data_ptr()``) and the engine is enqueued with ``execute_async_v3`` on torch's
*current* CUDA stream, so results are ordered like any torch op on that stream.
Each (engine, stream) pair gets its own execution context, created on first use:
a context holds per-call state (shapes, addresses) and must not be shared by
concurrent streams.

Unverified on real hardware in this repository's CI (no GPU / TensorRT there);
see docs/tensorrt.md.
"""
from __future__ import annotations

import threading

import torch

from ..net.export import IO_NAMES, check_io_names, check_shape_in_profile, output_shapes
from ..trt_build import (TRT_NO_CUDA, deserialize_engine, engine_io, import_tensorrt, tensorrt_environment,
                         torch_dtype_name)
from ..errors import BackendUnavailable
from .base import GraphRunner


class TrtRunner(GraphRunner):
    name = "tensorrt"

    def __init__(self, q, device: str | None = None, build_dir=None, precision: str = "fp32", **_):
        import_tensorrt()                       # BackendUnavailable with the install hint
        if not torch.cuda.is_available():
            raise BackendUnavailable(TRT_NO_CUDA)
        from ..artifacts import load_artifacts

        self.device = torch.device(device or "cuda")
        if self.device.type != "cuda":
            raise BackendUnavailable(f"TensorRT runs on CUDA devices only, not {device!r}")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.q, self.cfg, self.precision = q, q.config, precision
        env = tensorrt_environment(self.device.index)
        # A plan only runs with the TensorRT version and GPU model it was built for.
        self.directory, self.manifest = load_artifacts(
            q, "tensorrt", precision, build_dir,
            expect={"backend_version": env["backend_version"], "device": env["device"]})
        self.profiles = self.manifest["profiles"]
        self._engines = {}
        self._dtypes = {}
        with torch.cuda.device(self.device):
            for net in IO_NAMES:
                runtime, eng = deserialize_engine(self.directory / f"{net}.engine")
                ins, outs = engine_io(eng)
                check_io_names(net, ins, outs)
                self._engines[net] = (runtime, eng)
                self._dtypes[net] = {n: getattr(torch, torch_dtype_name(eng.get_tensor_dtype(n)))
                                     for n in ins + outs}
        self._contexts: dict[tuple[str, int], object] = {}
        self._lock = threading.Lock()

    def _release(self) -> None:
        with self._lock:
            self._contexts.clear()          # contexts before the engines they were made from
            self._engines.clear()

    def _context(self, net: str, stream: torch.cuda.Stream):
        key = (net, stream.cuda_stream)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._engines[net][1].create_execution_context()
            if ctx is None:
                raise RuntimeError(f"TensorRT could not create an execution context for {net}")
            self._contexts[key] = ctx
        return ctx

    def _run(self, net: str, inputs: tuple[torch.Tensor, ...]):
        in_names, out_names = IO_NAMES[net]
        dtypes = self._dtypes[net]
        xs = [x.detach().to(self.device, dtypes[n]).contiguous() for n, x in zip(in_names, inputs)]
        in_shapes = {n: tuple(x.shape) for n, x in zip(in_names, xs)}
        shapes = output_shapes(net, self.cfg, in_shapes)
        for n in in_names:
            check_shape_in_profile(n, in_shapes[n], self.profiles[net][n])
        outs = {n: torch.empty(shapes[n], device=self.device, dtype=dtypes[n]) for n in out_names}
        stream = torch.cuda.current_stream(self.device)
        with self._lock:
            ctx = self._context(net, stream)
            for n, x in zip(in_names, xs):
                if not ctx.set_input_shape(n, in_shapes[n]):
                    raise ValueError(f"TensorRT rejected {n} shape {in_shapes[n]}")
                ctx.set_tensor_address(n, x.data_ptr())
            for n, o in outs.items():
                got = tuple(ctx.get_tensor_shape(n))
                if got != tuple(o.shape):
                    raise RuntimeError(f"{net}: engine output {n} has shape {got}, expected {tuple(o.shape)}")
                ctx.set_tensor_address(n, o.data_ptr())
            if not ctx.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT execute_async_v3 failed for {net}")
        # Inputs stay alive until torch's allocator sees later work on this
        # stream, which is ordered after the engine: no extra sync needed.
        return tuple(outs[n].float() for n in out_names)
