"""A small U-Net that segments volumes: the downstream task of the synthetic data.

The segmentation network answers the question the paper asks of synthetic images: does a
network trained on real data still find the organs in them (and, the other way round, does a
network trained on synthetic data work on real ones)? It is deliberately small so it trains
on a CPU in minutes. Its bottleneck features also give an always-available feature distance
between image sets (:meth:`SegNet.features`), see :func:`medlsdm.evaluation.features.segnet_feature_distance`.

Layout (``len(channels)`` levels; every level but the last halves each spatial size)::

    conv_in → [ResBlock × n → skip → Downsample] × (L-1) → ResBlock × n (bottleneck)
            → [1×1 conv → ×2 nearest → concat skip → ResBlock × n] × (L-1) → norm → SiLU → conv_out

The decoder projects to the skip's width *before* upsampling (a 1×1 convolution at the coarse
level) instead of a 3×3 convolution after it: at full resolution that convolution would cost
as much as the rest of the level, and a CPU laptop is the target.

Spatial sizes must be divisible by ``2 ** (len(channels) - 1)`` (:func:`medlsdm.evaluation.segmentation.predict`
pads whole cases for you).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..errors import ConfigError, DataError
from .blocks import Downsample, ResBlock, conv_nd, group_norm


class SegNet(ModelMixin, ConfigMixin):
    """A 2-D or 3-D U-Net returning per-class logits.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: image channels.
        num_classes: output classes (background included).
        channels: channels of each resolution level; the last one is the bottleneck.
        num_res_blocks: residual blocks per level (encoder and decoder).
        norm_num_groups: GroupNorm groups.
    """

    @register_to_config
    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        channels: tuple[int, ...] = (16, 32, 64),
        num_res_blocks: int = 1,
        norm_num_groups: int = 8,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2 (background + one class), got {num_classes}")
        if len(channels) < 1 or min(channels) < 1 or num_res_blocks < 1:
            raise ConfigError(
                f"need at least one level of positive channels and num_res_blocks >= 1, "
                f"got channels={channels}, num_res_blocks={num_res_blocks}"
            )
        channels = tuple(int(c) for c in channels)
        g = norm_num_groups
        self.conv_in = conv_nd(spatial_dims, in_channels, channels[0], 3)
        self.down_blocks = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        prev = channels[0]
        for level, ch in enumerate(channels):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(spatial_dims, prev, ch, g))
                prev = ch
            self.down_blocks.append(nn.ModuleList(blocks))
            if level < len(channels) - 1:
                self.downsamplers.append(Downsample(spatial_dims, ch))
        self.upsamplers = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for ch in reversed(channels[:-1]):
            # 1×1 projection to the skip's width at the coarse level (cheap), then ×2 nearest
            self.upsamplers.append(conv_nd(spatial_dims, prev, ch, 1))
            blocks = [ResBlock(spatial_dims, 2 * ch, ch, g)]
            blocks += [ResBlock(spatial_dims, ch, ch, g) for _ in range(num_res_blocks - 1)]
            self.up_blocks.append(nn.ModuleList(blocks))
            prev = ch
        self.norm_out = group_norm(prev, g)
        self.conv_out = conv_nd(spatial_dims, prev, num_classes, 1)

    @property
    def downsample_factor(self) -> int:
        """Spatial sizes must be divisible by this."""
        return 2 ** (len(self.config.channels) - 1)

    def _check(self, x: torch.Tensor) -> None:
        dims = self.config.spatial_dims
        if x.ndim != dims + 2 or x.shape[1] != self.config.in_channels:
            raise DataError(
                f"SegNet expects (B, {self.config.in_channels}, {'D, ' if dims == 3 else ''}H, W), got {tuple(x.shape)}"
            )
        f = self.downsample_factor
        if any(s % f for s in x.shape[2:]):
            raise DataError(f"SegNet: spatial size {tuple(x.shape[2:])} is not divisible by {f}")

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.conv_in(x)
        skips = []
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block(h)
            if level < len(self.downsamplers):
                skips.append(h)
                h = self.downsamplers[level](h)
        return h, skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes, *spatial)`` of images ``(B, in_channels, *spatial)``."""
        self._check(x)
        h, skips = self._encode(x)
        for up, blocks in zip(self.upsamplers, self.up_blocks):
            h = F.interpolate(up(h), scale_factor=2.0, mode="nearest")
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool of the bottleneck: ``(B, channels[-1])``."""
        self._check(x)
        h, _ = self._encode(x)
        return h.flatten(2).mean(-1)
