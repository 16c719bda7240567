"""Entropy coding time per image: version 1's context coder (numpy + constriction)
against version 2's native rANS lanes, in paired rounds.

    python -m bench.entropy [--data ../shared/data/kodak] [--quality 4] [--rounds 5]
        [--threads 1,2] [--out bench/results]

The networks run once per image (ONNX Runtime where built, else torch) to get its
bit-path output; what is timed is only what the CPU does with it:

* encode: ``engine.format.registry.serialize`` (Packed record -> file bytes: the coder and the
  container) -- for v1 mode "context", for v2 mode "rans";
* decode: ``engine.format.registry.parse`` (file bytes -> header + dense bits).

Each round visits every image; per image, v1 and v2 run back to back in a random
order, so drift slower than an image cancels in the per-image ratio.  With ``T``
threads: v1 codes the images on a thread pool of T (as the engine's thread entropy
pool does), v2 in one native call over the whole set with T threads (across lanes
and images).  Reported: the median over rounds of the per-image time, and the
median of the per-round ratio v1 / v2.  Torch is held to one thread, so "1 thread"
is one core.  Also the file sizes of both versions (they are deterministic).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics as st
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _packed_records(codec, images):
    """Each image's bit-path output, via a raw-mode file (whose parse is the Packed record)."""
    from engine.format import registry
    out = []
    for rgb in images:
        raw = codec.compress(rgb)
        hdr, _, packed = registry.parse(raw, codec.rungs.codings.for_header, codec.max_pixels)
        out.append((hdr, packed))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.entropy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    ap.add_argument("--quality", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    import engine
    from engine.format import bitstream, lanes, registry
    from engine.data import list_images, load_rgb
    from engine.eval import machine
    from engine.io.planes import padded_size

    torch.set_num_threads(1)
    paths = list_images(args.data)[: args.limit or None]
    images = [load_rgb(p) for p in paths]
    codec = engine.Codec(quality=args.quality, entropy="none")
    coding = codec.rung.coding
    records = _packed_records(codec, images)
    if lanes.native() is None:
        raise SystemExit("engine.rans_native is not built: pip install -e . first")
    codings = codec.rungs.codings.for_header
    modes = {"v1": bitstream.ENTROPY_CONTEXT, "v2": bitstream.ENTROPY_RANS}

    def encode_all(mode, threads):
        def one(rec):
            hdr, packed = rec
            return registry.serialize(coding, packed, hdr.height, hdr.width, hdr.color, modes[mode])
        if mode == "v2" and threads > 1:   # one native call over the set (threads across lanes and images)
            cfg = coding.config
            coded = lanes.encode(cfg, coding.tables, [p for _, p in records],
                                 [h.color == 1 for h, _ in records], lanes.DEFAULT_TILE, threads)
            return [bitstream.write_lanes(bitstream.Header(bitstream.ENTROPY_RANS, h.color, coding.quality,
                                                           coding.model, coding.stream_id, h.width, h.height,
                                                           bitstream.VERSION_LANES, lanes.DEFAULT_TILE), c)
                    for (h, _), c in zip(records, coded)]
        if threads > 1:
            with ThreadPoolExecutor(threads) as ex:
                return list(ex.map(one, records))
        return [one(r) for r in records]

    def decode_all(mode, files, threads):
        if mode == "v2" and threads > 1:
            parsed = [bitstream.read(f, codec.max_pixels) for f in files]
            cfg = coding.config
            items = []
            for hdr, body in parsed:
                H, W = padded_size(hdr.height, hdr.width, cfg.multiple)
                items.append((H // 8, W // 8, hdr.tile, body, hdr.color == 1))
            return lanes.decode(cfg, coding.tables, items, threads)
        if threads > 1:
            with ThreadPoolExecutor(threads) as ex:
                return list(ex.map(lambda f: registry.parse(f, codings, codec.max_pixels), files))
        return [registry.parse(f, codings, codec.max_pixels) for f in files]

    files = {m: encode_all(m, 1) for m in modes}
    sizes = {m: sum(len(f) for f in files[m]) for m in modes}
    # correctness first: v2 decodes to exactly v1's bits
    for f1, f2 in zip(files["v1"], files["v2"]):
        _, _, d1 = registry.parse(f1, codings, codec.max_pixels)
        _, _, d2 = registry.parse(f2, codings, codec.max_pixels)
        assert all(np.array_equal(a, b) for a, b in zip(d1, d2)), "v2 decodes to other bits than v1"

    rng = random.Random(args.seed)
    results = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        per = {(m, d): [] for m in modes for d in ("encode", "decode")}
        ratios = {"encode": [], "decode": [], "total": []}
        n = len(images)
        for _ in range(args.rounds):
            t = {}
            order = list(modes)
            rng.shuffle(order)
            for m in order:
                t0 = time.perf_counter()
                encode_all(m, threads)
                t1 = time.perf_counter()
                decode_all(m, files[m], threads)
                t2 = time.perf_counter()
                t[m] = ((t1 - t0) / n, (t2 - t1) / n)
                per[(m, "encode")].append(t[m][0])
                per[(m, "decode")].append(t[m][1])
            ratios["encode"].append(t["v1"][0] / t["v2"][0])
            ratios["decode"].append(t["v1"][1] / t["v2"][1])
            ratios["total"].append(sum(t["v1"]) / sum(t["v2"]))
        results[threads] = {
            "ms_per_image": {f"{m}_{d}": 1e3 * st.median(v) for (m, d), v in per.items()},
            "v2_total_ms": 1e3 * st.median([a + b for a, b in zip(per[("v2", "encode")], per[("v2", "decode")])]),
            "v1_total_ms": 1e3 * st.median([a + b for a, b in zip(per[("v1", "encode")], per[("v1", "decode")])]),
            "ratio_v1_over_v2": {k: st.median(v) for k, v in ratios.items()},
        }
        print(f"threads {threads}: {json.dumps(results[threads], indent=1)}", flush=True)

    out = {"machine": machine(), "images": len(images), "data": str(args.data), "quality": coding.quality,
           "rounds": args.rounds, "tile": lanes.DEFAULT_TILE, "bytes": sizes,
           "v2_size_vs_v1_percent": 100 * (sizes["v2"] / sizes["v1"] - 1),
           "command": "python -m bench.entropy " + " ".join(sys.argv[1:] if argv is None else argv), "threads": results}
    tag = "".join(c if c.isalnum() else "-" for c in machine().split(",")[0].lower())
    tag = "-".join(filter(None, tag.split("-")))          # e.g. intel-r-xeon-r-processor-2-cpus
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / f"entropy-{tag}.json").write_text(json.dumps(out, indent=1))
    lines = [f"# Entropy coding per image: v1 context coder vs v2 native rANS lanes", "",
             f"Machine: {out['machine']}.  {len(images)} images of {args.data}, quality {coding.quality}, "
             f"{args.rounds} paired rounds, torch at 1 thread; tile {lanes.DEFAULT_TILE}.", "",
             f"Bytes: v1 {sizes['v1']}, v2 {sizes['v2']} ({out['v2_size_vs_v1_percent']:+.2f}%).", "",
             "| threads | v1 encode ms | v1 decode ms | v1 total | v2 encode ms | v2 decode ms | v2 total | "
             "ratio v1/v2 (total) |", "|---|---|---|---|---|---|---|---|"]
    for th, r in results.items():
        ms = r["ms_per_image"]
        lines.append(f"| {th} | {ms['v1_encode']:.2f} | {ms['v1_decode']:.2f} | {r['v1_total_ms']:.2f} | "
                     f"{ms['v2_encode']:.3f} | {ms['v2_decode']:.3f} | {r['v2_total_ms']:.3f} | "
                     f"{r['ratio_v1_over_v2']['total']:.1f}x |")
    lines += ["", "Encode = `registry.serialize` (coder + container), decode = `registry.parse` (container + "
              "coder); medians over rounds of the per-image time.", f"Command: `{out['command']}`", ""]
    (outdir / f"entropy-{tag}.md").write_text("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
