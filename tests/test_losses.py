"""Tests of medlsdm.losses."""

from __future__ import annotations

import logging

import pytest
import torch

from medlsdm.errors import DataError
from medlsdm.models.feature_nets.vgg import vgg16_features
from medlsdm.training.losses import (
    PerceptualLoss,
    VQGANLoss,
    disc_weight,
    feature_matching_loss,
    hinge_d_loss,
    hinge_g_loss,
    random_slices,
)
from medlsdm.training.vqgan import frozen

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hinge_losses_closed_form():
    real = torch.tensor([2.0, 0.5])
    fake = torch.tensor([-2.0, 0.5])
    # real: relu(1-2)=0, relu(1-.5)=.5 → .25; fake: relu(1-2)=0, relu(1+.5)=1.5 → .75
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.25 + 0.75))
    assert hinge_d_loss(torch.ones(3), -torch.ones(3)).item() == 0.0  # margins met
    assert hinge_g_loss(torch.tensor([1.0, -3.0])).item() == pytest.approx(1.0)


def test_feature_matching_closed_form():
    real = [torch.zeros(2, 3), torch.ones(2, 1), torch.zeros(1)]
    fake = [torch.full((2, 3), 2.0), torch.full((2, 1), 4.0), torch.full((1,), 100.0)]  # logits ignored
    assert feature_matching_loss(real, fake).item() == pytest.approx((2.0 + 3.0) / 2)


def test_delayed_start():
    assert [disc_weight(s, 3) for s in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    torch.manual_seed(0)
    loss = VQGANLoss(l1_weight=2.0, disc_start=3, disc_channels=4, disc_layers=1)
    x = torch.rand(2, 1, 4, 8, 8)
    x_hat = x + 0.1
    commit = torch.tensor(0.5)
    before, logs = loss.generator_loss(x, x_hat, commit, step=2)
    assert before.item() == pytest.approx(2.0 * 0.1 + 0.5, rel=1e-5)
    assert not {"g_2d", "g_3d", "feat_match"} & set(logs)
    after, logs = loss.generator_loss(x, x_hat, commit, step=3)
    assert {"g_2d", "g_3d", "feat_match"} <= set(logs)
    assert after.item() != pytest.approx(before.item())
    d_before, _ = loss.discriminator_loss(x, x_hat, step=2)
    d_after, _ = loss.discriminator_loss(x, x_hat, step=3)
    assert d_before.item() == 0.0 and d_after.item() > 0.0


def test_generator_loss_leaves_frozen_discriminators_alone():
    torch.manual_seed(0)
    loss = VQGANLoss(disc_start=0, disc_channels=4, disc_layers=1)
    x = torch.rand(1, 1, 4, 8, 8)
    x_hat = (x + 0.1).requires_grad_(True)
    with frozen(loss.disc2d, loss.disc3d):
        total, _ = loss.generator_loss(x, x_hat, torch.tensor(0.0), step=0)
    total.backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0
    assert all(p.grad is None and p.requires_grad for d in loss.discriminators() for p in d.parameters())
    d_loss, _ = loss.discriminator_loss(x, x_hat, step=0)
    d_loss.backward()
    assert all(p.grad is not None for d in loss.discriminators() for p in d.parameters())


def test_random_slices():
    x = torch.arange(2 * 1 * 3 * 2 * 2, dtype=torch.float32).view(2, 1, 3, 2, 2)
    s = random_slices(x, indices=torch.tensor([2, 0]))
    assert torch.equal(s[0], x[0, :, 2]) and torch.equal(s[1], x[1, :, 0])
    g = torch.Generator().manual_seed(1)
    assert random_slices(x, generator=g).shape == (2, 1, 2, 2)


def _weights(path, width=1 / 16):
    torch.manual_seed(0)
    torch.save(vgg16_features(width).state_dict(), path)  # torchvision's vgg16().features layout
    return path


def test_perceptual_off_without_weights(caplog):
    with caplog.at_level(logging.INFO, logger="medlsdm.training.losses"):
        loss = VQGANLoss(perceptual_weight=4.0, perceptual_weights=None, gan_weight_2d=0, gan_weight_3d=0)
    assert loss.perceptual is None
    assert "perceptual loss off" in caplog.text


def test_perceptual_loss_with_local_weights(tmp_path):
    path = _weights(tmp_path / "vgg16_features.pt")
    p = PerceptualLoss(path, n_slices=2)
    assert sorted(vgg16_features().state_dict()) == sorted(torch.load(path))  # same keys as the real one
    x = torch.rand(2, 1, 4, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    assert p(x, x.clone(), generator=g).item() == pytest.approx(0.0, abs=1e-9)
    d = p(y, x, generator=g)
    assert d.item() > 0
    d.backward()
    assert y.grad.abs().sum() > 0
    assert all(q.grad is None and not q.requires_grad for q in p.net.parameters())
    assert p(x[:, :, 0], y[:, :, 0]).ndim == 0  # 2-D images work too
    loss = VQGANLoss(perceptual_weights=path, gan_weight_2d=0, gan_weight_3d=0)
    _, logs = loss.generator_loss(x, y, torch.tensor(0.0), step=0)
    assert logs["perceptual"] > 0


def test_perceptual_weights_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        PerceptualLoss(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"weight": torch.zeros(1)}, bad)
    with pytest.raises(DataError, match="0.weight"):
        PerceptualLoss(bad)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a torch file")
    with pytest.raises(DataError, match="junk.pt"):
        PerceptualLoss(junk)
