"""The OpenVINO runner (engine/runners/ov_runner.py, issue #25): its build, stale and
missing artifacts refused with the command, precision choices, backend="auto" on
every path, the fall back to ONNX Runtime, the golden bytes in fp32, the stated bf16
tolerance on the shipped model, bf16 determinism, and no telemetry.

CI installs openvino with the test extra; elsewhere the module is skipped."""
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("openvino")

import engine  # noqa: E402
from engine import build as B  # noqa: E402
from engine.net.checkpoint import CHECKPOINT_DIR, DEFAULT_MODEL, resolve  # noqa: E402
from engine.runners import make_runner, runner_precision  # noqa: E402
from engine.errors import ArtifactMismatch, BackendUnavailable  # noqa: E402
from engine.runners.ort_runner import OrtRunner  # noqa: E402
from engine.runners import ov_runner  # noqa: E402
from engine.runners.ov_runner import OvRunner, net_precisions  # noqa: E402
from engine.runners.select import auto_backend  # noqa: E402
from engine.runners.torch_runner import TorchRunner  # noqa: E402
from engine.net.rungs import resolve_precision  # noqa: E402

quiet = lambda *a, **k: None  # noqa: E731

# bf16 decode against the fp32 reference, the tolerance stated in the README ("Precision")
BF16_MAX_ABS = 3          # levels, at any pixel
BF16_MAX_FRAC_OVER_1 = 0.005  # the fraction of values more than one level apart
BF16_MIN_PSNR = 48.0      # dB, bf16 decode against the fp32 decode


@pytest.fixture(scope="session")
def tiny_builds(tiny_root, tmp_path_factory):
    """ONNX Runtime and OpenVINO artifacts of the tiny model's q2."""
    out = tmp_path_factory.mktemp("ov_tiny")
    res = [B.build_quality(resolve("tiny", 2, root=tiny_root), be, "fp32", out, log=quiet)
           for be in ("onnxruntime", "openvino")]
    assert [r.status for r in res] == ["built", "built"]
    return out


@pytest.fixture()
def q2(tiny_root):
    return resolve("tiny", 2, root=tiny_root)


_SHIPPED: dict = {}


def shipped_build(request, model: str, quality: int | None = None) -> tuple[Path, object]:
    """ONNX Runtime + OpenVINO artifacts of a shipped model's quality (default: its
    default), built once per session into a temporary build dir (the ONNX Runtime
    half is conftest's shipped_ort_build: the default model's q4)."""
    if not (CHECKPOINT_DIR / model / "model.json").exists():
        pytest.skip(f"the shipped model {model!r} is not in this checkout")
    q = resolve(model, quality)
    key = (model, q.quality)
    if key not in _SHIPPED:
        if key == (DEFAULT_MODEL, 4):
            out = request.getfixturevalue("shipped_ort_build")
        else:
            out = request.getfixturevalue("tmp_path_factory").mktemp("ov_shipped")
            B.build_quality(q, "onnxruntime", "fp32", out, log=quiet)
        B.build_quality(q, "openvino", "fp32", out, log=quiet)
        _SHIPPED[key] = out
    return _SHIPPED[key], q


# ----------------------------------------------------------------------------- build

def test_build_writes_ir_and_manifest(tiny_builds, q2):
    d = tiny_builds / "tiny" / "q2" / "openvino-fp32"
    m = json.loads((d / "manifest.json").read_text())
    assert sorted(m["files"]) == ["decoder.bin", "decoder.xml", "encoder.bin", "encoder.xml"]
    assert m["fingerprint"] == q2.fingerprint and m["options"]["shuffles"] == "native"
    assert not list(d.glob("*.onnx"))                     # the ONNX step is not kept
    assert all(c["max_abs_diff"] for c in m["checks"].values())
    assert B.build_quality(q2, "openvino", "fp32", tiny_builds, log=quiet).status == "up to date"
    with pytest.raises(ValueError, match="fp32 only"):
        B.build_quality(q2, "openvino", "fp16", tiny_builds, log=quiet)


def test_fp32_matches_torch_and_bf16_runs(tiny_builds, q2):
    x = torch.rand(2, 3, 48, 64)
    ref = TorchRunner(q2, device="cpu").encode(x)
    r32 = OvRunner(q2, threads=1, build_dir=tiny_builds, precision="fp32")
    assert r32.precision == "fp32" and r32.name == "openvino"
    got = r32.encode(x)
    assert all((g - t).abs().max().item() < 1e-4 for g, t in zip(got, ref))
    bits, cbits = (ref[0] > 0.5).float(), (ref[2] > 0.5).float()
    lv = torch.floor(ref[1] * 4).clamp(max=3)
    want = TorchRunner(q2, device="cpu").decode(bits, lv, cbits)
    assert (r32.decode(bits, lv, cbits) - want).abs().max().item() < 1e-4
    r16 = OvRunner(q2, threads=1, build_dir=tiny_builds, precision="bf16")
    assert r16.precision == ("bf16" if ov_runs_bf16() else "fp32")
    assert (r16.decode(bits, lv, cbits) - want).abs().max().item() < 0.05


def test_stale_and_missing_artifacts_refused(tiny_builds, q2, tmp_path):
    with pytest.raises(BackendUnavailable) as ei:
        OvRunner(q2, build_dir=tmp_path)
    assert not isinstance(ei.value, ArtifactMismatch)
    assert "python -m engine.build --model tiny --quality 2 --backend openvino --precision fp32" in str(ei.value)
    out = tmp_path / "build"
    shutil.copytree(tiny_builds, out)
    d = out / "tiny" / "q2" / "openvino-fp32"
    f = d / "decoder.bin"
    f.write_bytes(f.read_bytes() + b"\0")
    with pytest.raises(ArtifactMismatch, match="decoder.bin: changed since the build"):
        OvRunner(q2, build_dir=out)
    shutil.copytree(tiny_builds / "tiny" / "q2" / "openvino-fp32", d, dirs_exist_ok=True)
    m = json.loads((d / "manifest.json").read_text())
    m["fingerprint"] = "0" * 64
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactMismatch, match="--backend openvino --precision fp32"):
        OvRunner(q2, build_dir=out)
    with pytest.raises(ArtifactMismatch):          # stale is refused on the auto path too
        auto_backend(q2, "cpu", build_dir=out, precision="auto")


# ----------------------------------------------------------------------------- precision

def test_precision_choices(monkeypatch):
    assert net_precisions("auto", True) == ov_runner.AUTO_POLICY
    assert net_precisions("auto", False) == {"encoder": "fp32", "decoder": "fp32"}
    assert net_precisions("bf16") == {"encoder": "bf16", "decoder": "bf16"}
    monkeypatch.setenv("ENGINE_CPU_BF16", "0")
    assert net_precisions("auto") == {"encoder": "fp32", "decoder": "fp32"}
    with pytest.raises(ValueError, match="openvino precision"):
        net_precisions("fp16")
    monkeypatch.delenv("ENGINE_PRECISION", raising=False)
    assert resolve_precision(None, "auto", "cpu") == "auto"
    assert resolve_precision(None, "openvino", None) == "auto"
    assert resolve_precision("bf16", "openvino", None) == "bf16"
    assert resolve_precision(None, "onnxruntime", "cpu") == "fp32"
    with pytest.raises(ValueError, match="openvino"):
        resolve_precision("bf16", "onnxruntime", "cpu")
    assert runner_precision("onnxruntime", "auto") == "fp32"
    assert runner_precision("openvino", "auto") == "auto"
    with pytest.raises(ValueError, match="openvino"):
        runner_precision("torch", "bf16")


# ----------------------------------------------------------------------------- auto

def test_auto_picks_openvino_where_the_cpu_has_bf16_units(tiny_builds, q2, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("auto prefers the GPU here")
    monkeypatch.setenv("ENGINE_CPU_BF16", "1")
    assert auto_backend(q2, "cpu", build_dir=tiny_builds, precision="auto") == "openvino"
    assert auto_backend(q2, None, build_dir=tiny_builds, precision="auto") == "openvino"
    r = make_runner(q2, "auto", "cpu", build_dir=tiny_builds, threads=1, precision="auto")
    assert isinstance(r, OvRunner) and r.precision == precision_label_auto(True)
    # fp32 asked for: OpenVINO fp32 is not faster than ONNX Runtime end to end (README)
    assert auto_backend(q2, "cpu", build_dir=tiny_builds, precision="fp32") == "onnxruntime"
    monkeypatch.setenv("ENGINE_CPU_BF16", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # no units: no note, ONNX Runtime is simply the choice
        assert auto_backend(q2, "cpu", build_dir=tiny_builds, precision="auto") == "onnxruntime"
    assert auto_backend(q2, "cpu", build_dir=tiny_builds, precision="bf16") == "openvino"


def ov_runs_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 here (elsewhere a bf16 request runs fp32)."""
    import openvino as ov
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def precision_label_auto(units: bool) -> str:
    """The label a runner with precision="auto" reports, given the units (forced or not)."""
    per_net = net_precisions("auto", units)
    if not ov_runs_bf16():
        per_net = {k: "fp32" for k in per_net}
    return ov_runner.precision_label(per_net)


def test_falls_back_to_onnxruntime_with_one_line(tiny_builds, q2, tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_CPU_BF16", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def missing():
        raise BackendUnavailable("openvino is not installed: pip install openvino")
    with monkeypatch.context() as m:
        m.setattr(ov_runner, "import_openvino", missing)
        with pytest.warns(RuntimeWarning, match="OpenVINO .* not used, running onnxruntime: openvino is not installed"):
            r = make_runner(q2, "auto", "cpu", build_dir=tiny_builds, threads=1, precision="auto")
        assert isinstance(r, OrtRunner) and r.precision == "fp32"
        with pytest.raises(BackendUnavailable, match="bf16 runs on the openvino backend only"):
            make_runner(q2, "auto", "cpu", build_dir=tiny_builds, precision="bf16")
    only_ort = tmp_path / "b"
    shutil.copytree(tiny_builds / "tiny" / "q2" / "onnxruntime-fp32", only_ort / "tiny" / "q2" / "onnxruntime-fp32")
    with pytest.warns(RuntimeWarning, match="no openvino artifacts; build them with: python -m engine.build"):
        assert auto_backend(q2, "cpu", build_dir=only_ort, precision="auto") == "onnxruntime"

    def broken(self, *a, **k):
        raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:\nmore lines")
    monkeypatch.setattr(OvRunner, "__init__", broken)
    with pytest.warns(RuntimeWarning, match=r"its runner failed: RuntimeError: Exception from src/.*core.cpp: more lines$"):
        r = make_runner(q2, "auto", "cpu", build_dir=tiny_builds, threads=1, precision="auto")
    assert isinstance(r, OrtRunner)


def test_every_path_runs_openvino(tiny_builds, tiny_root, tmp_path, monkeypatch):
    """Codec (one image, batch APIs), the CLI, the Pillow plugin and Ray Data's actor class
    all make their runner through the same backend resolution."""
    from PIL import Image

    from engine import __main__ as cli
    from engine import pillow_plugin, ray_data

    if torch.cuda.is_available():
        pytest.skip("auto prefers the GPU here")
    monkeypatch.setenv("ENGINE_CPU_BF16", "1")
    monkeypatch.setenv("ENGINE_BUILD_DIR", str(tiny_builds))
    monkeypatch.delenv("ENGINE_PRECISION", raising=False)
    calls = []
    run = OvRunner._run
    monkeypatch.setattr(OvRunner, "_run", lambda self, net, xs: calls.append(net) or run(self, net, xs))
    img = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)

    codec = engine.Codec(quality=2, model="tiny", root=tiny_root)
    assert codec.runner.name == "openvino" and codec.runner.precision == precision_label_auto(True)
    data = codec.compress(img)
    assert codec.compress_batch([img, img], batch_size=2) == [data, data]
    assert codec.decompress_batch([data])[0].shape == img.shape
    assert calls.count("encoder") == 2 and calls.count("decoder") == 1

    calls.clear()
    src = tmp_path / "a.png"
    Image.fromarray(img).save(src)
    assert cli.main(["compress", str(src), "-o", str(tmp_path / "out"), "--model", "tiny", "--model-dir",
                     str(tiny_root), "-q", "2", "--quiet"]) == 0
    assert calls == ["encoder"]

    calls.clear()
    monkeypatch.setattr(pillow_plugin, "_options", {"model": "tiny", "root": tiny_root})
    monkeypatch.setattr(pillow_plugin, "_codecs", {})
    Image.fromarray(img).save(tmp_path / "b.hnlc", quality=2)
    with Image.open(tmp_path / "b.hnlc") as im:
        im.load()
    assert calls == ["encoder", "decoder"]

    calls.clear()
    actor = ray_data.Compress(column="image", model="tiny", root=tiny_root, quality=2)
    out = actor({"image": [img]})
    assert len(out["hnlc"][0]) > 0 and calls == ["encoder"]


# ----------------------------------------------------------------------------- shipped model

def _golden_models() -> list[str]:
    """The default model (else small), and small16v3 when installed: its encoder dithers
    its colour codes (engine/net/model.py dither_offsets), ops the default's graph lacks."""
    gold = Path(__file__).parent / "golden"
    out = [DEFAULT_MODEL if (gold / f"{DEFAULT_MODEL}.json").exists() else "small"]
    from engine.net.checkpoint import installed
    if "small16v3" not in out and installed("small16v3") and (gold / "small16v3.json").exists():
        out.append("small16v3")
    return out


@pytest.mark.parametrize("model", _golden_models())
def test_fp32_gives_the_golden_bytes(request, monkeypatch, model):
    """precision="fp32" reproduces the recorded files (tests/golden/<model>.json: q4's
    version 2 setting) on one image at a time and in a batch."""
    from golden_cases import inputs, sha, to_input
    golden = json.loads((Path(__file__).parent / "golden" / f"{model}.json").read_text())
    out, q = shipped_build(request, model, 4)
    monkeypatch.setenv("ENGINE_BUILD_DIR", str(out))
    want = golden["settings"]["q4-rans-e0"]
    imgs = {**inputs("synthetic"), **inputs("kodak")}
    names = [n for n in imgs if n in want]
    assert len(names) >= 6
    items = [to_input(imgs[n]) for n in names]
    codec = engine.Codec(quality=4, model=model, backend="openvino", precision="fp32")
    assert codec.runner.precision == "fp32"
    assert [sha(codec.compress(x)) for x in items] == [want[n]["bytes"] for n in names]
    assert [sha(b) for b in codec.compress_batch(items, batch_size=3)] == [want[n]["bytes"] for n in names]


def _crops():
    from engine.data import list_images, load_rgb, split
    train = Path(__file__).resolve().parents[2] / "shared" / "data" / "train"
    if train.is_dir():
        _, val = split(list_images(train), 20)
        return [load_rgb(p)[:192, :256] for p in val[:2]]
    from golden_cases import inputs
    return list(inputs("synthetic").values())[:3]


def test_bf16_decode_stays_within_the_stated_tolerance(request, monkeypatch):
    """The default model's bf16 decoder against the fp32 reference (ONNX Runtime) on crops
    of held-out training photos; a bf16 encoder's files are ordinary files."""
    out, q = shipped_build(request, DEFAULT_MODEL)
    monkeypatch.setenv("ENGINE_BUILD_DIR", str(out))
    ref = engine.Codec(quality=q.quality, backend="onnxruntime")
    bf16 = engine.Codec(quality=q.quality, backend="openvino", precision="bf16")
    assert bf16.runner.precision == ("bf16" if ov_runs_bf16() else "fp32") and ref.runner.precision == "fp32"
    for img in _crops():
        data = ref.compress(img)
        a = ref.decompress(data).astype(np.int64)
        b = bf16.decompress(data).astype(np.int64)
        d = np.abs(a - b)
        assert d.max() <= BF16_MAX_ABS
        assert (d > 1).mean() <= BF16_MAX_FRAC_OVER_1
        assert 10 * np.log10(255 ** 2 / max(np.mean(d.astype(float) ** 2), 1e-12)) >= BF16_MIN_PSNR
        other = bf16.compress(img)
        assert ref.decompress(other).shape == img.shape
        assert abs(len(other) - len(data)) <= max(16, len(data) // 50)


def test_bf16_bytes_do_not_depend_on_batch_or_threads(request, monkeypatch):
    out, q = shipped_build(request, DEFAULT_MODEL)
    monkeypatch.setenv("ENGINE_BUILD_DIR", str(out))
    imgs = [c[:96, :128] for c in _crops()] * 2
    two = engine.Codec(quality=q.quality, backend="openvino", precision="bf16", threads=2)
    one = engine.Codec(quality=q.quality, backend="openvino", precision="bf16", threads=1)
    single = [two.compress(x) for x in imgs]
    assert two.compress_batch(imgs, batch_size=4) == single
    assert [one.compress(x) for x in imgs] == single
    dec = [two.decompress(b) for b in single]
    for a, b in zip(two.decompress_batch(single, batch_size=4), dec):
        assert np.array_equal(a, b)
    for a, b in zip((one.decompress(x) for x in single), dec):
        assert np.array_equal(a, b)


def test_no_telemetry(tiny_root, tmp_path, monkeypatch):
    """Building and running send nothing: OpenVINO's telemetry is never set up."""
    tm = pytest.importorskip("openvino_telemetry")
    seen = []
    monkeypatch.setattr(tm.Telemetry, "init", lambda self, *a, **k: seen.append(a))
    q = resolve("tiny", 1, root=tiny_root)
    B.build_quality(q, "openvino", "fp32", tmp_path, log=quiet)
    OvRunner(q, build_dir=tmp_path, threads=1).encode(torch.rand(1, 3, 32, 32))
    assert seen == []
