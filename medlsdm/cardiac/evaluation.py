"""Evaluate synthetic cardiac slices against the real slices their conditions came from."""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import DataError
from ..evaluation.features import inception_features, segnet_feature_distance
from ..evaluation.segmentation import evaluate_dice
from ..metrics.distribution import frechet_distance_from_features
from ..metrics.image import paired_metrics
from ..tables import format_number, markdown_table
from .store import CLASS_NAMES

log = logging.getLogger(__name__)


def evaluate_samples(
    real: np.ndarray, fake: np.ndarray, *, labels: np.ndarray | None = None, segnet=None, inception=None
) -> dict[str, Any]:
    """Compare synthetic slices with the real slices their conditions came from.

    Paired, per slice then averaged (:func:`medlsdm.metrics.image.paired_metrics`, as the 3-D
    :func:`medlsdm.evaluation.run.image_quality`): SSIM (Gaussian window, ``data_range=2``
    for [-1, 1]) and NMSE ``‖fake − real‖² / ‖real‖²``. As sets: ``fd_seg``, the Fréchet
    distance of the two sets in the segmentation network's bottleneck feature space
    (:func:`medlsdm.evaluation.features.segnet_feature_distance`), and ``dice``, the mean
    Dice of the network's segmentation of the synthetic slices against ``labels`` (with
    ``segnet``); ``fid`` with InceptionV3 features (with ``inception``; otherwise ``None``).

    Args:
        real, fake: ``(N, 1, H, W)`` in [-1, 1], paired by index.
        labels: ``(N, H, W)`` label maps of the real slices (for ``dice``).
        segnet: a trained 2-D :class:`~medlsdm.models.segnet.SegNet`.
        inception: :func:`medlsdm.models.feature_nets.inception.load_inception` result.
    """

    real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    if real.shape != fake.shape or real.ndim != 4:
        raise DataError(f"evaluate_samples: expected paired (N, 1, H, W) sets, got {real.shape} and {fake.shape}")
    out: dict[str, Any] = {**paired_metrics(real, fake, metrics=("ssim", "nmse"))[0], "n": len(real)}
    if segnet is not None:
        out["fd_seg"] = segnet_feature_distance(segnet, real, fake, batch_size=32)
        if labels is not None:
            out["dice"] = evaluate_dice(segnet, fake, labels, num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES)[
                "mean"
            ]
    out["fid"] = None
    if inception is not None:
        out["fid"] = frechet_distance_from_features(
            inception_features(inception, real), inception_features(inception, fake)
        )
    return out


def ablation_table(
    results: Mapping[str, Mapping[str, Any]], keys: Sequence[str] = ("ssim", "nmse", "fd_seg", "dice")
) -> str:
    """A Markdown table: one row per mode (or reference), one column per metric."""

    arrows = {"ssim": "↑", "nmse": "↓", "fd_seg": "↓", "dice": "↑", "fid": "↓"}
    rows = [[name] + [format_number(row.get(k)) for k in keys] for name, row in results.items()]
    return markdown_table(["condition"] + [f"{k} {arrows.get(k, '')}" for k in keys], rows)
