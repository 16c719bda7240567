"""Golden bytes of the default model (tests/golden/<DEFAULT_MODEL>.json): the files its
rungs make for fixed inputs, one image at a time and batched.  tests/test_golden.py pins
the engine on every path with the first shipped model; this pins the default model's
weights, ladder and tables, so a new default is recorded on purpose
(``python tests/golden_cases.py --model NAME --rans-only --out tests/golden/NAME.json``)
with its reason in the commit.
"""
import json
from pathlib import Path

import pytest

import engine
from engine.net.checkpoint import CHECKPOINT_DIR, DEFAULT_MODEL
from golden_cases import inputs, sha, to_input

PATH = Path(__file__).parent / "golden" / f"{DEFAULT_MODEL}.json"
pytestmark = pytest.mark.skipif(not (CHECKPOINT_DIR / DEFAULT_MODEL / "model.json").exists(),
                                reason="the shipped model is not in this checkout")


def golden():
    assert PATH.exists(), f"no golden file for the default model: record {PATH}"
    res = json.loads(PATH.read_text())
    assert res["model"] == DEFAULT_MODEL
    return res


@pytest.mark.parametrize("quality", sorted(engine.net.checkpoint.qualities(DEFAULT_MODEL)))
def test_default_model_golden_bytes(quality):
    want = golden()["settings"][f"q{quality}-rans-e0"]
    imgs = {**inputs("synthetic"), **inputs("kodak")}
    names = sorted(want)
    items = [to_input(imgs[n]) for n in names]
    codec = engine.Codec(quality=quality, backend="torch", kernels="torch")
    assert [sha(codec.compress(x)) for x in items] == [want[n]["bytes"] for n in names]
    assert [sha(b) for b in codec.compress_batch(items, batch_size=3)] == [want[n]["bytes"] for n in names]
