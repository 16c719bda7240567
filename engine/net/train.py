"""Train the two-stream codec: ``python -m engine.train --data DIR --out runs/NAME``.

Loss (Huang et al.): L = |Y-Y'|_1 + gamma (|Cb-Cb'|_1 + |Cr-Cr'|_1) + lambda * L_R,
with L_R Li et al.'s rate term on the importance map: here the raw bits per
pixel the (soft) mask keeps, as a hinge above --target-bpp so the rate lands
where asked.  Each sample's map logits are shifted by a random offset in
[-bias_range, bias_range] so that one model serves a ladder of rates (a
quality shifts the map by a fixed offset at inference).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .. import cpu
from .checkpoint import save_weights
from ..io.color import rgb_to_ycbcr
from ..data import ColourMixSampler, CropSampler, DeviceCropSampler, list_images, load_split, split
from .model import CONFIGS, CodecNet, n_params, widen_state_dict


def psnr(a, b) -> torch.Tensor:
    """PSNR of [0,1] images as a 0-d tensor (no device sync: the loop reads it at log time)."""
    mse = torch.mean((a - b) ** 2).clamp_min(1e-10)
    return 10 * torch.log10(1 / mse)


# MS-SSIM over 4 scales (Wang et al.'s weights for the first four, renormalised): 128-pixel
# training patches are too small for the fifth.
MSSSIM_WEIGHTS = [0.0448, 0.2856, 0.3001, 0.2363]


def loss_fn(net, rec, ycc, m, m0, args, lam):
    err = rec - ycc
    # The paper's L_D is L1; MSE is what PSNR measures (Li et al. use it) and is
    # offered for a PSNR-oriented fine-tune.  Lower --lam with it: MSE is ~20x smaller.
    d = (err.abs() if args.distortion == "l1" else err.square()).mean((0, 2, 3))
    dist = d[0] + args.gamma * (d[1] + d[2])
    if args.distortion == "msssim":
        # Led by MS-SSIM on RGB; the YCbCr MSE term (chroma weighted by --gamma) keeps
        # flat colours right, where MS-SSIM is blind to a uniform shift of hue.
        from pytorch_msssim import ms_ssim

        from ..io.color import ycbcr_to_rgb
        w = [x / sum(MSSSIM_WEIGHTS) for x in MSSSIM_WEIGHTS]
        # win 7 (not 11): pytorch_msssim asks for a side > (win - 1) * 16, and patches are 128
        ms = ms_ssim(ycbcr_to_rgb(rec).clamp(0, 1), ycbcr_to_rgb(ycc).clamp(0, 1), data_range=1.0, weights=w,
                     win_size=7 if min(rec.shape[-2:]) <= 160 else 11)
        dist = (1 - ms) + args.msssim_mse * dist
    if args.delta_e:
        # ΔE76 in CIELAB (mean over pixels): a colour term in the units people see, where
        # YCbCr MSE weighs a saturated colour's hue shift no more than a grey's
        from ..io.color import rgb_to_lab, ycbcr_to_rgb
        lab = rgb_to_lab(ycbcr_to_rgb(rec)) - rgb_to_lab(ycbcr_to_rgb(ycc))
        dist = dist + args.delta_e * (lab.square().sum(1) + 1e-6).sqrt().mean()
    rate = net.rate_bpp(m)
    rate0 = net.rate_bpp(m0)
    loss = dist + lam * torch.relu(rate0 - args.target_bpp)
    return loss, dist, rate, rate0


def trainable(net, prefixes: str | None) -> list:
    """The parameters to train: all, or those whose names start with one of the comma-
    separated ``prefixes`` (the rest get requires_grad False, so backward skips them)."""
    if not prefixes:
        return list(net.parameters())
    want = tuple(p.strip() for p in prefixes.split(",") if p.strip())
    chosen = []
    for name, prm in net.named_parameters():
        prm.requires_grad_(name.startswith(want))
        if prm.requires_grad:
            chosen.append(prm)
    if not chosen:
        raise SystemExit(f"--train-only {prefixes!r} names no parameter")
    return chosen


def resolve_precision(choice: str, dev: torch.device) -> str:
    """auto: bf16 on CUDA and on CPUs with bf16 matrix units, fp32 elsewhere."""
    if choice != "auto":
        return choice
    if dev.type == "cuda":
        return "bf16"
    return "bf16" if dev.type == "cpu" and cpu.has_bf16_matrix() else "fp32"


class Validator:
    """PSNR-RGB and raw bpp on the held-out training images (centre crops), at three map
    offsets spanning the ladder: the learning curve a run is judged by."""

    BIASES = (-1.5, -0.5, 0.5)

    def __init__(self, paths, dev, side: int = 256):
        from ..data import load_rgb
        crops = []
        for p in paths:
            im = load_rgb(p)
            h, w = im.shape[:2]
            s = min(side, h, w) // 16 * 16
            y, x = (h - s) // 2, (w - s) // 2
            crops.append(torch.from_numpy(np.ascontiguousarray(im[y:y + s, x:x + s])).permute(2, 0, 1).float() / 255)
        self.crops, self.dev = crops, dev

    @torch.no_grad()
    def __call__(self, net, amp: bool) -> dict:
        from ..io.color import ycbcr_to_rgb
        try:        # the eval extra; a perceptual run is judged by it too
            from pytorch_msssim import ms_ssim
        except ImportError:
            ms_ssim = None
        net.eval()
        res = {}
        for b in self.BIASES:
            mse, bpp, ms = [], [], []
            for rgb in self.crops:
                rgb = rgb[None].to(self.dev)
                with torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=amp):
                    rec, m, _ = net(rgb_to_ycbcr(rgb), b)
                out = (ycbcr_to_rgb(rec.float()).clamp(0, 1) * 255).round() / 255
                mse.append(float(((out - rgb) ** 2).mean()))
                bpp.append(float(net.rate_bpp(m.float())))
                if ms_ssim is not None:
                    w = [x / sum(MSSSIM_WEIGHTS) for x in MSSSIM_WEIGHTS]
                    ms.append(float(ms_ssim(out, rgb, data_range=1.0, weights=w)))
            res[f"psnr@{b:+g}"] = round(float(np.mean([10 * np.log10(1 / max(e, 1e-12)) for e in mse])), 4)
            res[f"bpp_raw@{b:+g}"] = round(float(np.mean(bpp)), 4)
            if ms:
                res[f"msssim@{b:+g}"] = round(float(np.mean(ms)), 5)
        return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder of training images (never the test set)")
    ap.add_argument("--out", required=True, help="run folder: checkpoints + log")
    ap.add_argument("--config", default="small", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--min-lr-frac", type=float, default=0.05)
    ap.add_argument("--distortion", default="l1", choices=["l1", "mse", "msssim"],
                    help="per-plane distortion in L_D; msssim: 1 - MS-SSIM(RGB) + --msssim-mse x the MSE term")
    ap.add_argument("--msssim-mse", type=float, default=10.0, help="weight of the YCbCr MSE term beside MS-SSIM")
    ap.add_argument("--delta-e", type=float, default=0.0,
                    help="weight of a ΔE76 term (CIELAB distance, mean over pixels) added to L_D")
    ap.add_argument("--init", help="warm start: weights.safetensors of an earlier run of the same config "
                    "(fresh optimizer and schedule)")
    ap.add_argument("--gamma", type=float, default=1.0, help="chroma weight in L_D")
    ap.add_argument("--lam", type=float, default=1.0, help="weight of the rate hinge")
    ap.add_argument("--target-bpp", type=float, default=0.30, help="raw bpp of the unshifted map")
    ap.add_argument("--rate-warmup", type=int, default=2000, help="steps over which lambda ramps up")
    ap.add_argument("--bias-range", type=float, default=2.0)
    ap.add_argument("--holdout", type=int, default=20, help="training images kept out for validation")
    ap.add_argument("--split", help="split.json of an earlier run: train on its 'train' names (found in --data) "
                    "and record its 'val' names, instead of splitting --data with --holdout")
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="wall-clock budget: the LR schedule follows elapsed time and training stops when it "
                    "is spent (or at --steps, whichever comes first)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="autocast dtype of the forward pass: auto = bf16 on CUDA and on CPUs with bf16 "
                    "matrix units (AMX), fp32 elsewhere")
    ap.add_argument("--colour-boost", type=float, default=0.0,
                    help="fraction of patches with permuted channels and boosted saturation (issue #29)")
    ap.add_argument("--colour-drawn", type=float, default=0.0,
                    help="fraction of patches replaced by drawn saturated shapes on plain backgrounds")
    ap.add_argument("--train-only", default=None, metavar="PREFIXES",
                    help="comma list of parameter-name prefixes (e.g. encoder.c,encoder.c_head): train only "
                    "those, the rest frozen.  An encoder-only fine-tune keeps the decoder, so the codes it "
                    "learns are ones the decoder already reads")
    ap.add_argument("--val-every", type=int, default=0,
                    help="every N steps: PSNR-RGB and raw bpp on the held-out training images (val.jsonl)")
    args = ap.parse_args(argv)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    cfg = CONFIGS[args.config]
    net = CodecNet(cfg).to(dev)
    params = trainable(net, args.train_only)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    precision = resolve_precision(args.precision, dev)
    amp = precision == "bf16"
    # bf16 keeps fp32's exponent range: no loss scaling (the scaler is a no-op when disabled).
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    step = 0
    init_from = args.init       # the warm start's weights, kept across resumes (bench.standing_save)
    state_path = out / "state.pt"
    if state_path.exists():
        st = torch.load(state_path, map_location=dev, weights_only=False)
        if st["config"] != json.loads(cfg.to_json()):
            sys.exit(f"{state_path} was trained with another config; use a new --out")
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
        init_from = st.get("init_from")
        torch.set_rng_state(st["rng"])
        print(f"resumed from step {step}", flush=True)
    elif args.init:
        from safetensors.torch import load_file
        sd, widened = widen_state_dict(load_file(args.init), net.state_dict())
        net.load_state_dict(sd)
        print(f"initialized from {args.init}" + (f" (widened: {', '.join(widened)})" if widened else ""),
              flush=True)

    if args.split:
        train_paths, val_paths = load_split(args.split, args.data)
    else:
        train_paths, val_paths = split(list_images(args.data), args.holdout)
    (out / "split.json").write_text(json.dumps({"train": [p.name for p in train_paths],
                                                "val": [p.name for p in val_paths]}, indent=1))
    t0 = time.time()
    if args.colour_boost or args.colour_drawn:
        sampler = ColourMixSampler(train_paths, args.patch, args.seed + step, args.colour_boost, args.colour_drawn)
    elif dev.type == "cuda":
        sampler = DeviceCropSampler(train_paths, args.patch, args.seed + step, dev)
    else:
        sampler = CropSampler(train_paths, args.patch, args.seed + step)
    channels_last = dev.type == "cuda" or amp
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: pick the fastest conv algorithms once
    if channels_last:  # the layout oneDNN's bf16 (AMX) and cuDNN's tensor-core kernels want
        net = net.to(memory_format=torch.channels_last)
    # A device run may carry only the training part (bench/gpu_carry.py): validate on what is here.
    present = [p for p in val_paths if p.exists()]
    validator = Validator(present, dev) if args.val_every and present else None
    print(f"{len(sampler.images)} training images loaded in {time.time() - t0:.0f}s; "
          f"{n_params(net)} parameters ({sum(p.numel() for p in params)} trained); device {dev}; precision {precision}", flush=True)

    budget = args.minutes * 60.0
    t_start = time.time()

    def out_of_time() -> bool:
        return bool(budget) and time.time() - t_start >= budget

    def progress(s):
        """Fraction of the run done: by steps, or by wall time under --minutes."""
        t = (s - args.warmup) / max(1, args.steps - args.warmup)
        if budget:
            t = max(t, (time.time() - t_start) / budget)
        return min(1.0, t)

    def lr_at(s):
        if s < args.warmup:
            return args.lr * (s + 1) / args.warmup
        t = progress(s)
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))

    log = open(out / "log.jsonl", "a")
    acc = {"loss": 0.0, "dist": 0.0, "bpp": 0.0, "bpp0": 0.0, "psnr": 0.0, "n": 0}
    t_last = time.time()
    try:
        from tqdm import tqdm
        bar = tqdm(total=args.steps, initial=step, dynamic_ncols=True, mininterval=5, disable=not sys.stderr.isatty())
    except ImportError:  # pragma: no cover
        bar = None
    if validator and step == 0:  # where the run starts from (a warm start's own score)
        with open(out / "val.jsonl", "a") as vf:
            vf.write(json.dumps({"step": 0, "patches_seen": 0, **validator(net, False)}) + "\n")
    net.train()
    last = step >= args.steps or out_of_time()
    while not last:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        rgb = sampler.batch(args.batch).to(dev, non_blocking=True)
        if channels_last:
            rgb = rgb.contiguous(memory_format=torch.channels_last)
        ycc = rgb_to_ycbcr(rgb)
        bias = (torch.rand(args.batch, 1, 1, 1, device=dev) * 2 - 1) * args.bias_range
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            rec, m, m0 = net(ycc, bias)
        # The rate term is ramped in: at the start the decoder does not use the
        # bits yet, and a full-strength rate gradient collapses the map to level 0.
        lam = args.lam * min(1.0, step / max(1, args.rate_warmup))
        loss, dist, rate, rate0 = loss_fn(net, rec.float(), ycc, m.float(), m0.float(), args, lam)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        step += 1
        if bar:
            bar.update(1)
        # Accumulated as tensors: one host sync per log line, not five per step.
        for k, v in (("loss", loss), ("dist", dist), ("bpp", rate), ("bpp0", rate0),
                     ("psnr", psnr(rec.detach().float().clamp(0, 1), ycc))):
            acc[k] += v.detach().float()
        acc["n"] += 1
        last = step >= args.steps or out_of_time()
        if step % args.log_every == 0 or last:
            n = acc.pop("n")
            rec_ = {k: round(float(v) / n, 5) for k, v in acc.items()}
            rec_.update(step=step, lr=lr_at(step), sec_per_step=round((time.time() - t_last) / n, 3))
            log.write(json.dumps(rec_) + "\n"); log.flush()
            msg = (f"step {step} loss {rec_['loss']:.4f} D {rec_['dist']:.4f} est.bpp(raw) {rec_['bpp']:.3f} "
                   f"(unshifted {rec_['bpp0']:.3f}) PSNR-YCbCr {rec_['psnr']:.2f} {rec_['sec_per_step']}s/step")
            (bar.write(msg) if bar else print(msg, flush=True))
            acc = {k: 0.0 for k in acc}; acc["n"] = 0
            t_last = time.time()
        if validator and (step % args.val_every == 0 or last):
            with open(out / "val.jsonl", "a") as vf:
                vf.write(json.dumps({"step": step, "patches_seen": step * args.batch,
                                     **validator(net, False)}) + "\n")
            net.train()
        if step % args.save_every == 0 or last:
            tmp = out / "state.pt.tmp"
            torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "step": step,
                        "config": json.loads(cfg.to_json()), "rng": torch.get_rng_state(),
                        "args": vars(args), "init_from": init_from}, tmp)
            os.replace(tmp, state_path)
            save_weights(net, out / "weights.safetensors")
            (out / "train.json").write_text(json.dumps({
                "config": json.loads(cfg.to_json()), "args": vars(args), "init_from": init_from, "step": step,
                "patches_seen": step * args.batch, "precision": precision,
                "machine": f"{platform.machine()} {cpu.cpu_name()} "
                f"{os.cpu_count()} cpus, torch {torch.__version__}, device {dev}"
                + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
                "wall_seconds_this_invocation": round(time.time() - t_start, 1),
                "command": "python -m engine.train " + " ".join(sys.argv[1:] if argv is None else argv),
            }, indent=1))
    if bar:
        bar.close()


if __name__ == "__main__":
    main()
