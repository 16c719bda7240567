"""The CUDA stream executor (engine/runtime/executors.py) under the batch APIs, on a real GPU.

Skipped without CUDA (this repository's CI has none: the pipeline is unverified
there).  On a GPU machine:

    python -m pytest tests/test_pipeline_cuda.py -q -s

* pipeline bytes == single-image ``Codec.compress`` bytes (torch on CUDA; both bit
  paths; TensorRT too when it is installed), decoded images == ``Codec.decompress``;
* the memory estimate bounds the measured peak of one image;
* a per-stage timeline of a larger run, written to
  ``$PIPELINE_TIMELINE`` (default bench/results/pipeline-cuda-<gpu>.json), with an
  overlap summary: the stream-seconds of GPU work per wall second and how much of the
  CPU entropy coding ran while the GPU was busy.
"""
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import engine
from engine.runtime import executors as ex
from engine.timing import StageTimer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="the CUDA pipeline needs a CUDA GPU (torch.cuda.is_available() is False); "
                              "its CPU-testable parts are in tests/test_pipeline.py"),
]

REPO = Path(__file__).resolve().parents[1]


def _images(n_same=10, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(64, 96)] * n_same + [(61, 90), (64, 96), (33, 17), (128, 64), (100, 150)]
    return [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in shapes]


def _decode_close(a, b):
    """Batched vs single decodes may pick other cuDNN algorithms: float outputs can differ
    in the last bits, so a rounding boundary may move a value by 1 (1/255, the parity
    bound of every backend) — in at most 0.1% of the values (seen on an H100: 2 of 18432)."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert d.max(initial=0) <= 1 and np.count_nonzero(d) <= max(4, d.size // 1000)


def _same_or_near_threshold(codec, img, batched: bytes, single: bytes, tol: float = 1e-4) -> int:
    """Batched bytes equal the single-image bytes, except where an encoder output lies within
    float tolerance of a threshold (0.5 for a code bit, a level edge for the map): batched
    and single convolutions may round differently on a GPU.  Returns how many such
    symbols differ; fails on any other difference."""
    if batched == single:
        return 0
    from engine.io.planes import preprocess
    _, mdl, (la, ya, ca) = codec.parse(batched)
    _, _, (lb, yb, cb) = codec.parse(single)
    cfg = mdl.q.config
    x = preprocess(np.asarray(img), cfg.multiple).to(mdl.runner.device)
    e, p, ec = (t.float().cpu().numpy()[0] for t in mdl.runner.encode(x))
    la, lb = np.squeeze(la), np.squeeze(lb)
    edge = np.abs(p[0] * cfg.levels - np.round(p[0] * cfg.levels))
    dl = la != lb
    assert np.all(edge[dl] < tol * cfg.levels), "a level differs away from a level edge"
    dy = (ya != yb) & ~dl[None]
    assert np.all(np.abs(e - 0.5)[dy] < tol), "a code bit differs away from 0.5"
    dc = ca != cb
    assert np.all(np.abs(ec - 0.5)[dc] < tol), "a colour bit differs away from 0.5"
    return int(dl.sum() + dy.sum() + dc.sum())


@pytest.mark.parametrize("kernels", ["torch", "triton"])
@pytest.mark.parametrize("streams", [1, 2, 3])
def test_pipeline_bytes_equal_single(tiny_root, kernels, streams):
    codec = engine.Codec(model="tiny", root=tiny_root, backend="torch", device="cuda", kernels=kernels)
    imgs = _images()
    single = [codec.compress(x) for x in imgs]
    out = codec.compress_batch(imgs, batch_size=4, pipeline={"streams": streams})
    for x, o, s1 in zip(imgs, out, single):
        _same_or_near_threshold(codec, x, o, s1)
    dec = codec.decompress_batch(out, batch_size=4, pipeline={"streams": streams})
    for d, b in zip(dec, single):
        _decode_close(d, codec.decompress(b))


def test_pipeline_raw_entropy_gray_and_errors(tiny_root):
    from PIL import Image
    codec = engine.Codec(model="tiny", root=tiny_root, backend="torch", device="cuda", entropy="none")
    imgs = _images(4)
    gray = Image.fromarray(imgs[0][:, :, 0])
    items = [imgs[0], gray, np.zeros((3, 3), np.float64), *imgs[1:]]
    out = codec.compress_batch(items, batch_size=3, errors="return")
    assert isinstance(out[2], engine.ImageError)
    assert [o for k, o in enumerate(out) if k != 2] == [codec.compress(x) for k, x in enumerate(items) if k != 2]
    blobs = [out[0], b"HNLC junk", out[1], *out[3:]]
    dec = codec.decompress_batch(blobs, batch_size=3, errors="return")
    assert isinstance(dec[1], engine.BitstreamError)
    for d, b in zip([dec[0], *dec[2:]], [out[0], out[1], *out[3:]]):
        _decode_close(d, codec.decompress(b))


def test_pipeline_small_budget_and_tiling(tiny_root):
    """A tiny memory budget forces batch 1 / one stream; tiled images run one at a time."""
    codec = engine.Codec(model="tiny", root=tiny_root, backend="torch", device="cuda",
                         tile_pixels=120 * 120, tile_size=64)
    imgs = _images(3) + [np.random.default_rng(9).integers(0, 256, (200, 300, 3), dtype=np.uint8)]
    single = [codec.compress(x) for x in imgs]
    assert codec.compress_batch(imgs, batch_size=8, pipeline={"budget_bytes": 1}) == single
    executor = ex.StreamExecutor(codec.runner.device, streams=2, budget_bytes=1)
    assert codec.compress_batch(imgs, batch_size=8, executor=executor) == single
    assert executor.plans and all(p.batch == 1 and p.streams == 1 for _, p in executor.plans)


def test_pipeline_tensorrt(tiny_root, tmp_path, monkeypatch):
    from engine.trt_build import tensorrt_importable
    if not tensorrt_importable():
        pytest.skip("TensorRT is not installed")
    from engine import build as B
    from engine.net.checkpoint import resolve
    q = resolve("tiny", 2, root=tiny_root)
    B.build_quality(q, "tensorrt", "fp32", tmp_path, log=lambda *a: None)
    monkeypatch.setenv("ENGINE_BUILD_DIR", str(tmp_path))
    codec = engine.Codec(quality=2, model="tiny", root=tiny_root, backend="tensorrt", device="cuda")
    imgs = _images()
    single = [codec.compress(x) for x in imgs]
    assert codec.compress_batch(imgs, batch_size=4) == single     # batch capped by the engine profile


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_activation_estimate_bounds_measured_peak(name, tmp_path):
    from engine.net.checkpoint import resolve, write_model_dir
    from engine.net.model import CONFIGS, CodecNet
    from engine.runners.torch_runner import TorchRunner
    torch.manual_seed(0)
    write_model_dir(tmp_path / name, CodecNet(CONFIGS[name]), {1: 0.0})
    r = TorchRunner(resolve(name, 1, root=tmp_path), device="cuda")
    cfg = CONFIGS[name]
    H, W = 2048, 2048
    x = torch.rand(1, 3, H, W, device="cuda")
    torch.cuda.synchronize()
    for op in ("encode", "decode"):
        if op == "encode":
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            e, p, ec = r.encode(x)
        else:
            bits, lv, cb = (e > 0.5).float(), torch.floor(p * cfg.levels).clamp(max=cfg.levels - 1), (ec > 0.5).float()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            r.decode(bits, lv, cb)
        torch.cuda.synchronize()
        used = torch.cuda.max_memory_allocated() - base
        est = ex.activation_bytes(cfg, H, W, op)
        print(f"{name} {op}: measured {used / 2**20:.1f} MiB, estimate {est / 2**20:.1f} MiB ({est / used:.2f}x)")
        # cuDNN workspaces come out of the same allocator: the plan's reserve covers them
        assert used <= est + ex.DEFAULT_RESERVE // 4 and est < 4 * used + 64 * 2 ** 20


def _union(intervals):
    tot, end = 0.0, -1e30
    for s, e in sorted(intervals):
        if e > end:
            tot += e - max(s, end)
            end = e
    return tot


def _overlap(a, b):
    """Seconds of interval set a that lie inside the union of interval set b."""
    b = sorted(b)
    tot = 0.0
    for s, e in a:
        for s2, e2 in b:
            lo, hi = max(s, s2), min(e, e2)
            if hi > lo:
                tot += hi - lo
    return tot


def test_pipeline_timeline_records_overlap(tiny_root, tmp_path):
    """Bytes equal single-image on a larger run, and the per-stage timeline for the record."""
    from engine.net.checkpoint import CHECKPOINT_DIR
    if (CHECKPOINT_DIR / "small" / "model.json").exists():
        kw = dict(model="small")
        shape = (512, 768)
    else:
        kw = dict(model="tiny", root=tiny_root)
        shape = (256, 384)
    codec = engine.Codec(backend="torch", device="cuda", **kw)
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(32)]
    single = [codec.compress(x) for x in imgs[:8]]
    codec.compress_batch(imgs[:8], batch_size=8)                     # warm-up
    report = {"gpu": torch.cuda.get_device_name(0), "model": codec.model_name, "images": len(imgs),
              "shape": list(shape), "runs": {}}
    for streams in (1, 2, 3):
        codec.timer = StageTimer()
        t0 = time.perf_counter()
        out = codec.compress_batch(imgs, batch_size=8, pipeline={"streams": streams})
        wall = time.perf_counter() - t0
        spans = codec.timer.spans()
        codec.timer = None
        near = sum(_same_or_near_threshold(codec, x, o, s1) for x, o, s1 in zip(imgs, out, single))
        gpu = [(s["start"], s["end"]) for s in spans if not s["lane"].startswith("cpu:")]
        ent = [(s["start"], s["end"]) for s in spans if s["stage"] == "entropy"]
        net = [s for s in spans if s["stage"] == "network"]
        assert {"h2d", "preprocess", "network", "bitpath", "entropy"} <= {s["stage"] for s in spans}
        report["runs"][streams] = {
            "wall_s": wall, "images_per_s": len(imgs) / wall,
            "symbols_differing_from_single_near_threshold": near,
            "stage_totals_s": {k: sum(s["end"] - s["start"] for s in spans if s["stage"] == k)
                               for k in sorted({s["stage"] for s in spans})},
            "gpu_busy_s": _union(gpu),
            "gpu_stream_seconds_per_busy_second": sum(e - s for s, e in gpu) / max(_union(gpu), 1e-9),
            "network_lanes": sorted({s["lane"] for s in net}),
            "entropy_s": sum(e - s for s, e in ent),
            "entropy_while_gpu_busy_s": _overlap(ent, gpu),
            "spans": spans,
        }
        r = report["runs"][streams]
        print(f"streams={streams}: {r['images_per_s']:.1f} img/s, GPU busy {r['gpu_busy_s']:.3f}s, "
              f"stream-s per busy-s {r['gpu_stream_seconds_per_busy_second']:.2f}, entropy {r['entropy_s']:.3f}s "
              f"of which {r['entropy_while_gpu_busy_s']:.3f}s while the GPU worked")
    out_path = Path(os.environ.get("PIPELINE_TIMELINE") or REPO / "bench" / "results" /
                    f"pipeline-cuda-{re.sub(r'[^a-z0-9]+', '-', report['gpu'].lower()).strip('-')}.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1))
