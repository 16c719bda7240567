"""Snapshot the standing run (bench/standing.sh) into bench/standing/ for a commit:
``python -m bench.standing_save [--run runs/standing]``.

Writes the weights in fp16 (half the bytes of fp32) after checking that the rounding
costs nothing measurable: the held-out validation (engine.net.train's Validator) of the
fp16-rounded weights against the fp32 ones, both recorded in ``snapshot.json``.  The
learning curve (``val.jsonl``, appended across sessions) and the training log come along.
The optimizer state is not kept: a resumed run starts a fresh AdamW (bench/standing.sh).

A run warm-started from weights (``--init``: a fresh machine's bench/standing.sh, or a
branch of the run with another recipe) counts its steps from 0 again; it continues the
committed snapshot, so its points and log are numbered from the snapshot's total step
(``step_offset`` in snapshot.json), not merged over the earlier ones.
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


def merge_curve(committed: Path, run: Path, offset: dict | None = None) -> str:
    """The committed learning curve, then the run's points it does not hold yet (a run
    resumed on the machine that made the snapshot repeats the earlier points).  ``offset``
    ({"step": s, "patches_seen": p}): added to the run's counters first (a warm-started run)."""
    old = committed.read_text().splitlines() if committed.exists() else []
    seen = {json.loads(line)["step"] for line in old if line.strip()}
    new = []
    for line in run.read_text().splitlines():
        if not line.strip():
            continue
        point = json.loads(line)
        if offset:
            point.update({k: point[k] + v for k, v in offset.items() if k in point})
            line = json.dumps(point)
        if point["step"] not in seen:
            new.append(line)
    return "".join(line + "\n" for line in old + new)


def warm_start_offset(train: dict, committed: Path, run_log: Path | None = None) -> dict:
    """What to add to the run's counters, {"step", "patches_seen"}.  ``committed``: the
    snapshot.json in the snapshot folder.  The run that made that snapshot, resumed (its
    log.jsonl still begins with the snapshot's copy of it): the snapshot's own offset.  A
    run warm-started from weights (``--init``, here or in the invocation it resumed:
    train.json "init_from"): the snapshot's totals.  Otherwise nothing."""
    zero = {"step": 0, "patches_seen": 0}
    if not committed.exists():
        return zero
    snap = json.loads(committed.read_text())
    own = {"step": snap.get("step_offset", 0), "patches_seen": snap.get("patches_offset", 0)}
    log = committed.parent / f"log-step{snap.get('total_step', snap['training']['step'])}.jsonl"
    committed_log = log.read_text() if log.exists() else ""
    if committed_log and run_log is not None and run_log.exists() and run_log.read_text().startswith(committed_log):
        return own
    if not (train.get("init_from") or train.get("args", {}).get("init")):
        return zero
    return {"step": snap.get("total_step", snap["training"]["step"]),
            "patches_seen": snap.get("total_patches_seen", snap["training"].get("patches_seen", 0))}


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
    offset = warm_start_offset(train, out / "snapshot.json", run / "log.jsonl")
    save_file(sd16, str(out / "weights.safetensors"))
    (out / "val.jsonl").write_text(merge_curve(out / "val.jsonl", run / "val.jsonl", offset))
    total = train["step"] + offset["step"]
    log = out / f"log-step{total}.jsonl"
    shutil.copy(run / "log.jsonl", log)
    for older in out.glob("log-step*.jsonl"):   # a log the new one continues (same machine's run) goes
        if older != log and log.read_text().startswith(older.read_text()):
            older.unlink()
    snap = {"training": train, "step_offset": offset["step"], "patches_offset": offset["patches_seen"],
            "total_step": total,
            "total_patches_seen": train.get("patches_seen", 0) + offset["patches_seen"],
            "fp32_validation": v32, "fp16_validation": v16, "fp16_worst_psnr_change_db": round(worst, 4)}
    (out / "snapshot.json").write_text(json.dumps(snap, indent=1))
    print(f"saved {out}: step {total} ({train['step']} in this run), fp16 rounding changes held-out PSNR "
          f"by at most {worst:.4f} dB")


if __name__ == "__main__":
    main()
