"""The sampling plan of one :class:`~medlsdm.pipelines.pipeline_medlsdm.MedLSDMPipeline` call,
and the VQ-GAN's encoding and decoding in the plan's depth tiles.

The pipeline checks a call's arguments once and turns them into a :class:`SamplingPlan`: the
label maps it conditions on, the scheduler steps, the guidance scale, the generator and the
depth windows in *latent* slices. Denoising, encoding (for edits) and decoding read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .windows import tiled


def latent_windows(window: int | None, overlap: int | None, factor: int, step: int) -> tuple[int, int] | None:
    """Check ``window``/``overlap`` (label-map slices) and convert them to latent slices.

    Args:
        window: label slices per window, a positive multiple of ``step``; ``None``: no windows.
        overlap: label slices shared by neighbouring windows, a multiple of ``factor`` below
            ``window``; ``None``: a quarter of the window, in whole latent slices.
        factor: the VQ-GAN's downsampling (label slices per latent slice).
        step: the VQ-GAN × UNet downsampling.

    Returns:
        ``(window, overlap)`` in latent slices, or ``None``.
    """
    if window is None:
        return None
    window = int(window)
    if window < step or window % step:
        raise ConfigError(
            f"window={window} label slices must be a positive multiple of {step} (VQ-GAN × UNet downsampling)"
        )
    if overlap is None:
        overlap = max(factor, window // 4 // factor * factor) if factor < window else 0
    overlap = int(overlap)
    if overlap % factor or not 0 <= overlap < window:
        raise ConfigError(
            f"overlap={overlap} label slices must be a multiple of {factor} (the VQ-GAN's "
            f"downsampling) in 0…{window - 1} (less than the window)"
        )
    return window // factor, overlap // factor


@dataclass
class SamplingPlan:
    """One sampling call, its arguments checked and in latent units.

    Args:
        label_maps: the class-index label maps ``(B, *spatial)``, one per output sample.
        windows: ``(window, overlap)`` in latent slices (:func:`latent_windows`) for denoising,
            encoding and decoding in depth windows; ``None``: the whole depth at once.
        extra: the extra condition channels ``(B, E, *spatial)``, or ``None``.
        num_inference_steps: scheduler steps.
        guidance_scale: the classifier-free guidance scale.
        generator: the generator(s) of the noise.
        window_batch_size: windows per UNet call.
    """

    label_maps: torch.Tensor
    windows: tuple[int, int] | None = None
    extra: torch.Tensor | None = None
    num_inference_steps: int = 50
    guidance_scale: float = 1.0
    generator: torch.Generator | list[torch.Generator] | None = None
    window_batch_size: int = 1


def encode_tiles(vqgan, images: torch.Tensor, plan: SamplingPlan, device) -> torch.Tensor:
    """Images ``(B, 1, *spatial)`` → diffusion-space latents, encoded in the plan's depth tiles."""
    f = vqgan.downsample_factor

    def encode(start, stop):
        return vqgan.encode(images[:, :, start:stop].to(device, vqgan.dtype)).latents

    size, overlap = (plan.windows[0] * f, plan.windows[1] * f) if plan.windows is not None else (None, 0)
    return vqgan.to_diffusion(tiled(encode, images.shape[2], size, overlap, 1 / f))


def decode_tiles(vqgan, latents: torch.Tensor, plan: SamplingPlan) -> torch.Tensor:
    """Diffusion-space latents → images in [-1, 1] (unscale, snap to the codebook, decode with
    the plan's label maps), decoded in the plan's depth tiles."""
    z = vqgan.from_diffusion(latents)
    f = vqgan.downsample_factor

    def decode(start, stop):
        labels = plan.label_maps[:, start * f : stop * f].to(z.device)
        return vqgan.decode(z[:, :, start:stop].to(vqgan.dtype), labels=labels).sample

    size, overlap = plan.windows if plan.windows is not None else (None, 0)
    return tiled(decode, z.shape[2], size, overlap, f).clamp(-1, 1)
