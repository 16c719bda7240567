"""engine.build / engine.net.export / OrtRunner / auto selection (issue 5).

Runs on the CPU with ONNX Runtime; TensorRT is never faked: the tests that
need it check only what happens when it is absent, and skip otherwise.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from engine import build as B  # noqa: E402
from engine.net.checkpoint import resolve, write_model_dir  # noqa: E402
from engine.net.export import (DEFAULT_PROFILE, ShapeProfile, check_io_names, check_shape_in_profile,  # noqa: E402
                               decoder_output_shapes, encoder_output_shapes, example_inputs, export_onnx,
                               net_profiles, onnx_io_names)
from engine.net.model import CONFIGS, CodecNet  # noqa: E402
from engine.runners import make_runner  # noqa: E402
from engine.errors import ArtifactMismatch, BackendUnavailable  # noqa: E402
from engine.runners.ort_runner import OrtRunner, choose_providers  # noqa: E402
from engine.runners.select import auto_backend  # noqa: E402
from engine.runners.torch_runner import TorchRunner  # noqa: E402
from engine.trt_build import (TRT_MISSING, profile_dims, tensorrt_importable, timing_cache_path,  # noqa: E402
                              torch_dtype_name)

TINY = CONFIGS["tiny"]


def quiet(*_a, **_k):
    pass


@pytest.fixture(scope="module")
def q2(tiny_root):
    return resolve("tiny", 2, root=tiny_root)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_root, q2):
    """tiny quality 2, onnxruntime fp32, built once for the module."""
    out = tmp_path_factory.mktemp("build")
    log: list[str] = []
    res = B.build("tiny", 2, "onnxruntime", "fp32", out, tiny_root, log=log.append)
    assert [r.status for r in res] == ["built"]
    return out, res[0], log


@pytest.fixture(scope="module")
def runners(built, q2):
    out = built[0]
    return OrtRunner(q2, device="cpu", threads=1, build_dir=out), TorchRunner(q2, device="cpu", threads=1)


# --------------------------------------------------------------------------
# Export + parity
# --------------------------------------------------------------------------

def test_artifacts_and_manifest(built, q2):
    out, res, log = built
    d = out / "tiny" / "q2" / "onnxruntime-fp32"
    assert res.directory == d
    assert sorted(p.name for p in d.iterdir()) == ["decoder.onnx", "encoder.onnx", "manifest.json"]
    m = json.loads((d / "manifest.json").read_text())
    assert m["fingerprint"] == q2.fingerprint
    assert (m["model"], m["quality"], m["backend"], m["precision"]) == ("tiny", 2, "onnxruntime", "fp32")
    assert m["backend_version"] == ort.__version__
    assert m["opset"] == 18 and m["exporter"].startswith("torch.onnx.export(dynamo=True")
    assert m["io_dtype"] == "float32" and m["profiles"]["dynamic"] is True
    assert m["io"]["encoder"]["e"] == ["B", TINY.n, "H/8", "W/8"]
    assert m["build_seconds"] > 0 and m["built_at"]
    assert m["command"].startswith("python -m engine.build --model tiny --quality 2 --backend onnxruntime")
    for name in ("encoder.onnx", "decoder.onnx"):
        assert m["files"][name] == {"sha256": B.file_sha256(d / name), "bytes": (d / name).stat().st_size}
        assert m["checks"][name.split(".")[0]]["max_abs_diff"]
    assert onnx_io_names(d / "encoder.onnx") == (["ycc"], ["e", "p", "ec"])
    assert onnx_io_names(d / "decoder.onnx") == (["bits", "levels", "cbits"], ["ycc"])
    model = onnx.load(str(d / "encoder.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["engine.fingerprint"] == q2.fingerprint and meta["engine.quality"] == "2"
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [bool(x.dim_param) for x in dims] == [True, False, True, True]   # dynamic B, H, W
    assert any("built" in line for line in log)


@pytest.mark.parametrize("b,h,w", [(1, 48, 64), (2, 64, 32), (2, 32, 80)])
def test_encoder_parity_dynamic_shapes(runners, b, h, w):
    ort_r, torch_r = runners
    x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(b * h + w))
    got, ref = ort_r.encode(x), torch_r.encode(x)
    shapes = encoder_output_shapes(TINY, x.shape)
    for name, g, r in zip(("e", "p", "ec"), got, ref):
        assert tuple(g.shape) == shapes[name] == tuple(r.shape)
        assert g.dtype == torch.float32 and g.device.type == "cpu"
        assert (g - r).abs().max().item() < 1e-4, name
    # Binarization (x > 0.5) may only flip where torch itself was within tolerance of 0.5.
    for name, g, r in (("e", got[0], ref[0]), ("ec", got[2], ref[2])):
        flips = (g > 0.5) != (r > 0.5)
        assert ((r - 0.5).abs()[flips] < 1e-4).all(), f"{name}: {int(flips.sum())} flips away from 0.5"


@pytest.mark.parametrize("b,h,w", [(1, 48, 64), (2, 64, 32), (2, 32, 80)])
def test_decoder_parity_dynamic_shapes(runners, b, h, w):
    ort_r, torch_r = runners
    bits, levels, cbits = example_inputs("decoder", TINY, b, h, w, seed=h + w)
    got, ref = ort_r.decode(bits, levels, cbits), torch_r.decode(bits, levels, cbits)
    assert tuple(got.shape) == (b, 3, h, w) == tuple(ref.shape)
    assert (got - ref).abs().max().item() < 1 / 255


def test_spin_modes():
    from engine.runners.ort_runner import spin_mode

    assert [spin_mode(v) for v in ("off", "on", True, False, "1", "0", "")] == ["off", "on", "on", "off", "on", "off",
                                                                               "off"]
    with pytest.raises(ValueError, match="spin must be one of"):
        spin_mode("sometimes")


def test_runner_options(runners):
    ort_r, _ = runners
    assert ort_r.name == "onnxruntime" and ort_r.threads == 1 and ort_r.spin == "off"
    assert ort_r.providers == ["CPUExecutionProvider"] and ort_r.device == torch.device("cpu")
    with pytest.raises(ValueError, match="multiples of 16"):
        ort_r.encode(torch.rand(1, 3, 40, 48))


@pytest.mark.parametrize("r,c", [(2, 1), (2, 3), (3, 2)])
def test_shuffles_as_convolutions_are_exact_in_torch(r, c):
    from engine.net.export import _ShuffleAsConvTranspose, _UnshuffleAsConv

    g = torch.Generator().manual_seed(r * 10 + c)
    x = torch.randn(2, c * r * r, 5, 7, generator=g)
    assert torch.equal(_ShuffleAsConvTranspose(r, c * r * r)(x), torch.nn.functional.pixel_shuffle(x, r))
    y = torch.randn(2, c, 5 * r, 7 * r, generator=g)
    assert torch.equal(_UnshuffleAsConv(r, c)(y), torch.nn.functional.pixel_unshuffle(y, r))


def test_onnxruntime_graphs_write_shuffles_as_convolutions_bit_identically(built, q2, tmp_path):
    """The shipped ORT graphs have no DepthToSpace / Transpose, and give exactly
    what the native-shuffle graphs give (the rewrite only moves values)."""
    from engine.net.checkpoint import load_net

    d = built[0] / "tiny" / "q2" / "onnxruntime-fp32"
    assert json.loads((d / "manifest.json").read_text())["options"]["shuffles"] == "conv"
    net = load_net(q2)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    for name, module in (("encoder", net.encoder), ("decoder", net.decoder)):
        ops = {n.op_type for n in onnx.load(str(d / f"{name}.onnx")).graph.node}
        assert not ops & {"DepthToSpace", "SpaceToDepth", "Transpose"}, ops
        native = export_onnx(name, module, TINY, tmp_path / f"{name}.onnx", shuffles="native")
        assert ops != {n.op_type for n in onnx.load(str(native)).graph.node}
        a = ort.InferenceSession(str(d / f"{name}.onnx"), so, providers=["CPUExecutionProvider"])
        b = ort.InferenceSession(str(native), so, providers=["CPUExecutionProvider"])
        feeds = dict(zip([i.name for i in a.get_inputs()], (t.numpy() for t in example_inputs(name, TINY, 2, 48, 64))))
        for x, y in zip(a.run(None, feeds), b.run(None, feeds)):
            assert (x == y).all()


def test_fp16_export_keeps_float32_io(tmp_path, q2):
    from engine.net.checkpoint import load_net

    net = load_net(q2)
    path = export_onnx("encoder", net.encoder, TINY, tmp_path / "encoder.onnx", precision="fp16")
    m = onnx.load(str(path))
    assert {i.type.tensor_type.elem_type for i in m.graph.input} == {onnx.TensorProto.FLOAT}
    assert {o.type.tensor_type.elem_type for o in m.graph.output} == {onnx.TensorProto.FLOAT}
    conv_w = {i.name: i.data_type for i in m.graph.initializer if len(i.dims) == 4}
    assert conv_w and set(conv_w.values()) == {onnx.TensorProto.FLOAT16}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as ex:  # pragma: no cover - depends on the ORT CPU build
        pytest.skip(f"ONNX Runtime CPU has no fp16 kernels here: {ex}")
    x = torch.rand(1, 3, 48, 32)
    got = sess.run(None, {"ycc": x.numpy()})
    with torch.no_grad():
        ref = net.encoder(x)
    for g, r in zip(got, ref):
        assert (torch.from_numpy(g) - r).abs().max().item() < 1e-2


def test_torchscript_exporter_fallback(tmp_path, q2):
    from engine.net.checkpoint import load_net
    from engine.net.export import check_onnx_against_torch

    net = load_net(q2)
    path = export_onnx("decoder", net.decoder, TINY, tmp_path / "decoder.onnx", exporter="torchscript")
    res = check_onnx_against_torch("decoder", path, net.decoder, TINY, b=2, h=64, w=32)
    assert res["max_abs_diff"]["ycc"] < 1e-4


# --------------------------------------------------------------------------
# Up to date / rebuild / refusal
# --------------------------------------------------------------------------

def test_rebuild_skipped_when_up_to_date(built, tiny_root):
    out, first, _ = built
    before = {p.name: p.stat().st_mtime_ns for p in first.directory.iterdir()}
    log: list[str] = []
    (again,) = B.build("tiny", 2, "onnxruntime", "fp32", out, tiny_root, log=log.append)
    assert again.status == "up to date"
    assert log == [f"tiny q2 onnxruntime-fp32: up to date ({first.directory})"]
    assert {p.name: p.stat().st_mtime_ns for p in first.directory.iterdir()} == before


def test_cli_up_to_date(built, tiny_root, capsys):
    out = built[0]
    rc = B.main(["--model", "tiny", "--quality", "2", "--backend", "onnxruntime", "--root", str(tiny_root),
                 "--out", str(out)])
    assert rc == 0
    assert "tiny q2 onnxruntime-fp32: up to date" in capsys.readouterr().out


def test_checkpoint_change_refused_then_rebuilt(built, tiny_root, tmp_path):
    out = tmp_path / "build"
    shutil.copytree(built[0], out)
    root = tmp_path / "models"
    shutil.copytree(tiny_root / "tiny", root / "tiny")
    # Same checkpoint bytes elsewhere: same fingerprint, nothing to do.
    (res,) = B.build("tiny", 2, "onnxruntime", "fp32", out, root, log=quiet)
    assert res.status == "up to date"

    torch.manual_seed(99)
    write_model_dir(root / "tiny", CodecNet(TINY), {1: -1.0, 2: 0.0, 3: 1.0})
    q_new = resolve("tiny", 2, root=root)
    with pytest.raises(ArtifactMismatch) as ei:
        OrtRunner(q_new, threads=1, build_dir=out)
    msg = str(ei.value)
    assert "python -m engine.build --model tiny --quality 2" in msg
    assert f"--root {root}" in msg and f"--out {out}" in msg and "fingerprint" in msg
    with pytest.raises(ArtifactMismatch):
        auto_backend(q_new, "cpu", build_dir=out)

    (res,) = B.build("tiny", 2, "onnxruntime", "fp32", out, root, log=quiet)
    assert res.status == "built" and res.manifest["fingerprint"] == q_new.fingerprint
    r = OrtRunner(q_new, threads=1, build_dir=out)
    x = torch.rand(1, 3, 32, 32)
    ref = TorchRunner(q_new, device="cpu", threads=1).encode(x)
    assert all((g - t).abs().max().item() < 1e-4 for g, t in zip(r.encode(x), ref))
    assert auto_backend(q_new, "cpu", build_dir=out) == "onnxruntime"


def test_changed_file_refused(built, q2, tmp_path):
    out = tmp_path / "build"
    shutil.copytree(built[0], out)
    f = out / "tiny" / "q2" / "onnxruntime-fp32" / "decoder.onnx"
    f.write_bytes(f.read_bytes() + b"\0")
    with pytest.raises(ArtifactMismatch, match="decoder.onnx: changed since the build"):
        OrtRunner(q2, threads=1, build_dir=out)


def test_manifest_fingerprint_refused(built, q2, tmp_path):
    out = tmp_path / "build"
    shutil.copytree(built[0], out)
    d = out / "tiny" / "q2" / "onnxruntime-fp32"
    m = json.loads((d / "manifest.json").read_text())
    m["fingerprint"] = "0" * 64
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactMismatch, match="python -m engine.build --model tiny --quality 2"):
        OrtRunner(q2, threads=1, build_dir=out)


def test_missing_artifacts(q2, tmp_path):
    with pytest.raises(BackendUnavailable) as ei:
        OrtRunner(q2, threads=1, build_dir=tmp_path)
    assert not isinstance(ei.value, ArtifactMismatch)
    assert "python -m engine.build --model tiny --quality 2 --backend onnxruntime" in str(ei.value)
    assert auto_backend(q2, "cpu", build_dir=tmp_path) == "torch"


def test_torch_backend_records_manifest(q2, tmp_path):
    (res,) = [B.build_quality(q2, "torch", "fp32", tmp_path, log=quiet)]
    assert res.status == "built" and res.directory == tmp_path / "tiny" / "q2" / "torch-fp32"
    assert res.manifest["files"] == {} and "nothing to build" in res.manifest["note"]
    assert B.build_quality(q2, "torch", "fp32", tmp_path, log=quiet).status == "up to date"
    with pytest.raises(ValueError):
        B.build_quality(q2, "torch", "fp16", tmp_path, log=quiet)


# --------------------------------------------------------------------------
# Backend choice
# --------------------------------------------------------------------------

def test_auto_backend_picks_onnxruntime_here(built, q2):
    out = built[0]
    if not (tensorrt_importable() and torch.cuda.is_available()):
        assert auto_backend(q2, build_dir=out) == "onnxruntime"
    assert auto_backend(q2, "cpu", build_dir=out) == "onnxruntime"
    r = make_runner(q2, "auto", device="cpu", build_dir=out, threads=1)
    assert isinstance(r, OrtRunner)


def test_build_auto_resolves_backend():
    want = "tensorrt" if tensorrt_importable() and torch.cuda.is_available() else "onnxruntime"
    assert B.resolve_backend("auto") == want
    assert B.resolve_backend("torch") == "torch"
    with pytest.raises(ValueError):
        B.resolve_backend("tflite")


@pytest.mark.skipif(tensorrt_importable(), reason="TensorRT is installed here")
def test_tensorrt_absent_errors(q2, tmp_path, capsys):
    from engine.runners.trt_runner import TrtRunner

    with pytest.raises(BackendUnavailable) as ei:
        TrtRunner(q2, build_dir=tmp_path)
    assert str(ei.value) == TRT_MISSING
    assert "pip install tensorrt" in TRT_MISSING and "--backend onnxruntime" in TRT_MISSING
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        B.build_quality(q2, "tensorrt", "fp32", tmp_path, log=quiet)
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        make_runner(q2, "tensorrt", build_dir=tmp_path)
    assert B.main(["--model", "tiny", "--backend", "tensorrt", "--root", str(q2.weights.parent.parent),
                   "--out", str(tmp_path)]) == 2
    assert "TensorRT is not installed" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_choose_providers():
    cpu = ["CPUExecutionProvider"]
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, None, cpu, cuda_visible=True) == (torch.device("cpu"), cpu)
    assert choose_providers("cpu", None, both, cuda_visible=True) == (torch.device("cpu"), cpu)
    dev, prov = choose_providers(None, None, both, cuda_visible=True)
    assert dev == torch.device("cuda", 0) and prov[0] == ("CUDAExecutionProvider", {"device_id": 0})
    dev, prov = choose_providers("cuda:1", None, both, cuda_visible=True)
    assert dev == torch.device("cuda", 1) and prov[0][1] == {"device_id": 1}
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        choose_providers("cuda", None, cpu, cuda_visible=True)
    assert choose_providers(None, ["CPUExecutionProvider"], both, True) == (torch.device("cpu"), cpu)


# --------------------------------------------------------------------------
# Pure logic: profiles, shapes, names, layout, manifests
# --------------------------------------------------------------------------

def test_profile_defaults_and_validation():
    p = ShapeProfile()
    assert (p.batch, p.height, p.width) == ((1, 1, 8), (16, 512, 2048), (16, 768, 2048))
    assert p.image_shape("opt") == (1, 3, 512, 768)
    assert ShapeProfile("1,2,4", "16,32,64", [16, 48, 64]).batch == (1, 2, 4)
    assert ShapeProfile.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="multiples of 16"):
        ShapeProfile(height=(16, 500, 2048))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        ShapeProfile(batch=(4, 2, 8))
    with pytest.raises(ValueError, match="3 integers"):
        ShapeProfile(batch="1,8")


def test_net_profiles_in_latent_units():
    prof = net_profiles(TINY, DEFAULT_PROFILE)
    assert prof["encoder"] == {"ycc": {"min": [1, 3, 16, 16], "opt": [1, 3, 512, 768], "max": [8, 3, 2048, 2048]}}
    d = prof["decoder"]
    assert d["bits"] == {"min": [1, 15, 2, 2], "opt": [1, 15, 64, 96], "max": [8, 15, 256, 256]}
    assert d["levels"] == {"min": [1, 1, 2, 2], "opt": [1, 1, 64, 96], "max": [8, 1, 256, 256]}
    assert d["cbits"] == {"min": [1, 4, 1, 1], "opt": [1, 4, 32, 48], "max": [8, 4, 128, 128]}
    small = net_profiles(CONFIGS["small"], ShapeProfile(batch=(1, 4, 16)))
    assert small["decoder"]["bits"]["opt"] == [4, 60, 64, 96]
    assert profile_dims(d["cbits"]) == ((1, 4, 1, 1), (1, 4, 32, 48), (8, 4, 128, 128))
    with pytest.raises(ValueError):
        profile_dims({"min": [1, 2], "opt": [1, 1], "max": [1, 3]})


def test_check_shape_in_profile():
    spec = net_profiles(TINY)["encoder"]["ycc"]
    check_shape_in_profile("ycc", (8, 3, 2048, 16), spec)
    with pytest.raises(ValueError, match="outside the engine's profile"):
        check_shape_in_profile("ycc", (9, 3, 64, 64), spec)
    with pytest.raises(ValueError, match="outside"):
        check_shape_in_profile("ycc", (1, 3, 4096, 64), spec)


def test_output_shapes():
    assert encoder_output_shapes(TINY, (2, 3, 32, 48)) == {"e": (2, 15, 4, 6), "p": (2, 1, 4, 6), "ec": (2, 4, 2, 3)}
    assert decoder_output_shapes(TINY, (2, 15, 4, 6), (2, 1, 4, 6), (2, 4, 2, 3)) == {"ycc": (2, 3, 32, 48)}
    with pytest.raises(ValueError):
        encoder_output_shapes(TINY, (1, 3, 24, 32))
    with pytest.raises(ValueError):
        encoder_output_shapes(TINY, (1, 1, 32, 32))
    with pytest.raises(ValueError, match="cbits"):
        decoder_output_shapes(TINY, (1, 15, 4, 6), (1, 1, 4, 6), (1, 4, 4, 6))
    with pytest.raises(ValueError, match="bits must have 15"):
        decoder_output_shapes(TINY, (1, 14, 4, 6), (1, 1, 4, 6), (1, 4, 2, 3))


def test_io_names_and_dtypes():
    check_io_names("encoder", ["ycc"], ["ec", "e", "p"])
    check_io_names("decoder", ["cbits", "bits", "levels"], ["ycc"])
    with pytest.raises(ValueError, match="expected inputs"):
        check_io_names("encoder", ["input"], ["e", "p", "ec"])
    assert torch_dtype_name("FLOAT") == "float32" and torch_dtype_name("DataType.HALF") == "float16"
    with pytest.raises(ValueError):
        torch_dtype_name("FP4")


def test_layout_and_commands(monkeypatch, tmp_path):
    monkeypatch.delenv(B.BUILD_DIR_ENV, raising=False)
    repo = Path(B.__file__).resolve().parents[1]
    assert B.default_build_dir() == repo / "build"
    assert B.rebuild_command("small", 3) == \
        "python -m engine.build --model small --quality 3 --backend onnxruntime --precision fp32"
    assert B.rebuild_command("small", 3, "tensorrt", "fp16", tmp_path, tmp_path / "m").endswith(
        f"--precision fp16 --root {tmp_path / 'm'} --out {tmp_path}")
    monkeypatch.setenv(B.BUILD_DIR_ENV, str(tmp_path))
    assert B.default_build_dir() == tmp_path
    assert B.artifact_dir("small", 2, "tensorrt", "fp16") == tmp_path / "small" / "q2" / "tensorrt-fp16"
    assert timing_cache_path(tmp_path, "10.9.0", "NVIDIA H100 80GB HBM3") == \
        tmp_path / "tensorrt" / "timing-10.9.0-nvidia-h100-80gb-hbm3.cache"


def test_manifest_status(tmp_path):
    fp = "a" * 64
    (tmp_path / "encoder.onnx").write_bytes(b"x")
    (tmp_path / "decoder.onnx").write_bytes(b"y")
    files = {n: B.file_record(tmp_path / n) for n in ("encoder.onnx", "decoder.onnx")}
    m = {"format": B.ARTIFACT_FORMAT, "backend": "onnxruntime", "precision": "fp32", "fingerprint": fp,
         "files": files, "backend_version": "10.0"}
    st = lambda man, **kw: B.manifest_status(man, tmp_path, fp, "onnxruntime", "fp32", **kw)[0]  # noqa: E731
    assert st(None) == "missing"
    assert st(m) == "ok"
    assert st({**m, "fingerprint": "b" * 64}) == "stale"
    assert st({**m, "format": 0}) == "stale"
    assert st({**m, "precision": "fp16"}) == "stale"
    assert st(m, expect={"backend_version": "10.1"}) == "stale"
    assert st({**m, "files": {"encoder.onnx": files["encoder.onnx"]}}) == "stale"
    (tmp_path / "decoder.onnx").unlink()
    assert st(m) == "missing"


def test_decoding_needs_only_the_files_own_rung(built, tiny_root, monkeypatch, tmp_path):
    """Issue #28, item 11: a codec whose default rung (here quality 3) has no ONNX Runtime
    artifacts still decodes a quality 2 file (only q2 is built), and so does the Pillow
    plugin (its decoding codec runs the model's default quality); encoding at quality 3
    raises the missing-artifacts error with the command."""
    import numpy as np
    from PIL import Image

    import engine
    root = tmp_path / "models"
    shutil.copytree(tiny_root / "tiny", root / "tiny")          # the same files: the same artifacts
    meta = json.loads((root / "tiny" / "model.json").read_text())
    (root / "tiny" / "model.json").write_text(json.dumps({**meta, "default_quality": 3}))
    monkeypatch.setenv("ENGINE_BUILD_DIR", str(built[0]))
    img = np.random.default_rng(4).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    data = engine.Codec(model="tiny", root=root, backend="torch", quality=2).compress(img)
    codec = engine.Codec(model="tiny", root=root, backend="onnxruntime")
    assert codec.quality == 3
    out = codec.decompress(data)
    assert out.shape == img.shape and codec.runner.name == "onnxruntime"
    with pytest.raises(BackendUnavailable, match="--quality 3 --backend onnxruntime"):
        codec.compress(img)
    engine.register_pillow(model="tiny", root=root, backend="onnxruntime")
    try:
        (tmp_path / "x.hnlc").write_bytes(data)
        with Image.open(tmp_path / "x.hnlc") as im:
            np.testing.assert_array_equal(np.asarray(im), out)
    finally:
        engine.register_pillow()
