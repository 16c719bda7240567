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
instruction set); the bytes are the same on every machine.
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


def record(out: Path, only: set | None = None) -> None:
    import engine
    res = {"engine": engine.__file__, "settings": {}}
    if only:
        res = json.loads(out.read_text())
    for q, ent, effort in SETTINGS:
        if only and f"q{q}-{ent}-e{effort}" not in only:
            continue
        codec = engine.Codec(quality=q, entropy=ent, effort=effort, backend="torch", kernels="torch")
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
    ap.add_argument("--only", default="", help="comma list of settings to (re)record into --out, keeping the others")
    args = ap.parse_args()
    record(Path(args.out), set(filter(None, args.only.split(","))) or None)
