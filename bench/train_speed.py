"""Training step time, fp32 against bf16 autocast on the CPU, in paired rounds (issue #24):
``python -m bench.train_speed``.

    python -m bench.train_speed [--configs small,medium] [--rounds 12] [--steps 5]
        [--batch 8] [--patch 128] [--threads 2] [--out bench/results]

Each round runs ``--steps`` training steps (forward, backward, AdamW) of each variant back
to back, in a random order, on the same batch: fp32 in the default layout (what
``engine.net.train`` did before), and bf16 autocast with channels_last (what it does now
where the CPU has bf16 matrix units).  The statistic is the median over rounds of the
per-round time ratio, with its quartiles: this VM's speed drifts within a minute, and a
paired ratio cancels drift slower than a round.  Writes ``train-speed-<cpu>.json``/``.md``.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics as st
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("fp32", "bf16")


def make_step(cfg, variant: str, batch: torch.Tensor):
    """A closure running one training step of a fresh copy of the network."""
    from engine.io.color import rgb_to_ycbcr
    from engine.net.model import CodecNet

    torch.manual_seed(0)
    net = CodecNet(cfg)
    bf16 = variant == "bf16"
    x = rgb_to_ycbcr(batch)
    if bf16:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5)
    bias = torch.zeros(x.shape[0], 1, 1, 1)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            rec, m, _ = net(x, bias)
        loss = (rec.float() - x).square().mean() + 0.05 * net.rate_bpp(m.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def quartiles(v):
    q = st.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return round(q[0], 3), round(st.median(v), 3), round(q[2], 3)


def measure(cfg_name: str, args) -> dict:
    from engine.net.model import CONFIGS
    g = torch.Generator().manual_seed(0)
    batch = torch.rand(args.batch, 3, args.patch, args.patch, generator=g)
    steps = {v: make_step(CONFIGS[cfg_name], v, batch) for v in VARIANTS}
    for s in steps.values():      # warm-up: oneDNN picks and caches its kernels
        s(); s()
    times = {v: [] for v in VARIANTS}
    rng = random.Random(0)
    for _ in range(args.rounds):
        for v in rng.sample(VARIANTS, len(VARIANTS)):
            t = time.perf_counter()
            for _ in range(args.steps):
                steps[v]()
            times[v].append((time.perf_counter() - t) / args.steps)
    ratios = [a / b for a, b in zip(times["fp32"], times["bf16"])]
    return {v: {"ms_per_step_median": round(1000 * st.median(times[v]), 1),
                "patches_per_s": round(args.batch / st.median(times[v]), 1)} for v in VARIANTS} | {
        "ratio_fp32_over_bf16": quartiles(ratios)}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.train_speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="small,medium")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)
    from engine import cpu
    torch.set_num_threads(args.threads)
    res = {"cpu": cpu.describe(), "torch": torch.__version__, "threads": args.threads,
           "batch": args.batch, "patch": args.patch, "rounds": args.rounds, "steps_per_round": args.steps,
           "configs": {c: measure(c, args) for c in args.configs.split(",")}}
    if not cpu.has_bf16_matrix():
        res["note"] = "this CPU has no bf16 matrix units: the bf16 figures are not the AMX speed-up (unverified)"
    lines = [f"# Training step: fp32 vs bf16 autocast (channels_last), {res['cpu']}", "",
             f"`python -m bench.train_speed --configs {args.configs} --rounds {args.rounds} --steps {args.steps} "
             f"--batch {args.batch} --patch {args.patch} --threads {args.threads}`; torch {torch.__version__}. "
             "Median over rounds of the per-round time ratio (quartiles).", "",
             "| config | fp32 ms/step | bf16 ms/step | fp32/bf16 ratio | bf16 patches/s |", "|---|---|---|---|---|"]
    for c, r in res["configs"].items():
        q = r["ratio_fp32_over_bf16"]
        lines.append(f"| {c} | {r['fp32']['ms_per_step_median']} | {r['bf16']['ms_per_step_median']} | "
                     f"{q[1]:.2f}x ({q[0]:.2f}–{q[2]:.2f}) | {r['bf16']['patches_per_s']} |")
    if "note" in res:
        lines += ["", res["note"]]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = "".join(ch if ch.isalnum() else "-" for ch in cpu.cpu_name().lower()).strip("-")
    (out / f"train-speed-{slug}.json").write_text(json.dumps(res, indent=1))
    (out / f"train-speed-{slug}.md").write_text(text)


if __name__ == "__main__":
    main()
