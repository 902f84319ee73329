"""Uncertainty of a reported number: percentile-bootstrap confidence intervals, paired differences, mean ± sd.

Two-sample tests and 1-D distances are scipy's (``scipy.stats.ks_2samp``,
``scipy.stats.wasserstein_distance``); they are not wrapped here.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)


def _values(values: Sequence[float] | np.ndarray, name: str, minimum: int = 2) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64)
    if a.ndim != 1:
        raise DataError(f"{name}: needs a 1-D sequence of numbers, got shape {a.shape}")
    if a.size < minimum:
        raise DataError(f"{name}: needs at least {minimum} values, got {a.size}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name}: values contain NaN or Inf at positions {np.flatnonzero(~np.isfinite(a)).tolist()}")
    return a


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    stat: Callable = np.mean,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``stat(values)``.

    ``n_boot`` resamples of the ``n`` values are drawn with replacement (one
    ``numpy.random.default_rng(seed)``); the interval is the ``(1 − level)/2`` and
    ``(1 + level)/2`` quantiles of the resampled statistics (Efron's percentile method). With
    few values (n ≲ 10) the percentile interval is too narrow; report ``n`` with it.

    Args:
        values: one number per case (1-D, finite, at least 2).
        stat: the statistic; called as ``stat(resamples, axis=1)`` on an ``(n_boot, n)`` array
            (numpy reductions such as ``np.mean`` or ``np.median`` do this; wrap others).
        n_boot: number of bootstrap resamples.
        level: confidence level in (0, 1).
        seed: seed of the resampling.

    Returns:
        ``(low, high)``.
    """
    a = _values(values, "bootstrap_ci")
    _check_resampling("bootstrap_ci", n_boot, level)
    rng = np.random.default_rng(seed)
    resamples = a[rng.integers(0, a.size, size=(int(n_boot), a.size))]
    stats = np.asarray(stat(resamples, axis=1), dtype=np.float64)
    if stats.shape != (int(n_boot),):
        raise DataError(
            f"bootstrap_ci: stat(resamples, axis=1) must return one number per resample, got shape {stats.shape}"
        )
    return _percentile_interval(stats, level)


def _check_resampling(name: str, n_boot: int, level: float) -> None:
    if not 0 < level < 1:
        raise DataError(f"{name}: level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise DataError(f"{name}: n_boot must be >= 1, got {n_boot}")


def _percentile_interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    """The ``(1 − level)/2`` and ``(1 + level)/2`` quantiles of resampled statistics."""
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def paired_bootstrap_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean paired difference ``mean(a − b)``.

    Pairs ``(a[i], b[i])`` (the same case measured in two arms) are resampled together, so the
    between-case variation common to both arms cancels. The interval excludes 0 when the arms
    differ beyond the resampling noise.

    Args:
        a, b: one number per case in each arm, same length (at least 2).
        n_boot, level, seed: as in :func:`bootstrap_ci`.

    Returns:
        ``(low, high)`` of ``mean(a − b)``.
    """
    x, y = _values(a, "paired_bootstrap_ci (a)"), _values(b, "paired_bootstrap_ci (b)")
    if x.shape != y.shape:
        raise DataError(f"paired_bootstrap_ci: a and b must pair up, got {x.size} and {y.size} values")
    return bootstrap_ci(x - y, stat=np.mean, n_boot=n_boot, level=level, seed=seed)


def hierarchical_bootstrap_ci(a, b, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``mean(a) − mean(b)`` over every random source: cases,
    networks (judge seeds) and, with 3-D input, the models that made the networks' data
    (generator seeds).

    ``a`` and ``b``: ``(networks, cases)`` scores of two arms on the same test cases (each arm's
    networks trained separately), or ``(generators, networks, cases)`` where each generator's
    networks are nested in it. Each replicate draws the cases with replacement once, for both
    arms (paired: the cases' common difficulty cancels), and for each arm its generators with
    replacement, then the networks within each drawn generator; the statistic is the difference
    of the two resampled means. A case-only bootstrap of the seed-averaged scores
    (:func:`paired_bootstrap_ci`) ignores that another set of judge (or generator) seeds gives
    another mean: with few seeds and a noisy judge its interval is too narrow.
    """
    x, y = (np.asarray(v, dtype=float) for v in (a, b))
    if (
        x.ndim not in (2, 3)
        or y.ndim not in (2, 3)
        or x.shape[-1] != y.shape[-1]
        or x.shape[-1] < 2
        or not np.isfinite([*x.flat, *y.flat]).all()
    ):
        raise DataError(
            f"hierarchical_bootstrap_ci: needs two finite (networks, cases) or (generators, networks, cases) "
            f"arrays over the same >= 2 cases, got shapes {x.shape} and {y.shape}"
        )
    _check_resampling("hierarchical_bootstrap_ci", n_boot, level)
    rng = np.random.default_rng(seed)
    n_cases = x.shape[-1]
    cases = rng.integers(n_cases, size=(n_boot, n_cases))

    def resampled(z: np.ndarray, columns: np.ndarray) -> float:
        if z.ndim == 3:
            return float(np.mean([resampled(z[g], columns) for g in rng.integers(z.shape[0], size=z.shape[0])]))
        return float(z[np.ix_(rng.integers(z.shape[0], size=z.shape[0]), columns)].mean())

    stats = np.array([resampled(x, cases[i]) - resampled(y, cases[i]) for i in range(n_boot)])
    return _percentile_interval(stats, level)


def mean_sd(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of at least 2 numbers (e.g. across seeds)."""
    a = _values(values, "mean_sd")
    return float(a.mean()), float(a.std(ddof=1))


def summarise(values: Sequence[float] | np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """One number per case summarised for ``metrics.json``.

    Returns:
        ``{"mean", "sd", "ci": [low, high], "n", "per_case": [...]}`` — the mean, the sample sd,
        the :func:`bootstrap_ci` of the mean, the number of cases and the values themselves.
    """
    a = _values(values, "summarise")
    mean, sd = mean_sd(a)
    low, high = bootstrap_ci(a, n_boot=n_boot, level=level, seed=seed)
    return {"mean": mean, "sd": sd, "ci": [low, high], "n": int(a.size), "per_case": a.tolist()}
