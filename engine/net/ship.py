"""Turn a training run into a shipped model: rate ladder + entropy tables.

    python -m engine.ship --run runs/small --name small --data ../shared/data/train \
        --biases -1.5,-0.75,0,0.75,1.5

* weights: the run's ``weights.safetensors``;
* qualities 1..K: the importance-map offsets (--biases, ascending = ascending rate);
* entropy tables per quality, counted on training images only (never the test set),
  excluding the run's validation images, on which the ladder's rates are reported.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

from .. import importance
from ..format import context_coder
from .checkpoint import CHECKPOINT_DIR, write_model_dir
from ..io.planes import postprocess, preprocess
from ..data import load_rgb
from .model import CodecNet, ModelConfig
from .search import MS_SSIM_MIN_SIDE, ms_ssim
from kernels import reference


def _unit(rgb: np.ndarray) -> torch.Tensor:
    """(h, w, 3) uint8 -> (1, 3, h, w) float in [0, 1]."""
    return torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None] / 255   # a copy: rgb may be read-only


def encode_samples(net: CodecNet, paths, biases, max_side: int = 768):
    """Yield per image: (rgb, {bias: (levels, ydense, cdense)}) with the torch encoder."""
    cfg = net.cfg
    for p in paths:
        rgb = load_rgb(p)[:max_side, :max_side]
        ycc = preprocess(rgb, cfg.multiple)
        with torch.inference_mode():
            e, logit, ec = net.encoder.features(ycc)
        yb = (e[0] > 0.5).numpy().astype(np.uint8)
        cb = (ec[0] > 0.5).numpy().astype(np.uint8)
        out = {}
        for b in biases:
            q = importance.quantize_levels(torch.sigmoid(logit + b), cfg.levels)
            mask = importance.channel_mask(q, cfg.n, cfg.levels)[0].numpy().astype(np.uint8)
            out[b] = (q[0, 0].numpy().astype(np.uint8), yb * mask, cb)
        yield rgb, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--data", required=True, help="training images (the run's split is reused)")
    ap.add_argument("--biases", default="-1.5,-0.75,0,0.75,1.5")
    ap.add_argument("--fit-images", type=int, default=120)
    ap.add_argument("--out-root", default=str(CHECKPOINT_DIR))
    ap.add_argument("--default-quality", type=int, default=None, help="the rung Codec() encodes with by default")
    ap.add_argument("--fp16-weights", action="store_true", help="store the weights as float16 (half the bytes)")
    ap.add_argument("--metric", default="mse", help="what the run was trained for (model.json; Codec(metric=...))")
    ap.add_argument("--lineage", nargs="*", default=[],
                    help="train.json files of the earlier runs a warm-started (--init) run grew from")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    run = Path(args.run)
    train = json.loads((run / "train.json").read_text())
    split = json.loads((run / "split.json").read_text())
    cfg = ModelConfig.from_dict(train["config"])
    net = CodecNet(cfg)
    from safetensors.torch import load_file
    net.load_state_dict(load_file(str(run / "weights.safetensors")))
    if args.fp16_weights:
        # Round first, so the ladder, the tables and every number below are the stored
        # weights' own (bench.standing_save measures what the rounding costs).
        with torch.no_grad():
            for t in net.state_dict().values():
                t.copy_(t.half().float())
    net.eval()
    biases = [float(b) for b in args.biases.split(",")]
    data = Path(args.data)
    fit_paths = [data / n for n in split["train"]]
    rng = np.random.default_rng(0)
    fit_paths = [fit_paths[i] for i in sorted(rng.choice(len(fit_paths), min(args.fit_images, len(fit_paths)), replace=False))]
    val_paths = [data / n for n in split["val"]]

    t0 = time.time()
    samples = {b: [] for b in biases}
    for _, out in encode_samples(net, fit_paths, biases):
        for b in biases:
            samples[b].append(out[b])
    tables = {b: context_coder.fit(samples[b], cfg.n, cfg.levels, cfg.m) for b in biases}
    print(f"fitted tables on {len(fit_paths)} training images in {time.time() - t0:.0f}s", flush=True)

    # Rates (raw and context-coded payload bits) and PSNR-RGB on the held-out
    # training images: what the ladder is chosen on (never the test set).
    report = {b: {"raw": 0.0, "ctx": 0.0, "sse": 0.0, "ms": []} for b in biases}
    pixels = 0
    for rgb, out in encode_samples(net, val_paths, biases, max_side=10 ** 6):
        h, w = rgb.shape[:2]
        pixels += h * w
        for b in biases:
            lv, yd, cd = out[b]
            with torch.inference_mode():
                rec = net.decoder(torch.from_numpy(yd[None]).float(), torch.from_numpy(lv[None, None]).float(),
                                  torch.from_numpy(cd[None]).float())
            dec = postprocess(rec, h, w)
            report[b]["sse"] += float(((dec.astype(np.float64) - rgb) ** 2).sum())
            if min(h, w) >= MS_SSIM_MIN_SIDE:   # MS-SSIM per image, as engine.eval averages it
                report[b]["ms"].append(float(ms_ssim(_unit(dec), _unit(rgb))[0]))
            raw = (len(context_coder.pack_map_raw(lv, cfg.levels))
                   + (reference.expected_ybits(lv, cfg.n, cfg.levels) + 7) // 8 + (cd.size + 7) // 8)
            ms = context_coder.encode_map(lv, cfg.levels, tables[b])
            ys, cs = context_coder.encode_codes(lv, yd, cd, cfg.n, cfg.levels, tables[b])
            report[b]["raw"] += raw * 8
            report[b]["ctx"] += (len(ms) + len(ys) + len(cs)) * 8
    ladder = {}
    for i, b in enumerate(biases, 1):
        r = {k: report[b][k] / pixels for k in ("raw", "ctx", "sse")}
        psnr = 10 * np.log10(255 ** 2 / max(r["sse"] / 3, 1e-12))
        ladder[i] = {"imp_bias": b, "val_bpp_raw": round(r["raw"], 4), "val_bpp_context": round(r["ctx"], 4),
                     "val_psnr_rgb": round(float(psnr), 3)}
        if report[b]["ms"]:
            ladder[i]["val_msssim"] = round(float(np.mean(report[b]["ms"])), 5)
        print(f"quality {i}: bias {b:+.2f}  held-out bpp raw {r['raw']:.3f}  context {r['ctx']:.3f}  "
              f"PSNR-RGB {psnr:.2f} dB  MS-SSIM {ladder[i].get('val_msssim', float('nan')):.4f}", flush=True)

    prov = {"training": train, "ship_command": "python -m engine.ship " + " ".join(argv or __import__("sys").argv[1:]),
            "entropy_tables": f"counted on {len(fit_paths)} training images (run split, validation excluded)"}
    if args.lineage:
        prov["earlier_training"] = [json.loads(Path(f).read_text()) for f in args.lineage]
    d = write_model_dir(Path(args.out_root) / args.name, net, {i: v["imp_bias"] for i, v in ladder.items()}, prov,
                        extra={i: {k: v for k, v in ladder[i].items() if k != "imp_bias"} for i in ladder},
                        dtype=torch.float16 if args.fp16_weights else None)
    meta = json.loads((d / "model.json").read_text())
    meta["metric"] = args.metric
    if args.default_quality:
        meta["default_quality"] = args.default_quality
    (d / "model.json").write_text(json.dumps(meta, indent=1))
    flat = {}
    for i, b in enumerate(biases, 1):
        flat.update(tables[b].as_dict(f"q{i}."))
    save_file({k: np.ascontiguousarray(v) for k, v in flat.items()}, str(d / "entropy.safetensors"))
    print(f"wrote {d}")


if __name__ == "__main__":
    main()
