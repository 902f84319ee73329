"""The reference Med-LSDM code's metric conventions, reproduced so that its published table can be placed beside ours.

Each function computes a number the way the original code did (see ``REFERENCE.md``), each a
defect this package does not repeat; :func:`paper_convention_table` puts both side by side
with a line saying what the convention does to the number. Use them only for that comparison.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import DataError
from .distribution import feature_statistics, frechet_distance, frechet_distance_from_features
from .image import ArrayLike, as_volume, paired_metrics, psnr, ssim
from .overlap import dice_per_class, mean_dice

log = logging.getLogger(__name__)

#: What each convention does to the number, one line per metric.
CONVENTIONS = {
    "psnr": "peak 1 on [-1, 1] data (10·log10(1/MSE)) instead of the range 2: 20·log10(2) = 6.02 dB lower",
    "ssim": "data_range=255 on [-1, 1] data, per axial slice: C1 = 6.5 and C2 = 58.5 swamp the local "
    "statistics and push SSIM toward 1 (higher)",
    "fid_2d": "the real mean used for both sets: the mean term ‖μ_real − μ_syn‖² vanishes, so a shifted "
    "synthetic distribution is not counted (lower)",
    "dice": "one-hot over all classes with background pooled in: equals the fraction of agreeing voxels, "
    "dominated by background (higher)",
}


def paper_psnr(x: ArrayLike, y: ArrayLike) -> float:
    """PSNR with a peak of 1 on [-1, 1] data: ``10·log10(1 / MSE)``, i.e. :func:`psnr` with ``data_range=1``."""
    return psnr(x, y, data_range=1.0)


def paper_ssim(x: ArrayLike, y: ArrayLike, *, data_range: float = 255.0) -> float:
    """Mean over axial slices of the 2-D SSIM with ``data_range=255`` (the default of
    ``pytorch_msssim.ssim``, which the reference code used on [-1, 1] data).

    Window and statistics are those of :func:`~medlsdm.metrics.image.ssim` (11-tap Gaussian,
    σ = 1.5, valid positions), as in ``pytorch_msssim``.

    Args:
        x, y: ``(1, D, H, W)`` or ``(D, H, W)`` volumes; axial slices are along ``D``, and
            ``H``, ``W`` must be at least 11.
        data_range: the range the convention assumes (255).
    """
    a, b = as_volume(x), as_volume(y)
    if a.shape != b.shape:
        raise DataError(f"paper_ssim: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    return float(np.mean([ssim(a[d], b[d], data_range=data_range) for d in range(a.shape[0])]))


def paper_fid(real_features: ArrayLike, synthetic_features: ArrayLike) -> float:
    """Fréchet distance with the *real* mean for both sets (the reference 2-D FID): the mean
    term vanishes and only ``tr Σr + tr Σs − 2 tr (Σr Σs)^{1/2}`` is left.

    Args:
        real_features, synthetic_features: ``(N, d)`` feature arrays (e.g. Inception features of slices).
    """
    mu_r, s_r = feature_statistics(real_features)
    _, s_s = feature_statistics(synthetic_features)
    return frechet_distance(mu_r, s_r, mu_r, s_s)


def paper_dice(pred: ArrayLike, target: ArrayLike, num_classes: int) -> float:
    """Dice over all one-hot channels with background included, pooled:
    ``2 Σ_c |P_c ∩ T_c| / (Σ_c |P_c| + Σ_c |T_c|)``.

    For hard labels this is the fraction of voxels whose class agrees (``Σ_c |P_c| = N``),
    whatever the foreground classes do.

    Args:
        pred, target: integer class maps of the same shape.
        num_classes: number of classes including background.
    """
    dice_per_class(pred, target, num_classes)  # the same input checks
    p = np.asarray(pred.detach().cpu() if isinstance(pred, torch.Tensor) else pred).ravel()
    t = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target).ravel()
    eye = np.eye(num_classes, dtype=np.int64)
    p1, t1 = eye[p], eye[t]
    return float(2 * (p1 * t1).sum() / (p1.sum() + t1.sum()))


def paper_convention_table(
    *,
    real: Sequence[ArrayLike] | None = None,
    synthetic: Sequence[ArrayLike] | None = None,
    real_features: ArrayLike | None = None,
    synthetic_features: ArrayLike | None = None,
    pred_labels: Sequence[ArrayLike] | None = None,
    true_labels: Sequence[ArrayLike] | None = None,
    num_classes: int | None = None,
    data_range: float = 2.0,
) -> dict[str, dict[str, Any]]:
    """Our number and the reference code's number of each metric, side by side.

    Every part is optional: images give ``psnr`` and ``ssim`` (ours: :func:`paired_metrics`
    with ``data_range``, 3-D SSIM; paper: :func:`paper_psnr`, :func:`paper_ssim`; means over
    the pairs), features give ``fid_2d`` (ours: :func:`frechet_distance_from_features`;
    paper: :func:`paper_fid`), label maps give ``dice`` (ours: mean foreground Dice per
    case; paper: :func:`paper_dice`; means over the cases).

    Args:
        real, synthetic: paired volumes.
        real_features, synthetic_features: ``(N, d)`` feature arrays.
        pred_labels, true_labels: predicted and reference class maps, paired; with ``num_classes``.
        data_range: the true intensity range of the images (2 for [-1, 1]).

    Returns:
        ``{metric: {"ours", "paper", "convention"}}`` (``convention``: :data:`CONVENTIONS`).
    """
    out: dict[str, dict[str, Any]] = {}

    def row(name: str, ours: float, paper: float) -> None:
        out[name] = {"ours": float(ours), "paper": float(paper), "convention": CONVENTIONS[name]}

    if (real is None) != (synthetic is None):
        raise DataError("paper_convention_table: give both real and synthetic images, or neither")
    if real is not None:
        ours, _ = paired_metrics(real, synthetic, data_range=data_range, metrics=("psnr", "ssim"))
        row("psnr", ours["psnr"], np.mean([paper_psnr(s, r) for r, s in zip(real, synthetic)]))
        row("ssim", ours["ssim"], np.mean([paper_ssim(s, r) for r, s in zip(real, synthetic)]))
    if (real_features is None) != (synthetic_features is None):
        raise DataError("paper_convention_table: give both real and synthetic features, or neither")
    if real_features is not None:
        row(
            "fid_2d",
            frechet_distance_from_features(real_features, synthetic_features),
            paper_fid(real_features, synthetic_features),
        )
    if (pred_labels is None) != (true_labels is None):
        raise DataError("paper_convention_table: give both predicted and reference label maps, or neither")
    if pred_labels is not None:
        if num_classes is None or len(pred_labels) != len(true_labels) or not pred_labels:
            raise DataError("paper_convention_table: Dice needs num_classes and paired, non-empty label maps")
        ours_dice = [mean_dice(dice_per_class(p, t, num_classes)) for p, t in zip(pred_labels, true_labels)]
        row(
            "dice",
            mean_dice(dict(enumerate(ours_dice))),  # the mean over cases with a defined Dice
            np.mean([paper_dice(p, t, num_classes) for p, t in zip(pred_labels, true_labels)]),
        )
    return out
