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

    python -m bench.train_speed --knobs [--config small16] [--threads 1] [--data DIR]

What else pays on this CPU, at the training run's own precision (``--precision auto``:
bf16 + channels_last where the units are): against the standing run's step (batch 16,
patch 128, eager), in paired rounds, batch 8 and 32, patch 96 and 192, and
``torch.compile`` (inductor; its compile time reported apart), compared in training
pixels per second; and the data loading (``ColourMixSampler``, the standing run's mix)
as a share of a step, which says whether moving it off the critical path could pay.
Writes ``train-knobs-<cpu>.json``/``.md``.
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


def make_step(cfg, bf16: bool, batch: torch.Tensor, compiled: bool = False):
    """A closure running one training step of a fresh copy of the network (bf16: autocast
    with channels_last; compiled: torch.compile, which happens in the first call)."""
    from engine.io.color import rgb_to_ycbcr
    from engine.net.model import CodecNet

    torch.manual_seed(0)
    net = CodecNet(cfg)
    x = rgb_to_ycbcr(batch)
    if bf16:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5)
    bias = torch.zeros(x.shape[0], 1, 1, 1)
    fwd = torch.compile(net) if compiled else net

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            rec, m, _ = fwd(x, bias)
        loss = (rec.float() - x).square().mean() + 0.05 * net.rate_bpp(m.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def random_batch(n: int, patch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, patch, patch, generator=g)


def paired_rounds(steps: dict, rounds: int, per_round: int) -> dict:
    """Seconds per step of each closure, one value per round; in each round every closure
    runs ``per_round`` steps, in a random order (a paired ratio cancels slow drift)."""
    times = {name: [] for name in steps}
    rng = random.Random(0)
    for _ in range(rounds):
        for name in rng.sample(list(steps), len(steps)):
            t = time.perf_counter()
            for _ in range(per_round):
                steps[name]()
            times[name].append((time.perf_counter() - t) / per_round)
    return times


# (name, batch, patch, compile): the standing run's step first, then one knob changed each
KNOBS = (("base", 16, 128, False), ("batch 8", 8, 128, False), ("batch 32", 32, 128, False),
         ("patch 96", 16, 96, False), ("patch 192", 16, 192, False), ("compile", 16, 128, True))


def sampler_ms(data: str | None, batch: int, patch: int, n: int) -> float | None:
    """Median ms to draw one batch as the standing run does (ColourMixSampler 0.15/0.15)."""
    if not data:
        return None
    from engine.data import ColourMixSampler, list_images
    s = ColourMixSampler(list_images(data)[:40], patch, 0, 0.15, 0.15)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        s.batch(batch)
        times.append(time.perf_counter() - t)
    return round(1000 * st.median(times), 2)


def measure_knobs(args, knobs=KNOBS) -> dict:
    """Paired rounds over ``knobs``: each one's training pixels/s and its per-round ratio to
    the first; compile time apart; the sampler's share of the first knob's step."""
    from engine.net.model import CONFIGS
    from engine.net.train import resolve_precision
    bf16 = resolve_precision("auto", torch.device("cpu")) == "bf16"
    steps, first_ms = {}, {}
    for name, b, p, c in knobs:
        steps[name] = make_step(CONFIGS[args.config], bf16, random_batch(b, p), c)
        t = time.perf_counter()
        steps[name]()                       # compiles, for the compiled knob
        first_ms[name] = round(1000 * (time.perf_counter() - t))
        steps[name]()
    px = {name: b * p * p for name, b, p, _ in knobs}
    times = paired_rounds(steps, args.rounds, args.steps)
    base = knobs[0][0]
    out = {}
    for name, b, p, c in knobs:
        rate = [px[name] / t / (px[base] / t0) for t, t0 in zip(times[name], times[base])]
        out[name] = {"batch": b, "patch": p, "compile": c, "ms_per_step": round(1000 * st.median(times[name]), 1),
                     "mpixels_per_s": round(px[name] / st.median(times[name]) / 1e6, 3),
                     "pixel_rate_vs_base": quartiles(rate), "first_step_ms": first_ms[name]}
    b0, p0 = knobs[0][1], knobs[0][2]
    smp = sampler_ms(args.data, b0, p0, 20)
    return {"precision": "bf16" if bf16 else "fp32", "knobs": out, "sampler_ms_per_batch": smp,
            "sampler_share_of_step": None if smp is None else round(smp / out[base]["ms_per_step"], 4)}


def knobs_text(res: dict, args) -> str:
    lines = [f"# Training step knobs, {res['cpu']}", "",
             f"`python -m bench.train_speed --knobs --config {args.config} --rounds {args.rounds} --steps {args.steps} "
             f"--threads {args.threads}`; torch {torch.__version__}; precision {res['precision']}"
             f"{' (bf16 autocast + channels_last)' if res['precision'] == 'bf16' else ''}. Each knob against the "
             "standing run's step (batch 16, patch 128, eager): median over rounds of the per-round ratio of "
             "training pixels per second (quartiles).", "",
             "| knob | batch | patch | ms/step | Mpixel/s | pixel rate vs base | first step ms |",
             "|---|---|---|---|---|---|---|"]
    for name, r in res["knobs"].items():
        q = r["pixel_rate_vs_base"]
        lines.append(f"| {name} | {r['batch']} | {r['patch']} | {r['ms_per_step']} | {r['mpixels_per_s']} | "
                     f"{q[1]:.2f}x ({q[0]:.2f}–{q[2]:.2f}) | {r['first_step_ms']} |")
    if res["sampler_ms_per_batch"] is not None:
        lines += ["", f"Data loading (ColourMixSampler, the standing run's mix, one batch of 16 at 128): "
                      f"{res['sampler_ms_per_batch']} ms, {100 * res['sampler_share_of_step']:.1f}% of the base step."]
    return "\n".join(lines) + "\n"


def quartiles(v):
    q = st.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return round(q[0], 3), round(st.median(v), 3), round(q[2], 3)


def measure(cfg_name: str, args) -> dict:
    from engine.net.model import CONFIGS
    batch = random_batch(args.batch, args.patch)
    steps = {v: make_step(CONFIGS[cfg_name], v == "bf16", batch) for v in VARIANTS}
    for s in steps.values():      # warm-up: oneDNN picks and caches its kernels
        s(); s()
    times = paired_rounds(steps, args.rounds, args.steps)
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
    ap.add_argument("--knobs", action="store_true", help="what else pays: batch, patch, torch.compile, data loading")
    ap.add_argument("--config", default="small16", help="with --knobs: the network (the standing run's)")
    ap.add_argument("--data", default=None, help="with --knobs: training images, to time the data loading")
    args = ap.parse_args(argv)
    from engine import cpu
    torch.set_num_threads(args.threads)
    slug = "".join(ch if ch.isalnum() else "-" for ch in cpu.cpu_name().lower()).strip("-")
    out = Path(args.out)
    if args.knobs:
        res = {"cpu": cpu.describe(), "torch": torch.__version__, "threads": args.threads, "config": args.config,
               "rounds": args.rounds, "steps_per_round": args.steps, **measure_knobs(args)}
        text = knobs_text(res, args)
        print(text)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"train-knobs-{slug}.json").write_text(json.dumps(res, indent=1))
        (out / f"train-knobs-{slug}.md").write_text(text)
        return
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
    out.mkdir(parents=True, exist_ok=True)
    (out / f"train-speed-{slug}.json").write_text(json.dumps(res, indent=1))
    (out / f"train-speed-{slug}.md").write_text(text)


if __name__ == "__main__":
    main()
