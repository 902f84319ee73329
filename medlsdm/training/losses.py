"""VQ-GAN losses: L1, optional perceptual loss on 2-D slices, PatchGAN hinge + feature matching.

The generator loss of Med-LSDM's VQ-GAN is::

    l1_weight · |x − x̂|  +  commitment  +  perceptual_weight · P(x, x̂)
      + w_d(step) · (gan_weight_2d · G2d + gan_weight_3d · G3d
                     + feat_weight · (FM2d + FM3d))

with hinge adversarial losses from a 2-D PatchGAN on random depth slices and a 3-D
PatchGAN on the volume; ``w_d(step)`` is 0 before ``disc_start`` steps (delayed start) and 1
after. Nothing is downloaded: the perceptual loss is on only when the user passes a local
VGG16 weights file (see :class:`PerceptualLoss`).
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from ..models.discriminators import PatchDiscriminator
from ..models.feature_nets.vgg import load_vgg16_features, vgg16_taps

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# elementary losses
# --------------------------------------------------------------------------------------
def l1_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error."""
    return (x - y).abs().mean()


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ``½ (mean relu(1 − D(x)) + mean relu(1 + D(x̂)))``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss ``− mean D(x̂)``."""
    return -logits_fake.mean()


def feature_matching_loss(feats_real: list[torch.Tensor], feats_fake: list[torch.Tensor]) -> torch.Tensor:
    """Mean over the discriminator layers (logits excluded) of ``L1(f(x̂), sg(f(x)))``."""
    pairs = list(zip(feats_real[:-1], feats_fake[:-1]))
    if not pairs:
        return feats_fake[-1].new_zeros(())
    return sum(l1_loss(fake, real.detach()) for real, fake in pairs) / len(pairs)


def disc_weight(step: int, disc_start: int) -> float:
    """Adversarial weight at ``step``: 0 before ``disc_start`` (delayed start), then 1."""
    return 0.0 if step < disc_start else 1.0


def random_slices(
    x: torch.Tensor, generator: torch.Generator | None = None, indices: torch.Tensor | None = None
) -> torch.Tensor:
    """One random depth slice per volume: ``(B, C, D, H, W)`` → ``(B, C, H, W)``.

    Pass the same ``indices`` (or the same seeded ``generator``) to slice a real and a
    reconstructed batch at the same depths.
    """
    if indices is None:
        indices = torch.randint(0, x.shape[2], (x.shape[0],), generator=generator)
    idx = indices.to(x.device).view(-1, 1, 1, 1, 1).expand(-1, x.shape[1], 1, *x.shape[3:])
    return x.gather(2, idx).squeeze(2)


# --------------------------------------------------------------------------------------
# perceptual loss
# --------------------------------------------------------------------------------------
class PerceptualLoss(nn.Module):
    """LPIPS-style perceptual distance on 2-D slices, from a local VGG16 weights file.

    The weights file is a state_dict of torchvision's ``vgg16().features``
    (:func:`~medlsdm.models.feature_nets.vgg.load_vgg16_features` says how to make one).
    The loss takes ``n_slices`` random depth slices of each volume, repeats the grey channel
    to RGB, applies the ImageNet normalisation, and averages (over layers, positions and
    slices) the squared difference of channel-normalised activations at relu1_2 … relu5_3
    (LPIPS without its learned linear heads). The network is frozen.

    Args:
        weights_path: the state_dict file.
        n_slices: slices per volume per call.
    """

    def __init__(self, weights_path: str | os.PathLike, n_slices: int = 1):
        super().__init__()
        self.net = load_vgg16_features(weights_path)
        self.n_slices = n_slices
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def train(self, mode: bool = True):  # the trunk always stays in eval mode
        super().train(mode)
        self.net.eval()
        return self

    def _features(self, img: torch.Tensor) -> list[torch.Tensor]:
        if img.shape[1] == 1:
            img = img.repeat(1, 3, 1, 1)
        elif img.shape[1] != 3:
            raise DataError(f"perceptual loss needs 1 or 3 channels, got shape {tuple(img.shape)}")
        return vgg16_taps(self.net, ((img + 1) / 2 - self.mean) / self.std)

    def forward(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Distance between ``x`` and ``y`` in [-1, 1]: 2-D ``(B, C, H, W)`` or 3-D volumes."""
        if x.ndim == 5:
            idx = torch.randint(0, x.shape[2], (self.n_slices, x.shape[0]), generator=generator)
            x = torch.cat([random_slices(x, indices=i) for i in idx])
            y = torch.cat([random_slices(y, indices=i) for i in idx])
        fx, fy = self._features(x), self._features(y)
        return sum(((a - b) ** 2).sum(1).mean() for a, b in zip(fx, fy)) / len(fx)


def _split(feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Features of ``disc(cat([real, fake]))`` → (real features, fake features)."""
    pairs = [f.chunk(2) for f in feats]
    return [a for a, _ in pairs], [b for _, b in pairs]


# --------------------------------------------------------------------------------------
# the VQ-GAN loss
# --------------------------------------------------------------------------------------
class VQGANLoss(nn.Module):
    """Generator and discriminator losses of the VQ-GAN, with its two PatchGANs.

    The discriminators are submodules (``disc2d``, ``disc3d``; ``None`` when their weight is
    0). Call :meth:`generator_loss` with the discriminators frozen and :meth:`discriminator_loss`
    with the reconstruction detached; the training step does both. Each discriminator sees
    real and reconstructed inputs in one batch (``cat``), which is equivalent (GroupNorm is
    per sample) and needs a single forward pass under several processes.

    Args:
        spatial_dims: 3 for volumes (2-D slice + 3-D volume PatchGANs) or 2 for images
            (one 2-D PatchGAN).
        in_channels: image channels.
        l1_weight: weight of the L1 reconstruction loss.
        perceptual_weight: weight of the perceptual loss (ignored without ``perceptual_weights``).
        perceptual_weights: local VGG16 features state_dict; ``None`` turns the loss off.
        gan_weight_2d: weight of the 2-D (slice) PatchGAN generator loss.
        gan_weight_3d: weight of the 3-D (volume) PatchGAN generator loss.
        feat_weight: weight of the feature-matching loss.
        disc_start: optimiser step from which the adversarial terms are on.
        disc_channels: channels of the first discriminator layer.
        disc_layers: stride-2 layers of each discriminator.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        l1_weight: float = 4.0,
        perceptual_weight: float = 4.0,
        perceptual_weights: str | os.PathLike | None = None,
        gan_weight_2d: float = 1.0,
        gan_weight_3d: float = 1.0,
        feat_weight: float = 4.0,
        disc_start: int = 10_000,
        disc_channels: int = 64,
        disc_layers: int = 3,
    ):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.l1_weight = l1_weight
        self.gan_weight_2d = gan_weight_2d
        self.gan_weight_3d = gan_weight_3d if spatial_dims == 3 else 0.0
        self.feat_weight = feat_weight
        self.disc_start = disc_start
        if perceptual_weights is None or perceptual_weight == 0:
            self.perceptual = None
            self.perceptual_weight = 0.0
            if perceptual_weights is None and perceptual_weight:
                log.info("perceptual loss off: no VGG16 weights file given (perceptual_weights=None)")
        else:
            self.perceptual = PerceptualLoss(perceptual_weights)
            self.perceptual_weight = perceptual_weight
            log.info("perceptual loss on: VGG16 features from %s", perceptual_weights)
        self.disc2d = PatchDiscriminator(2, in_channels, disc_channels, disc_layers) if self.gan_weight_2d > 0 else None
        self.disc3d = PatchDiscriminator(3, in_channels, disc_channels, disc_layers) if self.gan_weight_3d > 0 else None

    @property
    def has_discriminators(self) -> bool:
        return self.disc2d is not None or self.disc3d is not None

    def discriminators(self) -> list[PatchDiscriminator]:
        return [d for d in (self.disc2d, self.disc3d) if d is not None]

    def _slices(self, x, x_hat, generator):
        if self.spatial_dims == 2 or self.disc2d is None:
            return x, x_hat
        idx = torch.randint(0, x.shape[2], (x.shape[0],), generator=generator)
        return random_slices(x, indices=idx), random_slices(x_hat, indices=idx)

    def generator_loss(
        self,
        x: torch.Tensor,
        x_hat: torch.Tensor,
        commitment: torch.Tensor,
        step: int,
        disc2d: nn.Module | None = None,
        disc3d: nn.Module | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total generator loss and its parts (floats, for the log).

        ``disc2d`` / ``disc3d`` override the submodules (pass the plain, frozen modules when
        the trainer wraps them for several processes).
        """
        disc2d = disc2d if disc2d is not None else self.disc2d
        disc3d = disc3d if disc3d is not None else self.disc3d
        rec = l1_loss(x_hat, x)
        loss = self.l1_weight * rec + commitment
        logs = {"l1": rec.item(), "commitment": commitment.item()}
        if self.perceptual is not None:
            p = self.perceptual(x_hat, x, generator=generator)
            loss = loss + self.perceptual_weight * p
            logs["perceptual"] = p.item()
        w = disc_weight(step, self.disc_start)
        if w > 0 and self.has_discriminators:
            adv = x.new_zeros(())
            fm = x.new_zeros(())
            for name, disc, weight, (real, fake) in (
                ("g_2d", disc2d, self.gan_weight_2d, self._slices(x, x_hat, generator)),
                ("g_3d", disc3d, self.gan_weight_3d, (x, x_hat)),
            ):
                if disc is None:
                    continue
                f_real, f_fake = _split(disc(torch.cat([real, fake])))
                g = hinge_g_loss(f_fake[-1])
                adv = adv + weight * g
                fm = fm + feature_matching_loss(f_real, f_fake)
                logs[name] = g.item()
            loss = loss + w * (adv + self.feat_weight * fm)
            logs["feat_match"] = fm.item()
        logs["loss_g"] = loss.item()
        return loss, logs

    def discriminator_loss(
        self,
        x: torch.Tensor,
        x_hat: torch.Tensor,
        step: int,
        disc2d: nn.Module | None = None,
        disc3d: nn.Module | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Hinge loss of the discriminators (``x_hat`` is detached here), times the delayed-start weight."""
        disc2d = disc2d if disc2d is not None else self.disc2d
        disc3d = disc3d if disc3d is not None else self.disc3d
        x_hat = x_hat.detach()
        loss = x.new_zeros(())
        logs: dict[str, float] = {}
        for name, disc, (real, fake) in (
            ("d_2d", disc2d, self._slices(x, x_hat, generator)),
            ("d_3d", disc3d, (x, x_hat)),
        ):
            if disc is None:
                continue
            f_real, f_fake = _split(disc(torch.cat([real, fake])))
            d = hinge_d_loss(f_real[-1], f_fake[-1])
            loss = loss + d
            logs[name] = d.item()
        loss = disc_weight(step, self.disc_start) * loss
        logs["loss_d"] = loss.item()
        return loss, logs
