"""torch.compile for the torch runner (issue #15: CUDA graphs / torch.compile, measured
on the card by bench/gpu_session.sh): the option's checks, and a compiled network
against eager on the CPU (inductor's C++ kernels; on CUDA the same check runs in the
device session's pipeline tests)."""
import numpy as np
import pytest
import torch

import engine
from engine.net.rungs import resolve_compile


def test_compile_choices_checked(tiny_root, monkeypatch):
    assert resolve_compile(None, "torch") == "off"
    monkeypatch.setenv("ENGINE_TORCH_COMPILE", "reduce-overhead")
    assert resolve_compile(None, "auto") == "reduce-overhead"
    assert resolve_compile("off", "torch") == "off"
    with pytest.raises(ValueError, match="compile"):
        resolve_compile("max", "torch")
    with pytest.raises(ValueError, match="torch backend"):
        resolve_compile("default", "onnxruntime")
    monkeypatch.delenv("ENGINE_TORCH_COMPILE")
    with pytest.raises(ValueError, match="compile"):
        engine.Codec(model="tiny", root=tiny_root, backend="torch", compile="fast")


@pytest.mark.slow
def test_compiled_networks_match_eager_on_cpu(tiny_root):
    """Compiled (inductor) encode and decode against eager on the tiny model: the same
    sigmoid outputs and pixels within float rounding, and files that decode with eager."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    eager = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch")
    comp = engine.Codec(model="tiny", root=tiny_root, backend="torch", kernels="torch", compile="default")
    assert comp.runner.compile == "default"
    x = torch.from_numpy(rng.random((1, 3, 64, 96), dtype=np.float32))
    for a, b in zip(eager.runner.encode(x), comp.runner.encode(x)):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
    data = eager.compress(img)
    d_eager, d_comp = eager.decompress(data), comp.decompress(data)
    assert np.abs(d_eager.astype(np.int16) - d_comp).max() <= 1
    assert eager.decompress(comp.compress(img)).shape == img.shape
