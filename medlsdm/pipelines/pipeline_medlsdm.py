"""``MedLSDMPipeline``: label map in, volume out (a diffusers ``DiffusionPipeline``).

Components: ``vqgan`` (:class:`~medlsdm.models.vqgan.VQGAN`), ``unet``
(:class:`~medlsdm.models.unet.SemanticUNet`) and any diffusers ``scheduler``. Sampling runs
the scheduler on 5-D latents ``(B, C, d, h, w)`` (4-D for 2-D models), undoes the latent
normalisation (:meth:`VQGAN.from_diffusion`: the per-channel statistics of the training
latents, or one ``config.scaling_factor`` like diffusers' ``AutoencoderKL``), snaps the result
to the VQ-GAN codebook and decodes it —
with the label map when the decoder is SPADE.

    pipe = MedLSDMPipeline.from_pretrained("runs/demo/pipeline")
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    out = pipe("label.nii.gz", num_inference_steps=25, guidance_scale=2.0,
               generator=torch.Generator().manual_seed(0))
    out.images  # (B, 1, D, H, W) float32 in [-1, 1]

Label maps deeper than the training block: ``pipe(labels, window=32, overlap=8)`` denoises
overlapping depth windows of 32 label slices jointly — at every step the UNet runs on each
window and their predictions are averaged where they overlap (:mod:`.windows`), then the
scheduler takes one step on the whole latent — and decodes in overlapping tiles, so memory is
that of ``window_batch_size`` windows whatever the depth. :meth:`MedLSDMPipeline.edit`
keeps a real volume outside a mask and synthesises inside it (:mod:`.editing`).
"""

from __future__ import annotations

import functools
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

from ..data.io import read_nifti, spacing_dhw
from ..errors import ConfigError, DataError
from ..models.configuration import register_config_values
from ..models.unet import SemanticUNet, area_average, null_condition, semantic_condition
from ..models.vqgan import VQGAN
from .editing import latent_mask, paste, soft_weight
from .plan import SamplingPlan, decode_tiles, encode_tiles, latent_windows
from .windows import WindowCalls, blend_windows, window_calls

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
        block_shape: the label-map block (D, H, W) the models were trained on, or ``None``
            (unknown; pipelines saved before it existed). ``medlsdm synthesize`` runs label
            maps deeper than it in windows of its depth.
        conditioning_mode: what the UNet was trained to see of the label and extra condition
            maps, for the cardiac models (:data:`medlsdm.cardiac.conditioning.MODES`, applied by
            :func:`medlsdm.cardiac.training.synthesize`); ``None``: both as they are.
    """

    model_cpu_offload_seq = "unet->vqgan"
    _callback_tensor_inputs = ["latents"]
    _output_types = ("np", "pt", "latent")

    def __init__(
        self,
        vqgan: VQGAN,
        unet: SemanticUNet,
        scheduler,
        latent_scale: float | None = None,
        spacing: list | None = None,
        block_shape: list | None = None,
        conditioning_mode: str | None = None,
    ):
        super().__init__()
        if latent_scale is not None:
            warnings.warn(
                "MedLSDMPipeline: latent_scale is deprecated, the scale is now vqgan.config.scaling_factor "
                "(save an old pipeline again to update it)",
                FutureWarning,
                stacklevel=2,
            )
            register_config_values(vqgan, scaling_factor=float(latent_scale))
        self.register_modules(vqgan=vqgan, unet=unet, scheduler=scheduler)
        self.register_to_config(
            spacing=list(spacing) if spacing is not None else None,
            block_shape=[int(v) for v in block_shape] if block_shape is not None else None,
            conditioning_mode=conditioning_mode,
        )

    # -- inputs --------------------------------------------------------------------------
    def load_labels(self, labels: LabelInput) -> tuple[torch.Tensor, list[np.ndarray | None]]:
        """Label maps → int64 tensor ``(B, *spatial)`` and their affines; checks they fit."""

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
            raise DataError(
                f"{name}: shape {array.shape} must be divisible by {factor} (VQ-GAN × UNet downsampling); crop or "
                "pad it"
            )
        if array.min() < 0 or array.max() >= cfg.num_classes:
            raise DataError(
                f"{name}: class indices must lie in 0…{cfg.num_classes - 1} (the pipeline's classes), found "
                f"{int(array.min())}…{int(array.max())}"
            )
        trained = self.config.spacing
        if spacing is not None and trained is not None and not np.allclose(spacing, trained, rtol=0.1):
            raise DataError(
                f"{name}: voxel spacing {np.round(spacing, 2).tolist()} mm differs from the training spacing "
                f"{trained} mm; preprocess it first (medlsdm preprocess)"
            )

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
        window: int | None = None,
        overlap: int | None = None,
        window_batch_size: int = 1,
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
            window: label-map slices (depth, the first spatial axis) per denoising window, a
                multiple of the VQ-GAN × UNet downsampling, e.g. the training block's depth;
                ``None`` denoises the whole depth in one pass. Windows overlap; at every step
                the UNet runs on each one, their predictions are averaged in the overlaps
                (linear ramps, :mod:`medlsdm.pipelines.windows`) and the scheduler steps once
                on the whole latent (its update is elementwise, so this is one sampler run on
                the whole volume, without seams). Decoding runs in tiles of the same size.
            overlap: label-map slices shared by neighbouring windows, a multiple of the
                VQ-GAN downsampling; default a quarter of ``window``.
            window_batch_size: windows per UNet call (memory grows with it, time per window
                falls).
        """
        if output_type not in self._output_types:
            raise ConfigError(f"output_type must be one of {list(self._output_types)}, got {output_type!r}")
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ConfigError(
                f"callback_on_step_end_tensor_inputs must be among {self._callback_tensor_inputs}, got {unknown}"
            )
        plan, affines = self._plan(
            labels,
            num_per_label=num_per_label,
            extra_condition=extra_condition,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            window=window,
            overlap=overlap,
            window_batch_size=window_batch_size,
        )
        latents = self._initial_latents(plan, latents)

        def step_end(i, t, latents):
            if callback_on_step_end is None:
                return latents
            tensors = {"latents": latents}
            outputs = callback_on_step_end(self, i, t, {k: tensors[k] for k in callback_on_step_end_tensor_inputs})
            return outputs.pop("latents", latents)

        latents = self._denoise(latents, plan, step_end)
        images = latents if output_type == "latent" else decode_tiles(self.vqgan, latents, plan)
        return self._output(images, plan.label_maps, affines, output_type, return_dict)

    @torch.no_grad()
    def edit(
        self,
        image: torch.Tensor | np.ndarray | str | os.PathLike,
        labels: LabelInput,
        mask: torch.Tensor | np.ndarray,
        *,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        dilate: int = 1,
        soft_border: float | None = None,
        extra_condition: torch.Tensor | np.ndarray | None = None,
        window: int | None = None,
        overlap: int | None = None,
        window_batch_size: int = 1,
        output_type: str = "np",
        return_dict: bool = True,
    ):
        """Edit real volumes: keep them outside ``mask``, synthesise inside it from ``labels``.

        The real volume is encoded (pre-quantisation latent, :meth:`VQGAN.to_diffusion`). Sampling
        starts from noise; after every scheduler step the latent outside the mask (on the
        latent grid, grown by ``dilate``) is replaced by the real latent noised to the next
        timestep with ``scheduler.add_noise`` — with the initial noise, so no extra draws
        from ``generator`` — and after the last step by the real latent itself (RePaint /
        blended latent diffusion). The result is decoded with the (edited) label map and
        pasted into the real volume at image resolution: weight 1 inside the mask, falling
        linearly to exactly 0 at ``soft_border + 1`` voxels from it, where the output *is*
        the input. Deterministic schedulers (DDIM) suit it best: multistep ones (DPM-Solver,
        UniPC) keep a history that the replacement bypasses.

        Args:
            image: the real volumes in [-1, 1]: ``(B, 1, *spatial)``, ``(1, *spatial)`` or
                ``(*spatial)``, or a NIfTI path, at the label maps' shape.
            labels: the edited label maps (see :meth:`__call__`); e.g. from
                :func:`~medlsdm.pipelines.editing.insert_lesion`.
            mask: bool ``(B, *spatial)`` or ``(*spatial)``: ``True`` where to synthesise.
            num_inference_steps: scheduler steps.
            guidance_scale: classifier-free guidance scale (see :meth:`__call__`).
            generator: for the initial noise (see :meth:`__call__`).
            dilate: latent voxels by which the latent mask grows around ``mask``.
            soft_border: image voxels outside ``mask`` over which the synthesis fades into
                the real volume; default one latent voxel (the VQ-GAN's downsampling).
            extra_condition: extra condition channels (see :meth:`__call__`).
            window: depth windows for deep volumes (see :meth:`__call__`); encoding and
                decoding run in tiles of the same size.
            overlap: slices shared by neighbouring windows (see :meth:`__call__`).
            window_batch_size: windows per UNet call.
            output_type: ``"np"`` or ``"pt"``.
            return_dict: return a :class:`MedLSDMPipelineOutput` (else a tuple).
        """
        if output_type not in ("np", "pt"):
            raise ConfigError(f"edit output_type must be 'np' or 'pt', got {output_type!r}")
        if int(dilate) < 0 or (soft_border is not None and soft_border < 0):
            raise ConfigError(f"dilate ({dilate}) and soft_border ({soft_border}) must be >= 0")
        plan, affines = self._plan(
            labels,
            num_per_label=1,
            extra_condition=extra_condition,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            window=window,
            overlap=overlap,
            window_batch_size=window_batch_size,
        )
        images = self._load_images(image, plan.label_maps)
        masks = self._load_masks(mask, plan.label_maps)
        device, f = self.unet.device, self.vqgan.downsample_factor
        known = encode_tiles(self.vqgan, images, plan, device)
        inside = latent_mask(masks.to(device), f, int(dilate))
        timesteps = self.scheduler.timesteps
        noise = randn_tensor(known.shape, generator=plan.generator, dtype=torch.float32).to(device, known.dtype)
        latents = torch.where(
            inside, noise * self.scheduler.init_noise_sigma, self.scheduler.add_noise(known, noise, timesteps[:1])
        )

        def keep_outside(i, t, latents):
            real = (
                known if i == len(timesteps) - 1 else self.scheduler.add_noise(known, noise, timesteps[i + 1 : i + 2])
            )
            return torch.where(inside, latents, real)

        synthetic = decode_tiles(self.vqgan, self._denoise(latents, plan, keep_outside), plan)
        weight = soft_weight(masks, f if soft_border is None else soft_border)
        edited = paste(synthetic, images.to(synthetic.device, synthetic.dtype), weight.to(synthetic.device))
        return self._output(edited, plan.label_maps, affines, output_type, return_dict)

    # -- the parts -----------------------------------------------------------------------
    def _plan(
        self,
        labels: LabelInput,
        *,
        num_per_label: int,
        extra_condition,
        num_inference_steps: int,
        guidance_scale: float,
        generator,
        window: int | None,
        overlap: int | None,
        window_batch_size: int,
    ) -> tuple[SamplingPlan, list[np.ndarray | None]]:
        """The preamble of :meth:`__call__` and :meth:`edit`: the call's arguments checked and
        made into a :class:`~.plan.SamplingPlan` (label maps repeated ``num_per_label`` times),
        the scheduler's timesteps set; with the label maps' affines."""
        f = self.vqgan.downsample_factor
        windows = latent_windows(window, overlap, f, f * self.unet.downsampling)
        label_maps, affines = self.load_labels(labels)
        label_maps = label_maps.repeat_interleave(num_per_label, dim=0)
        affines = [a for a in affines for _ in range(num_per_label)]
        extra = None
        if extra_condition is not None:
            extra = torch.as_tensor(extra_condition, dtype=torch.float32)
            extra = (extra[None] if extra.ndim == label_maps.ndim else extra).repeat_interleave(num_per_label, dim=0)
        self.scheduler.set_timesteps(num_inference_steps, device=self.unet.device)
        plan = SamplingPlan(
            label_maps,
            windows=windows,
            extra=extra,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            window_batch_size=window_batch_size,
        )
        return plan, affines

    def _initial_latents(self, plan: SamplingPlan, latents: torch.Tensor | None) -> torch.Tensor:
        """Initial noise for the plan's label maps (drawn, or ``latents`` checked), × ``init_noise_sigma``."""
        factor, label_maps, generator = self.vqgan.downsample_factor, plan.label_maps, plan.generator
        shape = (label_maps.shape[0], self.unet.config.in_channels, *(s // factor for s in label_maps.shape[1:]))
        if isinstance(generator, list) and len(generator) != shape[0]:
            raise ConfigError(
                f"{len(generator)} generators for {shape[0]} samples; give one per sample or a single one"
            )
        if latents is None:
            latents = randn_tensor(shape, generator=generator, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ConfigError(
                f"latents of shape {tuple(latents.shape)} do not fit these label maps: expected {shape} "
                f"(samples, UNet in_channels, label map size / {factor})"
            )
        return latents.to(self.unet.device, self.unet.dtype) * self.scheduler.init_noise_sigma

    def _denoise(self, latents: torch.Tensor, plan: SamplingPlan, step_end) -> torch.Tensor:
        """Run the scheduler's timesteps (set by :meth:`_plan`); ``step_end(i, t, latents)`` may replace the latents."""
        # stochastic schedulers (DDPM, DDIM with eta > 0) draw their noise from the plan's generator
        step_kwargs = (
            {"generator": plan.generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        )
        calls = self._unet_calls(latents, plan)
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_in = self.scheduler.scale_model_input(latents, t)
            pred = self._predict(model_in, t, calls, plan)
            latents = self.scheduler.step(pred, t, latents, **step_kwargs).prev_sample
            latents = step_end(i, t, latents)
        return latents

    def _unet_calls(self, latents: torch.Tensor, plan: SamplingPlan) -> WindowCalls:
        """The UNet calls of every step (:func:`~.windows.window_calls`), each call's condition
        made once for the whole loop: :func:`~medlsdm.models.unet.area_average`-d to the
        latent's size, all a UNet without a label encoder reads of it (one with an encoder
        gets the full-resolution condition, built at each call: it can be large)."""
        calls, f = window_calls(latents.shape[2], plan.windows, plan.window_batch_size), self.vqgan.downsample_factor
        num_classes, encoded = self.unet.config.num_classes, self.unet.label_encoder is not None
        label_maps, extra = plan.label_maps, plan.extra

        def condition(batch):
            lab = torch.cat([label_maps[:, s * f : (s + calls.size) * f] for s in batch]).to(latents.device)
            ext = None if extra is None else torch.cat([extra[:, :, s * f : (s + calls.size) * f] for s in batch])
            cond = semantic_condition(lab, num_classes, ext).to(latents.dtype)
            return cond if encoded else area_average(cond, (calls.size, *latents.shape[3:]))

        calls.conditions = [functools.partial(condition, b) if encoded else condition(b) for b in calls.batches]
        return calls

    def _predict(self, latents: torch.Tensor, t, calls: WindowCalls, plan: SamplingPlan) -> torch.Tensor:
        """The guided UNet prediction for the whole latent, window predictions blended."""
        preds = []
        for batch, cond in zip(calls.batches, calls.conditions):
            x = torch.cat([latents[:, :, s : s + calls.size] for s in batch])
            preds += self._guided(x, t, cond() if callable(cond) else cond, plan.guidance_scale).split(latents.shape[0])
        if len(preds) == 1:
            return preds[0]
        return blend_windows(preds, calls.starts, calls.weights, latents.shape[2])

    def _guided(self, x: torch.Tensor, t, cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """Classifier-free guidance; scale 1: the conditional prediction only, 0: the
        unconditional one only, else both (a doubled batch)."""
        if guidance_scale in (0.0, 1.0):
            return self.unet(x, t, cond if guidance_scale == 1.0 else null_condition(cond)).sample
        pred_cond, pred_uncond = self.unet(torch.cat([x, x]), t, torch.cat([cond, null_condition(cond)])).sample.chunk(
            2
        )
        return pred_uncond + guidance_scale * (pred_cond - pred_uncond)

    def _load_images(self, image, label_maps: torch.Tensor) -> torch.Tensor:
        """Real volumes → float ``(B, 1, *spatial)`` matching ``label_maps``."""

        if isinstance(image, (str, os.PathLike)):
            image = read_nifti(image, kind="image")[0]
        tensor = torch.as_tensor(np.asarray(image) if isinstance(image, np.ndarray) else image).float()
        spatial = tuple(label_maps.shape[1:])
        while tensor.ndim < len(spatial) + 2:
            tensor = tensor[None]
        if (
            tuple(tensor.shape[2:]) != spatial
            or tensor.shape[1] != 1
            or tensor.shape[0] not in (1, label_maps.shape[0])
        ):
            raise DataError(
                f"image of shape {tuple(tensor.shape)} does not fit the label maps {tuple(label_maps.shape)}: "
                f"expected (B, 1, {', '.join(map(str, spatial))})"
            )
        if not torch.isfinite(tensor).all():
            raise DataError("image holds NaN or Inf values")
        return tensor.expand(label_maps.shape[0], *tensor.shape[1:])

    def _load_masks(self, mask, label_maps: torch.Tensor) -> torch.Tensor:
        """Edit masks → bool ``(B, *spatial)`` matching ``label_maps``."""
        tensor = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask)
        if tensor.ndim == label_maps.ndim - 1:
            tensor = tensor[None]
        if tuple(tensor.shape[1:]) != tuple(label_maps.shape[1:]) or tensor.shape[0] not in (1, label_maps.shape[0]):
            raise DataError(
                f"mask of shape {tuple(tensor.shape)} does not fit the label maps {tuple(label_maps.shape)}"
            )
        return (tensor != 0).expand(label_maps.shape[0], *tensor.shape[1:])

    def _output(self, images, label_maps, affines, output_type: str, return_dict: bool):
        if output_type == "np":
            images, label_maps = images.cpu().float().numpy(), label_maps.numpy()
        if not return_dict:
            return images, label_maps, affines
        return MedLSDMPipelineOutput(images=images, labels=label_maps, affines=affines)

    def decode_latents(
        self, latents: torch.Tensor, label_maps: torch.Tensor, window: int | None = None, overlap: int | None = None
    ) -> torch.Tensor:
        """Diffusion-space latents → images in [-1, 1] (unscale, snap to codebook, decode).

        Args:
            latents: e.g. ``pipe(..., output_type="latent").images``.
            label_maps: their class-index label maps ``(B, *spatial)`` (read by a SPADE decoder).
            window: decode in overlapping depth tiles of this many label-map slices, blended
                with linear ramps (memory of one tile); ``None``: in one piece.
            overlap: label-map slices shared by neighbouring tiles (default: see :meth:`__call__`).
        """
        f = self.vqgan.downsample_factor
        windows = latent_windows(window, overlap, f, f * self.unet.downsampling)
        return decode_tiles(self.vqgan, latents, SamplingPlan(label_maps, windows))
