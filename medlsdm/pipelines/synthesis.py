"""Synthesis with a trained pipeline (notebook 04 and ``medlsdm synthesize``).

- :data:`SCHEDULERS` / :func:`use_scheduler`: swap in any listed diffusers scheduler with
  ``from_config`` (the training schedule is kept).
- :func:`synthesize_files`: batch synthesis from label-map NIfTI files, one NIfTI per
  output, written atomically with the label map's affine and a fresh header; deep label
  maps in windows (:func:`block_window`: the training block's depth).

Whether a synthetic volume follows its label map is measured by
:func:`medlsdm.metrics.image.class_intensity_error`.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from pathlib import Path
from typing import Sequence

import diffusers
import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.io import read_nifti, write_nifti
from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Scheduler names accepted by :func:`use_scheduler` and the CLI's ``--scheduler``.
SCHEDULERS = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
}


def use_scheduler(pipe, name: str):
    """Replace ``pipe.scheduler`` by scheduler ``name`` (see :data:`SCHEDULERS`), same schedule."""

    if name not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    cls = getattr(diffusers, SCHEDULERS[name])
    kwargs = {"algorithm_type": "dpmsolver++"} if name == "dpm++" else {}
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **kwargs)
    return pipe


def label_files(labels: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """One NIfTI file, a list of them, or every ``*.nii``/``*.nii.gz`` in a folder (sorted)."""
    if isinstance(labels, (list, tuple)):
        return [p for item in labels for p in label_files(item)]
    path = Path(labels)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith((".nii", ".nii.gz")))
        if not files:
            raise DataError(f"{path}: no .nii or .nii.gz label maps in this folder")
        return files
    if not path.exists():
        raise DataError(f"{path}: label map not found")
    return [path]


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.endswith(".nii.gz") else path.stem


def check_output_names(files: Sequence[Path]) -> None:
    """Refuse two label maps whose outputs ``<stem>_syn<k>.nii.gz`` would have one name
    (``a.nii`` beside ``a.nii.gz``, or one file given twice)."""
    seen: dict[str, Path] = {}
    for path in files:
        other = seen.setdefault(_stem(path), path)
        if other is not path:
            raise DataError(
                f"{other} and {path} would both be written as {_stem(path)}_syn<k>.nii.gz; rename or remove one of them"
            )


def check_sampling(steps, guidance_scale) -> None:
    """Refuse a step count below 1 or a guidance scale that is not a finite number (``--steps``, ``--guidance``)."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ConfigError(f"steps (--steps) must be a whole number >= 1, got {steps!r}")
    if (
        isinstance(guidance_scale, bool)
        or not isinstance(guidance_scale, numbers.Real)
        or not math.isfinite(guidance_scale)
    ):
        raise ConfigError(f"guidance_scale (--guidance) must be a finite number, got {guidance_scale!r}")


def block_window(pipe) -> int | None:
    """The depth of the pipeline's training block (its ``block_shape``), or ``None`` (unknown)."""
    block_shape = pipe.config.get("block_shape")
    if block_shape is None:
        log.info(
            "the pipeline does not record its training block_shape: label maps are synthesised in one pass "
            "(give a window to synthesise deep ones in windows)"
        )
        return None
    return int(block_shape[0])


def synthesize_files(
    pipe,
    labels: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    steps: int = 50,
    guidance_scale: float = 1.0,
    seed: int = 0,
    num_per_label: int = 1,
    batch_size: int = 4,
    nnunet=None,
    window: int | None = None,
    overlap: int | None = None,
) -> list[Path]:
    """Synthesise ``num_per_label`` volumes per label-map file into ``out_dir``.

    Every argument and label map is checked (steps, guidance, output names, classes, shape,
    spacing) before any sampling starts. Output
    ``<label stem>_syn<k>.nii.gz`` carries the label map's affine. Label maps of one shape
    are sampled ``batch_size`` at a time (on a CPU a batch of 4 costs about a third per
    volume of one at a time); sample ``k`` of every label map starts from the noise of a
    generator seeded with ``seed + k``, so a volume does not depend on its batch. Label maps
    deeper than ``window`` slices are synthesised in overlapping windows (see
    :meth:`MedLSDMPipeline.__call__`); shallower ones in one pass, whatever ``window``.

    With ``nnunet`` (a :class:`medlsdm.data.nnunet.NNUNetWriter`) each volume and its label map
    become one case of an nnU-Net raw dataset instead (``imagesTr``/``labelsTr``, then
    ``dataset.json``); the returned paths are the images.
    """

    if int(batch_size) < 1 or int(num_per_label) < 1:
        raise ConfigError(f"batch_size and num_per_label must be >= 1, got {batch_size}, {num_per_label}")
    check_sampling(steps, guidance_scale)
    files = label_files(labels)
    if nnunet is None:
        check_output_names(files)
    shapes = [tuple(pipe.load_labels(path)[0].shape[1:]) for path in files]  # fail before any work
    batches: list[tuple[tuple, list[Path]]] = []  # consecutive label maps of one shape
    for path, shape in zip(files, shapes):
        if batches and batches[-1][0] == shape and len(batches[-1][1]) < int(batch_size):
            batches[-1][1].append(path)
        else:
            batches.append((shape, [path]))
    written = []
    with tqdm(total=len(files), desc="synthesize", unit="label map") as bar:
        for _, batch in batches:
            generators = [torch.Generator().manual_seed(seed + k) for _ in batch for k in range(num_per_label)]
            out = pipe(
                batch,
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                generator=generators,
                num_per_label=num_per_label,
                window=window,
                overlap=overlap,
            )
            for i, (image, affine) in enumerate(zip(out.images, out.affines)):
                if nnunet is not None:
                    case = nnunet.add(image[0], read_nifti(batch[i // num_per_label], kind="label")[0], affine)
                    written.append(nnunet.images / f"{case}_0000.nii.gz")
                    continue
                target = Path(out_dir) / f"{_stem(batch[i // num_per_label])}_syn{i % num_per_label}.nii.gz"
                written.append(write_nifti(target, image[0], affine, kind="image"))
            bar.update(len(batch))
    if nnunet is not None:
        nnunet.close()
    log.info("wrote %d synthetic volumes to %s", len(written), out_dir)
    return written


def denoising_snapshots(pipe, labels, *, steps: int, n_snapshots: int = 6, guidance_scale: float = 1.0, seed: int = 0):
    """Decoded intermediate volumes of one sampling run (for progressive-denoising figures).

    Returns ``[(step_index, timestep, images)]`` at ``n_snapshots`` evenly spaced steps,
    the last one being the final result.
    """
    keep = set(np.linspace(0, steps - 1, n_snapshots).round().astype(int).tolist())
    latents = []

    def keep_latents(pipe, i, t, tensors):
        if i in keep:
            latents.append((i, int(t), tensors["latents"].clone()))
        return {}

    label_maps, _ = pipe.load_labels(labels)
    pipe(
        label_maps,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        output_type="latent",
        generator=torch.Generator().manual_seed(seed),
        callback_on_step_end=keep_latents,
    )
    with torch.no_grad():
        return [(i, t, pipe.decode_latents(z, label_maps).cpu().numpy()) for i, t, z in latents]


def samples_per_map(
    pipe, labels, n_samples: int, *, steps: int, guidance_scale: float = 1.0, seed: int = 0, batch_size: int = 8
) -> np.ndarray:
    """``n_samples`` samples of every label map; sample ``k`` of each map starts from the noise
    of a generator seeded with ``seed + k`` (so a sample does not depend on the batching).

    Up to ``batch_size`` volumes go through the UNet together (on a CPU a batch costs far
    less per volume than one at a time).

    Returns ``(M, n_samples, 1, *spatial)`` in [-1, 1] for ``M`` label maps: the input of the
    diversity and factor comparisons of :mod:`medlsdm.evaluation.oracle`.
    """
    labels = np.asarray(labels)
    per_call = max(1, int(batch_size) // int(n_samples))
    out = []
    for i in range(0, len(labels), per_call):
        chunk = labels[i : i + per_call]
        generators = [torch.Generator().manual_seed(seed + k) for _ in chunk for k in range(n_samples)]
        images = pipe(
            chunk,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=generators,
            num_per_label=n_samples,
        ).images
        out.append(np.asarray(images).reshape(len(chunk), n_samples, *np.shape(images)[1:]))
    return np.concatenate(out)
