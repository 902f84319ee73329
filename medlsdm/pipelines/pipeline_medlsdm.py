"""``MedLSDMPipeline``: label map in, volume out (a diffusers ``DiffusionPipeline``).

Components: ``vqgan`` (:class:`~medlsdm.models.vqgan.VQGAN`), ``unet``
(:class:`~medlsdm.models.unet.SemanticUNet`) and any diffusers ``scheduler``. Sampling runs
the scheduler on 5-D latents ``(B, C, d, h, w)`` (4-D for 2-D models), divides the result by
the VQ-GAN's ``config.scaling_factor`` (computed on the training latents, like diffusers'
``AutoencoderKL.config.scaling_factor``), snaps it to the VQ-GAN codebook and decodes it —
with the label map when the decoder is SPADE.

    pipe = MedLSDMPipeline.from_pretrained("runs/demo/pipeline")
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    out = pipe("label.nii.gz", num_inference_steps=25, guidance_scale=2.0,
               generator=torch.Generator().manual_seed(0))
    out.images  # (B, 1, D, H, W) float32 in [-1, 1]
"""
from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..errors import ConfigError, DataError
from ..models.configuration import register_config_values
from ..models.unet import SemanticUNet, null_condition, semantic_condition
from ..models.vqgan import VQGAN

LabelInput = torch.Tensor | np.ndarray | str | os.PathLike | Sequence[str | os.PathLike]


@dataclass
class MedLSDMPipelineOutput(BaseOutput):
    """Output of :class:`MedLSDMPipeline`.

    Args:
        images: synthetic volumes ``(B, 1, *spatial)`` in [-1, 1] (numpy or torch), or with
            ``output_type="latent"`` the diffusion-space latents ``(B, C, *latent_spatial)``.
        labels: the label maps they were made from ``(B, *spatial)``.
        affines: the label maps' affines (``None`` for arrays).
    """

    images: np.ndarray | torch.Tensor
    labels: np.ndarray | torch.Tensor
    affines: list[np.ndarray | None]


class MedLSDMPipeline(DiffusionPipeline):
    """Semantic latent diffusion: synthesise volumes from label maps.

    Args:
        vqgan: the frozen VQ-GAN whose latent space the UNet denoises.
        unet: the label-conditioned latent denoiser.
        scheduler: any diffusers scheduler (DDPM, DDIM, DPM-Solver++, UniPC …).
        latent_scale: deprecated (pipelines saved before the latent scale moved to the VQ-GAN
            have it in ``model_index.json``): when given, it is set as
            ``vqgan.config.scaling_factor``.
        spacing: the voxel spacing (D, H, W) in mm the models were trained at, or ``None``.
    """

    model_cpu_offload_seq = "unet->vqgan"
    _callback_tensor_inputs = ["latents"]
    _output_types = ("np", "pt", "latent")

    def __init__(self, vqgan: VQGAN, unet: SemanticUNet, scheduler, latent_scale: float | None = None,
                 spacing: list | None = None):
        super().__init__()
        if latent_scale is not None:
            warnings.warn("MedLSDMPipeline: latent_scale is deprecated, the scale is now vqgan.config.scaling_factor "
                          "(save an old pipeline again to update it)", FutureWarning, stacklevel=2)
            register_config_values(vqgan, scaling_factor=float(latent_scale))
        self.register_modules(vqgan=vqgan, unet=unet, scheduler=scheduler)
        self.register_to_config(spacing=list(spacing) if spacing is not None else None)

    # -- inputs --------------------------------------------------------------------------
    def load_labels(self, labels: LabelInput) -> tuple[torch.Tensor, list[np.ndarray | None]]:
        """Label maps → int64 tensor ``(B, *spatial)`` and their affines; checks they fit."""
        from ..data.io import read_nifti, spacing_dhw

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
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        extra_condition: torch.Tensor | np.ndarray | None = None,
        callback_on_step_end: Callable[["MedLSDMPipeline", int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
    ):
        """Synthesise one volume per label map (``num_per_label`` each).

        Args:
            labels: class-index label maps: a tensor/array ``(B, *spatial)`` or one map, a
                NIfTI path, or a list of paths (their affines are returned with the images).
            num_inference_steps: scheduler steps.
            guidance_scale: classifier-free guidance ``s`` in ``uncond + s (cond − uncond)``;
                1 runs only the conditional prediction, 0 only the unconditional one, any
                other scale both (a doubled batch).
            generator: ``torch.Generator`` for the initial noise (and stochastic schedulers),
                or a list of them, one per output sample (label map × ``num_per_label``),
                so that each sample's noise does not depend on the rest of the batch.
            num_per_label: samples per label map.
            latents: initial noise ``(B · num_per_label, C, *spatial / factor)`` instead of
                drawing it from ``generator`` (scaled by the scheduler's ``init_noise_sigma``,
                as in diffusers).
            output_type: ``"np"`` (numpy volumes), ``"pt"`` (torch volumes) or ``"latent"``
                (the final diffusion-space latents, not decoded: :meth:`decode_latents`
                decodes them).
            return_dict: return a :class:`MedLSDMPipelineOutput` (else the tuple
                ``(images, labels, affines)``).
            extra_condition: the extra condition channels ``(B, E, *spatial)`` (or one map
                ``(E, *spatial)``) of a UNet with ``extra_condition_channels = E``, e.g. edge
                maps at the label maps' resolution.
            callback_on_step_end: called after every denoising step as
                ``callback_on_step_end(pipe, step_index, timestep, callback_kwargs)`` with
                ``callback_kwargs`` holding the tensors named in
                ``callback_on_step_end_tensor_inputs``; it returns a dict, whose ``"latents"``
                (if any) replace the latents, as in diffusers.
            callback_on_step_end_tensor_inputs: tensors passed to the callback, among
                ``_callback_tensor_inputs`` (``["latents"]``: diffusion space).
        """
        if output_type not in self._output_types:
            raise ConfigError(f"output_type must be one of {list(self._output_types)}, got {output_type!r}")
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ConfigError(f"callback_on_step_end_tensor_inputs must be among {self._callback_tensor_inputs}, got {unknown}")
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
        if latents is None:
            latents = randn_tensor(shape, generator=generator, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ConfigError(f"latents of shape {tuple(latents.shape)} do not fit these label maps: expected {shape} "
                              f"(samples, UNet in_channels, label map size / {factor})")
        latents = latents.to(device, dtype) * self.scheduler.init_noise_sigma
        # scale 1: the conditional prediction only, 0: the unconditional one only, else both
        doubled = guidance_scale not in (0.0, 1.0)
        if doubled:
            model_cond = torch.cat([cond, null_condition(cond)])
        else:
            model_cond = cond if guidance_scale == 1.0 else null_condition(cond)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        # stochastic schedulers (DDPM, DDIM with eta > 0) draw their noise from `generator`
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_in = torch.cat([latents, latents]) if doubled else latents
            model_in = self.scheduler.scale_model_input(model_in, t)
            pred = self.unet(model_in, t, model_cond).sample
            if doubled:
                pred_cond, pred_uncond = pred.chunk(2)
                pred = pred_uncond + guidance_scale * (pred_cond - pred_uncond)
            latents = self.scheduler.step(pred, t, latents, **step_kwargs).prev_sample
            if callback_on_step_end is not None:
                tensors = {"latents": latents}
                outputs = callback_on_step_end(self, i, t, {k: tensors[k] for k in callback_on_step_end_tensor_inputs})
                latents = outputs.pop("latents", latents)

        images = latents if output_type == "latent" else self.decode_latents(latents, label_maps.to(device))
        if output_type == "np":
            images, label_maps = images.cpu().float().numpy(), label_maps.numpy()
        if not return_dict:
            return images, label_maps, affines
        return MedLSDMPipelineOutput(images=images, labels=label_maps, affines=affines)

    def decode_latents(self, latents: torch.Tensor, label_maps: torch.Tensor) -> torch.Tensor:
        """Diffusion-space latents → images in [-1, 1] (unscale, snap to codebook, decode).

        Args:
            latents: e.g. ``pipe(..., output_type="latent").images``.
            label_maps: their class-index label maps ``(B, *spatial)`` (read by a SPADE decoder).
        """
        z = latents / self.vqgan.config.scaling_factor
        images = self.vqgan.decode(z.to(self.vqgan.dtype), label_maps.to(z.device))
        return images.clamp(-1, 1)
