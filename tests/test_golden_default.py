"""Golden bytes of the default model, and of every earlier default still installed
(tests/golden/<model>.json): the files their rungs make for fixed inputs, one image at a
time and batched.  tests/test_golden.py pins the engine on every path with the first
shipped model (small); this pins each later model's weights, ladder and tables, so a new
default is recorded on purpose (``python tests/golden_cases.py --model NAME --rans-only
--out tests/golden/NAME.json``) with its reason in the commit, and a former default keeps
making (and so reading) the files it made when it was the default.
"""
import json
from pathlib import Path

import pytest

import engine
from engine.net.checkpoint import CHECKPOINT_DIR, DEFAULT_MODEL, installed, qualities
from golden_cases import inputs, sha, to_input

GOLDEN = Path(__file__).parent / "golden"
# small's own golden file is tests/test_golden.py's (every path, decoded pixels too)
MODELS = sorted({DEFAULT_MODEL} | {p.stem for p in GOLDEN.glob("*.json") if p.stem != "small" and installed(p.stem)})
pytestmark = pytest.mark.skipif(not (CHECKPOINT_DIR / DEFAULT_MODEL / "model.json").exists(),
                                reason="the shipped model is not in this checkout")


def golden(model: str) -> dict:
    path = GOLDEN / f"{model}.json"
    assert path.exists(), f"no golden file for the model: record {path}"
    res = json.loads(path.read_text())
    assert res["model"] == model
    return res


def test_the_default_model_and_a_former_default_are_pinned():
    assert DEFAULT_MODEL in MODELS and "small16" in MODELS


@pytest.mark.parametrize(("model", "quality"), [(m, q) for m in MODELS for q in qualities(m)])
def test_model_golden_bytes(model, quality):
    want = golden(model)["settings"][f"q{quality}-rans-e0"]
    imgs = {**inputs("synthetic"), **inputs("kodak")}
    names = sorted(want)
    items = [to_input(imgs[n]) for n in names]
    codec = engine.Codec(quality=quality, model=model, backend="torch", kernels="torch")
    assert [sha(codec.compress(x)) for x in items] == [want[n]["bytes"] for n in names]
    assert [sha(b) for b in codec.compress_batch(items, batch_size=3)] == [want[n]["bytes"] for n in names]
