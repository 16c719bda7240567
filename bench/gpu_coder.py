"""Bitstream v2's Triton coder against the native one on real codes: byte identity and
coder time, on the device the networks run on.

    python -m bench.gpu_coder [--data ../shared/data/kodak] [--quality 4] [--batch 32]
        [--limit N] [--crop HxW] [--out bench/results]

The shipped model's encoder runs once per batch (torch, on CUDA when there is one,
in its default precision there); its outputs are then coded

* natively: the reference bit path's Packed records -> ``engine.format.lanes.encode`` (C++,
  all CPU threads), the production CPU path;
* on the device: ``engine.format.lanes.device_encode`` + compaction (kernels/rans_triton.py),

and the two must give the same bytes, lane for lane.  Each file's lanes are then
decoded on the device straight into decoder inputs and compared with the native
decoder's bits.  Timed (CUDA events around the device coder, wall clock around the
native one, best of ``--rounds``): milliseconds per image for each direction.

On a CPU the device coder runs in the Triton interpreter (TRITON_INTERPRET=1): a
correctness run on small crops (``--crop 32x48``), not a speed measurement.  Results:
``<out>/gpu-coder-<device>.json`` and ``.md``; exit status 1 when any byte differs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args) -> dict:
    import numpy as np
    import torch

    import engine
    from engine.runtime import stages
    from engine.format import bitstream, lanes
    from engine.format.v2_lanes import container
    from engine.data import list_images, load_rgb
    from engine.runtime.executors import Slot
    from kernels import rans_triton, reference

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    codec = engine.Codec(quality=args.quality, backend="torch", device=str(device), kernels="torch",
                         coder="native")
    cfg, coding = codec.config, codec.rung.coding
    paths = list_images(args.data)[:args.limit or None]
    images = [load_rgb(p) for p in paths]
    if args.crop:
        ch, cw = (int(v) for v in args.crop.lower().split("x"))
        images = [im[:ch, :cw] for im in images]
    # one padded shape per batch (Kodak: landscape and portrait)
    by_shape: dict = {}
    for im in images:
        by_shape.setdefault(im.shape, []).append(im)
    slot = Slot(device)
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (Triton interpreter)",
           "precision": codec.runner.precision, "quality": codec.quality, "images": len(images),
           "batch": args.batch, "tile": lanes.DEFAULT_TILE, "mismatched_lanes": 0, "decode_mismatches": 0,
           "lanes": 0, "bytes": 0, "ms_per_image": {}}
    times = {"native_encode": [], "triton_encode": [], "native_decode": [], "triton_decode": []}
    for shape, group in by_shape.items():
        for s in range(0, len(group), args.batch):
            chunk = group[s:s + args.batch]
            ycc = stages.stage_images(slot, chunk, cfg.multiple)
            with torch.inference_mode():
                e, p, ec = codec.runner.encode(ycc)
            grays = [False] * len(chunk)
            packeds = reference.pack(e, p, ec, cfg.n, cfg.levels)
            best = {k: float("inf") for k in times}
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                nat = lanes.encode(cfg, coding.tables, packeds, grays, lanes.DEFAULT_TILE, threads=os.cpu_count() or 1)
                best["native_encode"] = min(best["native_encode"], time.perf_counter() - t0)
                _sync(device)
                t0 = time.perf_counter()
                words, lens, geo = lanes.device_encode(cfg, coding.tables, p, e, ec, grays)
                flat, offs = rans_triton.compact(words, lens)
                tri = rans_triton.lanes_to_bytes(flat.cpu().numpy(), offs.cpu().numpy(), geo.per_image)
                best["triton_encode"] = min(best["triton_encode"], time.perf_counter() - t0)
            for a, b in zip(nat, tri):
                res["lanes"] += len(a)
                res["bytes"] += sum(len(x) for x in a)
                res["mismatched_lanes"] += sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))
            h, w = packeds[0].levels.shape
            files = [container(coding, c, im.shape[0], im.shape[1], 0) for c, im in zip(nat, chunk)]
            bodies = [bitstream.read(f, codec.max_pixels)[1] for f in files]
            items = [(h, w, lanes.DEFAULT_TILE, b, False) for b in bodies]
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                want = lanes.decode(cfg, coding.tables, items, threads=os.cpu_count() or 1)
                best["native_decode"] = min(best["native_decode"], time.perf_counter() - t0)
                _sync(device)
                t0 = time.perf_counter()
                (lv, yb, cb), status, geo = lanes.device_decode(cfg, coding.tables, h, w,
                                                                [(b, lanes.DEFAULT_TILE, False) for b in bodies],
                                                                device, torch.float32)
                ok = rans_triton.image_status(status.cpu().numpy(), geo.per_image)
                best["triton_decode"] = min(best["triton_decode"], time.perf_counter() - t0)
            lv, yb, cb = (t.cpu().numpy() for t in (lv, yb, cb))
            for k, (wt, good) in enumerate(zip(want, ok)):
                same = (good and np.array_equal(lv[k, 0], wt[0]) and np.array_equal(yb[k], wt[1])
                        and np.array_equal(cb[k], wt[2]))
                res["decode_mismatches"] += not same
            for k in times:
                times[k].append((best[k], len(chunk)))
    for k, v in times.items():
        res["ms_per_image"][k] = 1e3 * sum(t for t, _ in v) / max(1, sum(n for _, n in v))
    res["identical"] = res["mismatched_lanes"] == 0 and res["decode_mismatches"] == 0
    return res


def markdown(res: dict, command: str) -> str:
    ms = res["ms_per_image"]
    lines = [f"# Bitstream v2 coders: Triton vs native, {res['device']}", "",
             f"`{command}`", "",
             f"{res['images']} images, quality {res['quality']}, network precision {res['precision']}, batch "
             f"{res['batch']}, tile {res['tile']}: {res['lanes']} lanes, {res['bytes']} bytes.", "",
             f"- byte identity: **{'yes' if res['identical'] else 'NO'}** ({res['mismatched_lanes']} lanes differ, "
             f"{res['decode_mismatches']} images decode differently)",
             "", "| ms / image | encode | decode |", "|---|---|---|",
             f"| native (C++, all CPU threads) | {ms['native_encode']:.3f} | {ms['native_decode']:.3f} |",
             f"| Triton (device, incl. copies) | {ms['triton_encode']:.3f} | {ms['triton_decode']:.3f} |"]
    if res["device"].startswith("cpu"):
        lines += ["", "On the CPU the Triton coder runs in its interpreter: identity only, the times mean nothing."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_coder", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    ap.add_argument("--quality", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--crop", default=None, help="HxW: crop every image (small crops for the interpreter)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)
    res = run(args)
    command = "python -m bench.gpu_coder " + " ".join(argv if argv is not None else sys.argv[1:])
    res["command"] = command
    slug = re.sub(r"[^a-z0-9]+", "-", res["device"].lower()).strip("-")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu-coder-{slug}.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / f"gpu-coder-{slug}.md").write_text(markdown(res, command))
    print(markdown(res, command))
    if not res["identical"]:
        raise SystemExit(1)
    return res


if __name__ == "__main__":
    main()
