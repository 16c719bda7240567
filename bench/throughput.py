"""Throughput per backend and batch size: ``python -m bench.throughput``.

    python -m bench.throughput --data ../shared/data/kodak [--model small] [--quality Q]
        [--backends torch,onnxruntime[,openvino,torch-cuda,tensorrt]] [--batches 1,8,32] [--limit N]
        [--threads T] [--repeat R] [--out bench/results] [--build-dir DIR] [--no-build]
        [--compressai /tmp/cai/bin/python]

For each backend and batch size: encode (``compress_batch``) and decode
(``decompress_batch``) images/s and megapixels/s, end to end (image array in,
file bytes out and back), best of ``--repeat`` rounds after a warm-up batch (the
backends take turns within each round, so machine drift hits them alike), and
the per-stage split from :class:`engine.timing.StageTimer` (preprocess,
network, bit path, entropy, container, postprocess; on CUDA also h2d, d2h and
the host's wait for a stream; milliseconds per image,
summed over threads/streams, so overlapped stages can add up to more than the
wall time).

Batches: images are bucketed by padded shape (Kodak has landscape and portrait
images), so each bucket is filled to a multiple of the batch size by repeating
its images; the row says how many images ran.

In the same run:
* the default backend (``backend="auto"``, after the build) against torch eager on
  the same device: the ratio of images/s;
* Pillow JPEG and WebP at the quality whose mean bpp over the images is nearest the
  codec's mean bpp, timed the same way (one image at a time, one thread);
  torchvision nvJPEG on CUDA when torchvision is installed;
* round trips (compress + decompress), paired: each round every backend codes the
  same images back to back, and the statistic is the median over rounds of the ratio
  of the first backend's round-trip time to each other's (with quartiles), beside the
  ratio of the best rounds; mean PSNR (RGB, dB) and bpp of each backend's files, and
  the change against the first backend's;
* ``--compressai PYTHON``: CompressAI's bmshj2018-factorized at quality 3 with random
  weights (a speed peer: bench/compressai_peer.py, run by that interpreter, a scratch
  venv, as one subprocess per round that times itself), compressing and decompressing
  the same images (or the first ``--compressai-limit``) one at a time in each round,
  with the same threads; compared per image;
* the floor: model FLOPs per image (torch.utils.flop_counter on encoder and
  decoder) / the device's measured peak (a large float32 matmul, same threads),
  and the fraction of it achieved (floor time / measured time per image, for the
  network stage and end to end).

The ONNX Runtime (and TensorRT) backends need ``python -m engine.build``
artifacts; they are built here when missing (``--no-build``: skip the backend
and say so).  Results: ``<out>/throughput-<machine>.json``, ``.md`` and ``.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STAGES = ("preprocess", "h2d", "network", "bitpath", "d2h", "entropy", "container", "postprocess", "wait")
CPU_BACKENDS = ("torch", "onnxruntime", "openvino")
GPU_BACKENDS = ("torch-cuda", "tensorrt")


# ----------------------------------------------------------------------------- machine

def machine_info(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    cores = None
    try:
        text = Path("/proc/cpuinfo").read_text()
        names = re.findall(r"^model name\s*:\s*(.+)$", text, re.M)
        if names:
            cpu = names[0].strip()
        pairs = set(re.findall(r"^physical id\s*:\s*(\d+)$.*?^core id\s*:\s*(\d+)$", text, re.M | re.S))
        cores = len(pairs) or None
    except OSError:
        pass
    from engine.cpu import has_bf16_matrix
    info = {"cpu": cpu, "cores": cores or os.cpu_count(), "logical_cpus": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "torch": torch.__version__, "gpu": None,
            "bf16_matrix_units": has_bf16_matrix()}
    try:
        import onnxruntime
        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        import openvino
        info["openvino"] = openvino.get_version()
    except Exception:  # noqa: BLE001 - not installed or broken: not part of this run
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        # TF32 lets cuDNN convolutions beat the float32 matmul "peak": record the settings
        info["tf32"] = {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}
    return info


def write_results(out: str | Path, name: str, info: dict, res: dict, md: str) -> Path:
    """<out>/<name>-<machine>.json and .md, each written atomically; returns the stem."""
    from engine.io.atomic import atomic_write_bytes
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{name}-{machine_slug(info)}"
    atomic_write_bytes(stem.with_suffix(".json"), (json.dumps(res, indent=1) + "\n").encode())
    atomic_write_bytes(stem.with_suffix(".md"), (md.rstrip("\n") + "\n").encode())
    return stem


def machine_slug(info: dict) -> str:
    name = info["gpu"] or f"{info['cpu']}-{info['logical_cpus']}cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ----------------------------------------------------------------------------- images

def load_images(data: str | Path, limit: int = 0) -> list[tuple[str, np.ndarray]]:
    from engine.data import list_images, load_rgb
    paths = list_images(data)[: limit or None]
    if not paths:
        raise SystemExit(f"no images in {data}")
    return [(p.name, load_rgb(p)) for p in paths]


def fill_batches(images: list, batch: int, multiple: int = 16) -> list:
    """Repeat each padded-shape bucket's images (cyclically) to a multiple of ``batch``."""
    buckets = defaultdict(list)
    for im in images:
        h, w = im[1].shape[:2]
        buckets[(-(-h // multiple), -(-w // multiple))].append(im)
    out = []
    for items in buckets.values():
        n = -(-len(items) // batch) * batch
        out += [items[k % len(items)] for k in range(n)]
    return out


# ----------------------------------------------------------------------------- floor

def peak_gflops(device: str = "cpu", size: int = 2048, reps: int = 3) -> float:
    """Measured float32 matmul GFLOP/s (best of ``reps`` timed rounds)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    a @ b
    sync()
    inner = 10 if str(device).startswith("cuda") else 1
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync()
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2 * size ** 3 / best / 1e9


def model_gflops(q, height: int, width: int) -> dict:
    """FLOPs (as counted by FlopCounterMode: 2 per multiply-add) of one padded image."""
    from torch.utils.flop_counter import FlopCounterMode

    from engine.net.checkpoint import load_net
    net = load_net(q)
    cfg = q.config
    with torch.inference_mode():
        x = torch.rand(1, 3, height, width)
        with FlopCounterMode(display=False) as fc:
            e, p, ec = net.encoder(x)
        enc = fc.get_total_flops()
        bits, cbits = (e > 0.5).float(), (ec > 0.5).float()
        lv = torch.floor(p * cfg.levels).clamp(max=cfg.levels - 1)
        with FlopCounterMode(display=False) as fc:
            net.decoder(bits, lv, cbits)
        dec = fc.get_total_flops()
    return {"encode": enc / 1e9, "decode": dec / 1e9}


# ----------------------------------------------------------------------------- runs

def _timed(fn, timer):
    """(seconds, per-stage totals, result) of one call."""
    timer.reset()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, timer.totals(), out


def time_codec(codec, images: list, batch: int) -> list[dict]:
    """One timed round (after a warm-up batch): the encode and decode rows."""
    from engine.timing import StageTimer

    imgs = fill_batches(images, batch, codec.config.multiple)
    arrays = [im for _, im in imgs]
    px = sum(a.shape[0] * a.shape[1] for a in arrays)
    warm = arrays[:batch]
    codec.decompress_batch(codec.compress_batch(warm, batch_size=batch), batch_size=batch)
    codec.timer = StageTimer()
    rows = []
    try:
        t, stages, blobs = _timed(lambda: codec.compress_batch(arrays, batch_size=batch), codec.timer)
        rows.append(_row("encode", codec, batch, len(arrays), px, t, stages))
        t, stages, decoded = _timed(lambda: codec.decompress_batch(blobs, batch_size=batch), codec.timer)
        rows.append(_row("decode", codec, batch, len(arrays), px, t, stages))
    finally:
        codec.timer = None
    bpp = float(np.mean([len(b) * 8 / (a.shape[0] * a.shape[1]) for a, b in zip(arrays, blobs)]))
    psnr = float(np.mean([_psnr(a, d) for a, d in zip(arrays, decoded)]))
    for r in rows:
        r["mean_bpp"] = bpp
        r["mean_psnr"] = psnr
    return rows


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0 ** 2 / max(mse, 1e-12))


def _row(op, codec, batch, n, px, t, stages) -> dict:
    return {"op": op, "backend": codec.runner.name, "device": str(codec.runner.device), "batch": batch,
            "images": n, "seconds": t, "images_per_s": n / t, "megapixels_per_s": px / 1e6 / t,
            "ms_per_image": 1e3 * t / n,
            "stages_ms_per_image": {k: 1e3 * v / n for k, v in sorted(stages.items())}}


def _pillow_encode(rgb, fmt, q) -> bytes:
    import io

    from PIL import Image
    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(rgb).save(buf, format="JPEG", quality=q)
    else:
        Image.fromarray(rgb).save(buf, format="WEBP", quality=q, method=6)
    return buf.getvalue()


def _pillow_decode(data: bytes) -> np.ndarray:
    import io

    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def baselines(images: list, target_bpp: float, repeat: int) -> dict:
    """Pillow JPEG / WebP at the setting whose mean bpp is nearest ``target_bpp``,
    encoded and decoded one image at a time."""
    from engine.eval import BASELINES

    out = {}
    arrays = [im for _, im in images]
    px = sum(a.shape[0] * a.shape[1] for a in arrays)
    for name in ("JPEG (Pillow)", "WebP (Pillow)"):
        fmt, settings = BASELINES[name]
        curve = []
        for s in settings:
            bpp = float(np.mean([len(_pillow_encode(a, fmt, s)) * 8 / (a.shape[0] * a.shape[1]) for a in arrays]))
            curve.append((abs(bpp - target_bpp), s, bpp))
        _, setting, bpp = min(curve)
        enc = dec = math.inf
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            blobs = [_pillow_encode(a, fmt, setting) for a in arrays]
            t1 = time.perf_counter()
            for b in blobs:
                _pillow_decode(b)
            t2 = time.perf_counter()
            enc, dec = min(enc, t1 - t0), min(dec, t2 - t1)
        n = len(arrays)
        out[name] = {"quality": setting, "mean_bpp": bpp, "threads": 1,
                     "encode": {"images_per_s": n / enc, "megapixels_per_s": px / 1e6 / enc},
                     "decode": {"images_per_s": n / dec, "megapixels_per_s": px / 1e6 / dec}}
    out.update(_nvjpeg(arrays, out.get("JPEG (Pillow)", {}).get("quality"), repeat))
    return out


def _nvjpeg(arrays: list, quality, repeat: int) -> dict:
    """torchvision's nvJPEG encode/decode on CUDA at the matched JPEG quality (GPU only)."""
    if not torch.cuda.is_available() or quality is None:
        return {}
    try:
        from torchvision.io import decode_jpeg, encode_jpeg
    except ImportError:
        return {"nvJPEG (torchvision)": {"skipped": "torchvision is not installed"}}
    imgs = [torch.from_numpy(a).permute(2, 0, 1).contiguous().cuda() for a in arrays]
    px = sum(a.shape[0] * a.shape[1] for a in arrays)
    enc = dec = math.inf
    datas = encode_jpeg(imgs, quality=quality)          # warm-up
    decode_jpeg([d.cpu() for d in datas], device="cuda")  # decode_jpeg takes the bytes on the host
    for _ in range(max(1, repeat)):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        datas = encode_jpeg(imgs, quality=quality)
        torch.cuda.synchronize()
        host = [d.cpu() for d in datas]
        t1 = time.perf_counter()
        decode_jpeg(host, device="cuda")
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        enc, dec = min(enc, t1 - t0), min(dec, t2 - t1)
    n = len(arrays)
    bpp = float(np.mean([d.numel() * 8 / (a.shape[0] * a.shape[1]) for d, a in zip(datas, arrays)]))
    return {"nvJPEG (torchvision)": {"quality": quality, "mean_bpp": bpp, "batched": True,
                                     "encode": {"images_per_s": n / enc, "megapixels_per_s": px / 1e6 / enc},
                                     "decode": {"images_per_s": n / dec, "megapixels_per_s": px / 1e6 / dec}}}


# ----------------------------------------------------------------------------- backends

def available_backends() -> list[str]:
    out = [b for b in CPU_BACKENDS if b != "openvino" or _importable("openvino")]
    if torch.cuda.is_available():
        out.append("torch-cuda")
        from engine.trt_build import tensorrt_importable
        if tensorrt_importable():
            out.append("tensorrt")
    return out


def _importable(name: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(name) is not None


def backend_spec(name: str) -> tuple[str, str]:
    """bench backend name -> (Codec backend, device)."""
    return {"torch": ("torch", "cpu"), "onnxruntime": ("onnxruntime", "cpu"), "openvino": ("openvino", "cpu"),
            "torch-cuda": ("torch", "cuda"), "tensorrt": ("tensorrt", "cuda")}[name]


def ensure_artifacts(q, backend: str, build_dir, allow_build: bool, log) -> str | None:
    """None when the backend's artifacts are usable (building them if allowed), else why not."""
    if backend not in ("onnxruntime", "openvino", "tensorrt"):
        return None
    from engine import build as B
    status, reason = B.artifact_status(q, backend, "fp32", build_dir)
    if status == "ok":
        return None
    hint = B.rebuild_hint(q, backend, "fp32", build_dir)
    if not allow_build:
        return f"{backend} artifacts are {status} ({reason}); build them with: {hint}"
    log(f"building {backend} artifacts for {q.model} q{q.quality} ({status}: {reason}) ...")
    try:
        B.build_quality(q, backend, "fp32", build_dir, log=lambda *a: None)
    except Exception as e:  # noqa: BLE001 - report and go on with the other backends
        return f"building {backend} failed: {e}; try: {hint}"
    return None


def run_compressai(python: str, paths: list[str], threads: int) -> dict:
    """One timed CompressAI run in its own interpreter (bench/compressai_peer.py)."""
    import subprocess
    cmd = [python, str(REPO / "bench" / "compressai_peer.py"), "--threads", str(threads), *paths]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ""})
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["round_trip_s_per_image"] = (r["encode_s"] + r["decode_s"]) / r["images"]
    return r


def _quart(v: list[float]) -> tuple[float, float, float]:
    q = np.percentile(v, [25, 50, 75])
    return float(q[0]), float(q[1]), float(q[2])


def round_trip_ratios(per_round: list[dict], names: list[str], batch: int) -> list[dict]:
    """Paired round-trip ratios of one batch size: each backend against the first (its
    time / theirs: > 1 means faster than the first), and CompressAI against each."""
    if not names:
        return []
    ref = names[0]
    t = {n: [r[n]["round_trip_s_per_image"] for r in per_round] for n in per_round[0]}
    out = []
    for n in names:
        q1, med, q3 = _quart([a / b for a, b in zip(t[ref], t[n])])
        last = per_round[-1][n]
        base = per_round[-1][ref]
        out.append({"batch": batch, "backend": n, "vs": ref, "rounds": len(per_round), "median_ratio": med,
                    "q1": q1, "q3": q3, "best_ratio": min(t[ref]) / min(t[n]),
                    "ms_per_image": 1e3 * float(np.median(t[n])), "best_ms_per_image": 1e3 * min(t[n]),
                    "mean_psnr": last["mean_psnr"], "d_psnr": last["mean_psnr"] - base["mean_psnr"],
                    "mean_bpp": last["mean_bpp"], "d_bpp_pct": 100 * (last["mean_bpp"] / base["mean_bpp"] - 1)})
    if "CompressAI" in t:
        for n in names:
            q1, med, q3 = _quart([a / b for a, b in zip(t["CompressAI"], t[n])])
            out.append({"batch": batch, "backend": "CompressAI", "vs": n, "rounds": len(per_round),
                        "median_ratio": med, "q1": q1, "q3": q3, "best_ratio": min(t["CompressAI"]) / min(t[n]),
                        "ms_per_image": 1e3 * float(np.median(t["CompressAI"])),
                        "best_ms_per_image": 1e3 * min(t["CompressAI"])})
    return out


# ----------------------------------------------------------------------------- report

def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Throughput: {res['model']} q{res['quality']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores / {m['logical_cpus']} logical CPUs"
             + (f", bf16 matrix units (AMX): {'yes' if m['bf16_matrix_units'] else 'no'}"
                if "bf16_matrix_units" in m else "")
             + (f", GPU {m['gpu']}" if m["gpu"] else "") + f"; {m['threads']} threads; torch {m['torch']}"
             + (f", onnxruntime {m['onnxruntime']}" if m.get("onnxruntime") else "")
             + (f", openvino {m['openvino']}" if m.get("openvino") else ""), "",
             f"Images: {res['images']} from `{res['data']}` (mean {res['mean_pixels'] / 1e6:.3f} MP); "
             f"codec mean {res['mean_bpp']:.4f} bpp.  Command: `{res['command']}`", "",
             f"Floor: {res['floor']['gflop_per_image']['encode']:.2f} GFLOP encode, "
             f"{res['floor']['gflop_per_image']['decode']:.2f} GFLOP decode per image; "
             f"measured peak {res['peak_gflops']:.1f} GFLOP/s (float32 matmul, {res['peak_device']}).", "",
             "| backend | device | batch | op | images | img/s | MP/s | ms/img | "
             + " | ".join(STAGES) + " | floor/network | floor/total |",
             "|" + "---|" * (10 + len(STAGES))]
    for r in res["rows"]:
        st = r["stages_ms_per_image"]
        lines.append(f"| {r['backend']} | {r['device']} | {r['batch']} | {r['op']} | {r['images']} | "
                     f"{r['images_per_s']:.2f} | {r['megapixels_per_s']:.2f} | {r['ms_per_image']:.1f} | "
                     + " | ".join(f"{st[s]:.1f}" if s in st else "" for s in STAGES)
                     + f" | {r['floor_fraction_network']:.1%} | {r['floor_fraction_total']:.1%} |")
    rts = [d for d in res.get("round_trips", []) if d["backend"] != "CompressAI"]
    if rts:
        lines += ["", f"Round trips (compress + decompress, end to end), paired: in each of the {rts[0]['rounds']} "
                  f"rounds every backend coded the same images back to back; ratio = {rts[0]['vs']}'s time / this "
                  "backend's (median over rounds, quartiles; and of the best rounds).  PSNR (RGB, dB) and bpp: "
                  "means over the images, their change against the first backend:", "",
                  "| batch | backend | precision | ms/img (median) | ratio (median, q1-q3) | ratio (best rounds) | "
                  "PSNR | d PSNR | bpp | d bpp |", "|---|---|---|---|---|---|---|---|---|---|"]
        prec = {r["bench_backend"]: r.get("precision") for r in res["rows"]}
        for d in rts:
            lines.append(f"| {d['batch']} | {d['backend']} | {prec.get(d['backend']) or ''} | {d['ms_per_image']:.1f} | "
                         f"{d['median_ratio']:.2f}x ({d['q1']:.2f}-{d['q3']:.2f}) | {d['best_ratio']:.2f}x | "
                         f"{d['mean_psnr']:.3f} | {d['d_psnr']:+.3f} | {d['mean_bpp']:.4f} | {d['d_bpp_pct']:+.2f}% |")
    peer = [d for d in res.get("round_trips", []) if d["backend"] == "CompressAI"]
    if peer:
        c = res["compressai"]
        lines += ["", f"Learned-codec peer: {c['codec']} (CompressAI {c['compressai']}, torch {c['torch']}, "
                  f"{c['threads']} threads), the same {c['images']} images one at a time, in the same rounds "
                  "(a subprocess that times itself); ratio = CompressAI's round-trip time / the backend's:", "",
                  "| batch | vs backend | CompressAI ms/img (median) | ratio (median, q1-q3) | ratio (best rounds) |",
                  "|---|---|---|---|---|"]
        for d in peer:
            lines.append(f"| {d['batch']} | {d['vs']} | {d['ms_per_image']:.1f} | {d['median_ratio']:.2f}x "
                         f"({d['q1']:.2f}-{d['q3']:.2f}) | {d['best_ratio']:.2f}x |")
    if res.get("default_vs_torch"):
        lines += ["", f"Default backend (`auto`): **{res['default_backend']}**; images/s relative to torch eager "
                  "on the same device, same run:", "", "| op | batch | default / torch |", "|---|---|---|"]
        for d in res["default_vs_torch"]:
            lines.append(f"| {d['op']} | {d['batch']} | {d['ratio']:.2f}x |")
    if res.get("entropy_ratio"):
        lines += ["", "Entropy modes side by side (same backend, op and batch; best rounds of this run):", "",
                  "| backend | op | batch | modes | img/s | ratio |", "|---|---|---|---|---|---|"]
        for d in res["entropy_ratio"]:
            lines.append(f"| {d['backend']} | {d['op']} | {d['batch']} | {d['modes'][0]} / {d['modes'][1]} | "
                         f"{d['images_per_s'][0]:.2f} / {d['images_per_s'][1]:.2f} | {d['ratio']:.2f}x |")
    if res.get("compile_ratio"):
        lines += ["", "torch.compile modes side by side (compiled / first mode; best rounds of this run; "
                  "a round after the first excludes compile time):", "",
                  "| backend | op | batch | modes | img/s | ratio |", "|---|---|---|---|---|---|"]
        for d in res["compile_ratio"]:
            lines.append(f"| {d['backend']} | {d['op']} | {d['batch']} | {d['modes'][0]} / {d['modes'][1]} | "
                         f"{d['images_per_s'][0]:.2f} / {d['images_per_s'][1]:.2f} | {d['ratio']:.2f}x |")
    if res.get("baselines"):
        lines += ["", "Baselines at matched bpp (one image at a time, one thread):", "",
                  "| codec | quality | mean bpp | encode img/s | encode MP/s | decode img/s | decode MP/s |",
                  "|---|---|---|---|---|---|---|"]
        for name, b in res["baselines"].items():
            if "skipped" in b:
                lines.append(f"| {name} | skipped: {b['skipped']} | | | | | |")
                continue
            lines.append(f"| {name} | {b['quality']} | {b['mean_bpp']:.4f} | {b['encode']['images_per_s']:.1f} | "
                         f"{b['encode']['megapixels_per_s']:.1f} | {b['decode']['images_per_s']:.1f} | "
                         f"{b['decode']['megapixels_per_s']:.1f} |")
    if res.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in res["skipped"].items())]
    lines += ["", "Stages are milliseconds per image summed over threads/streams (overlapping stages can add "
              "up to more than ms/img).  floor = FLOPs / measured peak; floor/network and floor/total are the "
              "fractions of the peak achieved by the network stage and end to end.", ""]
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    backends = list(dict.fromkeys(f"{r['backend']} ({r['device']})" for r in res["rows"]))
    batches = sorted({r["batch"] for r in res["rows"]})
    width = 0.8 / max(1, len(backends))
    for ax, op in zip(axes, ("encode", "decode")):
        for k, be in enumerate(backends):
            vals = [next((r["megapixels_per_s"] for r in res["rows"] if r["op"] == op and r["batch"] == b
                          and f"{r['backend']} ({r['device']})" == be), 0.0) for b in batches]
            ax.bar(np.arange(len(batches)) + k * width, vals, width, label=be)
        for name, b in res.get("baselines", {}).items():
            if op in b:
                ax.axhline(b[op]["megapixels_per_s"], ls="--", lw=1, color="gray")
                ax.text(len(batches) - 0.5, b[op]["megapixels_per_s"], f"{name} q{b['quality']}", fontsize=7,
                        va="bottom", ha="right")
        ax.set_xticks(np.arange(len(batches)) + width * (len(backends) - 1) / 2)
        ax.set_xticklabels([f"batch {b}" for b in batches])
        ax.set_ylabel("megapixels / s (end to end)")
        ax.set_title(op)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    m = res["machine"]
    fig.suptitle(f"{res['model']} q{res['quality']}: {m['gpu'] or m['cpu']}, {m['threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    from engine.settings import available_kernels, available_precisions
    ap = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "kodak"))
    ap.add_argument("--limit", type=int, default=0, help="first N images only")
    ap.add_argument("--model", default=None)
    ap.add_argument("--model-dir", default=None, help="folder holding model folders (default: shipped)")
    ap.add_argument("--quality", type=int, default=None)
    ap.add_argument("--backends", default=None, help="comma list of " + ",".join(CPU_BACKENDS + GPU_BACKENDS)
                    + " (default: all available here)")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--threads", type=int, default=None, help="torch / ORT threads (default: all CPUs)")
    ap.add_argument("--repeat", type=int, default=2, help="timed rounds (backends interleaved), best kept per cell")
    ap.add_argument("--entropy", default="rans",
                    help="rans | context | none, rans:native | rans:triton (bitstream v2 with that coder), or a "
                         "comma list: each backend runs once per mode, in turns within each round, and the ratio "
                         "of the first mode's images/s to each other's is reported")
    ap.add_argument("--precision", default=None, choices=available_precisions(),
                    help="network precision (default: the codec's, auto = fp16 for torch on CUDA, bf16 for "
                         "OpenVINO on a CPU with bf16 matrix units)")
    ap.add_argument("--compile", default="off",
                    help="comma list of torch.compile modes for the torch backends, side by side (off, default, "
                         "reduce-overhead = CUDA graphs); with more than one, one --entropy mode")
    ap.add_argument("--kernels", default=None, choices=available_kernels())
    ap.add_argument("--build-dir", default=None, help="artifact folder (default: ENGINE_BUILD_DIR or build/)")
    ap.add_argument("--no-build", action="store_true", help="do not build missing ONNX/TensorRT artifacts")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--peak-size", type=int, default=2048, help="matmul side for the peak measurement")
    ap.add_argument("--compressai", default=None, metavar="PYTHON",
                    help="a scratch venv's python with compressai==1.2.8: its bmshj2018-factorized q3 "
                         "(random weights) runs in every round (bench/compressai_peer.py)")
    ap.add_argument("--compressai-limit", type=int, default=0,
                    help="the peer codes only the first N of the images in each round (0: all); times are "
                         "per image either way")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    return ap.parse_args(argv)


@dataclass
class Setup:
    """What every timed cell of a run shares."""
    args: argparse.Namespace
    q: object                  # the rung (engine.net.checkpoint.Quality)
    model: str
    root: Path | None
    threads: int
    build_dir: Path | None     # None: ENGINE_BUILD_DIR, else build/
    images: list               # (name, rgb)
    peer_paths: list[str]      # the CompressAI peer's images
    entropies: list[str]       # --entropy's modes
    compiles: list[str]        # --compile's modes


@dataclass
class Config:
    """One codec the run times: a backend with one entropy mode and one compile mode."""
    codec: object
    entropy: str
    compile: str


def modes(args) -> tuple[list[str], list[str]]:
    """--entropy and --compile -> (entropy modes, compile modes), checked."""
    entropies = [e.strip() for e in args.entropy.split(",") if e.strip()]
    for e in entropies:
        if e not in ("rans", "context", "none", "rans:native", "rans:triton"):
            raise SystemExit(f"--entropy: unknown mode {e!r}")
    compiles = [c.strip() for c in args.compile.split(",") if c.strip()] or ["off"]
    if len(compiles) > 1 and len(entropies) > 1:
        raise SystemExit("--compile with several modes takes one --entropy mode")
    return entropies, compiles


def setup(args) -> Setup:
    from engine.net.checkpoint import DEFAULT_MODEL, resolve
    from engine.data import list_images

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model = args.model or DEFAULT_MODEL
    root = Path(args.model_dir) if args.model_dir else None
    q = resolve(model, args.quality, root=root)
    images = load_images(args.data, args.limit)
    peer_paths = [str(p) for p in list_images(args.data)[: args.limit or None]][: args.compressai_limit or None]
    entropies, compiles = modes(args)
    return Setup(args, q, model, root, threads, Path(args.build_dir).resolve() if args.build_dir else None,
                 images, peer_paths, entropies, compiles)


def make_configs(s: Setup, names: list[str], skipped: dict, log) -> dict[str, Config]:
    """The codecs to time, by row name: each backend of ``names`` that can run here
    (built when allowed; the others go to ``skipped``), once per entropy and compile mode."""
    import engine
    configs = {}
    for name in names:
        backend, device = backend_spec(name)
        if device == "cuda" and not torch.cuda.is_available():
            skipped[name] = "no CUDA device"
            continue
        why = ensure_artifacts(s.q, backend, s.build_dir, not s.args.no_build, log)
        if why:
            skipped[name] = why
            log(f"skipping {name}: {why}")
            continue
        for e in s.entropies:
            for c in s.compiles:
                if c != "off" and backend != "torch":
                    continue
                key = name if len(s.entropies) == 1 else f"{name} [{e}]"
                if len(s.compiles) > 1:
                    key = f"{key} [compile={c}]"
                mode, _, coder = e.partition(":")
                codec = engine.Codec(quality=s.q.quality, model=s.model, root=s.root, backend=backend, device=device,
                                     kernels=s.args.kernels, entropy=mode, threads=s.threads, coder=coder or None,
                                     precision=s.args.precision, compile=c if backend == "torch" else None,
                                     build_dir=s.build_dir)
                configs[key] = Config(codec, e, c)
    return configs


def time_config(s: Setup, name: str, cfg: Config, batch: int, log) -> tuple[list[dict], dict]:
    """One timed round of one codec -> (its encode and decode rows, its round trip)."""
    rows = time_codec(cfg.codec, s.images, batch)
    trip = {"round_trip_s_per_image": sum(r["seconds"] for r in rows) / rows[0]["images"],
            "mean_psnr": rows[0]["mean_psnr"], "mean_bpp": rows[0]["mean_bpp"]}
    for r in rows:
        r["bench_backend"] = name
        r["entropy"] = cfg.entropy
        r["coder"] = cfg.codec.coder
        r["precision"] = cfg.codec.runner.precision
        r["compile"] = cfg.compile
        if len(s.entropies) > 1:
            r["backend"] = f"{r['backend']} [{cfg.entropy}]"
        if len(s.compiles) > 1:
            r["backend"] = f"{r['backend']} [compile={cfg.compile}]"
        log(f"  {r['op']}: {r['images_per_s']:.2f} img/s, {r['megapixels_per_s']:.2f} MP/s")
    return rows, trip


def time_batch(s: Setup, configs: dict[str, Config], batch: int, peer_rounds: list, log) -> tuple[list, list]:
    """Every codec at one batch size, ``--repeat`` rounds -> (each cell's best row, each
    round's round trips by codec).  Backends take turns, round by round, and each cell
    keeps its best round: on a shared machine whose speed drifts, the ratio then
    compares like with like."""
    rounds = max(1, s.args.repeat)
    best: dict[tuple[str, str], dict] = {}
    per_round: list[dict] = []
    for rnd in range(rounds):
        per_round.append({})
        if s.args.compressai:
            log(f"CompressAI batch {batch} round {rnd + 1}/{rounds} ...")
            peer_rounds.append(run_compressai(s.args.compressai, s.peer_paths, s.threads))
            per_round[-1]["CompressAI"] = peer_rounds[-1]
        for name, cfg in configs.items():
            log(f"{name} batch {batch} round {rnd + 1}/{rounds} ...")
            rows, per_round[-1][name] = time_config(s, name, cfg, batch, log)
            for r in rows:
                key = (name, r["op"])
                if key not in best or r["seconds"] < best[key]["seconds"]:
                    best[key] = r
    return list(best.values()), per_round


def time_all(s: Setup, configs: dict[str, Config], batches: list[int], res: dict, log) -> None:
    """Every batch size: ``res``'s rows, round trips and the CompressAI peer's rounds."""
    res["round_trips"], res["compressai"] = [], None
    peer_rounds: list[dict] = []
    for b in batches:
        rows, per_round = time_batch(s, configs, b, peer_rounds, log)
        res["rows"] += rows
        res["round_trips"] += round_trip_ratios(per_round, list(configs), b)
    if peer_rounds:
        res["compressai"] = {k: peer_rounds[0][k] for k in ("codec", "compressai", "torch", "threads", "images")}
        res["compressai"]["rounds"] = peer_rounds


def entropy_ratios(rows: list[dict], entropies: list[str]) -> list[dict]:
    """Entropy modes side by side: same backend, op and batch, best rounds of one run."""
    out = []
    if len(entropies) > 1:
        by = {(r["bench_backend"], r["op"], r["batch"]): r for r in rows}
        for (nm, op, b), r in sorted(by.items()):
            base = nm.rsplit(" [", 1)[0]
            if r["entropy"] != entropies[0]:
                continue
            for e in entropies[1:]:
                other = by.get((f"{base} [{e}]", op, b))
                if other:
                    out.append({"backend": base, "op": op, "batch": b, "modes": [entropies[0], e],
                                "ratio": r["images_per_s"] / other["images_per_s"],
                                "images_per_s": [r["images_per_s"], other["images_per_s"]]})
    return out


def compile_ratios(rows: list[dict], compiles: list[str]) -> list[dict]:
    """torch.compile modes side by side: same backend, op and batch, against the first mode."""
    out = []
    if len(compiles) > 1:
        by = {(r["bench_backend"], r["op"], r["batch"]): r for r in rows}
        for (nm, op, b), r in sorted(by.items()):
            base, _, c = nm.rpartition(" [compile=")
            if c.rstrip("]") != compiles[0]:
                continue
            for other_mode in compiles[1:]:
                other = by.get((f"{base} [compile={other_mode}]", op, b))
                if other:
                    out.append({"backend": base, "op": op, "batch": b, "modes": [compiles[0], other_mode],
                                "ratio": other["images_per_s"] / r["images_per_s"],
                                "images_per_s": [r["images_per_s"], other["images_per_s"]]})
    return out


def default_vs_torch(s: Setup, rows: list[dict], dev: str) -> tuple[str, list[dict]]:
    """The default backend on ``dev`` (after the build) -> (its name, its images/s against
    torch eager on the same device, this run)."""
    from engine.runners.select import auto_backend
    try:
        default = auto_backend(s.q, None if dev == "cuda" else "cpu", build_dir=s.build_dir,
                               precision=s.args.precision or "auto")
    except Exception as e:  # noqa: BLE001 - stale artifacts etc.
        default = f"unavailable ({e})"
    out = []
    per = {(r["backend"], r["device"].split(":")[0], r["op"], r["batch"]): r for r in rows}
    for (be, d, op, b), r in sorted(per.items()):
        if be == default and d == dev and default != "torch" and ("torch", dev, op, b) in per:
            out.append({"op": op, "batch": b, "device": dev, "ratio":
                        r["images_per_s"] / per[("torch", dev, op, b)]["images_per_s"]})
    return default, out


def add_floor(s: Setup, res: dict, dev: str) -> None:
    """The floor: model FLOPs per padded image / the measured peak, into ``res`` and its rows."""
    mult = s.q.config.multiple
    padded = float(np.mean([-(-a.shape[0] // mult) * mult * -(-a.shape[1] // mult) * mult for _, a in s.images]))
    per_px = {k: v / (512 * 768) for k, v in model_gflops(s.q, 512, 768).items()}
    gflop = {k: v * padded for k, v in per_px.items()}
    peaks = {dev: peak_gflops(dev, s.args.peak_size)}
    res["peak_device"] = dev
    res["peak_gflops"] = peaks[dev]
    res["floor"] = {"gflop_per_image": gflop,
                    "seconds_per_image": {k: v / peaks[dev] for k, v in gflop.items()}}
    for r in res["rows"]:
        d = r["device"].split(":")[0]
        if d not in peaks:
            peaks[d] = peak_gflops(d, s.args.peak_size)
        r["peak_gflops"] = peaks[d]
        floor_s = gflop[r["op"]] / peaks[d]
        net_s = r["stages_ms_per_image"].get("network", float("nan")) / 1e3
        r["floor_fraction_network"] = floor_s / net_s if net_s > 0 else float("nan")
        r["floor_fraction_total"] = floor_s / (r["ms_per_image"] / 1e3)


def report(res: dict, out: str | Path, log) -> None:
    """<out>/throughput-<machine>.json, .md and .png; the table on stdout."""
    stem = write_results(out, "throughput", res["machine"], res, markdown(res))
    plot(res, stem.with_suffix(".png"))
    log(f"wrote {stem}.json/.md/.png")
    print(markdown(res))


def main(argv=None) -> dict:
    args = parse_args(argv)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    s = setup(args)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    wanted = args.backends.split(",") if args.backends else available_backends()
    res = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "command": "python -m bench.throughput " + " ".join(argv if argv is not None else sys.argv[1:]),
           "machine": machine_info(s.threads), "model": s.model, "quality": s.q.quality, "data": str(args.data),
           "images": len(s.images), "mean_pixels": float(np.mean([a.shape[0] * a.shape[1] for _, a in s.images])),
           "entropy": args.entropy, "rows": [], "skipped": {}}
    configs = make_configs(s, wanted, res["skipped"], log)
    time_all(s, configs, batches, res, log)
    configs.clear()
    if not res["rows"]:
        raise SystemExit("no backend ran: " + json.dumps(res["skipped"]))
    res["mean_bpp"] = float(np.mean([r["mean_bpp"] for r in res["rows"]]))
    res["entropy_ratio"] = entropy_ratios(res["rows"], s.entropies)
    res["compile_ratio"] = compile_ratios(res["rows"], s.compiles)
    dev = "cuda" if any(r["device"].startswith("cuda") for r in res["rows"]) else "cpu"
    res["default_backend"], res["default_vs_torch"] = default_vs_torch(s, res["rows"], dev)
    add_floor(s, res, dev)
    if not args.no_baselines:
        log("baselines ...")
        res["baselines"] = baselines(s.images, res["mean_bpp"], args.repeat)
    report(res, args.out, log)
    return res


if __name__ == "__main__":
    main()
