"""Memorisation check: is a synthetic volume closer to a training volume than it should be?

:func:`memorisation_threshold` + :func:`memorisation_check` (together
:func:`memorisation_with_controls`): the threshold on the nearest-training-volume distance
(:func:`nearest_distances`) comes from controls — a positive control (training volumes copied
with a small shift and noise, :func:`copy_control`) that must be flagged and a negative control
(independent renderings of training anatomies: same label map, new appearance) that must not
be. The check reports how its own controls fare, so it can fail. (A threshold taken from the
smallest distance of a real unseen volume to the training set cannot be validated: nothing
shows it would flag a copy or pass a fresh rendering of a training anatomy.)
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

from ..errors import DataError
from .image import ArrayLike, as_volume, ssim

log = logging.getLogger(__name__)

#: Distances :func:`nearest_distances` knows.
DISTANCE_METRICS = ("rmse", "1-ssim")


def _stacked(volumes, name: str) -> torch.Tensor:
    """Same-shaped volumes as one float64 ``(N, D, H, W)`` tensor."""
    vols = [as_volume(v).double() for v in volumes]
    if not vols:
        raise DataError(f"memorisation: no {name} volumes")
    shapes = {tuple(v.shape) for v in vols}
    if len(shapes) != 1:
        raise DataError(f"memorisation: {name} volumes have different shapes {sorted(shapes)}")
    return torch.stack(vols)


def _pooled(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.avg_pool3d(x[:, None], factor)[:, 0] if factor > 1 else x


def _shifted_views(x: torch.Tensor, m: int):
    """Every crop of ``x`` (N, D, H, W) shifted by ``-m … m`` voxels per axis, with ``m`` voxels cut off each side."""
    d, h, w = x.shape[1:]
    if m == 0:
        yield x
        return
    for dz in range(-m, m + 1):
        for dy in range(-m, m + 1):
            for dx in range(-m, m + 1):
                yield x[:, m + dz : d - m + dz, m + dy : h - m + dy, m + dx : w - m + dx]


def nearest_distances(
    query: Sequence[ArrayLike],
    train: Sequence[ArrayLike],
    *,
    metric: str = "rmse",
    downsample: int = 2,
    max_shift: int = 0,
    data_range: float = 2.0,
) -> tuple[list[float], list[int]]:
    """Distance of every query volume to its nearest training volume, and that volume's index.

    With ``max_shift = m > 0`` the distance is the smallest over every shift of the query by
    ``-m … m`` voxels along each axis (``(2m + 1)³`` shifts; ``m`` voxels are cut off every
    side of both volumes so that they overlap): a copy moved by a voxel is then as close as
    an unmoved one, which a plain RMSE misses where the image has sharp edges. Volumes are
    then average-pooled ``downsample``× per axis (speed, and robustness to voxel noise).

    Args:
        query, train: sequences of same-shaped ``(1, D, H, W)`` or ``(D, H, W)`` volumes.
        metric: ``"rmse"`` (root mean squared difference) or ``"1-ssim"`` (1 − :func:`ssim`
            with ``data_range``; needs every side ≥ 11 after cropping and downsampling).
        downsample: pooling factor.
        max_shift: largest shift searched, in voxels (0: none).
        data_range: intensity range (for ``"1-ssim"``).

    Returns:
        ``(distances, indices into train)``.
    """
    if metric not in DISTANCE_METRICS:
        raise DataError(f"memorisation: metric must be one of {DISTANCE_METRICS}, got {metric!r}")
    q = _stacked(query, "query")
    t = _stacked(train, "train")
    if q.shape[1:] != t.shape[1:]:
        raise DataError(f"memorisation: shapes differ: query {tuple(q.shape[1:])}, train {tuple(t.shape[1:])}")
    m = int(max_shift)
    if m < 0 or 2 * m >= min(t.shape[1:]):
        raise DataError(f"memorisation: max_shift {max_shift} does not fit volumes of shape {tuple(t.shape[1:])}")
    t_pooled = _pooled(t if m == 0 else t[:, m:-m, m:-m, m:-m], downsample)
    best = None
    for view in _shifted_views(q, m):
        qp = _pooled(view, downsample)
        if metric == "rmse":
            d = torch.cdist(qp.flatten(1), t_pooled.flatten(1)) / math.sqrt(t_pooled[0].numel())
        else:
            d = torch.tensor(
                [[1.0 - ssim(x, y, data_range=data_range) for y in t_pooled] for x in qp], dtype=torch.float64
            )
        best = d if best is None else torch.minimum(best, d)
    dmin, idx = best.min(1)
    return dmin.tolist(), idx.tolist()


def copy_control(
    volume: ArrayLike,
    *,
    shift: Sequence[float] = (0.0, 1.0, 1.0),
    noise_std: float = 0.01,
    rng: np.random.Generator | int | None = 0,
) -> np.ndarray:
    """A positive control for the memorisation check: ``volume`` shifted a little, plus noise.

    The volume is shifted by ``shift`` voxels along ``(D, H, W)`` (linear interpolation,
    edges replicated), Gaussian noise of ``noise_std`` is added and the result is clipped to
    [-1, 1]. A check that does not flag such a near-copy of a training volume is useless; one
    that compares without searching shifts (``max_shift=0`` in :func:`nearest_distances`)
    misses it wherever the image has sharp edges.

    Args:
        volume: ``(1, D, H, W)`` or ``(D, H, W)`` in [-1, 1].
        shift: voxels per spatial axis.
        noise_std: standard deviation of the added noise (intensity units).
        rng: ``numpy.random.Generator`` or seed.

    Returns:
        float32 array of the shape of ``volume``.
    """
    v = as_volume(volume).numpy().astype(np.float64)
    if len(shift) != 3:
        raise DataError(f"copy_control: shift needs one value per spatial axis (D, H, W), got {tuple(shift)}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    moved = scipy.ndimage.shift(v, tuple(float(x) for x in shift), order=1, mode="nearest")
    out = np.clip(moved + rng.normal(0.0, float(noise_std), v.shape), -1.0, 1.0).astype(np.float32)
    return out.reshape(np.shape(volume))


def memorisation_threshold(
    positive_distances: Sequence[float], negative_distances: Sequence[float], *, quantile: float = 0.05
) -> float:
    """The distance below which a volume counts as a copy, from the two controls.

    Rule: the midpoint between the largest positive-control distance (copies) and the
    ``quantile`` of the negative-control distances (independent renderings of training
    anatomies), ``(max(pos) + q_quantile(neg)) / 2``. When the controls are separated, every
    copy is flagged and at most a fraction ``quantile`` of the renderings is. When they
    overlap (``max(pos) ≥ q(neg)``) the distance cannot tell a copy from a rendering: a
    warning is logged and the check's own control fractions (see
    :func:`memorisation_with_controls`) show it.

    Args:
        positive_distances: nearest-training distances of the positive control.
        negative_distances: nearest-training distances of the negative control.
        quantile: the low quantile of the negatives, in [0, 1).
    """
    pos, neg = np.asarray(positive_distances, dtype=np.float64), np.asarray(negative_distances, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        raise DataError(
            f"memorisation_threshold: needs both controls, got {pos.size} positive and {neg.size} negative distances"
        )
    if not 0 <= quantile < 1:
        raise DataError(f"memorisation_threshold: quantile must lie in [0, 1), got {quantile}")
    top, low = float(pos.max()), float(np.quantile(neg, quantile))
    if top >= low:
        log.warning(
            "memorisation_threshold: controls overlap (largest copy distance %.4g >= %g-quantile of renderings "
            "%.4g): the distance cannot separate a copy from a fresh rendering",
            top,
            quantile,
            low,
        )
    return (top + low) / 2


def memorisation_check(
    synthetic: Sequence[ArrayLike],
    train: Sequence[ArrayLike],
    threshold: float,
    *,
    metric: str = "rmse",
    downsample: int = 2,
    max_shift: int = 1,
    data_range: float = 2.0,
) -> dict[str, Any]:
    """Flag every volume whose nearest training volume is closer than ``threshold``.

    Args:
        synthetic: volumes to judge (``(1, D, H, W)`` or ``(D, H, W)``).
        train: the training volumes.
        threshold: e.g. :func:`memorisation_threshold`.
        metric, downsample, max_shift, data_range: as in :func:`nearest_distances` (use the
            same as for the threshold).

    Returns:
        ``{"threshold", "nn_distance", "nn_index", "flagged" (bool per volume),
        "n_flagged", "fraction_flagged"}``.
    """
    dist, idx = nearest_distances(
        synthetic, train, metric=metric, downsample=downsample, max_shift=max_shift, data_range=data_range
    )
    flagged = [d < threshold for d in dist]
    return {
        "threshold": float(threshold),
        "nn_distance": dist,
        "nn_index": idx,
        "flagged": flagged,
        "n_flagged": int(sum(flagged)),
        "fraction_flagged": float(np.mean(flagged)),
    }


def memorisation_with_controls(
    synthetic: dict[str, Sequence[ArrayLike]],
    train: Sequence[ArrayLike],
    positive: Sequence[ArrayLike],
    negative: Sequence[ArrayLike],
    *,
    quantile: float = 0.05,
    metric: str = "rmse",
    downsample: int = 2,
    max_shift: int = 1,
    data_range: float = 2.0,
) -> dict[str, Any]:
    """The memorisation check with its threshold set, and judged, by controls.

    The controls' nearest-training distances set :func:`memorisation_threshold`; then the
    controls themselves and every set of synthetic volumes are judged by
    :func:`memorisation_check`. ``positive_flagged`` should be 1 and ``negative_flagged`` at
    most ``quantile``; since the controls set the threshold, these are in-sample figures —
    hold some controls out to estimate the error rates on new volumes.

    Args:
        synthetic: named sets, e.g. ``{"from_train_maps": [...], "from_test_maps": [...]}``.
        train: the training volumes.
        positive: near-copies of training volumes (:func:`copy_control`).
        negative: independent renderings of training anatomies (same label map, new appearance).
        quantile, metric, downsample, max_shift, data_range: see :func:`memorisation_threshold`
            and :func:`nearest_distances`.

    Returns:
        ``{"threshold", "rule", "positive", "negative", "positive_flagged",
        "negative_flagged", "synthetic": {name: check}}`` (checks as :func:`memorisation_check`).
    """
    kw = {"metric": metric, "downsample": downsample, "max_shift": max_shift, "data_range": data_range}
    pos_d, _ = nearest_distances(positive, train, **kw)
    neg_d, _ = nearest_distances(negative, train, **kw)
    threshold = memorisation_threshold(pos_d, neg_d, quantile=quantile)
    pos, neg = (memorisation_check(v, train, threshold, **kw) for v in (positive, negative))
    return {
        "threshold": threshold,
        "metric": metric,
        "downsample": int(downsample),
        "max_shift": int(max_shift),
        "rule": f"midpoint of max(positive) and the {quantile}-quantile of negative nearest-training distances",
        "positive": pos,
        "negative": neg,
        "positive_flagged": pos["fraction_flagged"],
        "negative_flagged": neg["fraction_flagged"],
        "synthetic": {name: memorisation_check(v, train, threshold, **kw) for name, v in synthetic.items()},
    }
