"""Every colour survives (issue #29): the colour suite (bench/colour_suite.py) on the
shipped default model, every encodable rung, against Pillow JPEG at quality 10 in the
same run.

Thresholds (bench/colour_suite.THRESHOLDS, README "Colour"): on flat patches across the
sRGB gamut and on saturated discs on white, each rung's mean and worst CIEDE2000.  They
are looser than JPEG quality 10's (flat: mean 1.10, worst 4.04; discs: 0.64, 1.52), which
issue #29 asks for and small16 does not reach yet; the model before it fails them by 3-6x.
"""
import numpy as np
import pytest

pytest.importorskip("skimage")

from bench import colour_suite  # noqa: E402
from engine import checkpoint  # noqa: E402


def test_delta_e_is_zero_on_identity_and_grows_with_error():
    ims = colour_suite.flat_patches()[:3]
    assert colour_suite.score(ims, ims)["worst"] == 0
    off = [np.clip(im.astype(int) + 12, 0, 255).astype(np.uint8) for im in ims]
    assert colour_suite.score(ims, off)["mean"] > 1


@pytest.fixture(scope="module")
def jpeg_q10():
    return colour_suite.suite(lambda ims: colour_suite.pillow_roundtrip(ims, "JPEG", 10))


DEFAULT_Q = checkpoint.resolve(checkpoint.DEFAULT_MODEL).quality
RUNGS = [pytest.param(q, marks=[] if q in (min(checkpoint.qualities(checkpoint.DEFAULT_MODEL)), DEFAULT_Q)
                      else [pytest.mark.slow])
         for q in checkpoint.qualities(checkpoint.DEFAULT_MODEL)]


@pytest.mark.parametrize("quality", RUNGS)      # the lowest and the default rung in the main step, all in the slow one
def test_every_rung_keeps_every_colour(quality, jpeg_q10):
    import engine
    with engine.Codec(quality=quality, backend="torch") as codec:
        ours = colour_suite.suite(lambda ims: colour_suite.codec_roundtrip(codec, ims))
    for kind in ("flat", "discs"):
        limit, got = colour_suite.THRESHOLDS[kind], ours[kind]
        assert got["mean"] <= limit["mean"], (kind, got, "JPEG q10:", jpeg_q10[kind])
        assert got["worst"] <= limit["worst"], (kind, got, "JPEG q10:", jpeg_q10[kind])


def test_the_replaced_model_fails_the_suite():
    """The suite tells a colour-blind codec apart: the first shipped model, 8 colour codes
    and photos only, decodes pure blue as dark red."""
    import engine
    if not (checkpoint.CHECKPOINT_DIR / "small" / "model.json").exists():
        pytest.skip("model small is not installed")
    with engine.Codec(quality=4, model="small", backend="torch") as codec:
        got = colour_suite.score(colour_suite.discs(), colour_suite.codec_roundtrip(codec, colour_suite.discs()),
                                 colour_suite.disc_mask(colour_suite.ERODE))
    assert got["worst"] > colour_suite.THRESHOLDS["discs"]["worst"] * 3
