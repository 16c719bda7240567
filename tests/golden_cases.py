"""Golden files: the bytes (and decoded pixels) the shipped model gives for fixed inputs.

    python tests/golden_cases.py --out tests/golden/small.json     # (re)record
    python tests/golden_cases.py --only q1-rans-e0,q2-rans-e0         # record these, keep the rest

Recorded with the engine *before* the stage redesign (commit 2839dc1) and checked by
tests/test_golden.py on every path (single image, batch, the stream executor on CPU
stand-ins): a refactor that changes one byte fails.  Only ``engine.Codec(...)
.compress`` / ``.decompress`` are used here, so any engine version can record.
Inputs: synthetic images (seeded; odd sizes, a gray one) and, where ../shared is
present, crops of the first Kodak images (a fixed regression input, not tuning).

The version 2 settings ("rans", the default mode since the native coder) were
recorded later, bytes only: their files decode to exactly the bits of the same
image's version 1 file, so the test checks their pixels against that file's decode.
Decoded pixel hashes are the recording CPU's (torch's CPU convolutions round by
instruction set); the bytes are the same on every machine.  Another CPU kind adds its
own pixel table, keyed by model name and torch's CPU capability (``cpu_key``):

    python tests/golden_cases.py --cpu-table       # add this CPU's decoded hashes
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
KODAK = HERE.parents[1] / "shared" / "data" / "kodak"
SHAPES = [(64, 96), (61, 90), (33, 17), (128, 64), (100, 150), (16, 16)]
# (quality, entropy, effort): every encodable rung, raw packing once, the code search once
SETTINGS = [(1, "context", 0), (2, "context", 0), (3, "context", 0), (4, "context", 0), (5, "context", 0),
            (3, "none", 0), (4, "context", 1),
            (1, "rans", 0), (2, "rans", 0), (3, "rans", 0), (4, "rans", 0), (5, "rans", 0)]


def synthetic() -> dict:
    rng = np.random.default_rng(20261202)
    out = {}
    for h, w in SHAPES:
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 3) % 256], -1)
        noise = rng.integers(-20, 21, (h, w, 3))
        out[f"syn{h}x{w}"] = np.clip(base + noise, 0, 255).astype(np.uint8)
    out["gray48x64"] = out["syn64x96"][:48, :64, 1].copy()         # (h, w): a gray image
    return out


def kodak_crops(n: int = 3) -> dict:
    if not KODAK.is_dir():
        return {}
    from PIL import Image
    files = sorted(KODAK.glob("*.png"))[:n]
    return {f"{f.stem}-crop": np.asarray(Image.open(f).convert("RGB"))[:128, :192].copy() for f in files}


def inputs(which: str) -> dict:
    return synthetic() if which == "synthetic" else kodak_crops()


def sha(b) -> str:
    return hashlib.sha256(bytes(b) if not isinstance(b, np.ndarray) else np.ascontiguousarray(b).tobytes()).hexdigest()


def to_input(a: np.ndarray):
    from PIL import Image
    return Image.fromarray(a) if a.ndim == 2 else a


def cpu_key() -> str:
    """The CPU model name and torch's vector ISA: the two things torch's CPU decode
    rounds by (the same model name has shipped with and without AVX-512)."""
    import torch
    from engine.eval import machine
    return f"{machine().split(' (')[0]} / {torch.backends.cpu.get_cpu_capability()}"


def record_cpu_table(out: Path) -> None:
    """Decoded pixel hashes of every recorded v1 setting on this CPU kind, checked
    against the recorded bytes first (a table is only added for the same files)."""
    import engine
    import torch
    res = json.loads(out.read_text())
    torch.set_num_threads(res["torch_threads"])
    table = {}
    for setting, cases in sorted(res["settings"].items()):
        q, ent, effort = setting.split("-")
        if ent == "rans" or setting in res.get("setting_cpu", {}):
            continue                            # v2 pixels are v1's; e1 stays on its CPU
        codec = engine.Codec(quality=int(q[1:]), model=res.get("model", "small"), entropy=ent,
                             effort=int(effort[1:]), backend="torch", kernels="torch", search_precision="fp32")
        imgs = {**inputs("synthetic"), **inputs("kodak")}
        table[setting] = {}
        for name, want in cases.items():
            data = codec.compress(to_input(imgs[name]))
            if sha(data) != want["bytes"]:
                raise SystemExit(f"{setting} {name}: bytes differ from the recorded file; not recording pixels")
            table[setting][name] = sha(codec.decompress(data))
    res.setdefault("decoded_by_cpu", {})[cpu_key()] = table
    out.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")
    print(cpu_key(), len(table), file=sys.stderr)


def record(out: Path, only: set | None = None, model: str = "small", settings=SETTINGS) -> None:
    import engine
    res = {"engine": engine.__file__, "model": model, "settings": {}}
    if only:
        res = json.loads(out.read_text())
        model = res.get("model", "small")
    for q, ent, effort in settings:
        if only and f"q{q}-{ent}-e{effort}" not in only:
            continue
        codec = engine.Codec(quality=q, model=model, entropy=ent, effort=effort, backend="torch", kernels="torch",
                             search_precision="fp32")
        cases = {}
        for which in ("synthetic", "kodak"):
            if effort and which == "kodak":
                continue                       # the search is slow on the CPU: synthetic only
            for name, a in inputs(which).items():
                data = codec.compress(to_input(a))
                cases[name] = {"bytes": sha(data), "size": len(data),
                               "decoded": None if ent == "rans" else sha(codec.decompress(data))}
        res["settings"][f"q{q}-{ent}-e{effort}"] = cases
        print(q, ent, effort, len(cases), file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(HERE / "golden" / "small.json"))
    ap.add_argument("--model", default="small", help="the model to record (a new file: --out golden/NAME.json)")
    ap.add_argument("--rans-only", action="store_true", help="record the default mode (v2) only, effort 0")
    ap.add_argument("--only", default="", help="comma list of settings to (re)record into --out, keeping the others")
    ap.add_argument("--cpu-table", action="store_true",
                    help="add this CPU kind's decoded pixel hashes to --out (bytes must match)")
    args = ap.parse_args()
    if args.cpu_table:
        record_cpu_table(Path(args.out))
        sys.exit(0)
    settings = [s for s in SETTINGS if s[1] == "rans"] if args.rans_only else SETTINGS
    record(Path(args.out), set(filter(None, args.only.split(","))) or None, args.model, settings)
