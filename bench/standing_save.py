"""Snapshot the standing run (bench/standing.sh) into bench/standing/ for a commit:
``python -m bench.standing_save [--run runs/standing]``.

Writes the weights in fp16 (half the bytes of fp32) after checking that the rounding
costs nothing measurable: the held-out validation (engine.net.train's Validator) of the
fp16-rounded weights against the fp32 ones, both recorded in ``snapshot.json``.  The
learning curve (``val.jsonl``, appended across sessions) and the training log come along.
The optimizer state is not kept: a resumed run starts a fresh AdamW (bench/standing.sh).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]


def validate(cfg, sd, val_paths) -> dict:
    from engine.net.model import CodecNet
    from engine.net.train import Validator
    net = CodecNet(cfg)
    net.load_state_dict(sd)
    return Validator(val_paths, torch.device("cpu"))(net, False)


def merge_curve(committed: Path, run: Path) -> str:
    """The committed learning curve, then the run's points it does not hold yet (a run
    resumed on the machine that made the snapshot repeats the earlier points)."""
    old = committed.read_text().splitlines() if committed.exists() else []
    seen = {json.loads(line)["step"] for line in old if line.strip()}
    new = [line for line in run.read_text().splitlines() if line.strip() and json.loads(line)["step"] not in seen]
    return "".join(line + "\n" for line in old + new)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench.standing_save", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(REPO / "runs" / "standing"))
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "train"))
    ap.add_argument("--out", default=str(REPO / "bench" / "standing"))
    args = ap.parse_args(argv)
    from engine.data import load_split
    from engine.net.model import ModelConfig
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = json.loads((run / "train.json").read_text())
    cfg = ModelConfig.from_dict(train["config"])
    sd32 = {k: v.float() for k, v in load_file(str(run / "weights.safetensors")).items()}
    sd16 = {k: v.half() for k, v in sd32.items()}
    _, val_paths = load_split(run / "split.json", args.data)
    v32 = validate(cfg, sd32, val_paths)
    v16 = validate(cfg, {k: v.float() for k, v in sd16.items()}, val_paths)
    worst = max(abs(v32[k] - v16[k]) for k in v32 if k.startswith("psnr"))
    save_file(sd16, str(out / "weights.safetensors"))
    (out / "val.jsonl").write_text(merge_curve(out / "val.jsonl", run / "val.jsonl"))
    log = out / f"log-step{train['step']}.jsonl"
    shutil.copy(run / "log.jsonl", log)
    for older in out.glob("log-step*.jsonl"):   # a log the new one continues (same machine's run) goes
        if older != log and log.read_text().startswith(older.read_text()):
            older.unlink()
    snap = {"training": train, "fp32_validation": v32, "fp16_validation": v16,
            "fp16_worst_psnr_change_db": round(worst, 4)}
    (out / "snapshot.json").write_text(json.dumps(snap, indent=1))
    print(f"saved {out}: step {train['step']}, fp16 rounding changes held-out PSNR by at most {worst:.4f} dB")


if __name__ == "__main__":
    main()
