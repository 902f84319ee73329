"""``MedLSDMPipeline``: label map in, volume out (a diffusers ``DiffusionPipeline``).

Components: ``vqgan`` (:class:`~medlsdm.models.vqgan.VQGAN`), ``unet``
(:class:`~medlsdm.models.unet.SemanticUNet`) and any diffusers ``scheduler``. Sampling runs
the scheduler on 5-D latents ``(B, C, d, h, w)`` (4-D for 2-D models), divides the result by
``latent_scale`` (computed on the training latents, stored in ``model_index.json``), snaps it
to the VQ-GAN codebook and decodes it — with the label map when the decoder is SPADE.

    pipe = MedLSDMPipeline.from_pretrained("runs/demo/pipeline")
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    out = pipe("label.nii.gz", num_inference_steps=25, guidance_scale=2.0,
               generator=torch.Generator().manual_seed(0))
    out.images  # (B, 1, D, H, W) float32 in [-1, 1]
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .errors import ConfigError, DataError
from .models.unet import SemanticUNet, null_condition, semantic_condition
from .models.vqgan import VQGAN

LabelInput = torch.Tensor | np.ndarray | str | os.PathLike | Sequence[str | os.PathLike]


@dataclass
class MedLSDMPipelineOutput(BaseOutput):
    """Synthetic volumes ``images`` ``(B, 1, *spatial)`` in [-1, 1] (numpy or torch), the
    label maps they were made from, and the label maps' affines (``None`` for arrays)."""

    images: np.ndarray | torch.Tensor
    labels: np.ndarray | torch.Tensor
    affines: list[np.ndarray | None]


class MedLSDMPipeline(DiffusionPipeline):
    """Semantic latent diffusion: synthesise volumes from label maps.

    Args:
        vqgan: the frozen VQ-GAN whose latent space the UNet denoises.
        unet: the label-conditioned latent denoiser.
        scheduler: any diffusers scheduler (DDPM, DDIM, DPM-Solver++, UniPC …).
        latent_scale: factor applied to VQ-GAN latents before diffusion (≈ 1 / their std).
        spacing: the voxel spacing (D, H, W) in mm the models were trained at, or ``None``.
    """

    model_cpu_offload_seq = "unet->vqgan"

    def __init__(self, vqgan: VQGAN, unet: SemanticUNet, scheduler, latent_scale: float = 1.0,
                 spacing: list | None = None):
        super().__init__()
        self.register_modules(vqgan=vqgan, unet=unet, scheduler=scheduler)
        self.register_to_config(latent_scale=float(latent_scale), spacing=list(spacing) if spacing is not None else None)

    # -- inputs --------------------------------------------------------------------------
    def load_labels(self, labels: LabelInput) -> tuple[torch.Tensor, list[np.ndarray | None]]:
        """Label maps → int64 tensor ``(B, *spatial)`` and their affines; checks they fit."""
        from .data.io import read_nifti, spacing_dhw

        dims = self.unet.config.spatial_dims
        affines: list[np.ndarray | None] = []
        if isinstance(labels, (str, os.PathLike)) or (
            isinstance(labels, (list, tuple)) and labels and isinstance(labels[0], (str, os.PathLike))
        ):
            paths = [labels] if isinstance(labels, (str, os.PathLike)) else list(labels)
            arrays = []
            for path in paths:
                array, affine = read_nifti(path, kind="label")
                self._check_labels(array, path, spacing=spacing_dhw(affine))
                arrays.append(array)
                affines.append(affine)
            if len({a.shape for a in arrays}) > 1:
                raise DataError(f"label maps of different shapes in one batch: {[a.shape for a in arrays]}")
            tensor = torch.as_tensor(np.stack(arrays)).long()
        else:
            tensor = torch.as_tensor(np.asarray(labels) if isinstance(labels, np.ndarray) else labels)
            if tensor.ndim == dims:
                tensor = tensor[None]
            if tensor.is_floating_point():
                if not torch.equal(tensor, tensor.round()):
                    raise DataError("label maps must hold integer class indices, got fractional values")
            tensor = tensor.long()
            for i, array in enumerate(tensor):
                self._check_labels(array.numpy(), f"label map #{i}")
            affines = [None] * tensor.shape[0]
        return tensor, affines

    def _check_labels(self, array: np.ndarray, name, spacing=None) -> None:
        cfg = self.unet.config
        factor = self.vqgan.downsample_factor * self.unet.downsampling
        if array.ndim != cfg.spatial_dims:
            raise DataError(f"{name}: expected a {cfg.spatial_dims}-D label map, got shape {array.shape}")
        if any(s % factor for s in array.shape):
            raise DataError(f"{name}: shape {array.shape} must be divisible by {factor} (VQ-GAN × UNet downsampling); crop or pad it")
        if array.min() < 0 or array.max() >= cfg.num_classes:
            raise DataError(f"{name}: class indices must lie in 0…{cfg.num_classes - 1} (the pipeline's classes), found {int(array.min())}…{int(array.max())}")
        trained = self.config.spacing
        if spacing is not None and trained is not None and not np.allclose(spacing, trained, rtol=0.1):
            raise DataError(f"{name}: voxel spacing {np.round(spacing, 2).tolist()} mm differs from the training spacing {trained} mm; preprocess it first (medlsdm preprocess)")

    # -- sampling ------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        labels: LabelInput,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_per_label: int = 1,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        extra_condition: torch.Tensor | np.ndarray | None = None,
    ):
        """Synthesise one volume per label map (``num_per_label`` each).

        Args:
            labels: class-index label maps: a tensor/array ``(B, *spatial)`` or one map, a
                NIfTI path, or a list of paths (their affines are returned with the images).
            num_inference_steps: scheduler steps.
            guidance_scale: classifier-free guidance ``s`` in ``uncond + s (cond − uncond)``;
                1 is purely conditional, 0 purely unconditional.
            generator: ``torch.Generator`` for the initial noise (and stochastic schedulers),
                or a list of them, one per output sample (label map × ``num_per_label``),
                so that each sample's noise does not depend on the rest of the batch.
            num_per_label: samples per label map.
            callback: called as ``callback(step_index, timestep, latents)`` after every step
                (latents in the diffusion space), e.g. for progressive-denoising figures.
            output_type: ``"np"`` (numpy) or ``"pt"`` (torch).
            extra_condition: the extra condition channels ``(B, E, *spatial)`` (or one map
                ``(E, *spatial)``) of a UNet with ``extra_condition_channels = E``, e.g. edge
                maps at the label maps' resolution.
        """
        label_maps, affines = self.load_labels(labels)
        label_maps = label_maps.repeat_interleave(num_per_label, dim=0)
        affines = [a for a in affines for _ in range(num_per_label)]
        device, dtype = self.unet.device, self.unet.dtype
        extra = None
        if extra_condition is not None:
            extra = torch.as_tensor(extra_condition, dtype=torch.float32)
            extra = (extra[None] if extra.ndim == label_maps.ndim else extra).repeat_interleave(num_per_label, dim=0)
        cond = semantic_condition(label_maps.to(device), self.unet.config.num_classes, extra).to(dtype)
        factor = self.vqgan.downsample_factor
        shape = (label_maps.shape[0], self.unet.config.in_channels, *(s // factor for s in label_maps.shape[1:]))
        if isinstance(generator, list) and len(generator) != shape[0]:
            raise ConfigError(f"{len(generator)} generators for {shape[0]} samples; give one per sample or a single one")
        latents = randn_tensor(shape, generator=generator, dtype=torch.float32).to(device, dtype)
        latents = latents * self.scheduler.init_noise_sigma
        guided = guidance_scale != 1.0
        model_cond = torch.cat([cond, null_condition(cond)]) if guided else cond

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        # stochastic schedulers (DDPM, DDIM with eta > 0) draw their noise from `generator`
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_in = torch.cat([latents, latents]) if guided else latents
            model_in = self.scheduler.scale_model_input(model_in, t)
            pred = self.unet(model_in, t, model_cond).sample
            if guided:
                pred_cond, pred_uncond = pred.chunk(2)
                pred = pred_uncond + guidance_scale * (pred_cond - pred_uncond)
            latents = self.scheduler.step(pred, t, latents, **step_kwargs).prev_sample
            if callback is not None:
                callback(i, int(t), latents)

        images = self.decode_latents(latents, label_maps.to(device))
        if output_type == "np":
            images, label_maps = images.cpu().float().numpy(), label_maps.numpy()
        if not return_dict:
            return images, label_maps, affines
        return MedLSDMPipelineOutput(images=images, labels=label_maps, affines=affines)

    def decode_latents(self, latents: torch.Tensor, label_maps: torch.Tensor) -> torch.Tensor:
        """Diffusion-space latents → images in [-1, 1] (unscale, snap to codebook, decode)."""
        z = latents / self.config.latent_scale
        images = self.vqgan.decode(z.to(self.vqgan.dtype), label_maps)
        return images.clamp(-1, 1)
