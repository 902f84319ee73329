"""Augmentations of the diffusion model's training cases.

:func:`swap_class_means`: label-wise appearance swaps. A training set of N label maps shows
each map with one appearance (one liver attenuation, one bone density …), so a denoiser can
learn to read the appearance off the label map instead of drawing it from its noise: the
samples of one map then all look alike (notebook 04's within-map spread ratio). The swapped
copies show each anatomy with the class means of other training cases, so that the label map
no longer tells the appearance, while the set of appearances stays the training set's own.

The assumption, to be stated wherever it is used: a case's class means are independent of
its anatomy (true of the phantoms by construction; for real data, e.g. organ intensity against
age or body size, it is an approximation).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..metrics.conditional import class_means


def class_mean_table(images: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per case and class: the mean intensity (:func:`~medlsdm.metrics.conditional.class_means`
    of that case alone) and whether the class is present.

    Returns ``(means, present)``, both ``(N, num_classes)``; absent classes have mean 0.
    """
    means = np.stack([class_means([x], [y], num_classes) for x, y in zip(images, labels)])
    present = np.isfinite(means)
    return np.where(present, means, 0.0), present


def swap_class_means(
    images, labels, copies: int, *, num_classes: int | None = None, seed: int = 0, keep_classes=(0,)
) -> tuple[np.ndarray, np.ndarray]:
    """Copies of every case with the class means of another, randomly drawn, case.

    Copy ``j`` of case ``a`` takes a partner ``b ≠ a`` (uniformly, seeded); every class ``k``
    present in both (and not in ``keep_classes``, the background by default) is shifted by
    ``mean_b,k − mean_a,k``, so its mean becomes ``b``'s while its texture, shading and edges
    stay ``a``'s. The result is clipped to [-1, 1].

    Args:
        images: ``(N, 1, *spatial)`` in [-1, 1], N >= 2.
        labels: ``(N, *spatial)`` class indices.
        copies: copies per case (0: none).
        num_classes: classes of the label maps (default: the largest label + 1).
        seed: seed of the partners.
        keep_classes: classes never shifted.

    Returns:
        ``(images, labels)`` of the ``N * copies`` swapped copies (copy ``j`` of case ``i`` at
        ``j * N + i``); the labels are the originals'.
    """
    images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int64)
    n = len(images)
    if copies and n < 2:
        raise DataError("swap_class_means: needs at least two cases to swap appearances between")
    if images.shape[0] != labels.shape[0] or images.shape[2:] != labels.shape[1:]:
        raise DataError(f"swap_class_means: images {images.shape} do not fit labels {labels.shape}")
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    means, present = class_mean_table(images[:, 0], labels, k)
    shiftable = np.ones(k, bool)
    shiftable[list(keep_classes)] = False
    rng = np.random.default_rng(seed)
    out = np.empty((n * copies, *images.shape[1:]), np.float32)
    for j in range(copies):
        partners = (np.arange(n) + rng.integers(1, n, size=n)) % n  # never the case itself
        for a, b in enumerate(partners):
            shift = np.where(present[a] & present[b] & shiftable, means[b] - means[a], 0.0)
            out[j * n + a] = np.clip(images[a] + shift[labels[a]][None].astype(np.float32), -1, 1)
    return out, np.tile(labels, (copies,) + (1,) * (labels.ndim - 1))
