"""Overlap of label maps: Dice per class, background excluded from the mean."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from scipy import ndimage

from ..errors import DataError
from .image import ArrayLike

log = logging.getLogger(__name__)


def dice_per_class(pred: ArrayLike, target: ArrayLike, num_classes: int) -> dict[int, float]:
    """Dice ``2|P∩T| / (|P| + |T|)`` of every foreground class ``1 … num_classes-1``.

    Background (class 0) is excluded (the reference code pooled it in, which inflates the
    score). A class absent from both ``pred`` and ``target`` has no defined Dice and is
    ``NaN``; :func:`mean_dice` leaves such classes out of the mean. A class present in only
    one of them scores 0.

    Args:
        pred, target: integer class maps of the same shape (any number of axes).
        num_classes: number of classes including background.

    Returns:
        ``{class_index: dice}`` for ``class_index`` in ``1 … num_classes-1``.
    """
    p = np.asarray(pred.detach().cpu() if isinstance(pred, torch.Tensor) else pred)
    t = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target)
    if p.shape != t.shape:
        raise DataError(f"dice_per_class: shapes differ, {p.shape} vs {t.shape}")
    for name, a in (("pred", p), ("target", t)):
        if not np.issubdtype(a.dtype, np.integer):
            raise DataError(f"dice_per_class: {name} must hold integer class indices, got {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise DataError(
                f"dice_per_class: {name} values must lie in [0, {num_classes - 1}], found [{a.min()}, {a.max()}]"
            )
    p, t = p.ravel().astype(np.int64), t.ravel().astype(np.int64)
    n_pred = np.bincount(p, minlength=num_classes)
    n_true = np.bincount(t, minlength=num_classes)
    n_both = np.bincount(p[p == t], minlength=num_classes)
    out = {}
    for c in range(1, num_classes):
        denom = n_pred[c] + n_true[c]
        out[c] = math.nan if denom == 0 else float(2 * n_both[c] / denom)
    return out


def mean_dice(per_class: dict) -> float:
    """Mean of the non-NaN values of a :func:`dice_per_class` result (NaN if all are NaN)."""
    values = [v for v in per_class.values() if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def lesion_detection(pred: ArrayLike, target: ArrayLike, lesion_class: int) -> tuple[int, int]:
    """Per-lesion detection: ``(found, total)``, where ``total`` counts the connected components
    (26-connectivity) of ``target == lesion_class`` and ``found`` those that share at least one
    voxel with ``pred == lesion_class`` (the lesion-wise recall of the LiTS benchmark, with any
    overlap as the hit criterion)."""

    p = np.asarray(pred) == lesion_class
    t = np.asarray(target) == lesion_class
    if p.shape != t.shape:
        raise DataError(f"lesion_detection: shapes differ, {p.shape} vs {t.shape}")
    components, total = ndimage.label(t, structure=np.ones((3,) * t.ndim, bool))
    found = np.unique(components[p & t]).size
    return int(found), int(total)
