"""Distances between two sets of samples (feature vectors): Fréchet distance, MMD and KID."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from ..errors import DataError
from .image import ArrayLike

log = logging.getLogger(__name__)


def _psd_eigvals(vals: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off removed: values below
    ``d · eps · max|λ|`` (zero within float64 precision, possibly negative) are set to 0,
    so that the square root of a singular matrix does not pick up ``sqrt(1e-16)`` noise."""
    tol = len(vals) * np.finfo(np.float64).eps * max(float(np.abs(vals).max(initial=0.0)), 1e-300)
    return np.where(vals > tol, vals, 0.0)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (see :func:`_psd_eigvals`)."""
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(_psd_eigvals(vals))) @ vecs.T


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet (2-Wasserstein²) distance between Gaussians N(μ1, Σ1) and N(μ2, Σ2).

    ``d² = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^{1/2}``.

    The trace term is computed without a general matrix square root: ``Σ1 Σ2`` has the same
    eigenvalues as the *symmetric* positive semi-definite matrix ``M = Σ1^{1/2} Σ2 Σ1^{1/2}``,
    so ``tr (Σ1 Σ2)^{1/2} = Σ_i sqrt(λ_i(M))``, with ``Σ1^{1/2}`` and ``λ(M)`` from symmetric
    eigen-decompositions (``numpy.linalg.eigh``; eigenvalues that are zero within float64
    round-off, including tiny negative ones, are set to 0). Unlike ``scipy.linalg.sqrtm`` of
    the non-symmetric ``Σ1 Σ2`` (pytorch-fid's way) this never produces complex parts, needs
    no ``eps·I`` offset, and is exact for singular covariances (fewer samples than feature
    dimensions, the usual case for 2048-d features), which the offset would bias. Float64
    throughout; the result is clamped at 0 (it is a squared distance).

    Args:
        mu1, mu2: mean vectors ``(d,)``.
        sigma1, sigma2: covariance matrices ``(d, d)`` (or scalars for ``d = 1``).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64)), np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise DataError(
            f"frechet_distance: shapes do not agree: mu {mu1.shape}, {mu2.shape}; sigma {s1.shape}, {s2.shape}"
        )
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", s1), ("sigma2", s2)):
        if not np.all(np.isfinite(a)):
            raise DataError(f"frechet_distance: {name} has NaN or Inf values")
    root1 = _sqrtm_psd(s1)
    m = root1 @ s2 @ root1
    tr_sqrt = float(np.sqrt(_psd_eigvals(np.linalg.eigvalsh((m + m.T) / 2))).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    return max(value, 0.0)


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and sample covariance ``(d, d)`` (``ddof=1``) of features ``(N, d)``, N ≥ 2."""
    f = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if f.ndim == 1:
        f = f[:, None]
    if f.ndim != 2 or f.shape[0] < 2:
        raise DataError(f"feature_statistics: need an (N, d) array with N >= 2 samples, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise DataError("feature_statistics: features contain NaN or Inf")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance_from_features(features1: ArrayLike, features2: ArrayLike, *, method: str = "auto") -> float:
    """:func:`frechet_distance` of the Gaussians fitted to two feature sets ``(N1, d)``, ``(N2, d)``.

    Each set gets its *own* mean and sample covariance (``ddof=1``); the reference 2D-FID
    code used the real mean for both sets, which hides any shift of the synthetic
    distribution.

    Two exact ways to the same number (``method``):

    ``"covariance"``
        :func:`frechet_distance` of the ``d × d`` covariances.
    ``"samples"``
        With centred features ``A1``, ``A2`` and ``c = (N1 − 1)(N2 − 1)``, ``Σ1 Σ2`` has the
        same non-zero eigenvalues as ``K Kᵀ / c`` with ``K = A1 A2ᵀ`` (``N1 × N2``), so
        ``tr (Σ1 Σ2)^{1/2} = ‖K‖_* / √c`` (sum of singular values) and
        ``tr Σi = ‖Ai‖_F² / (Ni − 1)``. Much faster, and free of any matrix square root,
        when there are fewer samples than feature dimensions (the usual case for 2048-d
        Inception features of a few hundred slices).
    ``"auto"``
        ``"samples"`` when ``N1 · N2 ≤ d²``, else ``"covariance"``.
    """
    if method not in ("auto", "covariance", "samples"):
        raise DataError(f"frechet_distance_from_features: unknown method {method!r}")
    f1 = np.asarray(features1.detach().cpu() if isinstance(features1, torch.Tensor) else features1, dtype=np.float64)
    f2 = np.asarray(features2.detach().cpu() if isinstance(features2, torch.Tensor) else features2, dtype=np.float64)
    f1, f2 = (f[:, None] if f.ndim == 1 else f for f in (f1, f2))
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise DataError(
            f"frechet_distance_from_features: need (N1, d) and (N2, d) features, got {f1.shape} and {f2.shape}"
        )
    n1, n2, d = f1.shape[0], f2.shape[0], f1.shape[1]
    if min(n1, n2) < 2:
        raise DataError(f"frechet_distance_from_features: need N >= 2 samples per set, got {n1} and {n2}")
    if not (np.all(np.isfinite(f1)) and np.all(np.isfinite(f2))):
        raise DataError("frechet_distance_from_features: features contain NaN or Inf")
    if method == "auto":
        method = "samples" if n1 * n2 <= d * d else "covariance"
    if method == "covariance":
        mu1, s1 = feature_statistics(f1)
        mu2, s2 = feature_statistics(f2)
        return frechet_distance(mu1, s1, mu2, s2)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a1, a2 = f1 - mu1, f2 - mu2
    c1, c2 = n1 - 1, n2 - 1
    nuclear = float(np.linalg.svd(a1 @ a2.T, compute_uv=False).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + (a1 * a1).sum() / c1 + (a2 * a2).sum() / c2 - 2 * nuclear / math.sqrt(c1 * c2))
    return max(value, 0.0)


def _as_samples(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a.reshape(a.shape[0], -1)
    if a.shape[0] < 2:
        raise DataError(f"mmd/kid: {name} needs at least 2 samples, got {a.shape[0]}")
    return a


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.clip(d, 0, None)


def median_heuristic(x: ArrayLike, y: ArrayLike) -> float:
    """Median of the pairwise Euclidean distances between distinct samples of ``x ∪ y``."""
    z = np.concatenate([_as_samples(x, "x"), _as_samples(y, "y")])
    d = _sq_dists(z, z)[np.triu_indices(len(z), k=1)]
    med = float(np.sqrt(np.median(d)))
    if med == 0:
        raise DataError("median_heuristic: the median pairwise distance is 0; give a bandwidth")
    return med


def mmd(x: ArrayLike, y: ArrayLike, *, bandwidth: float | None = None) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy with a Gaussian RBF kernel.

    ``k(a, b) = exp(−‖a − b‖² / (2 σ²))`` and
    ``MMD²_u = mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) − 2 mean_{i,j} k(x_i, y_j)``
    (Gretton et al. 2012, eq. 3). Being unbiased it can be slightly negative when both
    samples come from the same distribution.

    Args:
        x, y: samples ``(n, …)`` and ``(m, …)`` (rows are flattened); ``n, m ≥ 2``.
        bandwidth: kernel width σ; ``None``: :func:`median_heuristic` of the pooled samples.
    """
    a, b = _as_samples(x, "x"), _as_samples(y, "y")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"mmd: sample dimensions differ, {a.shape[1]} vs {b.shape[1]}")
    sigma = median_heuristic(a, b) if bandwidth is None else float(bandwidth)
    if not sigma > 0:
        raise DataError(f"mmd: bandwidth must be > 0, got {bandwidth}")
    kxx = np.exp(-_sq_dists(a, a) / (2 * sigma**2))
    kyy = np.exp(-_sq_dists(b, b) / (2 * sigma**2))
    kxy = np.exp(-_sq_dists(a, b) / (2 * sigma**2))
    return _mmd2_unbiased(kxx, kyy, kxy)


def _mmd2_unbiased(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """``mean_{i≠j} kxx + mean_{i≠j} kyy − 2 mean kxy`` from the three kernel matrices."""
    n, m = len(kxx), len(kyy)
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    )


def _bootstrap_mmd2(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Unbiased MMD² of ``n_boot`` bootstrap resamples of both sets, as multiplicity weights.

    A resample drawing sample ``i`` ``w_i`` times contributes the pairs of *different*
    original samples only (``Σ_{i≠j} w_i w_j k_ij / Σ_{i≠j} w_i w_j``): pairing a sample with
    its own duplicate would add ``k(x, x)`` terms and bias the U-statistic upwards.
    """
    rng = np.random.default_rng(seed)
    n, m = len(kxx), len(kyy)
    w = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]).astype(np.float64)
    v = np.stack([np.bincount(rng.integers(0, m, m), minlength=m) for _ in range(n_boot)]).astype(np.float64)

    def within(weights: np.ndarray, k: np.ndarray, size: int) -> np.ndarray:
        off = k - np.diag(np.diag(k))
        return ((weights @ off) * weights).sum(1) / (size**2 - (weights**2).sum(1))

    cross = ((w @ kxy) * v).sum(1) / (n * m)
    return within(w, kxx, n) + within(v, kyy, m) - 2 * cross


def kid(
    features1: ArrayLike,
    features2: ArrayLike,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    standardize: bool = False,
) -> dict[str, float | list[float]]:
    """Kernel Inception Distance: unbiased MMD² with the cubic polynomial kernel, with a bootstrap CI.

    ``k(a, b) = (a·b / d + 1)³`` for ``d``-dimensional features (Bińkowski et al. 2018), and
    ``KID = mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) − 2 mean_{i,j} k(x_i, y_j)`` on
    all samples (not the mean over random subsets of 1000 that ``torch-fidelity`` and
    ``clean-fid`` report; with fewer samples than that the two agree in expectation). Being
    unbiased it is about 0, and can be slightly negative, for two samples of one
    distribution. Any features will do (the segmentation network's when no Inception
    weights are at hand).

    The interval is a percentile bootstrap: both sets are resampled independently
    ``n_boot`` times, and each resample's MMD² counts only pairs of different original
    samples (duplicates would bias it upwards).

    Args:
        features1, features2: ``(n, d)`` and ``(m, d)`` features (rows flattened), ``n, m ≥ 2``.
        n_boot: bootstrap resamples (0: no interval).
        level: confidence level in (0, 1).
        seed: seed of the resampling.
        standardize: first z-score every feature of both sets with the mean and standard
            deviation of ``features1`` (the reference). The cubic kernel assumes features of
            order 1, as Inception's pooled activations are; raw features of another network
            can be hundreds of units wide, where the cubic term swamps everything and the
            number changes with the units. Standardised, KID no longer depends on a
            per-feature scale or offset (features constant in the reference are left unscaled).

    Returns:
        ``{"kid", "ci": [low, high] (``None`` without resamples), "n1", "n2"}``.
    """
    a, b = _as_samples(features1, "features1"), _as_samples(features2, "features2")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"kid: feature dimensions differ, {a.shape[1]} vs {b.shape[1]}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise DataError("kid: features contain NaN or Inf")
    if not 0 < level < 1:
        raise DataError(f"kid: level must lie in (0, 1), got {level}")
    if standardize:
        mean, std = a.mean(axis=0), a.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        a, b = (a - mean) / std, (b - mean) / std
    d = a.shape[1]
    kxx, kyy, kxy = ((p @ q.T / d + 1) ** 3 for p, q in ((a, a), (b, b), (a, b)))
    out = {"kid": _mmd2_unbiased(kxx, kyy, kxy), "ci": None, "n1": len(a), "n2": len(b)}
    if n_boot > 0:
        boot = _bootstrap_mmd2(kxx, kyy, kxy, int(n_boot), seed)
        out["ci"] = [float(x) for x in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])]
    return out
