"""Two checkouts of the engine side by side, in paired rounds: ``python -m bench.versus``.

    python -m bench.versus --before /path/to/old/checkout [--after .] [--data ../shared/data/kodak] [--entropy MODE]
        [--rounds 5] [--batches 1,8] [--quality Q] [--backend auto] [--cli] [--out bench/results]

For refactors: is the new code as fast as the old on the same machine, same
inputs, same moment?  Each checkout runs in its own long-lived worker process
(its directory first on PYTHONPATH, one shared ENGINE_BUILD_DIR); every round asks
both to compress (``compress_batch``) and decompress (``decompress_batch``) all the
images, in a random order, and the statistic is the median over rounds of the
per-round ratio (after seconds / before seconds) with its quartiles, so drift slower
than a round cancels.  Only the public ``engine.Codec`` API is used, so any two
versions compare.  ``--cli`` also times ``python -m engine compress DIR`` and
``decompress`` end to end (process start included), alternating the checkouts.
Bytes are compared too: the two versions must write identical files.
Writes ``<out>/versus-<machine>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics as st
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import isolated  # noqa: E402
from bench.throughput import machine_info, write_results  # noqa: E402

WORKER = r"""
import hashlib, json, sys, time
from pathlib import Path
import engine
from PIL import Image
args = json.loads(sys.argv[1])
files = sorted(p for p in Path(args["data"]).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
images = [Image.open(f).convert("RGB") for f in files]
for im in images:
    im.load()
codec = engine.Codec(quality=args["quality"], backend=args["backend"],
                     **({"entropy": args["entropy"]} if args["entropy"] else {}),
                     **({"model": args["model"]} if args.get("model") else {}))
blobs = codec.compress_batch(images, batch_size=8)
codec.decompress_batch(blobs[:2], batch_size=8)
print(json.dumps({"ready": engine.__file__, "backend": codec.runner.name, "images": len(images),
                  "sha": hashlib.sha256(b"".join(blobs)).hexdigest()}), flush=True)
for line in sys.stdin:
    op, b = line.split()
    b = int(b)
    t0 = time.perf_counter()
    if op == "enc":
        out = codec.compress_batch(images, batch_size=b)
        assert out == blobs, "bytes changed between rounds"
    else:
        codec.decompress_batch(blobs, batch_size=b)
    print(json.dumps({"s": time.perf_counter() - t0}), flush=True)
"""


class Side:
    def __init__(self, name: str, checkout: Path, args):
        env = dict(os.environ, PYTHONPATH=str(checkout))
        self.name, self.checkout = name, checkout
        self.p = subprocess.Popen([*isolated.code(WORKER), json.dumps(
            {"data": args.data, "quality": args.quality, "backend": args.backend, "entropy": args.entropy,
             "model": args.model})],
            cwd=checkout, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.p.stdout.readline())

    def run(self, op: str, batch: int) -> float:
        self.p.stdin.write(f"{op} {batch}\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())["s"]

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=60)


def _q(v):
    q = st.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
    return q[0], st.median(v), q[2]


def cli_round(checkout: Path, data: str, quality, backend: str, entropy: str | None = None,
              model: str | None = None) -> tuple[float, float, str]:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    with tempfile.TemporaryDirectory() as tmp:
        q = (["--quality", str(quality)] if quality else []) + (["--entropy", entropy] if entropy else []) \
            + (["--model", model] if model else [])
        t0 = time.perf_counter()
        subprocess.run([*isolated.module("engine"), "compress", data, "-o", f"{tmp}/c", "--quiet",
                        "--backend", backend, *q], cwd=checkout, env=env, check=True)
        t1 = time.perf_counter()
        subprocess.run([*isolated.module("engine"), "decompress", f"{tmp}/c", "-o", f"{tmp}/d", "--quiet",
                        "--backend", backend, *(["--model", model] if model else [])], cwd=checkout, env=env,
                       check=True)
        t2 = time.perf_counter()
        h = hashlib.sha256()
        for f in sorted(p for p in Path(tmp, "c").iterdir() if p.is_file()):   # not the CLI's records folder
            h.update(f.read_bytes())
        return t1 - t0, t2 - t1, h.hexdigest()


def main(argv=None) -> dict:
    from engine.settings import available_backends
    ap = argparse.ArgumentParser(prog="python -m bench.versus", description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the old checkout")
    ap.add_argument("--after", default=str(REPO))
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    ap.add_argument("--quality", type=int, default=None)
    ap.add_argument("--backend", default="auto", choices=available_backends())
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cli", action="store_true")
    ap.add_argument("--cli-rounds", type=int, default=2)
    ap.add_argument("--model", default=None, help="a model both checkouts ship (default: each one's default)")
    ap.add_argument("--entropy", default=None,
                    help="entropy mode for both sides (default: each side's own default; an older checkout may "
                         "not know the newer modes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    sides = [Side("before", Path(args.before).resolve(), args), Side("after", Path(args.after).resolve(), args)]
    try:
        n = sides[0].info["images"]
        same_bytes = sides[0].info["sha"] == sides[1].info["sha"]
        rows = []
        for b in [int(x) for x in args.batches.split(",")]:
            for op in ("enc", "dec"):
                t = {"before": [], "after": []}
                for _ in range(args.rounds):
                    order = sides[:] if rng.random() < 0.5 else sides[::-1]
                    for s in order:
                        t[s.name].append(s.run(op, b))
                ratio = _q([a / bb for a, bb in zip(t["after"], t["before"])])
                row = {"op": "compress_batch" if op == "enc" else "decompress_batch", "batch": b,
                       "before_images_per_s": n / st.median(t["before"]), "after_images_per_s": n / st.median(t["after"]),
                       "after_over_before_seconds": {"q1": ratio[0], "median": ratio[1], "q3": ratio[2]},
                       "seconds": t}
                rows.append(row)
                print(f"{row['op']} batch {b}: before {row['before_images_per_s']:.2f} img/s, after "
                      f"{row['after_images_per_s']:.2f} img/s, after/before time {ratio[1]:.3f} "
                      f"[{ratio[0]:.3f}, {ratio[2]:.3f}]", flush=True)
        info = {s.name: s.info for s in sides}
    finally:
        for s in sides:
            s.close()
    cli = None
    if args.cli:
        cli = {"before": [], "after": []}
        for _ in range(args.cli_rounds):
            for s in (sides if rng.random() < 0.5 else sides[::-1]):
                cli[s.name].append(cli_round(s.checkout, args.data, args.quality, args.backend, args.entropy, args.model))
        same_bytes &= len({r[2] for v in cli.values() for r in v}) == 1
        for name, v in cli.items():
            print(f"CLI {name}: compress {n / st.median(r[0] for r in v):.2f} img/s, decompress "
                  f"{n / st.median(r[1] for r in v):.2f} img/s (process start included)", flush=True)
    machine = machine_info(os.cpu_count())
    res = {"machine": machine, "data": args.data, "images": n, "workers": info, "rows": rows,
           "cli": None if cli is None else {k: [{"compress_s": a, "decompress_s": b} for a, b, _ in v]
                                            for k, v in cli.items()},
           "identical_files": same_bytes, "command": "python -m bench.versus " + " ".join(argv or sys.argv[1:])}
    print("identical files:", same_bytes)
    md = ["| op | batch | before img/s | after img/s | after/before time, median [q1, q3] |", "|---|---|---|---|---|"]
    for r in rows:
        q = r["after_over_before_seconds"]
        md.append(f"| {r['op']} | {r['batch']} | {r['before_images_per_s']:.2f} | {r['after_images_per_s']:.2f} | "
                  f"{q['median']:.3f} [{q['q1']:.3f}, {q['q3']:.3f}] |")
    if cli:
        for name, v in cli.items():
            md.append(f"\nCLI {name}: compress {n / st.median(r[0] for r in v):.2f} img/s, decompress "
                      f"{n / st.median(r[1] for r in v):.2f} img/s ({len(v)} runs, median, process start included)")
    md.append(f"\nIdentical files from both: {same_bytes}")
    write_results(args.out, "versus", machine, res, "\n".join(md))
    return res


if __name__ == "__main__":
    main()
