"""Per-image code search (``effort`` 1..9): the decoder is held fixed and the
encoder's output is refined for one image.

The one-pass encoder's codes are a guess; the decoder can rebuild much more from
the same number of bits.  Given an image, its YCbCr input and the encoder's
output, the search optimises with Adam

    J = (1 - b) * 10 log10(D) + b * 10 log10(1 - M) + s * R
                                   (dB: at b = 0, J is minus PSNR plus the rate's price)

* D: mean squared error of the decoded RGB (in [0, 1]) over the image's own
  pixels (padding excluded) - the quantity PSNR-RGB measures, in dB so that one
  price s serves every image whatever its PSNR;
* M: MS-SSIM of the decoded RGB (5 scales, 11-tap Gaussian, as pytorch_msssim and
  engine.eval measure it) over the image's own pixels (cropped: padding excluded),
  weighted by b = MS_SSIM_WEIGHT (MS_SSIM_WEIGHT_PERCEPTUAL for a model trained for
  MS-SSIM: :func:`rung_ms_ssim_weight`), in dB too.  MS-SSIM at 5 scales needs both sides
  over 160 pixels; smaller images are searched with b = 0.
* R: bits per pixel.  In the gradient, each kept Y bit of channel k costs c_k
  bits, the mean that the shipped context tables give the current codes
  (:func:`engine.context_coder.information`), refreshed at every check; the map and
  CbCr rates count at the checks.
* variables: the Y and CbCr code values before binarisation (straight-through,
  like training) and the importance logits.  The importance map reaches D and R
  through Li et al.'s soft mask (forward: the hard mask of the quantized level),
  so the search chooses the levels by rate and distortion too.
* s (dB per bpp) is the rung's own: the slope of the effort-0 ladder at this rung,
  dPSNR/dbpp between its neighbours, from the held-out training images' numbers
  that ``engine.net.ship`` records in model.json (never Kodak).  Bits cost what the
  ladder pays for them, so a gain is not bought with a bigger file alone; an
  explicit ``"search_slope"`` in a rung's entry overrides it.

The learning rates follow a half cosine in cycles of LR_PERIOD steps: from the
cycle's peak (LR_CODES / LR_IMPORTANCE for the first) down to LR_FINAL times it at
the cycle's last step; each restart peaks at LR_RESTART times the previous peak.
Every cycle ends settled instead of oscillating (a constant rate made the top
efforts plateau).  From effort 4 (32 steps, one cycle) up, every effort's run begins
with effort 4's whole run, and each effort of whole cycles (4, 6, 7, 8, 9) with the
previous one's, so with the best candidate kept none of them ends at a worse J than
those it contains (effort 5 ends on a 16-step cycle; efforts 1..3 are one shorter
cycle each).

Every ``CHECK_EVERY`` steps (and at the start and end) the hard codes are scored
with the exact J (decoder run, rate from the context tables); the best candidate
wins, the encoder's own codes included, so the search never returns a worse J
than effort 0.  The result is hard codes in the bit path's input form (e in
{0, 1}, p at the middle of its level), so the file is an ordinary file that any
backend decodes.

With a region of interest (engine/roi.py) the search starts from the boosted
importance logits and D weighs each pixel's squared error by the ROI's weight (1 + k
inside a mask boosted by k; 1 / (1 - b) where a boost map lowers it), so the region's
error costs more and its bits are worth more; the MS-SSIM term stays unweighted.

Precision (``precision``, :func:`resolve_precision`): the gradient steps (the decoder's
forward and backward) may run in bf16 autocast with channels_last, the layout the CPU's
bf16 matrix units (Intel AMX) want: about 2x faster per step there (issue #24,
bench/results/search-bf16-*).  The checks stay fp32, so a bf16 search still returns the
codes of lowest exact J among its candidates, the encoder's own included: bf16 changes
which candidates it finds, never how they are judged.  ``auto`` is bf16 on a CPU with
the units and fp32 elsewhere (CUDA included: not measured on a card yet).

Deterministic: no randomness; the same input and effort on the same backend, precision
and machine give the same bytes.  On CUDA, images of one size bucket are searched as
one batch (each image's loss and Adam state are its own).
"""
from __future__ import annotations

import json
import math

import numpy as np
import torch
import torch.nn.functional as F

from .. import importance
from ..format import context_coder
from .. import roi as roi_mod     # the name roi is run()'s argument
from ..io.color import ycbcr_to_rgb
from .model import CodecNet, binarize

MAX_EFFORT = 9
# Adam steps per effort (0: the one-pass encoder).  Roughly 0.3 s a step for a
# 768x512 image on a 2-core CPU (the decoder forward + backward; the MS-SSIM term
# adds about 0.1 s).
STEPS = (0, 8, 16, 24, 32, 48, 64, 96, 128, 192)
CHECK_EVERY = 8
LR_CODES = 0.02
LR_IMPORTANCE = 0.05
# The schedule and the MS-SSIM weight were chosen on held-out training images, never
# Kodak (bench/results/search-tune-q4-schedule.md): a half-cosine decay to 0.1x in
# cycles of 32 steps, each restart at half the previous peak; MS-SSIM weight 0.25.
LR_FINAL = 0.1          # a cycle's last-step lr / its first's (half-cosine decay; 1: constant)
LR_PERIOD = 32          # steps per cosine cycle (warm restarts after each); 0: one cycle over the effort
LR_RESTART = 0.5        # each restart's peak lr / the previous cycle's
MS_SSIM_WEIGHT = 0.25   # b in J: weight of 10 log10(1 - MS-SSIM) against 10 log10(MSE)
MS_SSIM_MIN_SIDE = 161  # 5-scale MS-SSIM needs sides > (11 - 1) * 2**4
# b for a model trained for MS-SSIM (model.json "metric": "ms-ssim"): the search pursues
# the objective its model was trained for, keeping a fifth of the MSE term so that flat
# colours (to which MS-SSIM is blind) stay right.  model.json "search_ms_ssim_weight" overrides.
MS_SSIM_WEIGHT_PERCEPTUAL = 0.8


def lr_factor(step: int, steps: int, final: float, period: int = 0, restart: float = 1.0) -> float:
    """The lr multiplier at ``step`` (1..steps).  The steps are cut into cycles of
    ``period`` (0: one cycle of all ``steps``; the last cycle may be shorter); in each, a
    half cosine from the cycle's peak down to ``final`` times it at the cycle's last step.
    The first peak is 1, each later one ``restart`` times the one before."""
    period = steps if period <= 0 else min(period, steps)
    cycle, k = divmod(step - 1, period)
    n = min(period, steps - cycle * period)
    peak = restart ** cycle
    if n <= 1:
        return peak
    return peak * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * k / (n - 1))))


_MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gauss_window(dtype, device, size=11, sigma=1.5):
    c = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(c ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _blur(x, g):
    """Valid separable Gaussian filtering of every channel."""
    C = x.shape[1]
    return F.conv2d(F.conv2d(x, g.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C),
                    g.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def ms_ssim_reference(y: torch.Tensor) -> list:
    """The reference image's side of :func:`ms_ssim`, per scale: (y, mean, variance)."""
    if min(y.shape[-2:]) < MS_SSIM_MIN_SIDE:
        raise ValueError(f"MS-SSIM needs sides of at least {MS_SSIM_MIN_SIDE}, got {tuple(y.shape[-2:])}")
    g = _gauss_window(y.dtype, y.device)
    C = y.shape[1]
    out = []
    for level in range(len(_MS_WEIGHTS)):
        mu, yy = _blur(torch.cat([y, y * y], 1), g).split(C, 1)
        out.append((y, mu, yy - mu * mu))
        if level < len(_MS_WEIGHTS) - 1:
            y = F.avg_pool2d(y, 2, padding=[d % 2 for d in y.shape[2:]])
    return out


def ms_ssim(x: torch.Tensor, y, ref=None) -> torch.Tensor:
    """Differentiable 5-scale MS-SSIM of (B, C, H, W) images in [0, 1] -> (B,), the
    same quantity as ``pytorch_msssim.ms_ssim(x, y, data_range=1, size_average=False)``
    (11-tap Gaussian, sigma 1.5, K = (0.01, 0.03), valid filtering, mean over channels;
    the per-scale factors are clamped at 1e-6 instead of 0 so the gradient stays finite).
    Both sides must be at least MS_SSIM_MIN_SIDE.  ``ref``: ms_ssim_reference(y), when
    the reference is scored many times."""
    ref = ms_ssim_reference(y) if ref is None else ref
    C = x.shape[1]
    g = _gauss_window(x.dtype, x.device)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    for level, (yl, mu2, s2) in enumerate(ref):
        mu1, xx, xy = _blur(torch.cat([x, x * x, x * yl], 1), g).split(C, 1)
        s1, s12 = xx - mu1 * mu1, xy - mu1 * mu2
        cs_map = (2 * s12 + c2) / (s1 + s2 + c2)
        if level < len(ref) - 1:
            vals.append(cs_map.flatten(2).mean(-1).clamp_min(1e-6))
            x = F.avg_pool2d(x, 2, padding=[d % 2 for d in x.shape[2:]])
        else:
            ssim = ((2 * mu1 * mu2 + c1) / (mu1 * mu1 + mu2 * mu2 + c1)) * cs_map
            vals.append(ssim.flatten(2).mean(-1).clamp_min(1e-6))
    w = x.new_tensor(_MS_WEIGHTS).view(-1, 1, 1)
    return torch.prod(torch.stack(vals, 0) ** w, 0).mean(1)


PRECISIONS = ("fp32", "bf16")   # what "auto" resolves to (engine/settings.py CHOICES["search_precision"])


def resolve_precision(choice: str, device) -> str:
    """``auto`` -> bf16 on a CPU with bf16 matrix units, else fp32; fp32 and bf16 as given."""
    if choice != "auto":
        return choice
    from ..cpu import has_bf16_matrix
    return "bf16" if torch.device(device).type == "cpu" and has_bf16_matrix() else "fp32"


def check_effort(effort) -> int:
    if isinstance(effort, bool) or not isinstance(effort, (int, np.integer)) or not 0 <= effort <= MAX_EFFORT:
        raise ValueError(f"effort must be an int from 0 to {MAX_EFFORT}, got {effort!r}")
    return int(effort)


DEFAULT_SLOPE = 5.0   # dB per bpp, for a model whose ladder has no held-out numbers
# Every rung's slope is multiplied by this.  3 was chosen on held-out training
# images (bench/results/search-tune-q4.md): at 1 the search buys +15% rate with
# its gain, at 3 it keeps the rate within ~2% for the same gain at equal rate.
SLOPE_SCALE = 3.0


def rung_slope(q) -> float:
    """The price of a bit at rung ``q`` (an engine.net.checkpoint.Quality), in dB per bpp: the
    rung's ``"search_slope"`` when model.json sets one, else SLOPE_SCALE x its ladder slope."""
    if "search_slope" in q.meta:
        return float(q.meta["search_slope"])
    return SLOPE_SCALE * _ladder_slope(q)


def rung_ms_ssim_weight(q) -> float | None:
    """b for rung ``q``'s search: model.json's ``"search_ms_ssim_weight"`` when set,
    MS_SSIM_WEIGHT_PERCEPTUAL for a model trained for MS-SSIM, else None (MS_SSIM_WEIGHT)."""
    meta = json.loads((q.weights.parent / "model.json").read_text())
    if "search_ms_ssim_weight" in meta:
        return float(meta["search_ms_ssim_weight"])
    return MS_SSIM_WEIGHT_PERCEPTUAL if meta.get("metric") == "ms-ssim" else None


def _ladder_slope(q) -> float:
    """dPSNR/dbpp of the effort-0 ladder at rung ``q``, from the held-out numbers of
    model.json (central difference, one-sided at the ends)."""
    meta = json.loads((q.weights.parent / "model.json").read_text())
    pts = sorted((int(k), v) for k, v in meta["qualities"].items())
    if not all("val_bpp_context" in v and "val_psnr_rgb" in v for _, v in pts) or len(pts) < 2:
        return DEFAULT_SLOPE
    ks = [k for k, _ in pts]
    i = ks.index(q.quality)
    a, b = pts[max(0, i - 1)][1], pts[min(len(pts) - 1, i + 1)][1]
    slope = (b["val_psnr_rgb"] - a["val_psnr_rgb"]) / (b["val_bpp_context"] - a["val_bpp_context"])
    return float(slope) if math.isfinite(slope) and slope > 0 else DEFAULT_SLOPE


def _db(mse: float) -> float:
    return 10 * math.log10(max(float(mse), 1e-12))


class CodeSearch:
    """Refines the codes of a batch of same-size images for one model quality."""

    def __init__(self, net: CodecNet, tables: context_coder.Tables, slope: float, ms_ssim_weight: float | None = None,
                 precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"search precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.bf16 = precision == "bf16"
        if self.bf16:       # oneDNN's bf16 convolutions (AMX) want channels_last
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.cfg = net.cfg
        self.tables = tables
        self.slope = float(slope)
        self.ms_ssim_weight = ms_ssim_weight     # None: MS_SSIM_WEIGHT (read at run time)
        for prm in net.parameters():
            prm.requires_grad_(False)

    # ------------------------------------------------------------------ helpers
    def _forward(self, ey, t, ec):
        """Soft forward: decoded YCbCr and the soft channel mask."""
        cfg = self.cfg
        p = torch.sigmoid(t)
        m = importance.soft_mask(p, cfg.n, cfg.levels)
        pl = p * cfg.levels
        q = importance.quantize_levels(p, cfg.levels).to(ey.dtype)
        q = q + (pl - pl.detach())                  # hard level forward, straight-through back
        sy = (2 * binarize(ey) - 1) * m
        return self.net.decoder.decode_signed(sy, q, binarize(ec)), m

    @staticmethod
    def _rgb(ycc, gmask=None):
        """Decoded RGB in [0, 1]; gray images decode with neutral chroma (gmask)."""
        if gmask is not None:
            ycc = torch.where(gmask, torch.cat([ycc[:, :1], torch.full_like(ycc[:, 1:], 0.5)], 1), ycc)
        return ycbcr_to_rgb(ycc).clamp(0, 1)

    @staticmethod
    def _distortion(rgb, target, weight):
        """Per-image MSE of RGB in [0, 1] over the weighted (own) pixels."""
        err = ((rgb - target) ** 2).mean(1, keepdim=True) * weight
        return err.flatten(1).sum(1) / weight.flatten(1).sum(1)

    @staticmethod
    def _ms_ssim(rgb, refs, sizes):
        """Per-image MS-SSIM over each image's own pixels (cropped), a list with None
        where the term is off (refs[i] None: beta 0 or an image too small for 5 scales)."""
        return [None if ref is None else ms_ssim(rgb[i:i + 1, :, :h, :w], None, ref)[0]
                for i, ((h, w), ref) in enumerate(zip(sizes, refs))]

    def _hard(self, ey, t, ec):
        """Hard codes: (e bits, levels (B,1,h,w) int64, CbCr bits), as floats/ints."""
        q = importance.quantize_levels(torch.sigmoid(t), self.cfg.levels)
        return (ey > 0.5).to(ey.dtype), q, (ec > 0.5).to(ec.dtype)

    def _score(self, hard, target, weight, npix, gray, gmask, sizes, beta, refs):
        """Exact J per image for hard codes, and the per-channel bit costs."""
        cfg = self.cfg
        yb, q, cb = hard
        with torch.no_grad():
            rgb = self._rgb(self.net.decoder(yb, q.to(yb.dtype), cb), gmask)
            d = self._distortion(rgb, target, weight).double().cpu().numpy()
            ms = [None if m is None else float(m) for m in self._ms_ssim(rgb, refs, sizes)]
        mask = importance.channel_mask(q, cfg.n, cfg.levels)
        yd = (yb * mask).to(torch.uint8).cpu().numpy()
        cd = cb.to(torch.uint8).cpu().numpy()
        lv = q[:, 0].to(torch.uint8).cpu().numpy()
        js, costs, rates = [], [], []
        for i in range(len(yd)):
            bits, per = context_coder.information(lv[i], yd[i], None if gray[i] else cd[i], cfg.n, cfg.levels,
                                            self.tables)
            r = bits / npix[i]
            rates.append(r)
            dist = _db(d[i]) if ms[i] is None else (1 - beta) * _db(d[i]) + beta * _db(1 - ms[i])
            js.append(dist + self.slope * r)
            costs.append(per)
        return np.array(js), np.array(rates), d, costs, ms

    def _cost_tensor(self, costs, like):
        """(B, n, 1, 1) bits per kept bit for the soft rate; channels with no kept bit
        take the mean of the others (or 1 bit)."""
        rows = []
        for per in costs:
            fill = np.nanmean(per) if np.isfinite(per).any() else 1.0
            rows.append(np.where(np.isfinite(per), per, fill))
        return torch.tensor(np.array(rows), dtype=like.dtype, device=like.device)[:, :, None, None]

    # ------------------------------------------------------------------ search
    def run(self, ycc: torch.Tensor, sizes, effort: int, gray=None, roi=None):
        """ycc (B, 3, H, W) padded network input; sizes [(h, w)] of each image's own
        pixels; -> (e, p, ec) hard codes in the bit path's input form, and a stats dict.
        ``roi``: per image None or an :class:`engine.roi.RoiBoost`: the search starts from
        the boosted importance logits and weighs each pixel's squared error by the ROI's
        weight (1 + k inside a mask boosted by k); the MS-SSIM term stays unweighted."""
        effort = check_effort(effort)
        cfg = self.cfg
        B = ycc.shape[0]
        gray = [False] * B if gray is None else list(gray)
        with torch.no_grad():
            e0, logit0, ec0 = self.net.encoder.features(ycc)
            boost = roi_mod.stack(roi, *logit0.shape[-2:])
            if boost is not None:
                logit0 = logit0 + torch.from_numpy(boost).to(logit0.device, logit0.dtype)
            # gray inputs are Y only (their chroma is neutral), so the target is that too
            gmask = torch.tensor(gray, device=ycc.device).view(B, 1, 1, 1) if any(gray) else None
            target = self._rgb(ycc, gmask)
        weight = torch.zeros_like(ycc[:, :1])
        for i, (h, w) in enumerate(sizes):
            r = roi[i] if roi else None
            weight[i, :, :h, :w] = 1 if r is None else torch.from_numpy(r.weights()).to(weight.device, weight.dtype)
        npix = [h * w for h, w in sizes]

        layout = torch.channels_last if self.bf16 else torch.contiguous_format
        ey = e0.detach().clone(memory_format=layout).requires_grad_(True)
        ec = ec0.detach().clone(memory_format=layout).requires_grad_(True)
        t = logit0.detach().clone(memory_format=layout).requires_grad_(True)
        best = self._hard(ey.detach(), t.detach(), ec.detach())
        beta = float(MS_SSIM_WEIGHT if self.ms_ssim_weight is None else self.ms_ssim_weight)
        with torch.no_grad():
            refs = [ms_ssim_reference(target[i:i + 1, :, :h, :w]) if beta > 0 and min(h, w) >= MS_SSIM_MIN_SIDE
                    else None for i, (h, w) in enumerate(sizes)]
        best_j, rate0, d0, costs, ms0 = self._score(best, target, weight, npix, gray, gmask, sizes, beta, refs)
        j0 = best_j.copy()
        steps = STEPS[effort]
        lrs = (LR_CODES, LR_IMPORTANCE)
        opt = torch.optim.Adam([{"params": [ey, ec], "lr": lrs[0]},
                                {"params": [t], "lr": lrs[1]}])
        cost = self._cost_tensor(costs, ycc)
        for step in range(1, steps + 1):
            f = lr_factor(step, steps, LR_FINAL, LR_PERIOD, LR_RESTART)
            for group, lr in zip(opt.param_groups, lrs):
                group["lr"] = lr * f
            opt.zero_grad(set_to_none=True)
            with torch.autocast(ycc.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                rec, m = self._forward(ey, t, ec)
            rec, m = rec.float(), m.float()         # the loss in fp32 (log10 of a small MSE)
            rgb = self._rgb(rec, gmask)
            d = 10 * torch.log10(self._distortion(rgb, target, weight).clamp_min(1e-12))
            ms = self._ms_ssim(rgb, refs, sizes)
            if any(x is not None for x in ms):
                d = torch.stack([di if mi is None else (1 - beta) * di + beta * 10 * torch.log10(
                    (1 - mi).clamp_min(1e-12)) for di, mi in zip(d, ms)])
            r = (m * cost).flatten(1).sum(1) / torch.tensor(npix, dtype=rec.dtype, device=rec.device)
            (d + self.slope * r).sum().backward()
            opt.step()
            with torch.no_grad():
                ey.clamp_(0, 1)
                ec.clamp_(0, 1)
            if step % CHECK_EVERY == 0 or step == steps:
                cand = self._hard(ey.detach(), t.detach(), ec.detach())
                j, _, _, costs, _ = self._score(cand, target, weight, npix, gray, gmask, sizes, beta, refs)
                cost = self._cost_tensor(costs, ycc)
                better = j < best_j
                if better.any():
                    sel = torch.from_numpy(better).to(ycc.device)
                    best = tuple(torch.where(sel.view(B, *[1] * (b.dim() - 1)), c, b) for c, b in zip(cand, best))
                    best_j = np.where(better, j, best_j)
        yb, q, cb = best
        p = (q.to(ycc.dtype) + 0.5) / cfg.levels
        stats = {"steps": steps, "precision": self.precision, "slope": self.slope, "ms_ssim_weight": beta, "lr_final": LR_FINAL, "lr_period": LR_PERIOD,
                 "J0": j0.tolist(), "J": best_j.tolist(), "bpp0": rate0.tolist(), "psnr0": [-_db(x) for x in d0],
                 "ms_ssim0": ms0}
        return yb.detach(), p.detach(), cb.detach(), stats
