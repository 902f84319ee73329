"""The VQ-GAN autoencoder of Med-LSDM: encoder, EMA vector quantiser, (SPADE) decoder.

The encoder compresses a volume ``(B, C, D, H, W)`` by ``2 ** (len(channels) - 1)`` per
axis (4× for the Med-LSDM channels 16→32→64) into ``embedding_dim`` latent channels; the
quantiser (:mod:`.quantizer`) snaps every latent vector to its nearest codebook entry; the
decoder maps the quantised latent back to a volume. With ``decoder_type="spade"`` every
decoder normalisation reads the one-hot label map (SPADE), as in Med-LSDM.

Entry points used by the latent diffusion model (those of diffusers' ``VQModel``, plus labels)::

    z = vqgan.encode(x).latents                          # pre-quantisation latent
    zq, indices, stats = vqgan.quantize(z)               # nearest codes (straight-through)
    x_hat = vqgan.decode(z, labels=labels).sample        # snap to the codebook and decode
    x_hat = vqgan.decode(zq, force_not_quantize=True, labels=labels).sample  # decode codes as they are
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.autoencoders.vq_model import VQEncoderOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from ..errors import ConfigError, DataError
from .blocks import SPADE, Downsample, ResBlock, Upsample, conv_nd, group_norm, one_hot
from .configuration import RenamedConfigMixin
from .quantizer import VectorQuantizerEMA


class Encoder(nn.Module):
    """Convolutional encoder: ``len(channels) - 1`` stride-2 downsamplings, then 1×1 to the latent."""

    def __init__(self, spatial_dims, in_channels, channels, num_res_blocks, embedding_dim, num_groups):
        super().__init__()
        self.conv_in = conv_nd(spatial_dims, in_channels, channels[0], 3)
        blocks: list[nn.Module] = []
        prev = channels[0]
        for level, ch in enumerate(channels):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(spatial_dims, prev, ch, num_groups))
                prev = ch
            if level < len(channels) - 1:
                blocks.append(Downsample(spatial_dims, ch))
        blocks.append(ResBlock(spatial_dims, prev, prev, num_groups))
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = group_norm(prev, num_groups)
        self.conv_out = conv_nd(spatial_dims, prev, embedding_dim, 1)
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                h = self._gradient_checkpointing_func(block, h)
            else:
                h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Mirror of :class:`Encoder`; with ``label_channels`` every norm is a :class:`SPADE`."""

    def __init__(
        self,
        spatial_dims,
        out_channels,
        channels,
        num_res_blocks,
        embedding_dim,
        num_groups,
        label_channels=None,
        spade_hidden_channels=32,
    ):
        super().__init__()
        rev = list(reversed(channels))
        self.spade = label_channels is not None
        self.conv_in = conv_nd(spatial_dims, embedding_dim, rev[0], 3)

        def res(cin, cout):
            return ResBlock(spatial_dims, cin, cout, num_groups, label_channels, spade_hidden_channels)

        blocks: list[nn.Module] = [res(rev[0], rev[0])]
        prev = rev[0]
        for level, ch in enumerate(rev):
            for _ in range(num_res_blocks):
                blocks.append(res(prev, ch))
                prev = ch
            if level < len(rev) - 1:
                blocks.append(Upsample(spatial_dims, ch))
        self.blocks = nn.ModuleList(blocks)
        if self.spade:
            self.norm_out = SPADE(spatial_dims, prev, label_channels, spade_hidden_channels, num_groups)
        else:
            self.norm_out = group_norm(prev, num_groups)
        self.conv_out = conv_nd(spatial_dims, prev, out_channels, 3)
        self.gradient_checkpointing = False

    def forward(self, z: torch.Tensor, seg: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv_in(z)
        for block in self.blocks:
            args = (h, seg) if isinstance(block, ResBlock) and self.spade else (h,)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                h = self._gradient_checkpointing_func(block, *args)
            else:
                h = block(*args)
        h = self.norm_out(h, seg) if self.spade else self.norm_out(h)
        return self.conv_out(F.silu(h))


@dataclass
class VQGANOutput(BaseOutput):
    """Output of :meth:`VQGAN.forward`.

    Args:
        reconstruction: the decoded volume, same shape as the input.
        commitment_loss: ``β · ‖z − sg(zq)‖²`` (0-d tensor).
        perplexity: ``exp`` of the entropy of the code frequencies in the batch.
        usage: fraction of the codebook used in the batch.
        indices: code index of every latent position ``(B, *latent_spatial)``.
    """

    reconstruction: torch.Tensor = None
    commitment_loss: torch.Tensor = None
    perplexity: torch.Tensor = None
    usage: torch.Tensor = None
    indices: torch.Tensor = None


class VQGAN(RenamedConfigMixin, ModelMixin, ConfigMixin):
    """Med-LSDM VQ-GAN autoencoder (2-D or 3-D) with an optional SPADE decoder.

    Input spatial sizes must be divisible by ``2 ** (len(channels) - 1)`` (by 4 for three
    channel levels): e.g. 16×32×32, 32×64×64 and the paper's 32×256×256 blocks. Images are
    expected in [-1, 1].

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: image channels.
        out_channels: reconstructed image channels.
        channels: feature channels of each resolution level; the encoder downsamples by 2
            between levels (Med-LSDM: ``(16, 32, 64)``, i.e. 4× per axis).
        num_res_blocks: residual blocks per level.
        embedding_dim: latent channels = codebook vector length (Med-LSDM: 8).
        num_embeddings: codebook size.
        norm_num_groups: GroupNorm groups (must divide every entry of ``channels``).
        decoder_type: ``"normal"`` (GroupNorm) or ``"spade"`` (label-conditioned SPADE norms);
            ``decoder`` in configs saved before the rename (they still load).
        num_classes: label classes (one-hot channels) read by the SPADE decoder.
        spade_hidden_channels: hidden channels of each SPADE label network.
        commitment_cost: commitment loss weight β.
        ema_decay: codebook EMA decay.
        restart_after: training passes after which an unused code is restarted (0: never).
        scaling_factor: factor applied to the latents before diffusion (≈ 1 / their std), as
            diffusers' ``AutoencoderKL.config.scaling_factor``; set by ``train_diffusion``.
        latents_mean / latents_std: per-channel statistics of the training latents (diffusers'
            names): when set, diffusion runs on ``(z − mean) · scaling_factor / std``
            (:meth:`to_diffusion`); ``None``: on ``z · scaling_factor``.
    """

    _supports_gradient_checkpointing = True
    _renamed_config = {"decoder": "decoder_type"}

    @register_to_config
    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: tuple[int, ...] = (16, 32, 64),
        num_res_blocks: int = 1,
        embedding_dim: int = 8,
        num_embeddings: int = 512,
        norm_num_groups: int = 8,
        decoder_type: str = "normal",
        num_classes: int = 0,
        spade_hidden_channels: int = 32,
        commitment_cost: float = 0.25,
        ema_decay: float = 0.99,
        restart_after: int = 20,
        scaling_factor: float = 1.0,
        latents_mean: tuple[float, ...] | None = None,
        latents_std: tuple[float, ...] | None = None,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if decoder_type not in ("normal", "spade"):
            raise ConfigError(f"decoder_type must be 'normal' or 'spade', got {decoder_type!r}")
        if decoder_type == "spade" and num_classes < 1:
            raise ConfigError("decoder_type='spade' needs num_classes >= 1 (the label map's classes)")
        if len(channels) < 1:
            raise ConfigError("channels must list at least one level")
        channels = tuple(int(c) for c in channels)
        self.downsample_factor = 2 ** (len(channels) - 1)
        self.encoder_net = Encoder(spatial_dims, in_channels, channels, num_res_blocks, embedding_dim, norm_num_groups)
        self.quantizer = VectorQuantizerEMA(
            num_embeddings, embedding_dim, decay=ema_decay, commitment_cost=commitment_cost, restart_after=restart_after
        )
        self.decoder = Decoder(
            spatial_dims,
            out_channels,
            channels,
            num_res_blocks,
            embedding_dim,
            norm_num_groups,
            label_channels=num_classes if decoder_type == "spade" else None,
            spade_hidden_channels=spade_hidden_channels,
        )

    # -- weights saved before the decoder was renamed (decoder_net.* keys) ----------------
    @staticmethod
    def _rename_legacy_keys(state_dict, prefix: str = "") -> None:
        old = prefix + "decoder_net."
        for key in [k for k in state_dict if k.startswith(old)]:
            state_dict[prefix + "decoder." + key[len(old) :]] = state_dict.pop(key)

    def _fix_state_dict_keys_on_load(self, state_dict) -> None:  # diffusers' from_pretrained
        super()._fix_state_dict_keys_on_load(state_dict)
        self._rename_legacy_keys(state_dict)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # torch's load_state_dict
        self._rename_legacy_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- checks --------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        dims = self.config.spatial_dims
        if x.ndim != dims + 2:
            raise DataError(
                f"expected a {dims + 2}-D tensor (B, C, {'D, ' if dims == 3 else ''}H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.config.in_channels:
            raise DataError(f"expected {self.config.in_channels} input channel(s), got shape {tuple(x.shape)}")
        f = self.downsample_factor
        if any(s % f for s in x.shape[2:]):
            raise DataError(
                f"spatial size {tuple(x.shape[2:])} is not divisible by {f} "
                f"(the VQ-GAN downsamples {f}x per axis); crop or pad the volume"
            )

    def _labels(self, labels: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        if self.config.decoder_type != "spade":
            return None
        if labels is None:
            raise ConfigError(
                "this VQ-GAN has a SPADE decoder: pass labels, class indices (B, *spatial) "
                "or one-hot (B, num_classes, *spatial)"
            )
        if not labels.is_floating_point():
            labels = one_hot(labels, self.config.num_classes)
        if labels.shape[1] != self.config.num_classes:
            raise DataError(
                f"one-hot labels have {labels.shape[1]} channels, the SPADE decoder expects "
                f"num_classes={self.config.num_classes}"
            )
        return labels.to(device=like.device, dtype=like.dtype)

    # -- entry points --------------------------------------------------------------------
    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> VQEncoderOutput | tuple[torch.Tensor]:
        """Pre-quantisation latent ``(B, embedding_dim, *spatial / factor)`` of ``x``, as diffusers'
        ``VQModel.encode``: ``VQEncoderOutput(latents=...)``, or ``(latents,)`` without ``return_dict``."""
        self._check_input(x)
        h = self.encoder_net(x)
        return VQEncoderOutput(latents=h) if return_dict else (h,)

    def _latent_stats(self, z: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(shift, scale) of :meth:`to_diffusion`, shaped to broadcast over ``z``'s channels."""
        c = self.config
        if c.latents_mean is None:
            return 0.0, c.scaling_factor
        shape = (1, -1) + (1,) * (z.ndim - 2)
        mean = torch.as_tensor(c.latents_mean, dtype=z.dtype, device=z.device).view(shape)
        std = torch.as_tensor(c.latents_std, dtype=z.dtype, device=z.device).view(shape)
        return mean, c.scaling_factor / std

    def to_diffusion(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latent → the diffusion model's space (standardised, see the class)."""
        shift, scale = self._latent_stats(z)
        return (z - shift) * scale

    def from_diffusion(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_diffusion`."""
        shift, scale = self._latent_stats(z)
        return z / scale + shift

    def quantize(self, z: torch.Tensor, update: bool | None = None):
        """Nearest codes of ``z``: ``(zq, indices, stats)``, see :meth:`VectorQuantizerEMA.forward`."""
        return self.quantizer(z, update=update)

    @apply_forward_hook
    def decode(
        self,
        h: torch.Tensor,
        force_not_quantize: bool = False,
        return_dict: bool = True,
        *,
        labels: torch.Tensor | None = None,
    ) -> DecoderOutput | tuple[torch.Tensor, torch.Tensor]:
        """Decode a latent to an image, as diffusers' ``VQModel.decode`` (plus ``labels``).

        Args:
            h: latent ``(B, embedding_dim, *latent_spatial)``.
            force_not_quantize: decode ``h`` as it is (e.g. codes from :meth:`quantize`);
                by default ``h`` is first snapped to the codebook (e.g. a diffusion sample),
                without updating it.
            return_dict: return a ``DecoderOutput`` (else the tuple ``(sample, commit_loss)``).
            labels: label map at image resolution, class indices ``(B, *spatial)`` or one-hot
                ``(B, num_classes, *spatial)``; required by the SPADE decoder, ignored by the
                normal one.

        Returns:
            ``DecoderOutput(sample=..., commit_loss=...)``: the image, and the commitment loss of
            the snapping (zeros ``(B,)`` with ``force_not_quantize``, as diffusers).
        """
        if force_not_quantize:
            quant, commit_loss = h, torch.zeros(h.shape[0], device=h.device, dtype=h.dtype)
        else:
            quant, _, stats = self.quantizer(h, update=False)
            commit_loss = stats["commitment_loss"]
        dec = self.decoder(quant, self._labels(labels, quant))
        return DecoderOutput(sample=dec, commit_loss=commit_loss) if return_dict else (dec, commit_loss)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, return_dict: bool = True):
        """Encode, quantise (updating the codebook in training mode) and decode ``x``.

        Args:
            x: images ``(B, in_channels, *spatial)`` in [-1, 1].
            labels: label maps for the SPADE decoder (see :meth:`decode`).
            return_dict: return a :class:`VQGANOutput` (else its fields as a tuple).
        """
        z = self.encode(x).latents
        zq, indices, stats = self.quantize(z)
        recon = self.decode(zq, force_not_quantize=True, labels=labels).sample
        out = VQGANOutput(recon, stats["commitment_loss"], stats["perplexity"], stats["usage"], indices)
        return out if return_dict else out.to_tuple()
