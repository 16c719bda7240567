"""TensorRT 10.x: engine building and the helpers the TensorRT runner shares.

``tensorrt`` is imported lazily, inside functions, so this module imports on
any machine.  Everything that does not need TensorRT (timing-cache naming,
dtype mapping, profile checks; the profiles themselves live in
:mod:`engine.net.export`) is a plain function tested without it.  See
docs/tensorrt.md for the documentation each call was checked against.

Networks are created strongly typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``):
precision comes from the ONNX graph (fp32 or the fp16 export), never from
builder precision flags, which strong typing does not allow.
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import BackendUnavailable

TRT_MISSING = ("TensorRT is not installed: pip install tensorrt (CUDA GPU required) "
               "or use --backend onnxruntime")
TRT_NO_CUDA = "TensorRT needs a CUDA GPU, and torch sees none here; use --backend onnxruntime"

# trt.DataType member names -> torch dtype names (torch attribute names).
TRT_DTYPES = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
    "INT64": "int64", "BOOL": "bool", "UINT8": "uint8",
}

_IMPORTABLE: bool | None = None


def import_tensorrt():
    """``import tensorrt`` or BackendUnavailable with the install hint."""
    try:
        import tensorrt as trt
    except ImportError as ex:
        raise BackendUnavailable(TRT_MISSING) from ex
    except Exception as ex:  # a broken install (e.g. a stub wheel or missing libnvinfer)
        raise BackendUnavailable(f"{TRT_MISSING} (import failed: {ex})") from ex
    return trt


def tensorrt_importable() -> bool:
    global _IMPORTABLE
    if _IMPORTABLE is None:
        try:
            import_tensorrt()
            _IMPORTABLE = True
        except BackendUnavailable:
            _IMPORTABLE = False
    return _IMPORTABLE


def tensorrt_environment(device: int | None = None) -> dict:
    """TensorRT version and the GPU engines are built for / run on (both are
    recorded in manifests: a serialized engine only runs where it was built)."""
    trt = import_tensorrt()
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable(TRT_NO_CUDA)
    idx = torch.cuda.current_device() if device is None else device
    major, minor = torch.cuda.get_device_capability(idx)
    return {"backend_version": trt.__version__, "device": torch.cuda.get_device_name(idx),
            "compute_capability": f"{major}.{minor}"}


def timing_cache_path(build_dir: str | Path, trt_version: str, device_name: str) -> Path:
    """One timing cache per TensorRT version and GPU model, shared by every build."""
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", device_name).strip("-").lower() or "gpu"
    return Path(build_dir) / "tensorrt" / f"timing-{trt_version}-{slug}.cache"


def torch_dtype_name(trt_dtype) -> str:
    """torch dtype name for a ``trt.DataType`` (or its member name)."""
    name = getattr(trt_dtype, "name", str(trt_dtype)).split(".")[-1].upper()
    try:
        return TRT_DTYPES[name]
    except KeyError:
        raise ValueError(f"unsupported TensorRT data type {trt_dtype!r}") from None


def profile_dims(spec: dict) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """{"min","opt","max"} -> the (min, opt, max) tuples ``IOptimizationProfile.set_shape`` takes."""
    dims = tuple(tuple(int(v) for v in spec[k]) for k in ("min", "opt", "max"))
    if not all(len(d) == len(dims[0]) for d in dims):
        raise ValueError(f"profile ranks differ: {spec}")
    if any(not (a <= b <= c) for a, b, c in zip(*dims)):
        raise ValueError(f"profile needs min <= opt <= max in every dimension: {spec}")
    return dims  # type: ignore[return-value]


class _Logger:
    """Lazily created trt.Logger (WARNING) shared by builder and runtime."""
    _logger = None

    @classmethod
    def get(cls):
        if cls._logger is None:
            trt = import_tensorrt()
            cls._logger = trt.Logger(trt.Logger.WARNING)
        return cls._logger


def build_engine(onnx_path: str | Path, engine_path: str | Path, net: str, profile: dict,
                 timing_cache: str | Path | None = None, workspace_mib: int | None = None) -> Path:
    """Parse ``onnx_path`` into a strongly typed network, build a serialized engine
    for one optimization profile ({input: {"min","opt","max"}}) and write it to
    ``engine_path``.  The timing cache is loaded from and saved back to ``timing_cache``."""
    from .io.atomic import atomic_write_bytes
    from .net.export import check_io_names

    trt = import_tensorrt()
    logger = _Logger.get()
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    check_io_names(net, [network.get_input(i).name for i in range(network.num_inputs)],
                   [network.get_output(i).name for i in range(network.num_outputs)])

    config = builder.create_builder_config()
    if workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    opt_profile = builder.create_optimization_profile()
    for name, spec in profile.items():
        lo, opt, hi = profile_dims(spec)
        opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)

    cache_path = Path(timing_cache) if timing_cache else None
    blob = cache_path.read_bytes() if cache_path and cache_path.exists() else b""
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, False)        # ignore_mismatch=False: a foreign cache is not used

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    engine_path = Path(engine_path)
    atomic_write_bytes(engine_path, bytes(memoryview(plan)))
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return engine_path


def deserialize_engine(engine_path: str | Path):
    """An ``ICudaEngine`` from a plan file."""
    trt = import_tensorrt()
    runtime = trt.Runtime(_Logger.get())
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise RuntimeError(f"TensorRT could not deserialize {engine_path}")
    return runtime, engine


def engine_io(engine) -> tuple[list[str], list[str]]:
    """(input names, output names) of an ICudaEngine, in engine order."""
    trt = import_tensorrt()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    return ins, outs
