"""Tools around the lent GPU: the carry layout, runner specs, cross-runner parity, fp16 torch."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench import gpu_carry, kodak_checks
from engine.net.checkpoint import resolve
from engine.data import list_images, split
from engine.runners import make_runner


def test_gpu_carry_keeps_the_split_and_reencodes_png(tmp_path):
    rng = np.random.default_rng(0)
    src, kodak = tmp_path / "train", tmp_path / "kodak"
    src.mkdir(), kodak.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(src / f"a{i}.jpg", quality=90)
    Image.fromarray(rng.integers(0, 256, (600, 900, 3), dtype=np.uint8)).save(src / "big.png")
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(kodak / f"k{i}.png")
    out = tmp_path / "carry"
    gpu_carry.main(["--train", str(src), "--kodak", str(kodak), "--out", str(out), "--holdout", "2",
                    "--kodak-images", "2", "--max-mp", "0.5"])
    want_train, want_val = split(list_images(src), 2)
    rec = json.loads((out / "split.json").read_text())
    assert rec["val"] == [p.name for p in want_val]
    assert sorted(rec["train"]) == sorted(p.stem + ".jpg" for p in want_train)
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(rec["train"])
    if "big.png" not in rec["val"]:
        with Image.open(out / "train" / "big.jpg") as im:
            assert im.size == (450, 300)  # over --max-mp: halved
    for name in rec["train"]:  # JPEG sources travel unchanged
        if name.startswith("a"):
            assert (out / "train" / name).read_bytes() == (src / name).read_bytes()
    assert len(list((out / "kodak").iterdir())) == 2


@pytest.mark.parametrize("spec, want", [("torch:cpu", ("torch", "cpu", "fp32")),
                                        ("torch:cuda:fp16", ("torch", "cuda", "fp16"))])
def test_parse_runner_spec(spec, want):
    assert kodak_checks.parse_runner_spec(spec) == want


def test_parse_runner_spec_rejects_garbage():
    with pytest.raises(ValueError):
        kodak_checks.parse_runner_spec("torch")


def test_check_parity_same_runner_is_exact(tiny_root):
    rng = np.random.default_rng(1)
    images = [("a", rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))]
    res = kodak_checks.check_parity("tiny", 2, images, tiny_root, "torch:cpu", "torch:cpu")
    assert res["bit_flips"] == 0 and res["level_differences"] == 0 and res["max_8bit_pixel_diff"] == 0
    assert res["bits"] > 0


def test_torch_runner_fp16_close_to_fp32(tiny_root):
    q = resolve("tiny", 2, root=tiny_root)
    r32, r16 = make_runner(q, "torch", "cpu"), make_runner(q, "torch", "cpu", precision="fp16")
    x = torch.rand(1, 3, 32, 48)
    for a, b in zip(r32.encode(x), r16.encode(x)):
        assert b.dtype == torch.float32 and (a - b).abs().max() < 5e-3
    bits, lv, cb = (torch.rand(1, 15, 4, 6) > 0.5).float(), torch.randint(0, 4, (1, 1, 4, 6)).float(), \
        (torch.rand(1, 4, 2, 3) > 0.5).float()
    d32, d16 = r32.decode(bits, lv, cb), r16.decode(bits, lv, cb)
    assert d16.dtype == torch.float32 and (d32 - d16).abs().max() < 5e-3


def test_torch_runner_rejects_unknown_precision(tiny_root):
    with pytest.raises(ValueError, match="precision"):
        make_runner(resolve("tiny", 2, root=tiny_root), "torch", "cpu", precision="int8")


def _images(folder, n, shape):
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(folder / f"i{i}.png")
    return folder


def test_bench_paired_smoke(tiny_root, tmp_path):
    from bench import paired
    data = _images(tmp_path / "imgs", 3, (48, 80))
    res = paired.main(["--data", str(data), "--model", "tiny", "--model-dir", str(tiny_root), "--size", "32x64",
                       "--batches", "1,2", "--rounds", "2", "--threads", "1", "--build-dir", str(tmp_path / "b"),
                       "--out", str(tmp_path / "res")])
    assert {(r["batch"], r["op"]) for r in res["rows"]} == {(b, op) for b in (1, 2) for op in ("encode", "decode")}
    for r in res["rows"]:
        assert len(r["ratios"]) == 2 and all(x > 0 for x in r["ratios"])
        assert r["ratio_q1"] <= r["ratio_median"] <= r["ratio_q3"]
    md = next((tmp_path / "res").glob("paired-*.md")).read_text()
    assert "torch/ORT median" in md
    with pytest.raises(SystemExit, match="smaller than --size"):
        paired.main(["--data", str(data), "--model", "tiny", "--model-dir", str(tiny_root), "--size", "64x96",
                     "--rounds", "1", "--build-dir", str(tmp_path / "b"), "--out", str(tmp_path / "res")])


def test_bench_ort_variants_smoke(tiny_root, tmp_path):
    from bench import ort_variants
    data = _images(tmp_path / "imgs", 2, (48, 64))
    res = ort_variants.main(["--data", str(data), "--model", "tiny", "--model-dir", str(tiny_root), "--rounds", "1",
                             "--build-dir", str(tmp_path / "b"), "--out", str(tmp_path / "res")])
    assert {r["variant"] for r in res["rows"]} == set(ort_variants.VARIANTS)
    assert res["identical_to_conv"] == {"conv+spin": True, "native": True}


def test_bench_versus_smoke(tmp_path):
    """Two checkouts (here the same one twice) in paired rounds: rows, ratios, same bytes."""
    from pathlib import Path
    from bench import versus
    data = tmp_path / "imgs"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(data / f"i{i}.png")
    repo = Path(__file__).resolve().parents[1]
    res = versus.main(["--before", str(repo), "--after", str(repo), "--data", str(data), "--backend", "torch",
                       "--rounds", "2", "--batches", "2", "--model", "small", "--out", str(tmp_path / "res")])
    assert res["identical_files"] and res["images"] == 2
    assert {(r["op"], r["batch"]) for r in res["rows"]} == {("compress_batch", 2), ("decompress_batch", 2)}
    for r in res["rows"]:
        assert r["before_images_per_s"] > 0 and r["after_over_before_seconds"]["median"] > 0
    assert any(p.suffix == ".md" for p in (tmp_path / "res").iterdir())


def test_bench_entropy_smoke(tmp_path):
    """bench.entropy on two small images: both coders timed per thread count, v2 checked
    to decode to v1's bits inside, sizes and results written."""
    from bench import entropy as bench_entropy
    from engine.format import lanes
    if lanes.native() is None:
        pytest.skip("engine.rans_native is not built")
    data = _images(tmp_path / "imgs", 2, (40, 72))
    out = bench_entropy.main(["--data", str(data), "--quality", "2", "--rounds", "1", "--threads", "1,2",
                              "--out", str(tmp_path / "res")])
    assert out["images"] == 2 and set(out["threads"]) == {1, 2}
    for r in out["threads"].values():
        assert all(v > 0 for v in r["ms_per_image"].values()) and r["ratio_v1_over_v2"]["total"] > 0
    assert out["bytes"]["v1"] > 0 and out["bytes"]["v2"] > 0
    assert "v1 context coder vs v2" in next((tmp_path / "res").glob("entropy-*.md")).read_text()


def test_gpu_session_script_is_runnable_as_far_as_the_cpu_allows():
    """bench/gpu_session.sh runs once on a lent GPU: here its syntax, and every
    ``python -m bench.X`` / ``engine.X`` it calls parses the flags the script passes."""
    import re
    import subprocess
    root = Path(__file__).resolve().parents[1]
    script = (root / "bench" / "gpu_session.sh").read_text()
    assert subprocess.run(["bash", "-n", str(root / "bench" / "gpu_session.sh")]).returncode == 0
    mods = set(re.findall(r"-m ((?:bench|engine)\.[a-z_]+)", script))
    argparsed = {"bench.gpu_coder", "bench.throughput", "bench.kodak_checks", "engine.train"}
    assert argparsed <= mods
    for mod in sorted(argparsed):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], cwd=root, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, (mod, r.stderr[-2000:])
    for flag in ("--entropy", "--batches", "--no-build", "--compile"):
        assert flag in subprocess.run([sys.executable, "-m", "bench.throughput", "--help"], cwd=root,
                                      capture_output=True, text=True).stdout


def test_bench_gpu_coder_smoke(tmp_path):
    """The GPU coder check on the CPU (Triton interpreter): a small crop, byte identity."""
    from kernels import pack_triton
    if not pack_triton.interpreter_active():
        pytest.skip("needs the Triton interpreter on the CPU")
    from engine.data import list_images, load_rgb
    from PIL import Image
    data = tmp_path / "imgs"
    data.mkdir()
    train = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"
    if train.is_dir():
        Image.fromarray(load_rgb(list_images(train)[0])[:32, :32]).save(data / "a.png")
    else:
        Image.fromarray((np.indices((32, 32, 3)).sum(0) * 7 % 256).astype(np.uint8)).save(data / "a.png")
    from bench import gpu_coder
    res = gpu_coder.main(["--data", str(data), "--batch", "1", "--rounds", "1", "--out", str(tmp_path)])
    assert res["identical"] and res["lanes"] == 1 and res["mismatched_lanes"] == 0
    assert (tmp_path / "gpu-coder-cpu-triton-interpreter.md").exists()


def test_standing_save_merges_the_curve_without_repeats(tmp_path):
    """A run resumed on the machine that made the snapshot repeats the committed points:
    the snapshot's curve keeps each step once, in order."""
    from bench.standing_save import merge_curve
    committed, run = tmp_path / "committed.jsonl", tmp_path / "run.jsonl"
    committed.write_text("".join(json.dumps({"step": s, "psnr": s / 10}) + "\n" for s in (0, 1000)))
    run.write_text("".join(json.dumps({"step": s, "psnr": s / 10}) + "\n" for s in (0, 1000, 2000, 3000)))
    assert [json.loads(line)["step"] for line in merge_curve(committed, run).splitlines()] == [0, 1000, 2000, 3000]
    assert [json.loads(line)["step"] for line in merge_curve(tmp_path / "none.jsonl", run).splitlines()] == \
        [0, 1000, 2000, 3000]


def test_standing_save_numbers_a_warm_started_run_after_the_snapshot(tmp_path):
    """A run warm-started from the snapshot counts from 0 again: its points follow the
    committed ones, numbered from the snapshot's total step, none dropped as repeats."""
    from bench.standing_save import merge_curve, warm_start_offset
    committed, run, snap = tmp_path / "committed.jsonl", tmp_path / "run.jsonl", tmp_path / "snapshot.json"
    committed.write_text("".join(json.dumps({"step": s, "patches_seen": 16 * s}) + "\n" for s in (0, 1000, 2000)))
    run.write_text("".join(json.dumps({"step": s, "patches_seen": 16 * s}) + "\n" for s in (1000, 2000)))
    snap.write_text(json.dumps({"training": {"step": 2500, "patches_seen": 40000}}))
    assert warm_start_offset({"args": {"init": None}}, snap) == {"step": 0, "patches_seen": 0}
    off = warm_start_offset({"args": {"init": "bench/standing/weights.safetensors"}}, snap)
    assert off == {"step": 2500, "patches_seen": 40000}
    points = [json.loads(line) for line in merge_curve(committed, run, off).splitlines()]
    assert [p["step"] for p in points] == [0, 1000, 2000, 3500, 4500]
    assert points[-1]["patches_seen"] == 40000 + 16 * 2000
    # a later snapshot of a warm-started run records its total, and the next one counts from it
    snap.write_text(json.dumps({"training": {"step": 2000, "patches_seen": 32000}, "total_step": 4500,
                                "total_patches_seen": 72000}))
    assert warm_start_offset({"args": {"init": "x"}}, snap) == {"step": 4500, "patches_seen": 72000}
    # ... resumed later without --init: its train.json still names the warm start
    assert warm_start_offset({"args": {"init": None}, "init_from": "x"}, snap) == {"step": 4500, "patches_seen": 72000}
    # the run that made the snapshot, resumed on the same machine (its log continues the
    # snapshot's copy): the snapshot's own offset, not its total
    snap.write_text(json.dumps({"training": {"step": 2000}, "step_offset": 2500, "patches_offset": 40000,
                                "total_step": 4500}))
    (tmp_path / "log-step4500.jsonl").write_text('{"step": 100}\n')
    run_log = tmp_path / "log.jsonl"
    run_log.write_text('{"step": 100}\n{"step": 200}\n')
    assert warm_start_offset({"args": {"init": None}, "init_from": "x"}, snap, run_log) == \
        {"step": 2500, "patches_seen": 40000}


def test_train_knobs_smoke(tmp_path):
    """bench.train_speed --knobs: every knob steps, the base knob's ratio to itself is 1,
    a pixel rate follows from its own step time, and the sampler is timed on real files."""
    from argparse import Namespace

    from bench import train_speed
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (160, 176, 3), np.uint8)).save(tmp_path / f"{i}.png")
    args = Namespace(config="tiny", rounds=2, steps=1, data=str(tmp_path))
    knobs = (("base", 2, 32, False), ("batch 4", 4, 32, False), ("patch 48", 2, 48, False))
    res = train_speed.measure_knobs(args, knobs)
    assert list(res["knobs"]) == ["base", "batch 4", "patch 48"]
    assert res["knobs"]["base"]["pixel_rate_vs_base"] == (1.0, 1.0, 1.0)
    for r in res["knobs"].values():
        assert r["ms_per_step"] > 0
        assert r["mpixels_per_s"] == pytest.approx(r["batch"] * r["patch"] ** 2 / r["ms_per_step"] / 1e3, rel=0.02, abs=1e-3)
    assert res["sampler_ms_per_batch"] > 0 and res["sampler_share_of_step"] > 0
    text = train_speed.knobs_text({"cpu": "test cpu", **res}, Namespace(config="tiny", rounds=2, steps=1, threads=1))
    assert text.count("\n| ") == 4 and "Data loading" in text


def test_train_speed_pairs_fp32_and_bf16_steps():
    """bench.train_speed's fp32/bf16 measurement: both variants step, and the ratio's
    quartiles come from the paired rounds (ordered, positive)."""
    from argparse import Namespace

    from bench import train_speed
    res = train_speed.measure("tiny", Namespace(batch=2, patch=32, rounds=3, steps=1))
    assert all(res[v]["ms_per_step_median"] > 0 and res[v]["patches_per_s"] > 0 for v in train_speed.VARIANTS)
    lo, mid, hi = res["ratio_fp32_over_bf16"]
    assert 0 < lo <= mid <= hi


def test_promotion_compares_each_rung_at_its_own_rate(tmp_path):
    """bench.promotion: a ladder 0.1 dB above everywhere beats; one rung below does not; a
    rate outside the other ladder is not extrapolated."""
    from bench import promotion

    shipped = [(0.2, 20.0), (0.3, 22.0), (0.4, 23.0)]
    up = [(b, p + 0.1) for b, p in shipped]
    rows = promotion.compare(up, shipped)
    assert [r["gain_db"] for r in rows] == [0.1] * 6 and promotion.verdict(rows)
    mixed = [(0.25, 20.9), (0.35, 22.6)]                 # 21.0 and 22.5 on the shipped line
    rows = promotion.compare(mixed, shipped)
    assert [r["gain_db"] for r in rows if r["ladder"] == "candidate"] == [-0.1, 0.1]
    assert [r["gain_db"] for r in rows if r["ladder"] == "shipped"] == [None, -0.25, None]
    assert not promotion.verdict(rows)
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.json").write_text(json.dumps({"qualities": {
        str(i): {"val_bpp_context": b, "val_psnr_rgb": p} for i, (b, p) in enumerate(reversed(shipped), 1)}}))
    assert promotion.ladder(d) == shipped
