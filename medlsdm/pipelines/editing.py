"""Edits of real volumes (:meth:`MedLSDMPipeline.edit`): the edit's label map and mask, the
mask on the latent grid, and pasting the synthesis back with a soft border.

    new_labels, mask = insert_lesion(labels, centre_vox=(20, 30, 34), radius_vox=3,
                                     organ_class=2, lesion_class=5)
    out = pipe.edit(image, new_labels, mask, num_inference_steps=25,
                    generator=torch.Generator().manual_seed(0))

Masks are ``True`` where the volume is synthesised and ``False`` where the real volume is kept.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..errors import ConfigError


def insert_lesion(
    labels: np.ndarray | torch.Tensor,
    centre_vox: Sequence[int],
    radius_vox: float | Sequence[float],
    organ_class: int,
    lesion_class: int,
) -> tuple[np.ndarray, np.ndarray]:
    """A spherical lesion inside an organ of a label map.

    Args:
        labels: class indices ``(D, H, W)``.
        centre_vox: the lesion's centre ``(d, h, w)`` in voxels; it must lie inside the organ.
        radius_vox: the radius in voxels, one number or one per axis ``(d, h, w)`` (an
            anisotropic grid: radius in mm / spacing).
        organ_class: the class the lesion grows in; the sphere is clipped to it.
        lesion_class: the class written into the lesion.

    Returns:
        ``(new_labels, mask)``: int64 labels with the lesion, and the lesion's voxels (bool).
    """
    labels = np.asarray(labels).astype(np.int64)
    centre = np.asarray(centre_vox, dtype=float)
    radius = np.broadcast_to(np.asarray(radius_vox, dtype=float), (labels.ndim,))
    if centre.shape != (labels.ndim,) or np.any(centre < 0) or np.any(centre > np.array(labels.shape) - 1):
        raise ConfigError(f"lesion centre {tuple(centre_vox)} is not a voxel of the label map of shape {labels.shape}")
    if np.any(radius <= 0):
        raise ConfigError(f"lesion radius must be positive, got {radius_vox}")
    at_centre = int(labels[tuple(np.round(centre).astype(int))])
    if at_centre != organ_class:
        raise ConfigError(
            f"lesion centre {tuple(centre_vox)} is not inside the organ (class {organ_class}): "
            f"the label map has class {at_centre} there"
        )
    grid = np.ogrid[tuple(slice(0, s) for s in labels.shape)]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radius)) <= 1.0
    mask = inside & (labels == organ_class)
    new_labels = labels.copy()
    new_labels[mask] = lesion_class
    return new_labels, mask


def latent_mask(mask: torch.Tensor, factor: int, dilate: int = 1) -> torch.Tensor:
    """An image-resolution mask ``(B, *spatial)`` on the latent grid ``(B, 1, *spatial / factor)``.

    A latent voxel is in the mask when any image voxel under it is, then the mask grows by
    ``dilate`` latent voxels (a cube), so that the synthesis sees some context around the edit.

    Args:
        mask: bool, ``True`` where the volume is synthesised.
        factor: the VQ-GAN's downsampling per axis.
        dilate: latent voxels to grow the mask by (0: none).
    """
    pool = F.max_pool3d if mask.ndim == 4 else F.max_pool2d
    m = pool(mask[:, None].float(), factor)
    if dilate > 0:
        m = pool(m, 2 * dilate + 1, stride=1, padding=dilate)
    return m > 0


def soft_weight(mask: torch.Tensor, soft_border: float) -> torch.Tensor:
    """Weight of the synthesis when pasting it into the real volume ``(B, 1, *spatial)``.

    1 inside ``mask``, falling linearly with the (Euclidean, voxel) distance to the mask to
    exactly 0 at ``soft_border + 1`` voxels and beyond.

    Args:
        mask: bool ``(B, *spatial)``, ``True`` where the volume is synthesised.
        soft_border: width of the border (image voxels) outside the mask.
    """
    weights = []
    for m in mask.cpu().numpy():
        if not m.any():
            weights.append(np.zeros(m.shape, np.float32))
            continue
        distance = ndimage.distance_transform_edt(~m)
        weights.append(np.clip(1.0 - distance / (soft_border + 1.0), 0.0, 1.0).astype(np.float32))
    return torch.from_numpy(np.stack(weights))[:, None].to(mask.device)


def paste(synthetic: torch.Tensor, image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``weight · synthetic + (1 − weight) · image``: exactly ``image`` where the weight is 0,
    exactly ``synthetic`` where it is 1."""
    weight = weight.to(image.dtype)
    return weight * synthetic + (1 - weight) * image
