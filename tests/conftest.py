import os

# The Triton interpreter must be chosen before any @triton.jit decorator runs.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A model folder 'tiny' with seeded random weights and a 3-step ladder."""
    from engine.checkpoint import write_model_dir
    from engine.model import CONFIGS, CodecNet

    torch.manual_seed(1234)
    net = CodecNet(CONFIGS["tiny"])
    root = tmp_path_factory.mktemp("models")
    write_model_dir(root / "tiny", net, {1: -1.0, 2: 0.0, 3: 1.0}, {"note": "random weights for tests"})
    return root
