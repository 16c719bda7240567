"""Equal-loss check for bf16 training (issue #24): ``python -m bench.train_equal_loss``.

The same ``--steps`` training steps from the same initial weights and the same batches
(same seed), once in fp32 and once in bf16 autocast, each validated by engine.net.train's
own held-out validator (PSNR-RGB and raw bpp on the 20 held-out training images, at three
map offsets).  bf16 is fit for training when its validation matches fp32's within noise.
Writes ``train-equal-loss-<cpu>.json``/``.md``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(precision: str, args, out: Path) -> dict:
    from engine.net import train
    t = time.time()
    train.main(["--data", args.data, "--out", str(out), "--config", "small", "--init", args.init,
                "--distortion", "mse", "--lam", "0.05", "--target-bpp", "0.45", "--rate-warmup", "1",
                "--lr", "2e-4", "--warmup", "100", "--steps", str(args.steps), "--batch", "8",
                "--val-every", str(args.steps), "--log-every", str(args.steps), "--save-every", str(args.steps),
                "--threads", str(args.threads), "--precision", precision, "--seed", str(args.seed)])
    vals = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {"start": vals[0], "end": vals[-1], "train_loss_last": log[-1]["loss"], "wall_s": round(time.time() - t)}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.train_equal_loss", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "train"))
    ap.add_argument("--init", default=str(REPO / "engine" / "checkpoints" / "small" / "weights.safetensors"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    ap.add_argument("--seed", type=int, default=3, help="the batches' seed (another seed: the spread between runs)")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma list, each run from the same init and batches")
    args = ap.parse_args(argv)
    from engine import cpu
    precs = [p for p in args.precisions.split(",") if p]
    res = {"cpu": cpu.describe(), "steps": args.steps, "batch": 8, "seed": args.seed, "init": Path(args.init).parent.name}
    with tempfile.TemporaryDirectory() as tmp:
        for p in precs:
            res[p] = run(p, args, Path(tmp) / p)
    keys = [k for k in res[precs[0]]["end"] if k.startswith(("psnr", "bpp"))]
    lines = [f"# Equal-loss check: {args.steps} steps fp32 vs bf16 from the same init and batches", "",
             f"{res['cpu']}. `python -m bench.train_equal_loss --steps {args.steps} --seed {args.seed}`; held-out training images "
             "(20, centre 256x256 crops), PSNR-RGB dB and raw bpp at three map offsets.", "",
             "| | " + " | ".join(keys) + " | last train loss | wall s |", "|---" * (len(keys) + 3) + "|",
             "| start | " + " | ".join(str(res[precs[0]]["start"][k]) for k in keys) + " | | |"]
    for p in precs:
        lines.append(f"| {p} after {args.steps} | " + " | ".join(str(res[p]["end"][k]) for k in keys)
                     + f" | {res[p]['train_loss_last']} | {res[p]['wall_s']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    slug = "".join(ch if ch.isalnum() else "-" for ch in cpu.cpu_name().lower()).strip("-")
    slug += "" if args.seed == 3 else f"-seed{args.seed}"
    Path(args.out, f"train-equal-loss-{slug}.json").write_text(json.dumps(res, indent=1))
    Path(args.out, f"train-equal-loss-{slug}.md").write_text(text)


if __name__ == "__main__":
    main()
