"""Edits of real volumes (:meth:`MedLSDMPipeline.edit`) and what they keep and make (notebook 07).

:func:`lesion_site` picks where a lesion fits inside an organ, :func:`edit_with_lesion` inserts
it into the label map and edits the real volume; :func:`outside_max_abs` measures what the edit
must keep (the real volume beyond the soft border), :func:`region_means` the inserted lesion's
intensity (to hold against the phantom oracle's lesions) and :func:`lesion_detection` whether a
segmentation network finds it.

Arrays follow the package convention: volumes ``(1, D, H, W)`` float32 in [-1, 1], label maps
``(D, H, W)`` int64.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from ..errors import DataError
from ..metrics.overlap import dice_per_class
from ..pipelines.editing import insert_lesion


def lesion_site(label: np.ndarray, organ_class: int, spacing: Sequence[float] | None = None) -> tuple[int, int, int]:
    """The voxel of an organ farthest from the organ's border (in mm with ``spacing``): where the
    largest lesion fits.

    Raises:
        DataError: the label map has no voxel of ``organ_class``.
    """
    organ = np.asarray(label) == organ_class
    if not organ.any():
        raise DataError(f"the label map has no voxel of class {organ_class}: nowhere to put a lesion")
    depth = ndimage.distance_transform_edt(np.pad(organ, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(depth)), organ.shape))


def edit_with_lesion(
    pipe,
    image: np.ndarray,
    label: np.ndarray,
    *,
    organ_class: int,
    lesion_class: int,
    radius_mm: float,
    spacing: Sequence[float],
    steps: int,
    seed: int = 0,
    soft_border: float | None = None,
    guidance_scale: float = 1.0,
) -> dict:
    """Insert a spherical lesion deep inside an organ of a real volume's label map and edit the volume.

    :func:`lesion_site` places it, :func:`medlsdm.pipelines.editing.insert_lesion` draws it,
    :meth:`MedLSDMPipeline.edit` synthesises inside it and keeps the real volume elsewhere.

    Args:
        pipe: the :class:`MedLSDMPipeline`.
        image: the real volume ``(1, D, H, W)``; label: its ``(D, H, W)`` label map.
        organ_class, lesion_class: class indices.
        radius_mm: the lesion's radius; spacing: ``(D, H, W)`` mm.
        steps: scheduler steps; seed: the edit's noise.
        soft_border: see :meth:`MedLSDMPipeline.edit` (default one latent voxel).
        guidance_scale: classifier-free guidance scale.

    Returns:
        ``{"edited": (1, D, H, W), "labels": (D, H, W) with the lesion, "mask": (D, H, W) bool,
        "centre": (d, h, w), "soft_border": float}``.
    """

    centre = lesion_site(label, organ_class, spacing)
    radius = float(radius_mm) / np.asarray(spacing, float)
    new_labels, mask = insert_lesion(label, centre, radius, organ_class, lesion_class)
    border = float(pipe.vqgan.downsample_factor if soft_border is None else soft_border)
    out = pipe.edit(
        image,
        new_labels,
        mask,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        soft_border=border,
    )
    return {
        "edited": np.asarray(out.images[0]),
        "labels": new_labels,
        "mask": mask,
        "centre": centre,
        "soft_border": border,
    }


def outside_max_abs(edited: np.ndarray, real: np.ndarray, mask: np.ndarray, soft_border: float) -> float:
    """Max ``|edited − real|`` beyond the soft border: at voxels at least ``soft_border + 1``
    (Euclidean, voxels) from the mask, where :meth:`MedLSDMPipeline.edit` keeps the real volume."""
    mask = np.asarray(mask, bool)
    far = ndimage.distance_transform_edt(~mask) >= float(soft_border) + 1 if mask.any() else np.ones_like(mask)
    diff = np.abs(np.asarray(edited, np.float64).reshape(mask.shape) - np.asarray(real, np.float64).reshape(mask.shape))
    return float(diff[far].max()) if far.any() else 0.0


def region_means(volumes: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> np.ndarray:
    """Mean intensity of each volume inside its mask (NaN for an empty mask)."""
    out = []
    for v, m in zip(volumes, masks):
        m = np.asarray(m, bool)
        out.append(float(np.asarray(v).reshape(m.shape)[m].mean()) if m.any() else np.nan)
    return np.asarray(out)


def lesion_detection(
    predictions: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    lesion_class: int,
    num_classes: int,
) -> dict:
    """Does a segmentation network find inserted lesions?

    Per volume: the Dice of the lesion class (predicted vs the edited label map, every lesion
    of the volume; :func:`medlsdm.metrics.overlap.dice_per_class`) and the recall of the
    inserted lesion (the fraction of its voxels predicted as lesion).

    Args:
        predictions: class maps ``(D, H, W)`` of the edited volumes.
        labels: the edited label maps; masks: the inserted lesions (bool).
        lesion_class: the lesion's class index; num_classes: classes including background.

    Returns:
        ``{"dice": [...], "recall": [...], "dice_mean", "recall_mean"}`` (NaN-free means over
        the volumes where they are defined).
    """

    dice, recall = [], []
    for pred, lab, mask in zip(predictions, labels, masks):
        dice.append(dice_per_class(pred, lab, num_classes)[lesion_class])
        mask = np.asarray(mask, bool)
        recall.append(float((np.asarray(pred)[mask] == lesion_class).mean()) if mask.any() else float("nan"))
    finite = lambda v: [x for x in v if np.isfinite(x)]  # noqa: E731
    return {
        "dice": dice,
        "recall": recall,
        "dice_mean": float(np.mean(finite(dice))) if finite(dice) else float("nan"),
        "recall_mean": float(np.mean(finite(recall))) if finite(recall) else float("nan"),
    }
