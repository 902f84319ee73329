"""Building blocks shared by the networks: convolutions, residual blocks and SPADE.

Every block takes ``spatial_dims`` (2 or 3) first, so the 3-D VQ-GAN and the 2-D cardiac
model are built from the same code. Tensors are channels-first: ``(B, C, H, W)`` or
``(B, C, D, H, W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, DataError


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that works around a CPU bfloat16 bug.

    With torch 2.13 (oneDNN) on CPU, the *weight gradient* of a bf16 3×3×3 stride-1
    convolution whose input depth is exactly 2 is wrong by up to 1e37 (seen in VQ-GAN
    training with ``mixed_precision="bf16"`` on 8-deep crops). Only under CPU autocast and
    for that depth, this layer computes in float32 instead; everything else is unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.shape[2] == 2 and torch.is_autocast_enabled("cpu"):
            with torch.autocast(device_type="cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def conv_nd(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int | None = None,
) -> nn.Module:
    """A 2-D or 3-D convolution; ``padding`` defaults to ``kernel_size // 2`` ("same" for odd kernels)."""
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    conv = nn.Conv2d if spatial_dims == 2 else Conv3d
    if padding is None:
        padding = kernel_size // 2
    return conv(in_channels, out_channels, kernel_size, stride=stride, padding=padding)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (bf16/fp16 autocast).

    The statistics of a nearly constant group are meaningless in 8-bit-mantissa bf16 and
    their gradient explodes; the result is cast back to the input dtype.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return super().forward(x.float()).to(x.dtype)


def group_norm(num_channels: int, num_groups: int, affine: bool = True) -> nn.GroupNorm:
    """:class:`GroupNorm32` with ``min(num_groups, num_channels)`` groups (must divide ``num_channels``)."""
    groups = min(num_groups, num_channels)
    if num_channels % groups:
        raise ConfigError(f"norm_num_groups={num_groups} does not divide the channel count {num_channels}")
    return GroupNorm32(groups, num_channels, eps=1e-6, affine=affine)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Integer label map ``(B, *spatial)`` or ``(B, 1, *spatial)`` → float one-hot ``(B, K, *spatial)``."""
    if labels.is_floating_point():
        raise DataError("one_hot expects an integer label map, got a floating point tensor")
    if labels.ndim >= 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"label values must lie in [0, {num_classes - 1}], found [{int(labels.min())}, {int(labels.max())}]"
        )
    out = F.one_hot(labels.long(), num_classes)
    return out.movedim(-1, 1).float()


def pad_to_multiple(x: torch.Tensor, factor: int) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Pad ``(B, C, *spatial)`` at the end of each spatial axis (edge values repeated) to a
    multiple of ``factor``; returns the padded tensor and the index that crops it back."""
    spatial = x.shape[2:]
    pads: list[int] = []
    for s in reversed(spatial):
        pads += [0, (-s) % factor]
    crop = (slice(None), slice(None), *(slice(0, s) for s in spatial))
    return (F.pad(x, pads, mode="replicate") if any(pads) else x), crop


class SPADE(nn.Module):
    """Spatially-adaptive normalisation (Park et al. 2019) with a GroupNorm.

    The features are normalised by a GroupNorm *without* learnable affine parameters; the
    scale γ and shift β come from the one-hot label map, resized (nearest neighbour) to the
    features' spatial size and passed through a small convolutional network:
    ``out = norm(x) * (1 + γ(seg)) + β(seg)``.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        num_channels: channels of the normalised features.
        label_channels: channels of the one-hot label map (number of classes).
        hidden_channels: channels of the shared convolution that reads the label map.
        num_groups: GroupNorm groups.
    """

    def __init__(
        self, spatial_dims: int, num_channels: int, label_channels: int, hidden_channels: int = 32, num_groups: int = 8
    ):
        super().__init__()
        self.norm = group_norm(num_channels, num_groups, affine=False)
        self.shared = nn.Sequential(conv_nd(spatial_dims, label_channels, hidden_channels, 3), nn.ReLU())
        self.gamma = conv_nd(spatial_dims, hidden_channels, num_channels, 3)
        self.beta = conv_nd(spatial_dims, hidden_channels, num_channels, 3)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        seg = F.interpolate(seg.to(x.dtype), size=x.shape[2:], mode="nearest")
        hidden = self.shared(seg)
        return self.norm(x) * (1 + self.gamma(hidden)) + self.beta(hidden)


class LabelEncoder(nn.Module):
    """Small convolutional net that encodes a one-hot label map (or condition) before SPADE.

    Med-LSDM's ``SegConv3D``: three 3×3(×3) convolutions, each followed by a ReLU, from
    ``in_channels`` through ``hidden_channels`` to ``out_channels`` (the paper table's
    "#channels"). After each hidden convolution the map is max-pooled by 2 while it is still at
    least twice the target size on every axis, so an image-resolution map reaches the latent
    resolution as in the original (two pools for the 4× VQ-GAN) and a map already at the
    target size is not pooled.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: channels of the label map (one-hot classes, plus any extra channels).
        out_channels: channels of the encoded map that the SPADE norms read.
        hidden_channels: widths of the hidden convolutions (the original: 64, 128).
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, hidden_channels: tuple[int, ...] = (64, 128)
    ):
        super().__init__()
        widths = (in_channels, *hidden_channels, out_channels)
        self.convs = nn.ModuleList(conv_nd(spatial_dims, a, b, 3) for a, b in zip(widths[:-1], widths[1:]))
        self.pool = nn.MaxPool2d(2) if spatial_dims == 2 else nn.MaxPool3d(2)

    def forward(self, seg: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        """Encode ``seg`` ``(B, in_channels, *spatial)``, pooling towards the spatial ``size``."""
        h = seg
        for i, conv in enumerate(self.convs):
            h = F.relu(conv(h))
            if i < len(self.convs) - 1 and all(s >= 2 * t for s, t in zip(h.shape[2:], size)):
                h = self.pool(h)
        return h


class ResBlock(nn.Module):
    """Residual block: (norm → SiLU → conv) twice plus a (1×1-projected) skip connection,
    optionally with SPADE norms and a timestep embedding (the diffusion UNet's block)::

        h = conv1(SiLU(norm1(x)))  [+ time_proj(SiLU(temb))]
        out = skip(x) + conv2(dropout(SiLU(norm2(h))))

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: input channels.
        out_channels: output channels; a 1×1 convolution projects the skip when they differ.
        norm_num_groups: GroupNorm groups.
        label_channels: when given, both norms are :class:`SPADE` norms reading a one-hot
            label map (or condition) with this many channels, and ``forward`` needs ``seg``.
        spade_hidden_channels: hidden channels of the SPADE label network.
        time_channels: when given, a timestep embedding of this size is added after the first
            convolution, and ``forward`` needs ``temb``.
        dropout: dropout before the second convolution.
        zero_init_out: start the second convolution at zero, so the block starts as its skip.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm_num_groups: int = 8,
        label_channels: int | None = None,
        spade_hidden_channels: int = 32,
        time_channels: int | None = None,
        dropout: float = 0.0,
        zero_init_out: bool = False,
    ):
        super().__init__()
        self.spade = label_channels is not None
        if self.spade:
            self.norm1 = SPADE(spatial_dims, in_channels, label_channels, spade_hidden_channels, norm_num_groups)
            self.norm2 = SPADE(spatial_dims, out_channels, label_channels, spade_hidden_channels, norm_num_groups)
        else:
            self.norm1 = group_norm(in_channels, norm_num_groups)
            self.norm2 = group_norm(out_channels, norm_num_groups)
        self.conv1 = conv_nd(spatial_dims, in_channels, out_channels, 3)
        self.time_proj = nn.Linear(time_channels, out_channels) if time_channels else None
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv_nd(spatial_dims, out_channels, out_channels, 3)
        if zero_init_out:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)
        self.skip = (
            nn.Identity() if in_channels == out_channels else conv_nd(spatial_dims, in_channels, out_channels, 1)
        )

    def _norm(self, norm: nn.Module, x: torch.Tensor, seg: torch.Tensor | None) -> torch.Tensor:
        return norm(x, seg) if self.spade else norm(x)

    def forward(
        self, x: torch.Tensor, seg: torch.Tensor | None = None, temb: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.conv1(F.silu(self._norm(self.norm1, x, seg)))
        if self.time_proj is not None:
            h = h + self.time_proj(F.silu(temb)).view(h.shape[0], -1, *(1,) * (h.ndim - 2))
        h = self.conv2(self.dropout(F.silu(self._norm(self.norm2, h, seg))))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve every spatial size with a stride-2 3×3 convolution (sizes must be even)."""

    def __init__(self, spatial_dims: int, channels: int):
        super().__init__()
        self.conv = conv_nd(spatial_dims, channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double every spatial size: nearest-neighbour interpolation, then a 3×3 convolution."""

    def __init__(self, spatial_dims: int, channels: int):
        super().__init__()
        self.conv = conv_nd(spatial_dims, channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
