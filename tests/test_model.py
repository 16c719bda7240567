import json

import numpy as np
import pytest
import torch

from engine import importance
from engine.io.color import rgb_to_ycbcr, ycbcr_to_rgb
from engine.net.model import CONFIGS, CodecNet, binarize


def test_ycbcr_round_trip_and_known_values():
    x = torch.rand(2, 3, 7, 5, dtype=torch.float64)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-12)
    # BT.601 full range: white -> (1, .5, .5), pure red -> Y = .299, Cr = 1.0
    w = rgb_to_ycbcr(torch.ones(1, 3, 1, 1, dtype=torch.float64)).flatten()
    assert torch.allclose(w, torch.tensor([1.0, 0.5, 0.5], dtype=torch.float64), atol=1e-9)
    r = rgb_to_ycbcr(torch.tensor([1.0, 0, 0], dtype=torch.float64).view(1, 3, 1, 1)).flatten()
    assert abs(r[0] - 0.299) < 1e-9 and abs(r[2] - 1.0) < 1e-9


@pytest.mark.parametrize("n,L", [(60, 16), (15, 4)])
def test_mask_convention_at_level_edges(n, L):
    g = n // (L - 1)
    # p exactly at k/L is level k; just below is level k-1; p = 1 is level L-1
    ks = torch.arange(L, dtype=torch.float64)
    p = torch.cat([ks / L, ks[1:] / L - 1e-9, torch.tensor([1.0, 0.0])]).view(1, 1, 1, -1)
    q = importance.quantize_levels(p, L).flatten()
    expect = torch.cat([ks, ks[1:] - 1, torch.tensor([L - 1.0, 0.0])]).long()
    assert torch.equal(q, expect)
    m = importance.channel_mask(q.view(1, 1, 1, -1), n, L)[0, :, 0, :]  # (n, locations)
    kept = m.sum(0).long()
    assert torch.equal(kept, q * g)
    # kept channels are always a prefix
    for j in range(m.shape[1]):
        k = int(kept[j])
        assert m[:k, j].all() and not m[k:, j].any()
    assert kept[q == 0].eq(0).all() and kept[q == L - 1].eq(n).all()


def test_soft_mask_forward_equals_hard_and_has_gradient():
    p = torch.rand(2, 1, 3, 4, requires_grad=True)
    m = importance.soft_mask(p, 60, 16)
    hard = importance.channel_mask(importance.quantize_levels(p, 16), 60, 16)
    assert torch.equal(m.detach(), hard)
    m.sum().backward()
    assert p.grad.abs().sum() > 0


def test_binarizer_forward_and_straight_through():
    x = torch.tensor([0.1, 0.5, 0.50001, 0.9], requires_grad=True)
    y = binarize(x)
    assert y.tolist() == [0.0, 0.0, 1.0, 1.0]
    (y * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_gradient_reaches_encoder_through_binarizer_and_importance_map():
    torch.manual_seed(0)
    net = CodecNet(CONFIGS["tiny"])
    x = torch.rand(2, 3, 32, 32)
    rec, m, m0 = net(x)
    ((rec - x).abs().mean() + net.rate_bpp(m0)).backward()
    enc = net.encoder
    assert enc.y[1].weight.grad.abs().sum() > 0          # first Y conv: through binarizer
    assert enc.imp[-1].weight.grad.abs().sum() > 0       # importance map head
    assert enc.c[1].weight.grad.abs().sum() > 0          # CbCr encoder


def test_decoder_matches_training_forward():
    """The deployable Decoder (hard mask from levels) equals the training path."""
    torch.manual_seed(1)
    net = CodecNet(CONFIGS["tiny"]).eval()
    x = torch.rand(1, 3, 48, 32)
    with torch.no_grad():
        rec, _, _ = net(x)
        e, p, ec = net.encoder(x)
        q = importance.quantize_levels(p, net.cfg.levels).float()
        rec2 = net.decoder((e > 0.5).float(), q, (ec > 0.5).float())
    assert torch.allclose(rec, rec2, atol=1e-6)


@pytest.mark.parametrize("distortion,lam", [("l1", 1.0), ("mse", 0.05)])
def test_training_steps_lower_loss_on_fixed_batch(distortion, lam):
    from engine.net.train import loss_fn

    class A:
        gamma, target_bpp, delta_e = 1.0, 0.3, 0.0
    A.distortion = distortion

    torch.manual_seed(0)
    net = CodecNet(CONFIGS["tiny"])
    opt = torch.optim.AdamW(net.parameters(), 3e-3)
    x = torch.nn.functional.interpolate(torch.rand(4, 3, 4, 4), size=32, mode="bilinear")
    losses = []
    for _ in range(40):
        rec, m, m0 = net(x)
        loss = loss_fn(net, rec, x, m, m0, A, lam)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:3]), losses


def test_a_colour_encoder_that_sees_y_warm_starts_to_the_same_codes():
    """small16y's CbCr encoder also takes Y (issue #29).  Widened from a Y-blind network
    (widen_state_dict zeroes the new inputs) it computes the same codes, and the configs
    before it keep their JSON (a shipped model's fingerprint hashes it)."""
    from engine.net.model import ModelConfig, widen_state_dict
    torch.manual_seed(0)
    blind, seeing = CodecNet(CONFIGS["small16"]).eval(), CodecNet(CONFIGS["small16y"]).eval()
    sd, widened = widen_state_dict(blind.state_dict(), seeing.state_dict())
    assert widened == ["encoder.c.1.weight"]
    seeing.load_state_dict(sd)
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        for a, b in zip(blind.encoder.features(x), seeing.encoder.features(x)):
            assert torch.equal(a, b)
        # once its Y weights are non-zero, the colour codes follow Y
        seeing.encoder.c[1].weight[:, 8:] += 0.5
        y2 = x.clone()
        y2[:, :1] = 1 - y2[:, :1]
        assert not torch.equal(seeing.encoder.features(y2)[2], seeing.encoder.features(x)[2])
        assert torch.equal(blind.encoder.features(y2)[2], blind.encoder.features(x)[2])
    assert "c_sees_y" not in CONFIGS["small16"].to_json()
    assert ModelConfig.from_dict(json.loads(CONFIGS["small16y"].to_json())) == CONFIGS["small16y"]


def test_dithering_encoder_warm_starts_equal_and_can_vary_codes_on_a_flat_image():
    """small16d's CbCr encoder also sees its block's phase (engine/net/model.py block_phase).
    Warm-started from small16 it computes the same codes; once the phase weights are non-zero,
    a flat image's neighbouring blocks can get different codes (a translation-equivariant
    encoder gives them all the same one), and the phase repeats every 2 blocks."""
    from engine.net.model import ModelConfig, block_phase, widen_state_dict
    torch.manual_seed(0)
    plain, dith = CodecNet(CONFIGS["small16"]).eval(), CodecNet(CONFIGS["small16d"]).eval()
    sd, widened = widen_state_dict(plain.state_dict(), dith.state_dict())
    assert widened == ["encoder.c.1.weight"]
    dith.load_state_dict(sd)
    x = torch.rand(2, 3, 48, 64)
    flat = torch.full((1, 3, 320, 320), 0.3)    # blocks 6..13 lie beyond the encoder's reach (88 px) of the edges
    with torch.no_grad():
        for a, b in zip(plain.encoder.features(x), dith.encoder.features(x)):
            assert torch.equal(a, b)
        dith.encoder.c[1].weight[:, 8:] += 0.5
        ec = dith.encoder.features(flat)[2][0, :, 6:-6, 6:-6]      # the interior blocks
        ec0 = plain.encoder.features(flat)[2][0, :, 6:-6, 6:-6]
    assert torch.equal(ec0, ec0[:, :1, :1].expand_as(ec0))          # constant without the phase
    assert not torch.equal(ec[:, 0, 0], ec[:, 0, 1]) and not torch.equal(ec[:, 0, 0], ec[:, 1, 0])
    assert torch.allclose(ec[:, :2, :2], ec[:, 2:4, 2:4])
    ph = block_phase(flat)
    assert ph.shape == (1, 2, 320, 320) and set(ph.unique().tolist()) == {-0.5, 0.5}
    assert torch.equal(ph[..., :16, :16], ph[..., 32:48, 32:48]) and not torch.equal(ph[..., :16, :16], ph[..., 16:32, :16])
    assert "c_dither" not in CONFIGS["small16"].to_json()
    assert ModelConfig.from_dict(json.loads(CONFIGS["small16d"].to_json())) == CONFIGS["small16d"]
