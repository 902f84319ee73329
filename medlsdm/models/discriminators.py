"""PatchGAN discriminators (2-D on slices, 3-D on volumes) for the VQ-GAN.

A PatchGAN (Isola et al. 2017) scores overlapping patches instead of the whole image: a few
stride-2 4×4 convolutions, then two stride-1 3×3 convolutions down to one logit per patch.
It returns every intermediate feature map too, for the feature-matching loss.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..errors import ConfigError, DataError
from .blocks import conv_nd, group_norm


class PatchDiscriminator(ModelMixin, ConfigMixin):
    """PatchGAN discriminator returning its feature maps and its patch logits.

    The input's spatial sizes must be at least ``2 ** num_layers``. Normalisation is a
    GroupNorm (works with batch size 1 and under several processes, unlike BatchNorm).

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: image channels.
        channels: channels of the first layer; doubled after every downsampling layer
            (capped at ``8 * channels``).
        num_layers: number of stride-2 layers.
        norm_num_groups: GroupNorm groups.
    """

    @register_to_config
    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        channels: int = 64,
        num_layers: int = 3,
        norm_num_groups: int = 8,
    ):
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = [
            nn.Sequential(conv_nd(spatial_dims, in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2))
        ]
        prev = channels
        for i in range(1, num_layers):
            ch = channels * min(2**i, 8)
            layers.append(
                nn.Sequential(
                    conv_nd(spatial_dims, prev, ch, 4, stride=2, padding=1),
                    group_norm(ch, norm_num_groups),
                    nn.LeakyReLU(0.2),
                )
            )
            prev = ch
        ch = channels * min(2**num_layers, 8)
        layers.append(
            nn.Sequential(conv_nd(spatial_dims, prev, ch, 3), group_norm(ch, norm_num_groups), nn.LeakyReLU(0.2))
        )
        layers.append(conv_nd(spatial_dims, ch, 1, 3))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every layer; the last entry is the patch logits ``(B, 1, *patches)``."""
        need = 2**self.config.num_layers
        if x.ndim != self.config.spatial_dims + 2 or any(s < need for s in x.shape[2:]):
            raise DataError(
                f"{type(self).__name__}: expected (B, C, *spatial) with {self.config.spatial_dims} "
                f"spatial sizes >= {need}, got shape {tuple(x.shape)}"
            )
        feats = []
        h = x
        for layer in self.layers:
            h = layer(h)
            feats.append(h)
        return feats
