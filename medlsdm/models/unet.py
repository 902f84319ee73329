"""The latent denoiser of Med-LSDM: a UNet over VQ-GAN latents, conditioned on a label map.

The label condition is a one-hot map with one extra *null* channel: a real condition has
the null channel at 0; the null condition (used for classifier-free guidance) is all zeros
but the null channel, which is 1 everywhere. Training replaces the condition of a random
fraction of samples by the null condition (:func:`drop_condition`), so the model learns the
unconditional score it needs at sampling time: ``uncond + s · (cond − uncond)``.

A model built with ``extra_condition_channels = E`` also reads ``E`` extra float channels
(e.g. a Canny edge map for the 2-D cardiac model, :mod:`medlsdm.cardiac`), placed between the
one-hot map and the null channel: the null channel stays last, and the null condition zeroes
the extra channels too.

The condition, given at any resolution (usually the image's, 4× the latent's), is
area-averaged to each level's size, so a structure thinner than a latent voxel still
contributes its volume fraction instead of vanishing under nearest-neighbour resizing.
With ``conditioning="spade"`` (Med-LSDM) it sets the scale and shift of every norm of the
middle and decoder blocks; with ``"concat"`` it is concatenated to the input latent. A
SPADE model built with ``label_encoder_channels`` first encodes the condition with a small
convolutional net of that width (Med-LSDM's ``SegConv3D``) and area-averages the encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..errors import ConfigError
from .blocks import Downsample, LabelEncoder, ResBlock, Upsample, conv_nd, group_norm, one_hot
from .configuration import RenamedConfigMixin


def semantic_condition(labels: torch.Tensor, num_classes: int, extra: torch.Tensor | None = None) -> torch.Tensor:
    """Label map ``(B, *spatial)`` (class indices) → condition ``(B, K + E + 1, *spatial)``.

    Args:
        labels: class indices ``(B, *spatial)``.
        num_classes: ``K``.
        extra: optional float channels ``(B, E, *spatial)`` at the labels' resolution (models
            with ``extra_condition_channels = E``); they go between the one-hot map and the
            null channel.
    """
    onehot = one_hot(labels, num_classes)
    parts = [onehot]
    if extra is not None:
        if extra.shape[0] != onehot.shape[0] or extra.shape[2:] != onehot.shape[2:]:
            raise ConfigError(
                f"extra condition of shape {tuple(extra.shape)} does not match the label maps "
                f"{tuple(labels.shape)}: expected (B, E, *spatial) with the same B and spatial size"
            )
        parts.append(extra.to(device=onehot.device, dtype=onehot.dtype))
    return torch.cat(parts + [torch.zeros_like(onehot[:, :1])], dim=1)


def area_average(condition: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``condition`` ``(B, C, *spatial)`` averaged over blocks to ``size``: what the UNet reads
    of it at a feature map of that size. A UNet without a label encoder reads only such averages,
    so a condition averaged once to the latent's size (sizes that divide it: averages of block
    averages are block averages) gives it the same input as the full-resolution one."""
    pool = F.adaptive_avg_pool3d if len(size) == 3 else F.adaptive_avg_pool2d
    return pool(condition, tuple(size))


def null_condition(condition: torch.Tensor) -> torch.Tensor:
    """The null condition shaped like ``condition``: only the last (null) channel is 1."""
    null = torch.zeros_like(condition)
    null[:, -1] = 1.0
    return null


def drop_condition(condition: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each sample's condition by the null condition with probability ``p``."""
    if p <= 0:
        return condition
    drop = torch.rand(condition.shape[0], generator=generator, device="cpu") < p
    shape = (-1,) + (1,) * (condition.ndim - 1)
    return torch.where(drop.to(condition.device).view(shape), null_condition(condition), condition)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all spatial positions (PyTorch scaled-dot-product)."""

    def __init__(self, spatial_dims: int, channels: int, num_heads: int, num_groups: int = 8):
        super().__init__()
        if channels % num_heads:
            raise ConfigError(f"num_heads={num_heads} does not divide {channels} channels")
        self.num_heads = num_heads
        self.norm = group_norm(channels, num_groups)
        self.qkv = conv_nd(spatial_dims, channels, 3 * channels, 1)
        self.proj = conv_nd(spatial_dims, channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, -1).transpose(-1, -2)
        # contiguous (B, heads, N, C/heads): only then does the CPU use its flash kernel (memory
        # O(N)); the transposed view falls back to the N×N matrix (at the paper's 8×64×64 latent
        # with 8 heads and batch 2, 64 GiB; at 8192 tokens 5.5× slower)
        q, k, v = qkv.contiguous().unbind(1)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, C/heads)
        return x + self.proj(h.transpose(-1, -2).reshape(x.shape))


@dataclass
class SemanticUNetOutput(BaseOutput):
    """Output of :meth:`SemanticUNet.forward`, like diffusers' ``UNet2DConditionOutput``.

    Args:
        sample: the predicted noise (or velocity) ``(B, out_channels, *spatial)``.
    """

    sample: torch.Tensor = None


class SemanticUNet(RenamedConfigMixin, ModelMixin, ConfigMixin):
    """UNet denoiser for VQ-GAN latents with semantic (label map) conditioning.

    Args:
        spatial_dims: 2 or 3.
        in_channels: latent channels (the VQ-GAN's ``embedding_dim``).
        out_channels: predicted channels (noise or velocity), usually ``in_channels``.
        num_classes: classes of the label map (background included); the condition has
            ``num_classes + extra_condition_channels + 1`` channels (the last one is the
            null condition).
        channels: channels per level; each level but the last halves the spatial size.
        attention_levels: self-attention after the blocks of these levels (coarse ones).
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        norm_num_groups: GroupNorm groups (``num_groups`` in configs saved before the
            rename; they still load).
        num_heads: attention heads.
        conditioning: ``"spade"`` (middle and decoder norms) or ``"concat"`` (input).
        dropout: dropout inside the residual blocks.
        extra_condition_channels: float condition channels besides the one-hot map (e.g. 1
            for an edge map); 0 for a purely semantic model.
        label_encoder_channels: with ``conditioning="spade"``, encode the condition with a
            :class:`~medlsdm.models.blocks.LabelEncoder` of this width (Med-LSDM's
            ``SegConv3D``, the paper table's "#channels") before the SPADE norms read it;
            ``None`` (the default, and models saved before the option): SPADE reads the
            condition directly.
    """

    _renamed_config = {"num_groups": "norm_num_groups"}

    @register_to_config
    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 8,
        out_channels: int = 8,
        num_classes: int = 9,
        channels: tuple[int, ...] = (64, 128, 256),
        attention_levels: tuple[bool, ...] = (False, True, True),
        num_res_blocks: int = 1,
        norm_num_groups: int = 8,
        num_heads: int = 4,
        conditioning: str = "spade",
        dropout: float = 0.0,
        extra_condition_channels: int = 0,
        label_encoder_channels: int | None = None,
    ):
        super().__init__()
        if conditioning not in ("spade", "concat"):
            raise ConfigError(f"conditioning must be 'spade' or 'concat', got {conditioning!r}")
        if len(attention_levels) != len(channels):
            raise ConfigError("attention_levels needs one entry per level of channels")
        self.downsampling = 2 ** (len(channels) - 1)
        if label_encoder_channels is not None and (conditioning != "spade" or label_encoder_channels < 1):
            raise ConfigError(
                f"label_encoder_channels={label_encoder_channels!r} needs conditioning='spade' "
                f"(got {conditioning!r}) and a width >= 1"
            )
        cond_ch = num_classes + extra_condition_channels + 1
        self.label_encoder = (
            LabelEncoder(spatial_dims, cond_ch, label_encoder_channels) if label_encoder_channels is not None else None
        )
        spade_ch = (label_encoder_channels or cond_ch) if conditioning == "spade" else None
        time_ch = 4 * channels[0]
        self.time_proj = Timesteps(channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(channels[0], time_ch)
        extra_in = cond_ch if conditioning == "concat" else 0
        self.conv_in = conv_nd(spatial_dims, in_channels + extra_in, channels[0])

        def block(cin, cout, spade):
            return ResBlock(
                spatial_dims,
                cin,
                cout,
                norm_num_groups,
                spade_ch if spade else None,
                time_channels=time_ch,
                dropout=dropout,
                zero_init_out=True,
            )

        def attention(level):
            return (
                SelfAttention(spatial_dims, channels[level], num_heads, norm_num_groups)
                if attention_levels[level]
                else nn.Identity()
            )

        self.down_blocks = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        prev = channels[0]
        for level, ch in enumerate(channels):
            self.down_blocks.append(
                nn.ModuleList([block(prev if i == 0 else ch, ch, False) for i in range(num_res_blocks)])
            )
            self.down_attn.append(attention(level))
            self.downsamplers.append(Downsample(spatial_dims, ch) if level < len(channels) - 1 else nn.Identity())
            prev = ch
        self.mid_block1 = block(channels[-1], channels[-1], True)
        self.mid_attn = SelfAttention(spatial_dims, channels[-1], num_heads, norm_num_groups)
        self.mid_block2 = block(channels[-1], channels[-1], True)
        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        prev = channels[-1]
        for level in reversed(range(len(channels))):
            ch = channels[level]
            blocks = [block(prev + ch, ch, True)] + [block(ch, ch, True) for _ in range(num_res_blocks)]
            self.up_blocks.append(nn.ModuleList(blocks))
            self.up_attn.append(attention(level))
            self.upsamplers.append(Upsample(spatial_dims, ch) if level > 0 else nn.Identity())
            prev = ch
        self.norm_out = group_norm(channels[0], norm_num_groups)
        self.conv_out = conv_nd(spatial_dims, channels[0], out_channels)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, condition: torch.Tensor, return_dict: bool = True
    ) -> SemanticUNetOutput | tuple[torch.Tensor]:
        """Predict noise (or velocity) for ``sample`` at ``timestep``.

        Args:
            sample: noisy latents ``(B, C, *spatial)``; spatial sizes divisible by
                ``2 ** (len(channels) - 1)``.
            timestep: one timestep for all samples or one per sample.
            condition: ``(B, num_classes + extra_condition_channels + 1, *any spatial)`` from
                :func:`semantic_condition` or :func:`null_condition`.
            return_dict: return a :class:`SemanticUNetOutput` (else the tuple ``(sample,)``).

        Returns:
            :class:`SemanticUNetOutput` with the prediction ``sample``, shaped like ``sample``.
        """
        cfg = self.config
        if any(s % self.downsampling for s in sample.shape[2:]):
            raise ConfigError(f"latent size {tuple(sample.shape[2:])} must be divisible by {self.downsampling}")
        expected = cfg.num_classes + cfg.extra_condition_channels + 1
        if condition.shape[1] != expected:
            raise ConfigError(
                f"condition has {condition.shape[1]} channels, expected num_classes + "
                f"extra_condition_channels + 1 = {expected}"
            )
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(sample.shape[0])
        temb = self.time_embedding(self.time_proj(t).to(sample.dtype))
        condition = condition.to(sample.dtype)
        if self.label_encoder is not None:
            condition = self.label_encoder(condition, tuple(sample.shape[2:]))
        cond_at = {}

        def cond(x):  # the condition area-averaged to x's spatial size (cached per size)
            size = tuple(x.shape[2:])
            if size not in cond_at:
                cond_at[size] = condition if tuple(condition.shape[2:]) == size else area_average(condition, size)
            return cond_at[size]

        h = sample if cfg.conditioning == "spade" else torch.cat([sample, cond(sample)], dim=1)
        h = self.conv_in(h)
        skips = []
        for blocks, attn, down in zip(self.down_blocks, self.down_attn, self.downsamplers):
            for blk in blocks:
                h = blk(h, temb=temb)
            h = attn(h)
            skips.append(h)
            h = down(h)
        h = self.mid_block1(h, cond(h), temb)
        h = self.mid_attn(h)
        h = self.mid_block2(h, cond(h), temb)
        for blocks, attn, up in zip(self.up_blocks, self.up_attn, self.upsamplers):
            h = torch.cat([h, skips.pop()], dim=1)
            for blk in blocks:
                h = blk(h, cond(h), temb)
            h = attn(h)
            h = up(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return SemanticUNetOutput(sample=out) if return_dict else (out,)
