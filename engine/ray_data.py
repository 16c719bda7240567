"""Scale-out on Ray Data (``pip install -e ".[ray]"``): each Ray actor holds one Codec,
with a GPU per actor when the cluster has GPUs.

    import ray, engine.ray_data
    ds = ray.data.from_items([{"path": p} for p in paths])      # or a "path" / "image" column of yours
    ds = engine.ray_data.compress_dataset(ds, quality=4)       # + "hnlc" (file bytes), "error" ("" if none)
    # the same by hand:
    ds = ds.map_batches(engine.ray_data.Compress, fn_constructor_kwargs={"quality": 4}, batch_size=8,
                        compute=ray.data.ActorPoolStrategy(size=2))

``python -m engine compress DIR -o OUT --ray [ADDRESS]`` runs the CLI's job this way
(:class:`RayCompressor`): the driver plans the outputs as the local CLI does (existing
ones skipped, so an interrupted run resumes), the actors read the inputs by path and
encode them with ``Codec.compress_iter`` (the call the local CLI makes, so the bytes are
the same), and the driver writes each file atomically as its result comes back, a failed
item reported by name.  On a cluster of several machines the inputs, ``--model-dir``
and built artifacts must be at the same paths on every node (a shared filesystem), with
this package installed there.  ADDRESS: none (``RAY_ADDRESS``, else a local Ray),
``auto`` (the cluster this machine is in) or ``ray://HEAD:10001``.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .errors import EngineError

INSTALL_HINT = 'Ray Data is not installed: pip install -e ".[ray]"'
MAX_BLOCKS = 256        # the CLI's input rows are cut into at most this many blocks


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise EngineError(f"{INSTALL_HINT} ({e})") from None
    return ray


def _item(x):
    """A batch cell as an input ``Codec.compress`` takes: a path, an image array, or an
    encoded image's bytes (opened with Pillow)."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        from PIL import Image
        return Image.open(io.BytesIO(bytes(x)))
    if isinstance(x, np.ndarray) and x.dtype.kind in "OUS" and x.ndim == 0:
        x = x.item()
    return str(x) if isinstance(x, (str, np.str_)) else x


class Compress:
    """A callable class for ``ds.map_batches``: one Codec per actor (``codec_options``
    are :class:`engine.Codec`'s).  Takes the batch's ``column`` (paths, HxWx3 uint8
    arrays or encoded image bytes) and returns the other columns plus ``hnlc`` (the file
    bytes; empty for a failed item) and ``error`` (the error message; "" when none).
    ``max_bytes`` / ``target_bpp``: each image's best file that fits."""

    def __init__(self, column: str = "path", batch_size: int = 8, max_bytes: int | None = None,
                 target_bpp: float | None = None, **codec_options):
        from .codec import Codec
        self.column, self.batch_size = column, int(batch_size)
        self.max_bytes, self.target_bpp = max_bytes, target_bpp
        self.codec = Codec(**codec_options)

    def __call__(self, batch: dict) -> dict:
        items = []
        for x in batch[self.column]:
            try:
                items.append(_item(x))
            except Exception as exc:  # noqa: BLE001 - reported per item
                items.append(EngineError(f"cannot read image: {exc}"))
        data, errors = [], []
        for r in self.codec.compress_iter(items, self.batch_size, errors="return", max_bytes=self.max_bytes,
                                          target_bpp=self.target_bpp):
            bad = isinstance(r, BaseException)
            data.append(b"" if bad else r)
            errors.append((str(r) or type(r).__name__) if bad else "")
        out = {k: v for k, v in batch.items() if k == "path" or k != self.column}
        out["hnlc"] = np.array(data, dtype=object)
        out["error"] = np.array(errors, dtype=object)
        return out


def pool_settings(actors: int | None = None, num_gpus: float | None = None, num_cpus: float | None = None) -> dict:
    """``map_batches``' resource arguments for the connected cluster: a GPU per actor and
    as many actors as GPUs when it has GPUs, else a CPU per actor and as many actors as
    CPUs (each argument given overrides its default)."""
    ray = _ray()
    res = ray.cluster_resources()
    gpus = float(res.get("GPU", 0))
    num_gpus = (1 if gpus >= 1 else 0) if num_gpus is None else num_gpus
    num_cpus = 1 if num_cpus is None else num_cpus
    if actors is None:
        actors = int(gpus // num_gpus) if num_gpus else int(float(res.get("CPU", 1)) // num_cpus)
    settings = dict(compute=ray.data.ActorPoolStrategy(size=max(1, int(actors))), num_cpus=num_cpus)
    if num_gpus:
        settings["num_gpus"] = num_gpus
    return settings


def compress_dataset(ds, column: str = "path", batch_size: int = 8, actors: int | None = None,
                     num_gpus: float | None = None, num_cpus: float | None = None, max_bytes: int | None = None,
                     target_bpp: float | None = None, **codec_options):
    """``ds.map_batches(Compress, ...)`` with :func:`pool_settings`' resources; each
    actor's codec gets ``threads`` = its CPUs unless ``codec_options`` say otherwise."""
    settings = pool_settings(actors, num_gpus, num_cpus)
    codec_options.setdefault("threads", max(1, int(settings["num_cpus"])))
    kwargs = dict(column=column, batch_size=batch_size, max_bytes=max_bytes, target_bpp=target_bpp, **codec_options)
    return ds.map_batches(Compress, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="numpy",
                          **settings)


class RayCompressor:
    """What ``python -m engine compress --ray`` uses in place of a local Codec: the same
    ``compress_iter`` call (results in input order, a failed item's error in its place)
    run by :func:`compress_dataset` on a Ray cluster, and ``close``.  The settings are
    checked here, before Ray starts, with the errors a local Codec gives."""

    def __init__(self, address: str | None = None, **codec_options):
        from .net import checkpoint
        from .format import bitstream
        from .net.search import check_effort

        _ray()
        model = codec_options.get("model") or checkpoint.DEFAULT_MODEL
        checkpoint.resolve(model, codec_options.get("quality"), root=codec_options.get("root"))
        check_effort(codec_options.get("effort", 0))
        entropy = codec_options.get("entropy", "rans")
        if entropy not in bitstream.ENTROPY_NAMES:
            raise ValueError(f"entropy must be one of {sorted(bitstream.ENTROPY_NAMES)}, got {entropy!r}")
        self.address = address or None
        self.options = {k: (str(v) if isinstance(v, Path) else v) for k, v in codec_options.items()}
        self.started = False

    def start(self):
        ray = _ray()
        if not ray.is_initialized():
            import logging
            ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
            self.started = True
        ray.data.DataContext.get_current().enable_progress_bars = False   # the CLI has its own
        return ray

    def compress_iter(self, images, batch_size: int = 8, errors: str = "return", max_bytes: int | None = None,
                      target_bpp: float | None = None, **_):
        items = list(images)
        ready = {i: x for i, x in enumerate(items) if isinstance(x, BaseException)}
        rows = [{"i": i, "path": str(Path(x).absolute())} for i, x in enumerate(items) if i not in ready]
        if rows:
            ray = self.start()
            blocks = min(-(-len(rows) // max(1, batch_size)), MAX_BLOCKS)     # a batch a block: every actor gets work
            ds = compress_dataset(ray.data.from_items(rows, override_num_blocks=blocks), "path", batch_size,
                                  max_bytes=max_bytes, target_bpp=target_bpp, **self.options)
            results = ds.iter_rows()
        else:
            results = iter(())
        nxt = 0
        for row in results:
            msg = row["error"]
            ready[int(row["i"])] = EngineError(msg) if msg else bytes(row["hnlc"])
            # in input order as they come; the last one only once Ray's iterator has ended,
            # so that a consumer that stops there leaves no Ray iteration open
            while nxt in ready and nxt < len(items) - 1:
                yield self._check(ready.pop(nxt), errors)
                nxt += 1
        for i in range(nxt, len(items)):
            r = ready.pop(i) if i in ready else EngineError("the Ray cluster returned no result for it")
            yield self._check(r, errors)

    @staticmethod
    def _check(r, errors: str):
        if errors == "raise" and isinstance(r, BaseException):
            raise r
        return r

    def close(self) -> None:
        if self.started:
            _ray().shutdown()
            self.started = False
