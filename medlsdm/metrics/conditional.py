"""The conditional distribution p(image | label map) against an oracle: diversity, hidden-factor distributions,
label painting.

A label-conditioned generator should produce, for one label map, images as varied as the
true conditional distribution — which the phantoms can sample ("oracle re-renders"). Paired
metrics against the one real volume reward the conditional mean instead; these functions
measure the distribution.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Mapping, Sequence

import numpy as np
import scipy.stats
import torch

from ..errors import DataError
from .image import ArrayLike

log = logging.getLogger(__name__)


def _array(x: ArrayLike, dtype=np.float64) -> np.ndarray:
    return np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=dtype)


def _mask_like(mask: ArrayLike | None, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A boolean mask broadcast to ``shape`` (``None``: every voxel); it must select a voxel."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = _array(mask, dtype=bool)
    try:
        m = np.broadcast_to(m, shape)
    except ValueError:
        raise DataError(f"{name}: mask of shape {m.shape} does not fit images of shape {shape}") from None
    if not m.any():
        raise DataError(f"{name}: the mask selects no voxel")
    return m


def diversity(samples: Sequence[ArrayLike], mask: ArrayLike | None = None) -> float:
    """Mean pairwise RMSE between the samples of one label map, inside ``mask``.

    ``diversity = mean_{i<j} sqrt(mean_{v ∈ mask} (s_i[v] − s_j[v])²)`` over all
    ``K(K − 1)/2`` pairs. 0 for a sampler that ignores its noise; for two independent draws
    of the same distribution it is about ``sqrt(2)`` × the per-voxel standard deviation.

    Args:
        samples: ``K ≥ 2`` images of the same shape (e.g. ``(C, D, H, W)``), one label map.
        mask: boolean voxels to compare, broadcastable to the image shape (e.g. a
            ``(D, H, W)`` body mask for ``(1, D, H, W)`` images); ``None``: every voxel.
    """
    arrays = [_array(s) for s in samples]
    if len(arrays) < 2:
        raise DataError(f"diversity: needs at least 2 samples of one label map, got {len(arrays)}")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DataError(f"diversity: samples have different shapes {sorted(shapes)}")
    m = _mask_like(mask, arrays[0].shape, "diversity")
    flat = np.stack([a[m] for a in arrays])
    return float(
        np.mean([math.sqrt(np.mean((flat[i] - flat[j]) ** 2)) for i, j in itertools.combinations(range(len(flat)), 2)])
    )


def diversity_ratio(
    samples_per_map: Sequence[Sequence[ArrayLike]],
    oracle_per_map: Sequence[Sequence[ArrayLike]],
    masks: Sequence[ArrayLike | None] | None = None,
    *,
    return_per_map: bool = False,
):
    """Mean over label maps of ``diversity(samples) / diversity(oracle)``.

    ``ratio = (1/M) Σ_m diversity(samples_m, mask_m) / diversity(oracle_m, mask_m)`` for the
    ``M`` label maps: about 1 when the sampler is as varied as the true conditional
    distribution, 0 for a collapsed sampler (same output whatever the seed), above 1 when
    it varies more (e.g. noise the oracle does not have). The mean of per-map ratios (not
    the ratio of means) weighs every label map equally. Use the same kind of volumes on
    both sides — e.g. oracle re-renders passed through the autoencoder when the samples
    are decoded latents, so that detail the latent cannot hold is not counted.

    Args:
        samples_per_map: for each label map, ``K ≥ 2`` synthetic samples (different seeds).
        oracle_per_map: for each label map, ``≥ 2`` oracle re-renders (same order of maps).
        masks: one mask per label map (see :func:`diversity`) or ``None`` (every voxel).
        return_per_map: also return the list of per-map ratios.

    Returns:
        the mean ratio, or ``(mean ratio, [ratio per map])``.
    """
    if len(samples_per_map) != len(oracle_per_map) or not samples_per_map:
        raise DataError(
            f"diversity_ratio: needs the same, non-zero number of label maps, got "
            f"{len(samples_per_map)} synthetic and {len(oracle_per_map)} oracle"
        )
    masks = [None] * len(samples_per_map) if masks is None else list(masks)
    if len(masks) != len(samples_per_map):
        raise DataError(f"diversity_ratio: {len(masks)} masks for {len(samples_per_map)} label maps")
    ratios = []
    for m, (syn, ora, mask) in enumerate(zip(samples_per_map, oracle_per_map, masks)):
        ref = diversity(ora, mask)
        if ref == 0:
            raise DataError(f"diversity_ratio: the oracle samples of label map {m} are identical (diversity 0)")
        ratios.append(diversity(syn, mask) / ref)
    value = float(np.mean(ratios))
    return (value, ratios) if return_per_map else value


def factor_comparison(
    synthetic: Mapping[str, Sequence[float]], oracle: Mapping[str, Sequence[float]]
) -> dict[str, dict[str, float]]:
    """Per hidden factor: 1-Wasserstein distance and two-sample Kolmogorov–Smirnov test.

    Each factor is estimated from every synthetic volume and every oracle re-render (e.g.
    the aorta's mean intensity); the two sets of estimates are compared with
    ``scipy.stats.wasserstein_distance`` (W1, in the factor's units; for equal-sized sets
    the mean absolute difference of the sorted values) and ``scipy.stats.ks_2samp``
    (two-sided; a small p-value says the distributions differ). Run the same comparison
    oracle-vs-oracle (two independent draws) for the reference value.

    Args:
        synthetic, oracle: ``{factor: values}`` with the same factors, ≥ 2 finite values each.

    Returns:
        ``{factor: {"w1", "ks", "ks_p", "n_synthetic", "n_oracle"}}``.
    """
    if set(synthetic) != set(oracle):
        raise DataError(
            f"factor_comparison: the factors differ: synthetic {sorted(synthetic)}, oracle {sorted(oracle)}"
        )
    out = {}
    for name in synthetic:
        a, b = _array(synthetic[name]).ravel(), _array(oracle[name]).ravel()
        for side, v in (("synthetic", a), ("oracle", b)):
            if v.size < 2 or not np.all(np.isfinite(v)):
                raise DataError(f"factor_comparison: factor {name!r} needs >= 2 finite {side} values, got {v.tolist()}")
        ks = scipy.stats.ks_2samp(a, b)
        out[name] = {
            "w1": float(scipy.stats.wasserstein_distance(a, b)),
            "ks": float(ks.statistic),
            "ks_p": float(ks.pvalue),
            "n_synthetic": int(a.size),
            "n_oracle": int(b.size),
        }
    return out


def within_map_spread(values: ArrayLike, per_map: int) -> float:
    """Mean over label maps of the standard deviation (ddof 1) of a factor's estimates among
    the ``per_map`` volumes of one map; ``values`` are map-major (map 0's volumes first) and
    may be NaN where a map lacks the class (such maps are skipped).

    Divided by the same for oracle re-renders it says whether a sampler draws a hidden factor
    from its noise (≈ 1) or reads it off the label map (→ 0): a model that learned its few
    training cases' label map → appearance pairs can match the pooled distribution (KS) with
    each map's samples all alike.
    """
    v = _array(values).reshape(-1, int(per_map))
    ok = np.isfinite(v).all(axis=1)
    if per_map < 2 or not ok.any():
        raise DataError(f"within_map_spread: needs >= 2 volumes per map and one map with finite values, got {v.shape}")
    return float(np.std(v[ok], axis=1, ddof=1).mean())


def _images_labels(images, labels, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(images) != len(labels) or len(images) == 0:
        raise DataError(f"{name}: needs one label map per image, got {len(images)} images and {len(labels)} label maps")
    pairs = []
    for i, (img, lab) in enumerate(zip(images, labels)):
        x, y = _array(img), np.asarray(lab.detach().cpu() if isinstance(lab, torch.Tensor) else lab)
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{name}: label map {i} must hold integer class indices, got {y.dtype}")
        if x.shape == (1, *y.shape):
            x = x[0]  # a (1, D, H, W) image and its (D, H, W) label map
        if x.shape != y.shape:
            raise DataError(f"{name}: image {i} of shape {x.shape} does not fit its label map {y.shape}")
        if y.size and y.min() < 0:
            raise DataError(f"{name}: label map {i} has negative class indices")
        pairs.append((x, y))
    return pairs


def class_means(images: Sequence[ArrayLike], labels: Sequence[ArrayLike], num_classes: int | None = None) -> np.ndarray:
    """Mean intensity of each class, pooled over the voxels of all ``images``.

    Args:
        images: images (any shape; a ``(1, D, H, W)`` image fits a ``(D, H, W)`` label map).
        labels: integer class maps, one per image.
        num_classes: length of the result (default: largest class index + 1).

    Returns:
        ``(num_classes,)`` float64; ``NaN`` for a class absent from every label map.
    """
    pairs = _images_labels(images, labels, "class_means")
    k = max(int(y.max()) + 1 for _, y in pairs) if num_classes is None else int(num_classes)
    sums, counts = np.zeros(k), np.zeros(k)
    for x, y in pairs:
        if y.max() >= k:
            raise DataError(f"class_means: class index {int(y.max())} >= num_classes {k}")
        sums += np.bincount(y.ravel(), weights=x.ravel(), minlength=k)
        counts += np.bincount(y.ravel(), minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def paint_labels(labels: ArrayLike, means: ArrayLike) -> np.ndarray:
    """The label-painting baseline: every voxel replaced by its class's mean intensity.

    Args:
        labels: integer class map (any shape).
        means: ``(num_classes,)`` class intensities (e.g. :func:`class_means` of the training set).

    Returns:
        float32 array of the shape of ``labels``.
    """
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    mu = _array(means).ravel()
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"paint_labels: labels must hold integer class indices, got {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= mu.size):
        raise DataError(f"paint_labels: class indices [{y.min()}, {y.max()}] outside the {mu.size} class means")
    present = np.unique(y)
    missing = [int(c) for c in present if not np.isfinite(mu[c])]
    if missing:
        raise DataError(f"paint_labels: no class mean for classes {missing} (absent from the training label maps)")
    return mu[y].astype(np.float32)


def painting_r2(
    images: Sequence[ArrayLike],
    labels: Sequence[ArrayLike],
    train_images: Sequence[ArrayLike],
    train_labels: Sequence[ArrayLike],
    masks: Sequence[ArrayLike | None] | None = None,
) -> float:
    """Fraction of the voxel variance that label painting explains: ``R² = 1 − SSE / SST``.

    The class means come from the *training* images (:func:`class_means`); each evaluated
    image is painted from its label map (:func:`paint_labels`). Over the selected voxels of
    all evaluated images pooled, ``SSE = Σ (x − paint)²`` and ``SST = Σ (x − x̄)²`` with
    ``x̄`` their pooled mean. 1 when the image is a function of its labels; about 0 (or
    below, out of sample) when the labels say nothing about the intensities.

    Args:
        images, labels: the evaluated images and their integer label maps.
        train_images, train_labels: where the class means come from.
        masks: one boolean mask per evaluated image (e.g. the body) or ``None`` (every voxel).
    """
    pairs = _images_labels(images, labels, "painting_r2")
    num_classes = max(int(np.max(np.asarray(y))) + 1 for y in [*labels, *train_labels])
    means = class_means(train_images, train_labels, num_classes=num_classes)
    masks = [None] * len(pairs) if masks is None else list(masks)
    if len(masks) != len(pairs):
        raise DataError(f"painting_r2: {len(masks)} masks for {len(pairs)} images")
    values, painted = [], []
    for (x, y), mask in zip(pairs, masks):
        m = _mask_like(mask, y.shape, "painting_r2")
        values.append(x[m])
        painted.append(paint_labels(y[m], means).astype(np.float64))
    v, p = np.concatenate(values), np.concatenate(painted)
    sst = float(((v - v.mean()) ** 2).sum())
    if sst == 0:
        raise DataError("painting_r2: the selected voxels are constant (no variance to explain)")
    return 1.0 - float(((v - p) ** 2).sum()) / sst
