"""The two-stream codec network (Huang, Nguyen, Lai) with Li et al.'s importance map.

Y stream:    Y plane -> ResNet encoder (8x down) -> n sigmoid features + importance map
             -> levels -> mask -> binarize -> ResNet decoder -> Y'
CbCr stream: CbCr planes -> ResNet encoder (16x down: chroma is smooth) -> m sigmoid
             features -> binarize -> decoder that fuses Y-decoder features -> CbCr'

The decoders only ever see what is in the file: the binary codes and the
quantized importance levels.  Encoder and decoder are separate modules so that
they can be exported (ONNX/TensorRT) and run on their own.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import importance


@dataclass(frozen=True)
class ModelConfig:
    n: int = 60            # binary channels of the Y stream (multiple of levels-1)
    levels: int = 16       # L, importance levels
    m: int = 8             # binary channels of the CbCr stream (all kept)
    c1: int = 32           # widths at 1/2, 1/4, 1/8 resolution (Y stream)
    c2: int = 64
    c3: int = 96
    cc: int = 48           # base width of the CbCr stream
    blocks: int = 2        # ResNet blocks at 1/8 resolution (Y)
    # The CbCr encoder also sees Y (its input: Cb, Cr, Y).  The decoder reads the colour
    # codes beside the Y stream's features (the fusion layers), so which code decodes to a
    # block's colour depends on its Y; an encoder blind to Y cannot pick it (issue #29).
    c_sees_y: bool = False
    # Ordered dithering of the colour codes: each 16x16 block's codes are binarized against
    # a threshold set by the block's place in a 2x2 Bayer pattern, 0.5 + c_dither * ((b +
    # 0.5) / 4 - 0.5) for b in [[0, 2], [3, 1]], instead of 0.5 everywhere (0: off).  A
    # convolutional encoder gives every block of a flat region the same code, so a colour
    # between two codes' colours could not be named; with the pattern, a code value between
    # 0 and 1 sets the share of a 2x2 group's blocks whose bit is 1, and the decoder's
    # upsampling averages them (issue #29: on flat colours, 2x2-periodic codes found by a
    # search err ~35% less than the best constant code, session 15).  The thresholds are
    # folded into the encoder's output (ec - threshold + 0.5), so every later stage still
    # binarizes at 0.5 and the files are ordinary.
    c_dither: float = 0.0

    def __post_init__(self):
        importance.group_size(self.n, self.levels)

    @property
    def multiple(self) -> int:
        """Input sides are padded to a multiple of this (the CbCr stream's stride)."""
        return 16

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        for flag in ("c_sees_y", "c_dither"):
            if not d[flag]:
                del d[flag]      # the configs before it: their JSON, and so their fingerprints, unchanged
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


CONFIGS = {
    "tiny": ModelConfig(n=15, levels=4, m=4, c1=8, c2=8, c3=16, cc=8, blocks=1),
    "small": ModelConfig(),
    # The small model with twice the colour codes (16 bits per 16x16 block): 8 codes
    # cannot name enough colours for a flat saturated region (issue #29).
    "small16": ModelConfig(m=16),
    # small16 with a CbCr encoder that also sees Y (warm-started from small16's weights by
    # widen_state_dict: the Y inputs start at zero)
    "small16y": ModelConfig(m=16, c_sees_y=True),
    # small16 with ordered dithering of its colour codes (thresholds 0.125, 0.375, 0.625,
    # 0.875; a spread of 0.5 was slower to learn in a side-by-side run, session 15)
    "small16d": ModelConfig(m=16, c_dither=1.0),
    # A larger config for a lent GPU's 10-minute run (bench/gpu_train.sh): more Y
    # channels and wider trunks; ~4x the small model's work per pixel.
    "medium": ModelConfig(n=90, levels=16, m=8, c1=48, c2=96, c3=160, cc=64, blocks=3),
}


def conv(cin, cout, k=3, s=1):
    return nn.Conv2d(cin, cout, k, s, k // 2)


class ResBlock(nn.Module):
    """conv-relu-conv with an identity skip."""

    def __init__(self, c):
        super().__init__()
        self.c1 = conv(c, c)
        self.c2 = conv(c, c)

    def forward(self, x):
        return x + self.c2(F.relu(self.c1(x)))


def up(cin, cout):
    """Sub-pixel 2x upsampling."""
    return nn.Sequential(conv(cin, 4 * cout), nn.PixelShuffle(2))


class Binarize(torch.autograd.Function):
    """Forward x > 0.5, backward straight-through."""

    @staticmethod
    def forward(ctx, x):
        return (x > 0.5).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        return g


def binarize(x: torch.Tensor) -> torch.Tensor:
    return Binarize.apply(x)


def dither_offsets(ec: torch.Tensor, spread: float) -> torch.Tensor:
    """(B, m, h, w) colour codes -> (1, 1, h, w): each block's threshold minus 0.5, from the
    2x2 Bayer pattern [[0, 2], [3, 1]] counted from the tensor's origin (so a tile must
    start on an even block: engine/io/tiling.py encoder_grid)."""
    h, w = ec.shape[-2:]
    r = torch.arange(h, device=ec.device) % 2
    c = torch.arange(w, device=ec.device) % 2
    b = (2 * ((r.view(h, 1) + c.view(1, w)) % 2) + r.view(h, 1)).to(ec.dtype)    # [[0, 2], [3, 1]]
    return (spread * ((b + 0.5) / 4 - 0.5)).view(1, 1, h, w)


class Encoder(nn.Module):
    """(B, 3, H, W) YCbCr in [0,1], H and W multiples of 16 ->
    y features e (B, n, H/8, W/8) in (0,1), importance p (B, 1, H/8, W/8) in (0,1),
    CbCr features ec (B, m, H/16, W/16) in (0,1)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c1, c2, c3, cc = cfg.c1, cfg.c2, cfg.c3, cfg.cc
        self.c_sees_y, self.c_dither = cfg.c_sees_y, cfg.c_dither
        self.y = nn.Sequential(
            nn.PixelUnshuffle(2), conv(4, c1), nn.ReLU(), ResBlock(c1),
            conv(c1, c2, 3, 2), nn.ReLU(), ResBlock(c2),
            conv(c2, c3, 3, 2), nn.ReLU(), *[ResBlock(c3) for _ in range(cfg.blocks)],
        )
        self.y_head = conv(c3, cfg.n)
        self.imp = nn.Sequential(conv(c3, c3 // 2), nn.ReLU(), conv(c3 // 2, 1, 1))
        nn.init.constant_(self.imp[-1].bias, -1.0)  # start near p = 0.27 (level 4 of 16)
        self.c = nn.Sequential(
            nn.PixelUnshuffle(2), conv(12 if cfg.c_sees_y else 8, cc // 2), nn.ReLU(),
            conv(cc // 2, cc // 2, 3, 2), nn.ReLU(), ResBlock(cc // 2),
            conv(cc // 2, cc, 3, 2), nn.ReLU(), ResBlock(cc),
            conv(cc, cc, 3, 2), nn.ReLU(), ResBlock(cc),
        )
        self.c_head = conv(cc, cfg.m)

    def forward(self, ycc: torch.Tensor):
        e, logit, ec = self.features(ycc)
        if self.c_dither:    # back in [0, 1], the runners' contract (the same bits at 0.5)
            ec = ec.clamp(0.0, 1.0)
        return e, torch.sigmoid(logit), ec

    def features(self, ycc: torch.Tensor):
        """Like forward, but the importance map as a logit (training shifts it)."""
        x = ycc - 0.5
        fy = self.y(x[:, :1])
        e = torch.sigmoid(self.y_head(fy))
        logit = self.imp(fy)
        # Y last, so that a warm start from a Y-blind encoder keeps its input channels' order
        xc = torch.cat([x[:, 1:], x[:, :1]], 1) if self.c_sees_y else x[:, 1:]
        ec = torch.sigmoid(self.c_head(self.c(xc)))
        if self.c_dither:
            ec = ec - dither_offsets(ec, self.c_dither)
        return e, logit, ec

    def shift_importance(self, bias: float) -> None:
        """Bake a rate offset into the map's last bias: a quality level of the ladder."""
        with torch.no_grad():
            self.imp[-1].bias += bias


class Decoder(nn.Module):
    """bits (B, n, h, w) in {0,1} (masked channels ignored), levels (B, 1, h, w)
    as floats in [0, L-1], color bits (B, m, h/2, w/2) -> YCbCr (B, 3, 8h, 8w)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        c1, c2, c3, cc = cfg.c1, cfg.c2, cfg.c3, cfg.cc
        self.register_buffer(
            "req", importance.required_level(cfg.n, cfg.levels).view(1, cfg.n, 1, 1).float(),
            persistent=False,
        )
        self.y8 = nn.Sequential(conv(cfg.n + 1, c3), nn.ReLU(), *[ResBlock(c3) for _ in range(cfg.blocks)])
        self.y4 = nn.Sequential(up(c3, c2), nn.ReLU(), ResBlock(c2))
        self.y2 = nn.Sequential(up(c2, c1), nn.ReLU(), ResBlock(c1))
        self.y1 = up(c1, 1)
        # CbCr decoder; the fusion layers take projected Y-decoder features.
        self.c16 = nn.Sequential(conv(cfg.m, cc), nn.ReLU(), ResBlock(cc), up(cc, cc), nn.ReLU())
        self.f8 = conv(c3, cc, 1)
        self.c8 = nn.Sequential(conv(2 * cc, cc), nn.ReLU(), ResBlock(cc), up(cc, cc // 2), nn.ReLU())
        self.f4 = conv(c2, cc // 2, 1)
        self.c4 = nn.Sequential(conv(cc, cc // 2), nn.ReLU(), ResBlock(cc // 2), up(cc // 2, cc // 4), nn.ReLU())
        self.c1 = up(cc // 4, 2)

    def forward(self, bits: torch.Tensor, levels: torch.Tensor, cbits: torch.Tensor):
        mask = (levels >= self.req).to(bits.dtype)
        return self.decode_signed((2 * bits - 1) * mask, levels, cbits)

    def decode_signed(self, sy: torch.Tensor, levels: torch.Tensor, cbits: torch.Tensor):
        """sy: Y codes as +-1 where kept and 0 where masked."""
        x = torch.cat([sy, levels * (2.0 / (self.cfg.levels - 1)) - 1], 1)
        f8 = self.y8(x)
        f4 = self.y4(f8)
        y = self.y1(self.y2(f4))
        c = self.c16(2 * cbits - 1)
        c = self.c8(torch.cat([c, F.relu(self.f8(f8))], 1))
        c = self.c4(torch.cat([c, F.relu(self.f4(f4))], 1))
        c = self.c1(c)
        return torch.cat([y, c], 1) + 0.5


class CodecNet(nn.Module):
    """Training-time wrapper: encoder -> quantize/mask/binarize -> decoder."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def forward(self, ycc: torch.Tensor, imp_bias: torch.Tensor | float = 0.0):
        """Returns the reconstruction, the soft mask used for it (importance
        logits shifted by imp_bias) and the soft mask of the unshifted map."""
        cfg = self.cfg
        e, logit, ec = self.encoder.features(ycc)
        p = torch.sigmoid(logit + imp_bias)
        m = importance.soft_mask(p, cfg.n, cfg.levels)
        m0 = importance.soft_mask(torch.sigmoid(logit), cfg.n, cfg.levels)
        q = importance.quantize_levels(p, cfg.levels).to(e.dtype)
        # Same forward value as Decoder.forward's hard mask, but the gradient
        # reaches the importance map through soft_mask's ramp.
        sy = (2 * binarize(e) - 1) * m
        rec = self.decoder.decode_signed(sy, q, binarize(ec))
        return rec, m, m0

    def rate_bpp(self, m: torch.Tensor) -> torch.Tensor:
        """Raw-packing rate estimate: kept Y bits + CbCr bits + map bits per pixel."""
        cfg = self.cfg
        y = m.sum(1).mean() / 64.0
        c = cfg.m / 256.0
        mp = torch.log2(torch.tensor(float(cfg.levels))) / 64.0
        return y + c + mp


def widen_state_dict(src: dict, like: dict) -> tuple[dict, list[str]]:
    """Warm start a wider network from a narrower one's weights (e.g. small -> small16).

    Tensors of equal shape are copied.  A tensor that grew keeps the narrow one in its
    leading slice; the new part keeps ``like``'s fresh initialisation along the output
    dimension (new codes start as random functions of the features) and is zeroed along
    the input dimension (the decoder ignores new codes until training teaches it to
    read them), so the widened network starts out computing what the narrow one did."""
    out, widened = {}, []
    for k, ref in like.items():
        if k not in src:
            raise KeyError(f"warm start: {k} is missing from the source weights")
        t = src[k]
        if t.shape == ref.shape:
            out[k] = t
            continue
        if t.dim() != ref.dim() or any(a > b for a, b in zip(t.shape, ref.shape)):
            raise ValueError(f"warm start: {k} is {tuple(t.shape)}, cannot widen to {tuple(ref.shape)}")
        w = ref.detach().clone()
        if w.dim() > 1 and t.shape[1] < w.shape[1]:
            w[:, t.shape[1]:] = 0
        w[tuple(slice(0, n) for n in t.shape)] = t
        out[k] = w
        widened.append(k)
    return out, widened


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
