import os

import pytest
import torch

# The Triton interpreter must be chosen before any @triton.jit decorator runs.
# Without CUDA it is the only way to run the Triton kernels, so it is switched on;
# with CUDA the kernels are compiled.  An explicit TRITON_INTERPRET (0 or 1) in the
# environment always wins (bench/gpu_check.sh runs both modes).
if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A model folder 'tiny' with seeded random weights and a 3-step ladder."""
    from engine.net.checkpoint import write_model_dir
    from engine.net.model import CONFIGS, CodecNet

    torch.manual_seed(1234)
    net = CodecNet(CONFIGS["tiny"])
    root = tmp_path_factory.mktemp("models")
    write_model_dir(root / "tiny", net, {1: -1.0, 2: 0.0, 3: 1.0}, {"note": "random weights for tests"})
    return root


@pytest.fixture(scope="session")
def shipped_ort_build(tmp_path_factory):
    """ONNX Runtime artifacts of the shipped model's default quality (q4), built once
    into a temporary build dir (a clean clone has none): its path, for
    ENGINE_BUILD_DIR.  Skips where the shipped model is not in the checkout."""
    from engine import build
    from engine.net.checkpoint import CHECKPOINT_DIR, DEFAULT_MODEL
    if not (CHECKPOINT_DIR / DEFAULT_MODEL / "model.json").exists():
        pytest.skip("the shipped model is not in this checkout")
    out = tmp_path_factory.mktemp("ort_build")
    res = build.build(DEFAULT_MODEL, 4, "onnxruntime", "fp32", out, None, log=lambda *a, **k: None)
    assert [r.status for r in res] == ["built"]
    return out
