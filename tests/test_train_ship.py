"""engine.net.train -> engine.net.ship -> Codec, end to end on a tiny config."""
import json
from pathlib import Path

import numpy as np
from PIL import Image

import engine
from engine.net import ship, train


def _images(folder, n, shape, rng):
    folder.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_train_resume_ship_and_codec(tmp_path):
    rng = np.random.default_rng(0)
    data = _images(tmp_path / "imgs", 4, (48, 64), rng)
    run = tmp_path / "run"
    common = ["--data", str(data), "--out", str(run), "--config", "tiny", "--patch", "32", "--batch", "2",
              "--holdout", "1", "--log-every", "2", "--save-every", "2", "--threads", "1"]
    train.main(common + ["--steps", "2"])
    train.main(common + ["--steps", "4"])  # resumes from step 2
    assert json.loads((run / "train.json").read_text())["step"] == 4
    assert len((run / "log.jsonl").read_text().splitlines()) == 2

    out = tmp_path / "models"
    ship.main(["--run", str(run), "--name", "t", "--data", str(data), "--biases=-1,0,1",
               "--fit-images", "2", "--out-root", str(out),
               "--lineage", str(run / "train.json")])
    meta = json.loads((out / "t" / "model.json").read_text())
    assert sorted(meta["qualities"]) == ["1", "2", "3"]
    assert all(v["val_psnr_rgb"] > 0 and v["val_bpp_context"] > 0 for v in meta["qualities"].values())
    assert meta["provenance"]["earlier_training"][0]["step"] == 4
    assert (out / "t" / "entropy.safetensors").exists()
    codec = engine.Codec(model="t", root=out, quality=2, backend="torch")
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert codec.decompress(codec.compress(img)).shape == img.shape


def test_warm_start_with_mse_distortion(tmp_path):
    """--init loads an earlier run's weights (fresh optimizer); --distortion mse trains."""
    from safetensors.torch import load_file

    data = _images(tmp_path / "imgs", 3, (40, 40), np.random.default_rng(1))
    common = ["--data", str(data), "--config", "tiny", "--patch", "32", "--batch", "2",
              "--holdout", "1", "--log-every", "1", "--save-every", "1", "--threads", "1"]
    train.main(common + ["--out", str(tmp_path / "a"), "--steps", "1"])
    init = tmp_path / "a" / "weights.safetensors"
    # lr 0: the warm-started weights must come back unchanged after a step.
    train.main(common + ["--out", str(tmp_path / "b"), "--steps", "1", "--init", str(init),
                         "--distortion", "mse", "--lr", "0", "--seed", "1"])
    a, b = load_file(str(init)), load_file(str(tmp_path / "b" / "weights.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    rec = json.loads((tmp_path / "b" / "log.jsonl").read_text().splitlines()[0])
    assert rec["dist"] > 0 and json.loads((tmp_path / "b" / "train.json").read_text())["args"]["distortion"] == "mse"
    assert json.loads((tmp_path / "b" / "train.json").read_text())["init_from"] == str(init)
    # resumed from state.pt without --init: train.json still names the warm start (bench.standing_save)
    train.main(common + ["--out", str(tmp_path / "b"), "--steps", "2", "--distortion", "mse", "--seed", "1"])
    resumed = json.loads((tmp_path / "b" / "train.json").read_text())
    assert resumed["step"] == 2 and resumed["args"]["init"] is None and resumed["init_from"] == str(init)
    assert json.loads((tmp_path / "a" / "train.json").read_text())["init_from"] is None


def test_train_only_changes_only_the_named_parameters(tmp_path):
    """--train-only encoder.c: the colour encoder moves, every other weight (the decoder
    and the Y encoder) comes back bit-identical; the MS-SSIM loss runs on 128-pixel
    patches; a prefix naming nothing is an error."""
    import pytest
    from safetensors.torch import load_file

    data = _images(tmp_path / "imgs", 3, (140, 140), np.random.default_rng(2))
    common = ["--data", str(data), "--config", "tiny", "--patch", "128", "--batch", "2",
              "--holdout", "1", "--log-every", "1", "--save-every", "1", "--threads", "1"]
    train.main(common + ["--out", str(tmp_path / "a"), "--steps", "1"])
    init = tmp_path / "a" / "weights.safetensors"
    train.main(common + ["--out", str(tmp_path / "b"), "--steps", "2", "--init", str(init), "--lr", "1e-2",
                         "--warmup", "1", "--train-only", "encoder.c", "--distortion", "msssim"])
    a, b = load_file(str(init)), load_file(str(tmp_path / "b" / "weights.safetensors"))
    moved = {k for k in a if not bool((a[k] == b[k]).all())}
    assert moved and all(k.startswith("encoder.c") for k in moved)
    with pytest.raises(SystemExit, match="names no parameter"):
        train.main(common + ["--out", str(tmp_path / "c"), "--steps", "1", "--train-only", "nothing."])


def test_device_sampler_matches_host_sampler(tmp_path):
    """The GPU-resident sampler draws the same crops and flips as the host one (same seed)."""
    import torch

    from engine.data import CropSampler, DeviceCropSampler, list_images

    paths = list_images(_images(tmp_path / "imgs", 3, (40, 56), np.random.default_rng(2)))
    a, b = CropSampler(paths, 32, 7), DeviceCropSampler(paths, 32, 7, "cpu")
    for _ in range(4):
        assert torch.equal(a.batch(5), b.batch(5))


def test_split_file_and_time_budget(tmp_path):
    """--split trains on the listed names (validation names may be absent), and --minutes
    stops the run on wall time, saving where it stopped."""
    rng = np.random.default_rng(3)
    data = _images(tmp_path / "imgs", 3, (40, 40), rng)
    split = {"train": ["im0.png", "im2.png"], "val": ["not_carried.png"]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    run = tmp_path / "run"
    train.main(["--data", str(data), "--out", str(run), "--config", "tiny", "--patch", "32", "--batch", "2",
                "--split", str(tmp_path / "split.json"), "--steps", "100000", "--minutes", "0.02",
                "--log-every", "1000", "--save-every", "1000", "--threads", "1"])
    rec = json.loads((run / "split.json").read_text())
    assert rec == {"train": split["train"], "val": split["val"]}
    step = json.loads((run / "train.json").read_text())["step"]
    assert 1 <= step < 100000
    assert len((run / "log.jsonl").read_text().splitlines()) == 1  # the closing line


def test_split_file_missing_training_image_is_an_error(tmp_path):
    import pytest

    data = _images(tmp_path / "imgs", 1, (40, 40), np.random.default_rng(4))
    (tmp_path / "split.json").write_text(json.dumps({"train": ["im0.png", "gone.png"], "val": []}))
    with pytest.raises(FileNotFoundError, match="gone.png"):
        train.main(["--data", str(data), "--out", str(tmp_path / "run"), "--config", "tiny", "--patch", "32",
                    "--split", str(tmp_path / "split.json"), "--steps", "1"])


def test_gpu_train_script_on_the_cpu_with_a_tiny_config(tmp_path):
    """bench/gpu_train.sh is what a device run trains with: it must run, checkpoint and
    resume here first (CONFIG=tiny, a few steps, on the CPU)."""
    import os
    import subprocess
    import sys

    from PIL import Image
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(data / f"im{i}.png")
    run = tmp_path / "run"
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, CONFIG="tiny", MINUTES="1", DATA=str(data), OUT=str(run), BATCH="2", PATCH="32",
               PY=sys.executable)
    for steps in ("2", "3"):
        r = subprocess.run(["bash", str(repo / "bench" / "gpu_train.sh"), "--holdout", "1", "--threads", "1",
                            "--device", "cpu", "--log-every", "1"],
                           env=dict(env, STEPS=steps), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        state = json.loads((run / "train.json").read_text())
        assert state["step"] == int(steps) and state["config"]["n"] == 15
    assert (run / "weights.safetensors").exists()
