"""Every colour survives (issue #29): the colour suite (bench/colour_suite.py) on the
model of every metric (the default MSE model, and the perceptual one when installed),
every encodable rung, against Pillow JPEG at quality 10 in the same run.

Thresholds (bench/colour_suite.THRESHOLDS, README "Colour"): on flat patches across the
sRGB gamut and on saturated discs on white, each rung's mean and worst CIEDE2000.  They
are looser than JPEG quality 10's (flat: mean 1.10, worst 4.04; discs: 0.64, 1.52), which
issue #29 asks for and small16v2 does not reach yet at effort 0; small16, the default
before it, fails them (up to 2.54 / 7.02 flat), and small, the model before that, by 5-8x.
"""
import numpy as np
import pytest

pytest.importorskip("skimage")

from bench import colour_suite  # noqa: E402
from engine.net import checkpoint  # noqa: E402


def test_delta_e_is_zero_on_identity_and_grows_with_error():
    ims = colour_suite.flat_patches()[:3]
    assert colour_suite.score(ims, ims)["worst"] == 0
    off = [np.clip(im.astype(int) + 12, 0, 255).astype(np.uint8) for im in ims]
    assert colour_suite.score(ims, off)["mean"] > 1


@pytest.fixture(scope="module")
def jpeg_q10():
    return colour_suite.suite(lambda ims: colour_suite.pillow_roundtrip(ims, "JPEG", 10))


def _models() -> list[str]:
    """The model each metric's codec runs (the default for mse; the perceptual one for
    ms-ssim when installed): every model a user gets by metric=."""
    return sorted({checkpoint.model_for(m) for m in checkpoint.installed_metrics()})


def _rungs(model: str) -> list:
    qs = checkpoint.qualities(model)
    main = (min(qs), checkpoint.resolve(model).quality)
    return [pytest.param(model, q, marks=[] if q in main else [pytest.mark.slow], id=f"{model}-q{q}") for q in qs]


# the lowest and the default rung of each model in the main step, all rungs in the slow one
@pytest.mark.parametrize(("model", "quality"), [p for m in _models() for p in _rungs(m)])
def test_every_rung_keeps_every_colour(model, quality, jpeg_q10):
    import engine
    with engine.Codec(quality=quality, model=model, backend="torch") as codec:
        ours = colour_suite.suite(lambda ims: colour_suite.codec_roundtrip(codec, ims))
    for kind in ("flat", "discs"):
        limit, got = colour_suite.THRESHOLDS[kind], ours[kind]
        assert got["mean"] <= limit["mean"], (kind, got, "JPEG q10:", jpeg_q10[kind])
        assert got["worst"] <= limit["worst"], (kind, got, "JPEG q10:", jpeg_q10[kind])


# Where JPEG quality 10's own numbers hold (issue #29's bar), measured in the same run: the
# perceptual model at effort 1 (under 2 s per Kodak image with the bf16 search on a CPU with
# bf16 matrix units) at every encodable rung from q2 (its q5 is retired), and the default
# MSE model (small16v2) at effort 1 at q3..q5 (its q2 meets it with the bf16 search, not with
# fp32's: discs worst 1.56 against 1.52; q1 misses with both, discs mean 0.66 / 0.68 against
# 0.64; the perceptual q1 meets it with the bf16 search, not with fp32's: discs worst 1.54;
# README "Colour").  Both search precisions pass these.  All in the slow step: the search
# runs per image, 137 of them a rung.
def _jpeg_bar_rungs() -> list:
    out = []
    perceptual = checkpoint.model_for("ms-ssim") if "ms-ssim" in checkpoint.installed_metrics() else None
    for model, qs in ((perceptual, (2, 3, 4)), (checkpoint.DEFAULT_MODEL, (3, 4, 5))):
        if model is None:
            continue
        for q in qs:
            out.append(pytest.param(model, q, marks=[pytest.mark.slow], id=f"{model}-q{q}-effort1"))
    return out


@pytest.mark.parametrize(("model", "quality"), _jpeg_bar_rungs())
def test_effort_1_keeps_colours_as_jpeg_q10_does(model, quality, jpeg_q10):
    import engine
    with engine.Codec(quality=quality, model=model, backend="torch", effort=1) as codec:
        ours = colour_suite.suite(lambda ims: colour_suite.codec_roundtrip(codec, ims))
    for kind in ("flat", "discs"):
        for stat in ("mean", "worst"):
            assert ours[kind][stat] <= jpeg_q10[kind][stat], (kind, stat, ours[kind], "JPEG q10:", jpeg_q10[kind])


DITHERING_MODEL = "small16v3"


def _dithering_rungs() -> list:
    if not checkpoint.installed(DITHERING_MODEL):
        return [pytest.param(DITHERING_MODEL, 0, marks=pytest.mark.skip(reason=f"{DITHERING_MODEL} is not installed"))]
    return _rungs(DITHERING_MODEL)


@pytest.mark.parametrize(("model", "quality"), _dithering_rungs())
def test_the_dithering_model_is_truer_at_effort_0(model, quality, jpeg_q10):
    """small16v3, the model whose colour codes are dithered (engine/net/model.py c_dither):
    at effort 0 it holds the suite's thresholds, and from q3 up its flat patches keep their
    colour as JPEG quality 10 does (measured flat 1.06 / 2.38 at q3 against 1.10 / 4.04; the
    default small16v2 scores 1.25 / 3.38 there).  Its discs do not yet (0.75..1.04 mean
    against JPEG's 0.64): README "Colour"."""
    import engine
    with engine.Codec(quality=quality, model=model, backend="torch") as codec:
        ours = colour_suite.suite(lambda ims: colour_suite.codec_roundtrip(codec, ims))
    for kind in ("flat", "discs"):
        for stat in ("mean", "worst"):
            assert ours[kind][stat] <= colour_suite.THRESHOLDS[kind][stat], (kind, ours[kind])
    if quality >= 3:
        for stat in ("mean", "worst"):
            assert ours["flat"][stat] <= jpeg_q10["flat"][stat], (stat, ours["flat"], "JPEG q10:", jpeg_q10["flat"])


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


def test_training_lab_matches_scikit_image():
    """engine.io.color.rgb_to_lab (training's differentiable ΔE76 term) is CIELAB as
    scikit-image computes it, within its rounded sRGB matrix (< 0.05 ΔE)."""
    import torch
    from skimage.color import rgb2lab

    from engine.io.color import rgb_to_lab
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[0, :, 0, :3] = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    ours = rgb_to_lab(x).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - rgb2lab(x.permute(0, 2, 3, 1).numpy(), channel_axis=-1)).max() < 0.05


def test_colour_probe_matches_the_codec_and_refinement_never_loses():
    """bench.colour_probe splits the decode into the two streams by hand: its plain decode
    is the codec's effort-0 decode (within a level: the codec's own float path), and its
    refined colour codes are kept only where they lower the RGB error."""
    import engine
    from bench import colour_probe
    images = colour_suite.discs()[:4]
    q = checkpoint.resolve(checkpoint.DEFAULT_MODEL)
    net = checkpoint.load_net(q)
    for prm in net.parameters():
        prm.requires_grad_(False)
    got = colour_probe.probe(net, images, steps=(0, 4))
    with engine.Codec(quality=q.quality, backend="torch") as codec:
        want = colour_suite.codec_roundtrip(codec, images)
    for a, b in zip(got["decoded"], want):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    for o, d, r in zip(images, got["decoded"], got["colour codes refined, 4 steps"]):
        err = [float(((x.astype(float) - o) ** 2).mean()) for x in (d, r)]
        assert err[1] <= err[0] + 1.0     # 8-bit rounding of two float decodes
