"""The codec API: one obvious path from an image to bytes and back.

    codec = engine.Codec(quality=3)
    data = codec.compress(img)        # PIL image, HxWx3 uint8 array, CHW tensor or path
    rgb = codec.decompress(data)      # HxWx3 uint8

Pipeline: image -> padded YCbCr planes -> runner.encode (torch / ONNX Runtime /
TensorRT) -> bit path (kernels: quantize, mask, binarize, pack) -> entropy coder
-> container.  Decoding runs the same steps backwards.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import bitstream, checkpoint, entropy, tiling
from .color import rgb_to_ycbcr, ycbcr_to_rgb
from .errors import BitstreamError
from .imageio import COLOR_GRAY, DEFAULT_MAX_PIXELS, to_rgb
from .timing import stage


def padded_size(h: int, w: int, multiple: int) -> tuple[int, int]:
    """The sides the networks run at: h and w rounded up to a multiple."""
    return -(-h // multiple) * multiple, -(-w // multiple) * multiple


def preprocess(rgb: np.ndarray, multiple: int, device="cpu") -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H', W') float32 YCbCr, replicate-padded to a multiple."""
    if not rgb.flags.writeable:
        rgb = rgb.copy()
    return preprocess_tensor(torch.from_numpy(rgb).to(device), multiple)


def preprocess_tensor(rgb: torch.Tensor, multiple: int) -> torch.Tensor:
    """:func:`preprocess` for a contiguous (H, W, 3) uint8 tensor already on its device
    (the CUDA pipeline uploads images itself and then runs exactly these ops)."""
    h, w = rgb.shape[:2]
    x = rgb.permute(2, 0, 1)[None].float().div_(255)
    ycc = rgb_to_ycbcr(x)
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        ycc = F.pad(ycc, (0, pw, 0, ph), mode="replicate")
    return ycc


def postprocess(ycc: torch.Tensor, h: int, w: int, gray: bool = False) -> np.ndarray:
    """(1, 3, H', W') YCbCr -> (h, w, 3) uint8 RGB (rounded, clamped, cropped)."""
    return postprocess_tensor(ycc, h, w, gray).cpu().numpy()


def postprocess_tensor(ycc: torch.Tensor, h: int, w: int, gray: bool = False) -> torch.Tensor:
    """:func:`postprocess` without the copy to the host: a contiguous (h, w, 3) uint8
    tensor on ycc's device."""
    ycc = ycc[:, :, :h, :w].float()
    if gray:
        ycc = torch.cat([ycc[:, :1], torch.full_like(ycc[:, 1:], 0.5)], 1)
    rgb = ycbcr_to_rgb(ycc).clamp(0, 1).mul(255).round().to(torch.uint8)
    return rgb[0].permute(1, 2, 0).contiguous()


@dataclass
class _Model:
    q: checkpoint.Quality
    runner: object
    tables: entropy.Tables
    stream_id: bytes
    search: object = None     # engine.search.CodeSearch, made on the first effort > 0 call


def _load_tables(q: checkpoint.Quality) -> entropy.Tables:
    cfg = q.config
    path = q.weights.parent / "entropy.safetensors"
    if path.exists():
        from safetensors.numpy import load_file
        d = load_file(str(path))
        key = f"q{q.quality}."
        if key + "map" in d:
            return entropy.Tables(d[key + "map"].astype(np.uint32), d[key + "y"], d[key + "c"])
    return entropy.Tables.flat(cfg.n, cfg.levels, cfg.m)


class Codec:
    """A model quality + a backend + a bit path + an entropy mode.

    quality   1..K, a rung of the model's rate ladder (None: the model's default_quality, else
              the middle one); retired rungs only decode
    model     a shipped model name (``engine.checkpoint.list_models()``)
    backend   "auto" | "torch" | "onnxruntime" | "tensorrt"
    kernels   "auto" | "torch" | "triton" (else ENGINE_KERNELS)
    entropy   "context" (default) | "none" (raw packing)
    tile_pixels  run the networks in tiles (engine/tiling.py) when the padded image has
              more pixels than this, or a side longer than a TensorRT profile allows;
              0 never tiles (default ENGINE_TILE_PIXELS, ~8.4 MP).
              Tiled and untiled runs give the same bytes (see engine/tiling.py).
    tile_size core tile side in pixels, a multiple of 16 (default ENGINE_TILE_SIZE, 2048)
    effort    0 (default: the one-pass encoder) .. 9: search each image's codes with the
              decoder fixed (engine/search.py); each step up is slower and better.  The
              search runs the networks in torch on the runner's device, whatever the
              backend; its files are ordinary files that every backend decodes.
    entropy_pool  where the batch APIs entropy-code: "threads", "processes" or "auto"
              (default ENGINE_ENTROPY_POOL, else auto = processes when the networks run
              on CUDA, there are >= 4 CPUs and the program was started with -m or
              interactively); see engine/entropy_pool.py.  Worker processes live until
              ``codec.close()`` (or the end of a ``with`` block).

    ``codec.timer = engine.timing.StageTimer()`` records per-stage times of every call.
    """

    def __init__(self, quality: int | None = None, model: str = checkpoint.DEFAULT_MODEL,
                 backend: str = "auto", kernels: str | None = None, entropy: str = "context",
                 device: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 root: str | Path | None = None, threads: int | None = None,
                 tile_pixels: int | None = None, tile_size: int | None = None,
                 entropy_pool: str | None = None, effort: int = 0):
        from kernels import kernel_choice

        from .search import check_effort
        self.effort = check_effort(effort)

        from .entropy_pool import KINDS
        if entropy not in bitstream.ENTROPY_NAMES:
            raise ValueError(f"entropy must be one of {sorted(bitstream.ENTROPY_NAMES)}, got {entropy!r}")
        if entropy_pool is not None and entropy_pool not in KINDS:
            raise ValueError(f"entropy_pool must be one of {KINDS}, got {entropy_pool!r}")
        self.entropy_mode = bitstream.ENTROPY_NAMES[entropy]
        self.entropy_name = entropy
        self.entropy_pool = entropy_pool
        self._process_pool = None
        self.kernels = kernel_choice(kernels)
        self.backend = backend
        self.device = device
        self.max_pixels = int(max_pixels)
        self.root = Path(root) if root else None
        self.threads = threads
        self.tile_pixels = int(tiling.DEFAULT_TILE_PIXELS if tile_pixels is None else tile_pixels)
        self.tile_size = tiling.check_tile_size(tiling.DEFAULT_TILE_SIZE if tile_size is None else tile_size)
        self.timer = None
        self.model_name = model
        self._models: dict[int, _Model] = {}
        self._main = self._load(quality)
        self.quality = self._main.q.quality

    def close(self) -> None:
        """Stop the entropy worker processes, if a batch call started them."""
        pool, self._process_pool = self._process_pool, None
        if pool is not None:
            pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ models
    def _load(self, quality: int | None, decode: bool = False) -> _Model:
        from .runners import make_runner
        q = checkpoint.resolve(self.model_name, quality, root=self.root, decode=decode)
        if q.quality in self._models:
            return self._models[q.quality]
        tables = _load_tables(q)
        h = hashlib.sha256(q.fingerprint.encode())
        for v in tables.as_dict().values():
            h.update(np.ascontiguousarray(v).tobytes())
        runner = make_runner(q, self.backend, self.device, threads=self.threads)
        mdl = _Model(q, runner, tables, h.digest()[:8])
        self._models[q.quality] = mdl
        return mdl

    @property
    def config(self):
        return self._main.q.config

    @property
    def runner(self):
        return self._main.runner

    def _bitpath(self, device):
        from kernels import get_bitpath
        return get_bitpath(self.kernels, str(device))

    def _stage(self, name: str, device=None):
        return stage(self.timer, name, device=device)

    def _should_tile(self, mdl: _Model, H: int, W: int, net: str = "encoder") -> bool:
        """Padded H x W over ``tile_pixels``, or a side over what the runner accepts."""
        return tiling.should_tile(H, W, self.tile_pixels, tiling.runner_max_side(mdl.runner, net))

    def _encode(self, mdl: _Model, ycc: torch.Tensor):
        """runner.encode, in tiles when :meth:`_should_tile`."""
        H, W = ycc.shape[-2:]
        if self._should_tile(mdl, H, W, "encoder"):
            halo = tiling.encoder_halo(mdl.q.config)
            tile = tiling.tile_for_runner(self.tile_size, halo, tiling.runner_max_side(mdl.runner, "encoder"))
            return tiling.encode_tiled(mdl.runner.encode, ycc, tile, halo)
        return mdl.runner.encode(ycc)

    def _decode(self, mdl: _Model, bits: torch.Tensor, levels: torch.Tensor, cbits: torch.Tensor):
        """runner.decode, in tiles when :meth:`_should_tile`."""
        H, W = bits.shape[-2] * 8, bits.shape[-1] * 8
        if self._should_tile(mdl, H, W, "decoder"):
            halo = tiling.decoder_halo(mdl.q.config)
            tile = tiling.tile_for_runner(self.tile_size, halo, tiling.runner_max_side(mdl.runner, "decoder"))
            return tiling.decode_tiled(mdl.runner.decode, bits, levels, cbits, tile, halo)
        return mdl.runner.decode(bits, levels, cbits)

    def _searcher(self, mdl: _Model):
        if mdl.search is None:
            from .search import CodeSearch, rung_slope
            net = checkpoint.load_net(mdl.q).to(mdl.runner.device)
            mdl.search = CodeSearch(net, mdl.tables, rung_slope(mdl.q))
        return mdl.search

    def encode_latents(self, mdl: _Model, ycc: torch.Tensor, sizes, colors):
        """The encoder's output (e, p, ec) for a batch of same-size padded inputs; with
        ``effort`` > 0 the searched codes instead (``sizes``: each image's (h, w))."""
        if self.effort == 0:
            return self._encode(mdl, ycc)
        H, W = ycc.shape[-2:]
        if self._should_tile(mdl, H, W, "encoder"):
            raise ValueError(f"effort > 0 searches whole images and this one ({W}x{H} padded) is over "
                             f"tile_pixels={self.tile_pixels}: use effort=0 or a larger tile_pixels")
        search = self._searcher(mdl)
        gray = [c == COLOR_GRAY for c in colors]
        # On CUDA a bucket is searched as one batch; on the CPU one image at a time,
        # which costs no speed there and keeps compress_batch's bytes equal to compress's.
        step = len(sizes) if ycc.device.type == "cuda" else 1
        out = []
        with self._stage("search", ycc.device):
            for s in range(0, len(sizes), step):
                out.append(search.run(ycc[s:s + step], sizes[s:s + step], self.effort, gray=gray[s:s + step])[:3])
        return tuple(torch.cat(t) for t in zip(*out))

    # ------------------------------------------------------------------ encode
    def compress(self, img) -> bytes:
        rgb, color = to_rgb(img, self.max_pixels)
        return self._compress_rgb(rgb, color)

    def _compress_rgb(self, rgb: np.ndarray, color: int) -> bytes:
        mdl = self._main
        cfg = mdl.q.config
        h, w = rgb.shape[:2]
        dev = mdl.runner.device
        with self._stage("preprocess", dev):
            ycc = preprocess(rgb, cfg.multiple, dev)
        with self._stage("network", dev):
            e, p, ec = self.encode_latents(mdl, ycc, [(h, w)], [color])
        del ycc
        with self._stage("bitpath", dev):
            packed = self._bitpath(e.device).pack(e, p, ec, cfg.n, cfg.levels)[0]
        del e, p, ec
        return self._serialize(mdl, packed, h, w, color)

    def _serialize(self, mdl: _Model, packed, h: int, w: int, color: int) -> bytes:
        cfg = mdl.q.config
        gray = color == COLOR_GRAY
        with self._stage("entropy"):
            if self.entropy_mode == bitstream.ENTROPY_RAW:
                msec = entropy.pack_map_raw(packed.levels, cfg.levels)
                ysec = packed.ybits
                csec = b"" if gray else packed.cbits
            else:
                from kernels import reference
                _, yd, cd = reference.unpack([packed], cfg.n, cfg.m, cfg.levels, dtype=torch.uint8)
                msec = entropy.encode_map(packed.levels, cfg.levels, mdl.tables)
                ysec, csec = entropy.encode_codes(packed.levels, yd[0].numpy(), None if gray else cd[0].numpy(),
                                                  cfg.n, cfg.levels, mdl.tables)
        with self._stage("container"):
            hdr = bitstream.Header(self.entropy_mode, color, mdl.q.quality, mdl.q.model, mdl.stream_id, w, h)
            return bitstream.write(hdr, msec, ysec, csec)

    def compress_batch(self, images, batch_size: int = 8, errors: str = "raise", **kw) -> list:
        """Many images -> list of bytes, identical to :meth:`compress` one by one.
        ``errors="return"`` puts the exception in a failed item's place."""
        from .batch import compress_batch
        return compress_batch(self, images, batch_size=batch_size, errors=errors, **kw)

    def decompress_batch(self, blobs, batch_size: int = 8, errors: str = "raise", **kw) -> list:
        from .batch import decompress_batch
        return decompress_batch(self, blobs, batch_size=batch_size, errors=errors, **kw)

    # ------------------------------------------------------------------ decode
    def _model_for(self, hdr: bitstream.Header) -> _Model:
        if hdr.model != self.model_name:
            raise BitstreamError(f"file was made by model {hdr.model!r} quality {hdr.quality}; this codec runs "
                                 f"model {self.model_name!r}: use engine.Codec(model={hdr.model!r})")
        try:
            mdl = self._load(hdr.quality, decode=True)
        except ValueError as e:
            raise BitstreamError(f"file needs model {hdr.model!r} quality {hdr.quality}, which is not "
                                 f"available here: {e}") from None
        if mdl.stream_id != hdr.stream_id:
            raise BitstreamError(f"file was made by a different version of model {hdr.model!r} quality "
                                 f"{hdr.quality} (stream id {hdr.stream_id.hex()}, installed "
                                 f"{mdl.stream_id.hex()}): decode it with the engine version that wrote it")
        return mdl

    def parse(self, data: bytes):
        """Validate a file and entropy-decode it -> (header, model, (levels, ydense, cdense) numpy),
        or (header, model, Packed) for a raw-mode file."""
        with self._stage("container"):
            hdr, msec, ysec, csec = bitstream.read(data, self.max_pixels)
            mdl = self._model_for(hdr)
        with self._stage("entropy"):
            return self._parse_sections(hdr, mdl, msec, ysec, csec)

    def _parse_sections(self, hdr, mdl, msec, ysec, csec):
        cfg = mdl.q.config
        H, W = padded_size(hdr.height, hdr.width, cfg.multiple)
        h, w, hc, wc = H // 8, W // 8, H // 16, W // 16
        gray = hdr.color == COLOR_GRAY
        if hdr.entropy == bitstream.ENTROPY_RAW:
            levels = entropy.unpack_map_raw(msec, h, w, cfg.levels)
            from kernels import reference
            ny = reference.expected_ybits(levels, cfg.n, cfg.levels)
            nc = 0 if gray else cfg.m * hc * wc
            if len(ysec) != (ny + 7) // 8 or len(csec) != (nc + 7) // 8:
                raise BitstreamError(f"code sections have {len(ysec)}+{len(csec)} bytes, the map implies "
                                     f"{(ny + 7) // 8}+{(nc + 7) // 8}")
            packed = reference.Packed(levels, ysec, ny, csec if not gray else bytes((cfg.m * hc * wc + 7) // 8),
                                      cfg.m * hc * wc)
            return hdr, mdl, packed
        levels = entropy.decode_map(msec, h, w, cfg.levels, mdl.tables)
        yd, cd = entropy.decode_codes(levels, ysec, csec, cfg.n, cfg.levels, cfg.m, hc, wc, mdl.tables, gray)
        return hdr, mdl, (levels, yd, cd)

    def decompress(self, data: bytes) -> np.ndarray:
        hdr, mdl, dec = self.parse(data)
        cfg = mdl.q.config
        dev = mdl.runner.device
        with self._stage("bitpath", dev):
            if isinstance(dec, tuple):
                levels, yd, cd = dec
                lv = torch.from_numpy(levels).to(dev)[None, None].float()
                bits = torch.from_numpy(yd).to(dev)[None].float()
                cbits = torch.from_numpy(cd).to(dev)[None].float()
            else:
                lv, bits, cbits = self._bitpath(dev).unpack([dec], cfg.n, cfg.m, cfg.levels, device=dev)
        del dec
        with self._stage("network", dev):
            ycc = self._decode(mdl, bits, lv, cbits)
        del bits, lv, cbits
        with self._stage("postprocess", dev):
            return postprocess(ycc, hdr.height, hdr.width, gray=hdr.color == COLOR_GRAY)
