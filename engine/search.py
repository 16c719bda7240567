"""Per-image code search (``effort`` 1..9): the decoder is held fixed and the
encoder's output is refined for one image.

The one-pass encoder's codes are a guess; the decoder can rebuild much more from
the same number of bits.  Given an image, its YCbCr input and the encoder's
output, the search optimises with Adam

    J = 10 log10(D) + s * R        (dB: J is minus PSNR plus the rate's price)

* D: mean squared error of the decoded RGB (in [0, 1]) over the image's own
  pixels (padding excluded) - the quantity PSNR-RGB measures, in dB so that one
  price s serves every image whatever its PSNR;
* R: bits per pixel.  In the gradient, each kept Y bit of channel k costs c_k
  bits, the mean that the shipped context tables give the current codes
  (:func:`engine.entropy.information`), refreshed at every check; the map and
  CbCr rates count at the checks.
* variables: the Y and CbCr code values before binarisation (straight-through,
  like training) and the importance logits.  The importance map reaches D and R
  through Li et al.'s soft mask (forward: the hard mask of the quantized level),
  so the search chooses the levels by rate and distortion too.
* s (dB per bpp) is the rung's own: the slope of the effort-0 ladder at this rung,
  dPSNR/dbpp between its neighbours, from the held-out training images' numbers
  that ``engine.ship`` records in model.json (never Kodak).  Bits cost what the
  ladder pays for them, so a gain is not bought with a bigger file alone; an
  explicit ``"search_slope"`` in a rung's entry overrides it.

Every ``CHECK_EVERY`` steps (and at the start and end) the hard codes are scored
with the exact J (decoder run, rate from the context tables); the best candidate
wins, the encoder's own codes included, so the search never returns a worse J
than effort 0.  The result is hard codes in the bit path's input form (e in
{0, 1}, p at the middle of its level), so the file is an ordinary file that any
backend decodes.

Deterministic: no randomness; the same input and effort on the same backend and
machine give the same bytes.  On CUDA, images of one size bucket are searched as
one batch (each image's loss and Adam state are its own).
"""
from __future__ import annotations

import json
import math

import numpy as np
import torch

from . import entropy, importance
from .color import ycbcr_to_rgb
from .model import CodecNet, binarize

MAX_EFFORT = 9
# Adam steps per effort (0: the one-pass encoder).  Roughly 0.3 s a step for a
# 768x512 image on a 2-core CPU (the decoder forward + backward).
STEPS = (0, 8, 16, 24, 32, 48, 64, 96, 128, 192)
CHECK_EVERY = 8
LR_CODES = 0.02
LR_IMPORTANCE = 0.05


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
    """The price of a bit at rung ``q`` (an engine.checkpoint.Quality), in dB per bpp: the
    rung's ``"search_slope"`` when model.json sets one, else SLOPE_SCALE x its ladder slope."""
    if "search_slope" in q.meta:
        return float(q.meta["search_slope"])
    return SLOPE_SCALE * _ladder_slope(q)


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

    def __init__(self, net: CodecNet, tables: entropy.Tables, slope: float):
        self.net = net
        self.cfg = net.cfg
        self.tables = tables
        self.slope = float(slope)
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
    def _distortion(ycc, target, weight, gmask=None):
        """Per-image MSE of RGB in [0, 1] over the weighted (own) pixels; gray images
        decode with neutral chroma (gmask)."""
        if gmask is not None:
            ycc = torch.where(gmask, torch.cat([ycc[:, :1], torch.full_like(ycc[:, 1:], 0.5)], 1), ycc)
        rgb = ycbcr_to_rgb(ycc).clamp(0, 1)
        err = ((rgb - target) ** 2).mean(1, keepdim=True) * weight
        return err.flatten(1).sum(1) / weight.flatten(1).sum(1)

    def _hard(self, ey, t, ec):
        """Hard codes: (e bits, levels (B,1,h,w) int64, CbCr bits), as floats/ints."""
        q = importance.quantize_levels(torch.sigmoid(t), self.cfg.levels)
        return (ey > 0.5).to(ey.dtype), q, (ec > 0.5).to(ec.dtype)

    def _score(self, hard, target, weight, npix, gray, gmask):
        """Exact J per image for hard codes, and the per-channel bit costs."""
        cfg = self.cfg
        yb, q, cb = hard
        with torch.no_grad():
            rec = self.net.decoder(yb, q.to(yb.dtype), cb)
            d = self._distortion(rec, target, weight, gmask).double().cpu().numpy()
        mask = importance.channel_mask(q, cfg.n, cfg.levels)
        yd = (yb * mask).to(torch.uint8).cpu().numpy()
        cd = cb.to(torch.uint8).cpu().numpy()
        lv = q[:, 0].to(torch.uint8).cpu().numpy()
        js, costs, rates = [], [], []
        for i in range(len(yd)):
            bits, per = entropy.information(lv[i], yd[i], None if gray[i] else cd[i], cfg.n, cfg.levels,
                                            self.tables)
            r = bits / npix[i]
            rates.append(r)
            js.append(_db(d[i]) + self.slope * r)
            costs.append(per)
        return np.array(js), np.array(rates), d, costs

    def _cost_tensor(self, costs, like):
        """(B, n, 1, 1) bits per kept bit for the soft rate; channels with no kept bit
        take the mean of the others (or 1 bit)."""
        rows = []
        for per in costs:
            fill = np.nanmean(per) if np.isfinite(per).any() else 1.0
            rows.append(np.where(np.isfinite(per), per, fill))
        return torch.tensor(np.array(rows), dtype=like.dtype, device=like.device)[:, :, None, None]

    # ------------------------------------------------------------------ search
    def run(self, ycc: torch.Tensor, sizes, effort: int, gray=None):
        """ycc (B, 3, H, W) padded network input; sizes [(h, w)] of each image's own
        pixels; -> (e, p, ec) hard codes in the bit path's input form, and a stats dict."""
        effort = check_effort(effort)
        cfg = self.cfg
        B = ycc.shape[0]
        gray = [False] * B if gray is None else list(gray)
        with torch.no_grad():
            e0, logit0, ec0 = self.net.encoder.features(ycc)
            # gray inputs are Y only (their chroma is neutral), so the target is that too
            gmask = torch.tensor(gray, device=ycc.device).view(B, 1, 1, 1) if any(gray) else None
            target = ycbcr_to_rgb(ycc if gmask is None else torch.where(
                gmask, torch.cat([ycc[:, :1], torch.full_like(ycc[:, 1:], 0.5)], 1), ycc)).clamp(0, 1)
        weight = torch.zeros_like(ycc[:, :1])
        for i, (h, w) in enumerate(sizes):
            weight[i, :, :h, :w] = 1
        npix = [h * w for h, w in sizes]

        ey = e0.detach().clone().requires_grad_(True)
        ec = ec0.detach().clone().requires_grad_(True)
        t = logit0.detach().clone().requires_grad_(True)
        best = self._hard(ey.detach(), t.detach(), ec.detach())
        best_j, rate0, d0, costs = self._score(best, target, weight, npix, gray, gmask)
        j0 = best_j.copy()
        steps = STEPS[effort]
        opt = torch.optim.Adam([{"params": [ey, ec], "lr": LR_CODES},
                                {"params": [t], "lr": LR_IMPORTANCE}])
        cost = self._cost_tensor(costs, ycc)
        for step in range(1, steps + 1):
            opt.zero_grad(set_to_none=True)
            rec, m = self._forward(ey, t, ec)
            d = self._distortion(rec, target, weight, gmask)
            r = (m * cost).flatten(1).sum(1) / torch.tensor(npix, dtype=rec.dtype, device=rec.device)
            (10 * torch.log10(d.clamp_min(1e-12)) + self.slope * r).sum().backward()
            opt.step()
            with torch.no_grad():
                ey.clamp_(0, 1)
                ec.clamp_(0, 1)
            if step % CHECK_EVERY == 0 or step == steps:
                cand = self._hard(ey.detach(), t.detach(), ec.detach())
                j, _, _, costs = self._score(cand, target, weight, npix, gray, gmask)
                cost = self._cost_tensor(costs, ycc)
                better = j < best_j
                if better.any():
                    sel = torch.from_numpy(better).to(ycc.device)
                    best = tuple(torch.where(sel.view(B, *[1] * (b.dim() - 1)), c, b) for c, b in zip(cand, best))
                    best_j = np.where(better, j, best_j)
        yb, q, cb = best
        p = (q.to(ycc.dtype) + 0.5) / cfg.levels
        stats = {"steps": steps, "slope": self.slope, "J0": j0.tolist(), "J": best_j.tolist(),
                 "bpp0": rate0.tolist(), "psnr0": [-_db(x) for x in d0]}
        return yb.detach(), p.detach(), cb.detach(), stats
