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


def test_ordered_dithering_of_the_colour_codes():
    """small16d binarizes each block's colour codes against its place in a 2x2 Bayer
    pattern (engine/net/model.py dither_offsets), folded into the encoder's output so that
    every later stage still binarizes at 0.5.  It takes small16's weights as they are; on a
    flat image, whose blocks all get the same code value from a convolutional encoder, the
    bits follow the pattern's thresholds, so a value between them is named by the share of
    1s in each 2x2 group."""
    from engine.net.model import ModelConfig, dither_offsets
    torch.manual_seed(0)
    plain, dith = CodecNet(CONFIGS["small16"]).eval(), CodecNet(CONFIGS["small16d"]).eval()
    dith.load_state_dict(plain.state_dict())
    spread = CONFIGS["small16d"].c_dither
    off = dither_offsets(torch.zeros(1, 1, 2, 2), spread)[0, 0]
    assert torch.allclose(off, spread * torch.tensor([[-0.375, 0.125], [0.375, -0.125]]))
    flat = torch.full((1, 3, 320, 320), 0.3)    # blocks 6..13 lie beyond the encoder's reach (88 px) of the edges
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        for img in (flat, x):
            v = plain.encoder.features(img)[2]
            h, w = v.shape[-2:]
            thresholds = 0.5 + off.repeat(h // 2 + 1, w // 2 + 1)[:h, :w]
            ec = dith.encoder.features(img)[2]
            assert torch.equal(ec > 0.5, v > thresholds)
            out = dith.encoder(img)[2]                                  # the runners' output
            assert out.min() >= 0 and out.max() <= 1 and torch.equal(out > 0.5, ec > 0.5)
        v = plain.encoder.features(flat)[2][0, :, 6:-6, 6:-6]
        assert torch.equal(v, v[:, :1, :1].expand_as(v))               # one code value on a flat region
        ec = dith.encoder.features(flat)[2][0, :, 6:-6, 6:-6] > 0.5
        assert torch.equal(ec[:, :2, :2], ec[:, 2:4, 4:6])              # the bits repeat every 2 blocks
        mid = (v[:, 0, 0] > 0.5 + spread * -0.375) & (v[:, 0, 0] < 0.5 + spread * 0.375)
        assert mid.any()
        assert all(len(set(ec[k, :2, :2].flatten().tolist())) == 2 for k in range(16) if mid[k])
    assert "c_dither" not in CONFIGS["small16"].to_json()
    assert ModelConfig.from_dict(json.loads(CONFIGS["small16d"].to_json())) == CONFIGS["small16d"]
