"""The codec API: one obvious path from an image to bytes and back.

    codec = engine.Codec(quality=3)
    data = codec.compress(img)        # PIL image, HxWx3 uint8 array, CHW tensor or path
    rgb = codec.decompress(data)      # HxWx3 uint8
    blobs = codec.compress_batch(images)             # same bytes as one at a time
    for data in codec.compress_iter(image_stream):   # any number of inputs, bounded memory
        ...

A single image is a batch of one: every call runs the same stages
(engine/runtime/stages.py) under the same scheduler (engine/runtime/scheduler.py), on an executor
(engine/runtime/executors.py: inline, or CUDA streams when the networks run on CUDA) and an
entropy pool (engine/runtime/entropy_pool.py).  docs/architecture.md draws the whole path.
"""
from __future__ import annotations

import numbers
import threading
from contextlib import contextmanager
from pathlib import Path

from .net import checkpoint
from . import target
from .io import tiling
from .format import bitstream, lanes, registry
from . import roi as roi_mod     # the name roi is the compress calls' argument
from .runtime import entropy_pool as entropy_pools, scheduler     # the name entropy_pool is the constructor's argument
from .errors import BitstreamError
from .runtime.executors import CUDA, InlineExecutor, StreamExecutor
from .io.imageio import COLOR_GRAY, check_batch, max_pixels_setting, to_rgb
from .net.rungs import Rungs
from .settings import Settings, check, check_choices, pick, tile_pixels_setting, tile_size_setting
from .runners import BackendUnavailable


class Codec:
    """A model quality + a backend + a bit path + an entropy mode.

    quality   1..K, a rung of the model's rate ladder (None: the model's default_quality, else
              the middle one); retired rungs only decode
    model     a shipped model name (``engine.net.checkpoint.list_models()``; default: the model
              for ``metric``)
    metric    "mse" (default) or "ms-ssim": the installed model trained for it
              (``engine.net.checkpoint.installed_metrics()``); files of another model decode with
              ``Codec(model=NAME)``, and the error a file of another model raises names it
    backend   "auto" | "torch" | "onnxruntime" | "openvino" | "tensorrt" (auto: engine/runners/select.py;
              OpenVINO in bf16 where the CPU has bf16 matrix units and it is built)
    kernels   "auto" | "torch" | "triton" (else ENGINE_KERNELS)
    entropy   "rans" (default: bitstream v2, rANS lanes, the native coder: engine/format/lanes.py)
              | "context" (version 1's range coder, kept for old readers and comparisons)
              | "none" (raw packing, version 1).  Every mode's files decode.
    tile_pixels  run the networks in tiles (engine/io/tiling.py) when the padded image has
              more pixels than this, or a side longer than a TensorRT profile allows;
              0 never tiles (default ENGINE_TILE_PIXELS, ~8.4 MP).
              Tiled and untiled runs give the same bytes (see engine/io/tiling.py).
    tile_size core tile side in pixels, a multiple of 16 (default ENGINE_TILE_SIZE, 2048)
    effort    0 (default: the one-pass encoder) .. 9: search each image's codes with the
              decoder fixed (engine/net/search.py); each step up is slower and better.  The
              search runs the networks in torch on the runner's device, whatever the
              backend; its files are ordinary files that every backend decodes.
    entropy_pool  where the batch APIs entropy-code: "threads", "processes" or "auto"
              (default ENGINE_ENTROPY_POOL, else auto = processes when the networks run
              on CUDA, there are >= 4 CPUs and the program was started with -m or
              interactively); see engine/runtime/entropy_pool.py.  Worker processes live until
              ``codec.close()`` (or the end of a ``with`` block).
    coder     bitstream v2's entropy coder: "native" (C++, on the CPU), "triton" (on the
              networks' device: kernels/rans_triton.py; the same bytes) or "auto"
              (default ENGINE_CODER, else auto = triton when the networks run on CUDA and
              Triton is installed).  With triton no worker processes are started.
    precision "fp32", "fp16", "bf16" or "auto" (default ENGINE_PRECISION, else auto = fp16 when
              the networks run on CUDA in torch, bf16 in OpenVINO on a CPU with bf16 matrix
              units, fp32 elsewhere; bf16 is OpenVINO's only).  fp32 is the reference; an
              fp16 or bf16 decode stays within the tolerance stated in the README
              ("Precision"), and their encoders' files are ordinary files (a bit may differ
              where a sigmoid output is within rounding of 0.5).
    compile   torch backend: "off" (default ENGINE_TORCH_COMPILE, else off), "default"
              (torch.compile) or "reduce-overhead" (torch.compile with CUDA graphs);
              engine/runners/torch_runner.py.
    search_precision  the code search's gradient steps (effort > 0): "fp32", "bf16" or "auto"
              (default ENGINE_SEARCH_PRECISION, else auto = bf16 on a CPU with bf16 matrix
              units, fp32 elsewhere).  The search's checks stay fp32 either way
              (engine/net/search.py); bf16 changes which codes it finds, about 2x sooner.
    build_dir the build artifacts' folder (ONNX, TensorRT engines, OpenVINO IR; default
              ENGINE_BUILD_DIR, else the repository's build/): engine/build.py.

    ``codec.timer = engine.timing.StageTimer()`` records per-stage times of every call.
    """

    def __init__(self, quality: int | None = None, model: str | None = None,
                 backend: str = "auto", kernels: str | None = None, entropy: str = "rans",
                 device: str | None = None, max_pixels: int | None = None,
                 root: str | Path | None = None, threads: int | None = None,
                 tile_pixels: int | None = None, tile_size: int | None = None,
                 entropy_pool: str | None = None, effort: int = 0, coder: str | None = None,
                 precision: str | None = None, compile: str | None = None, metric: str | None = None,
                 build_dir: str | Path | None = None, search_precision: str | None = None):
        from kernels import kernel_choice

        from .net.search import check_effort
        self.effort = check_effort(effort)
        # every named choice against its registry (engine/settings.py), before anything loads
        named = check_choices(backend=backend, kernels=kernels, coder=coder, precision=precision, compile=compile,
                              entropy_pool=entropy_pool, entropy=entropy, metric=metric,
                              search_precision=search_precision)
        entropy, entropy_pool, metric = named["entropy"], named["entropy_pool"], named["metric"]
        self.entropy_mode = bitstream.ENTROPY_NAMES[entropy]
        self.entropy_name = entropy
        self.entropy_pool = entropy_pool
        self.search_precision = pick(named["search_precision"], "ENGINE_SEARCH_PRECISION", "auto")
        check("search_precision", self.search_precision, "ENGINE_SEARCH_PRECISION")
        self.kernels = kernel_choice(kernels)
        self.backend = backend
        self.device = device
        self.max_pixels = max_pixels_setting(max_pixels)   # None: ENGINE_MAX_PIXELS, else 100 M
        self.root = Path(root) if root else None
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral)
                                    or threads < 1):
            raise ValueError(f"threads must be a positive integer (or None: every CPU), got {threads!r}")
        self.threads = threads
        self.tile_pixels = tile_pixels_setting(tile_pixels)     # None: ENGINE_TILE_PIXELS, else ~8.4 M
        self.tile_size = tiling.check_tile_size(tile_size_setting(tile_size))
        self.timer = None
        model = checkpoint.model_for(metric, model, self.root)   # as CompressAI's metric=: the model for it
        self.model_name = model
        self.rungs = Rungs(model, self.root, backend, device, threads, precision, compile, build_dir)
        self.quality = self.rungs.codings.resolve(quality).quality      # checks model and quality
        self.metric = checkpoint.model_metric(model, self.root)
        lanes.resolve_coder(coder, "cpu")            # an unknown coder name fails here
        self._coder_choice, self._coder = coder, None
        try:
            self.rungs.get(self.quality)             # the networks of the default rung, now
        except BackendUnavailable:
            # Its artifacts are missing or stale: decoding another rung's file does not need
            # them (issue #28); encoding at this quality raises this error again.
            pass
        self._workers = None          # the entropy worker processes, once a batch call starts them
        self._workers_lock = threading.Lock()

    def __repr__(self) -> str:
        # what auto resolved to, where a rung is loaded; never loads one (a repr must not fail)
        loaded = next(iter(self.rungs.loaded.values()), None)
        backend = self.backend
        if loaded is not None:
            precision = getattr(loaded.runner, "precision", None)
            backend = loaded.runner.name + (f", {precision}" if precision else "")
        return (f"Codec(model={self.model_name!r}, metric={self.metric!r}, quality={self.quality}, "
                f"effort={self.effort}, backend={backend!r}, entropy={self.entropy_name!r})")

    def close(self) -> None:
        """Stop the entropy worker processes, if a batch call started them."""
        pool, self._workers = self._workers, None
        if pool is not None:
            pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def rung(self):
        """The rung this codec encodes with (built on first use if its runner failed)."""
        return self.rungs.get(self.quality)

    @property
    def coder(self) -> str:
        if self._coder is None:
            self._coder = lanes.resolve_coder(self._coder_choice, self.runner.device)
        return self._coder

    def settings(self, effort: int | None = None) -> Settings:
        """This codec's choices for one call, as the scheduler and the stages read them;
        ``effort`` for a call that searches at another (a target size's tries)."""
        return Settings(kernels=self.kernels, entropy_mode=self.entropy_mode, coder=self.coder,
                                 effort=self.effort if effort is None else effort, tile_pixels=self.tile_pixels,
                                 tile_size=self.tile_size, max_pixels=self.max_pixels,
                                 search_precision=self.search_precision)

    @property
    def config(self):
        return self.rung.q.config

    @property
    def runner(self):
        """The default rung's runner, or (when only others are built, a decode-only codec
        whose default rung has no artifacts) another rung's: they share backend and device."""
        loaded = self.rungs.loaded
        r = loaded.get(self.quality) or next(iter(loaded.values()), None)
        return (r or self.rung).runner

    def worker_pids(self) -> list[int]:
        """The entropy worker processes' ids ([] when none run)."""
        return self._workers.pids() if self._workers is not None else []

    # ------------------------------------------------------------------ where the stages run
    def executor(self, pipeline: dict | None = None):
        """The executor a batch call uses: CUDA streams (options ``pipeline``, see
        :class:`engine.runtime.executors.StreamExecutor`) when the runner is on a CUDA device,
        else inline."""
        opts = dict(pipeline or {})
        api = opts.get("api") or CUDA
        if api.is_cuda(self.runner.device):
            opts.setdefault("timer", self.timer)
            return StreamExecutor(self.runner.device, **opts)
        return InlineExecutor(self.runner.device, self.timer)

    @contextmanager
    def entropy_workers(self, on_cuda: bool, workers: int | None = None):
        """The pool one batch call codes in: a thread pool closed when the call ends, or
        this codec's worker processes, which live until :meth:`close`."""
        gil_free = self.entropy_mode == bitstream.ENTROPY_RANS and lanes.native() is not None
        on_device = self.coder == "triton"     # v2 coded on the device: no worker processes
        if on_device or entropy_pools.resolve_kind(self.entropy_pool, on_cuda, gil_free) == "threads":
            pool = entropy_pools.ThreadEntropyPool(self.rungs.codings, self.max_pixels, workers, on_device)
            pool.timer = self.timer
            try:
                yield pool
            finally:
                pool.close()
            return
        with self._workers_lock:
            pool = self._workers
            if pool is None or (workers and pool.workers != workers):
                if pool is not None:
                    pool.close()
                pool = self._workers = entropy_pools.ProcessEntropyPool(self.model_name, self.root, self.max_pixels,
                                                                       workers)
        pool.timer = self.timer
        yield pool

    def _inline(self):
        pool = entropy_pools.InlinePool(self.rungs.codings, self.max_pixels, self.coder == "triton")
        pool.timer = self.timer
        return InlineExecutor(self.runner.device, self.timer), pool

    # ------------------------------------------------------------------ encode
    def compress(self, img, max_bytes: int | None = None, target_bpp: float | None = None, roi=None,
                 roi_boost: float | None = None, quality: int | None = None, effort: int | None = None) -> bytes:
        """One image -> file bytes at this codec's quality and effort.  With ``max_bytes``
        or ``target_bpp`` (bits per pixel of the image's own size): the best file that
        fits, over the model's encodable rungs, and this codec's effort when it is > 0
        (engine/target.py); :class:`~engine.errors.TargetSizeError` when none fits.
        ``roi``: a region of interest (engine/roi.py): an HxW bool/uint8 mask, a PIL
        ``L`` image or its path (nonzero = inside), or a float boost map; its importance
        logits are raised by ``roi_boost`` (default engine.roi.DEFAULT_BOOST for a mask,
        1 x the map).  The file is an ordinary file; a bad mask is an ImageError.
        ``quality`` / ``effort``: this call's, instead of the codec's (as nvImageCodec's
        encode parameters: the codec holds the resources, a call its choices)."""
        roi_mod.check_call(roi, roi_boost)
        rung, effort = self._call_choices(quality, effort, max_bytes, target_bpp)
        if max_bytes is None and target_bpp is None:
            return self._encode(img, rung or self.rung, effort, roi, roi_boost)
        return self._fit(img, max_bytes, target_bpp, roi, roi_boost, effort)

    def _call_choices(self, quality, effort, max_bytes, target_bpp):
        """A call's rung (None: the codec's, built when the call needs it) and effort:
        its own, checked, else the codec's."""
        from .net.search import check_effort
        if quality is not None and (max_bytes is not None or target_bpp is not None):
            raise ValueError("quality and max_bytes / target_bpp exclude each other: a target size chooses the quality")
        rung = None if quality is None else self.rungs.get(quality)
        return rung, self.effort if effort is None else check_effort(effort)

    def _encode(self, img, rung, effort: int, roi=None, roi_boost=None) -> bytes:
        ex, pool = self._inline()
        (data,) = scheduler.compress_iter(self.settings(effort), rung, [img], ex, pool, batch_size=1,
                                          rois=None if roi is None else iter([roi]), roi_boost=roi_boost)
        return data

    def _fit(self, img, max_bytes, target_bpp, roi=None, roi_boost=None, effort: int | None = None) -> bytes:
        target.check(max_bytes, target_bpp)
        rgb, color = to_rgb(img, self.max_pixels)      # read once: every try codes these pixels
        src = rgb[:, :, :1] if color == COLOR_GRAY else rgb
        h, w = rgb.shape[:2]
        if isinstance(roi, BaseException):             # the caller's own error for this item's mask
            raise roi
        boost = roi_mod.prepare(roi, roi_boost, h, w)  # checked once: every try codes this boost
        return target.fit(lambda q, e: self._encode(src, self.rungs.get(q), e, boost),
                          checkpoint.qualities(self.model_name, self.root), self.effort if effort is None else effort,
                          target.limit_bytes(max_bytes, target_bpp, w, h), w * h, f"a {w}x{h} image")

    def _fit_iter(self, images, errors: str, max_bytes, target_bpp, progress, rois=None, roi_boost=None, effort=None):
        target.check(max_bytes, target_bpp)
        for i, img in enumerate(images):
            mask = None
            if rois is not None:
                mask = next(rois, _NO_MASK)
                if mask is _NO_MASK:
                    raise ValueError(f"roi has fewer masks than images: none for image {i}")
            try:
                if isinstance(img, BaseException):     # the caller's own error for this item
                    raise img
                data = self._fit(img, max_bytes, target_bpp, mask, roi_boost, effort)
            except Exception as exc:  # noqa: BLE001 - reported per item
                if errors == "raise":
                    raise
                data = exc
            if progress:
                progress(1)
            yield data

    def compress_iter(self, images, batch_size: int = 8, errors: str = "raise", workers: int | None = None,
                      progress=None, pipeline: dict | None = None, executor=None, window: int | None = None,
                      max_bytes: int | None = None, target_bpp: float | None = None, roi=None,
                      roi_boost: float | None = None, quality: int | None = None, effort: int | None = None):
        """Images (any iterable) -> bytes, in order, identical to :meth:`compress` one by
        one; at most ``window`` (default max(4 x batch_size, 16)) images are held.
        ``errors="return"`` yields the exception in a failed item's place.  With
        ``max_bytes`` / ``target_bpp``, each image's best file that fits, one image at a
        time (see :meth:`compress`).  ``roi``: one mask for every image, or an iterable
        of masks in step with ``images`` (None: no ROI for that image); ``roi_boost`` for
        all.  A bad mask is its image's error.  ``quality`` / ``effort``: as :meth:`compress`."""
        scheduler.check_errors(errors)
        check_batch(images)
        roi_mod.check_call(roi, roi_boost)
        rung, effort = self._call_choices(quality, effort, max_bytes, target_bpp)
        rois = roi_mod.requests(roi, len(images) if hasattr(images, "__len__") else None)
        if max_bytes is not None or target_bpp is not None:
            yield from self._fit_iter(images, errors, max_bytes, target_bpp, progress, rois, roi_boost, effort)
            return
        ex = executor or self.executor(pipeline)
        with self.entropy_workers(ex.kind == "streams", workers) as pool:
            yield from scheduler.compress_iter(self.settings(effort), rung or self.rung, images, ex, pool, batch_size, errors, window,
                                               progress, rois, roi_boost)

    def compress_batch(self, images, batch_size: int = 8, errors: str = "raise", **kw) -> list:
        """Many images -> list of bytes, identical to :meth:`compress` one by one.
        ``errors="return"`` puts the exception in a failed item's place."""
        return list(self.compress_iter(images, batch_size, errors, **kw))

    # ------------------------------------------------------------------ decode
    def parse(self, data: bytes):
        """Validate a file and entropy-decode it -> (header, rung, (levels, ydense, cdense)
        numpy), or (header, rung, Packed) for a raw-mode file."""
        hdr, _, dec = registry.parse(data, self.rungs.codings.for_header, self.max_pixels, self.timer)
        return hdr, self.rungs.for_header(hdr), dec

    def decompress(self, data: bytes):
        self._file_rung(data)
        ex, pool = self._inline()
        (rgb,) = scheduler.decompress_iter(self.settings(), self.rungs, [data], ex, pool, batch_size=1)
        return rgb

    def decompress_iter(self, blobs, batch_size: int = 8, errors: str = "raise", workers: int | None = None,
                        progress=None, pipeline: dict | None = None, executor=None, window: int | None = None):
        """Files (any iterable of bytes) -> (H, W, 3) uint8 arrays, in order."""
        scheduler.check_errors(errors)
        check_batch(blobs, "files")
        ex = executor or self.executor(pipeline)
        with self.entropy_workers(ex.kind == "streams", workers) as pool:
            yield from scheduler.decompress_iter(self.settings(), self.rungs, blobs, ex, pool, batch_size, errors, window,
                                                 progress)

    def decompress_batch(self, blobs, batch_size: int = 8, errors: str = "raise", **kw) -> list:
        return list(self.decompress_iter(blobs, batch_size, errors, **kw))


    def _file_rung(self, data) -> None:
        """Build the rung a file names before anything needs a runner, so a file of another
        quality decodes without the default rung's artifacts.  Bad headers are left to
        the decode, which reports them."""
        try:
            hdr = bitstream.peek(data, self.max_pixels)
            if hdr.model == self.model_name:
                self.rungs.for_header(hdr)
        except (BitstreamError, TypeError):
            pass


_NO_MASK = object()

