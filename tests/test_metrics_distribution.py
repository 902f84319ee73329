"""medlsdm.metrics.distribution (Fréchet distance, MMD, KID) against SciPy, direct NumPy computations and closed
forms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import scipy.spatial.distance
import torch

from medlsdm.errors import DataError
from medlsdm.metrics.distribution import (
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    kid,
    median_heuristic,
    mmd,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _kid_by_hand(x, y):
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1) ** 3

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(a, b) for a in x for b in y) / (n * m)
    return xx + yy - 2 * xy


def test_frechet_closed_forms():
    # 1-D: (m1 - m2)² + (s1 - s2)²
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    assert frechet_distance(1.0, 4.0, 3.0, 9.0) == pytest.approx(5.0)
    # diagonal (and singular) covariances: ‖Δμ‖² + Σ (√a − √b)²
    a, b = np.array([1.0, 4.0, 0.0, 2.0]), np.array([9.0, 1.0, 4.0, 0.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(closed)
    # commuting covariances (same eigenvectors) have the same closed form
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(closed, abs=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_against_scipy_sqrtm_symmetric_nonnegative():
    rng = np.random.default_rng(1)
    d = 6
    m1, m2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(d), m2 @ m2.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    fd = frechet_distance(mu1, s1, mu2, s2)
    assert fd == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(fd, rel=1e-10)
    for seed in range(5):  # rank-deficient covariances (fewer samples than dimensions)
        r = np.random.default_rng(seed)
        fa, fb = r.normal(size=(4, 10)), r.normal(size=(5, 10)) * 0.01
        assert frechet_distance_from_features(fa, fb) >= 0
    with pytest.raises(DataError, match="shapes"):
        frechet_distance(mu1, s1, mu2[:3], s2)


def test_frechet_from_features_uses_each_sets_own_statistics():
    rng = np.random.default_rng(2)
    f1 = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5))
    mu, cov = feature_statistics(f1)
    assert np.allclose(mu, f1.mean(0)) and np.allclose(cov, np.cov(f1.T, ddof=1))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    # same covariance, shifted mean → exactly ‖Δμ‖² (the reference code's "real mean for
    # both sets" gives 0 here)
    assert frechet_distance_from_features(f1, f1 + shift) == pytest.approx((shift**2).sum(), rel=1e-7)
    # scaled features: covariance k²Σ → (k − 1)² tr Σ
    assert frechet_distance_from_features(f1, 2 * f1 - f1.mean(0)) == pytest.approx(np.trace(cov), rel=1e-7)
    got = frechet_distance_from_features(torch.tensor(f1), torch.tensor(f1 + shift))
    assert got == pytest.approx((shift**2).sum(), rel=1e-7)
    with pytest.raises(DataError, match="N >= 2"):
        frechet_distance_from_features(f1[:1], f1)


@pytest.mark.parametrize("n1,n2,d", [(7, 9, 30), (50, 40, 3), (30, 40, 200)])
def test_frechet_sample_space_equals_covariance_route(n1, n2, d):
    """Both exact routes agree; ``auto`` takes the fast sample-space one for few samples."""
    rng = np.random.default_rng(n1)
    f1, f2 = rng.normal(size=(n1, d)), rng.normal(0.3, 2.0, size=(n2, d))
    got = frechet_distance_from_features(f1, f2, method="samples")
    assert got == pytest.approx(frechet_distance_from_features(f1, f2, method="covariance"), rel=1e-9)
    assert got == pytest.approx(frechet_distance_from_features(f1, f2), rel=1e-12)


def test_mmd_hand_computed_and_median_heuristic():
    x, y = np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])
    e = math.exp
    expected = e(-0.5) + e(-2.0) - 2 * (1 + e(-2.0) + 2 * e(-0.5)) / 4
    assert mmd(x, y, bandwidth=1.0) == pytest.approx(expected)
    pooled = np.array([0.0, 1.0, 0.0, 2.0])
    dists = [abs(a - b) for i, a in enumerate(pooled) for b in pooled[i + 1 :]]
    assert median_heuristic(x, y) == pytest.approx(np.median(dists))
    assert mmd(x, y) == pytest.approx(mmd(x, y, bandwidth=float(np.median(dists))))


def test_mmd_gaussian_closed_form_and_same_distribution():
    rng = np.random.default_rng(3)
    n, s, delta, sigma = 1500, 1.0, 1.0, 1.0
    x, y, z = rng.normal(0, s, n), rng.normal(delta, s, n), rng.normal(0, s, n)
    v = sigma**2 + 2 * s**2
    closed = 2 * sigma / math.sqrt(v) * (1 - math.exp(-(delta**2) / (2 * v)))
    assert mmd(x, y, bandwidth=sigma) == pytest.approx(closed, abs=0.02)
    assert abs(mmd(x, z, bandwidth=sigma)) < 0.01
    assert abs(mmd(x[:500], z[:500])) < 0.01  # median-heuristic bandwidth
    with pytest.raises(DataError, match="at least 2"):
        mmd(x[:1], y)


def test_kid_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.5, 1.2, size=(9, 5))
    assert kid(x, y, n_boot=0)["kid"] == pytest.approx(_kid_by_hand(x, y), rel=1e-12)
    # 1-d, two points each: k = (ab + 1)³; hand: xx = 2·(0·1+1)³/2 = 1, yy = (2·3+1)³ = 343,
    # xy = ((1)+(1)+(2+1)³+(3+1)³)/4 = (1 + 1 + 27 + 64)/4 = 23.25
    r = kid([[0.0], [1.0]], [[2.0], [3.0]], n_boot=0)
    assert r["kid"] == pytest.approx(1 + 343 - 2 * 23.25) and r["ci"] is None and (r["n1"], r["n2"]) == (2, 2)


def test_kid_is_about_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(1)
    same = [kid(rng.normal(size=(30, 8)), rng.normal(size=(30, 8)), n_boot=0)["kid"] for _ in range(60)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))  # unbiased: mean 0
    x = rng.normal(size=(40, 8))
    # a set with itself: the cross term keeps the self-pairs, so KID = −2 (mean k(x,x) − mean_{i≠j} k) / n → 0
    k = (x @ x.T / 8 + 1) ** 3
    off = (k.sum() - np.trace(k)) / (40 * 39)
    assert kid(x, x, n_boot=0)["kid"] == pytest.approx(-2 * (np.mean(np.diag(k)) - off) / 40)
    big = rng.normal(size=(800, 8))
    assert abs(kid(big, big, n_boot=0)["kid"]) < abs(kid(x, x, n_boot=0)["kid"]) / 10
    shifted = kid(x, rng.normal(0.5, 1.0, size=(40, 8)), n_boot=500)
    assert shifted["kid"] > 0 and shifted["ci"][0] > 0
    null = kid(x, rng.normal(size=(40, 8)), n_boot=500)
    assert null["ci"][0] < 0 < null["ci"][1] and null["ci"][0] <= null["kid"] <= null["ci"][1]


def test_kid_bootstrap_is_centred_where_a_naive_one_is_not():
    """Each resample counts only pairs of different original samples; a naive bootstrap that
    recomputes KID on resampled arrays pairs duplicates with themselves and drifts upwards."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(25, 4)), rng.normal(size=(25, 4))
    r = kid(x, y, n_boot=2000, seed=3)
    half_width = (r["ci"][1] - r["ci"][0]) / 2
    assert abs(np.mean(r["ci"]) - r["kid"]) < 0.5 * half_width
    naive = [kid(x[rng.integers(0, 25, 25)], y[rng.integers(0, 25, 25)], n_boot=0)["kid"] for _ in range(300)]
    assert np.mean(naive) - r["kid"] > 0.5 * half_width
    assert kid(x, y, n_boot=200, seed=4) == kid(x, y, n_boot=200, seed=4)


def test_kid_checks_input():
    with pytest.raises(DataError, match="dimensions differ"):
        kid(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(DataError, match="at least 2 samples"):
        kid(np.zeros((1, 2)), np.zeros((3, 2)))
    with pytest.raises(DataError, match="NaN"):
        kid(np.full((3, 2), np.nan), np.zeros((3, 2)))


def test_standardized_kid_ignores_feature_units_and_keeps_its_controls():
    """``standardize=True`` equals plain KID on features z-scored by hand with the reference's
    statistics, so a per-feature scale and offset (units) no longer change it; raw KID does
    change with them. The same/shifted controls still hold on wide raw features."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 6)), rng.normal(0.3, 1.0, size=(30, 6))
    mean, std = x.mean(axis=0), x.std(axis=0)
    by_hand = kid((x - mean) / std, (y - mean) / std, n_boot=0)["kid"]
    assert kid(x, y, n_boot=0, standardize=True)["kid"] == pytest.approx(by_hand, rel=1e-10)
    scale, offset = rng.uniform(10, 500, size=6), rng.uniform(-100, 100, size=6)
    wide_x, wide_y = x * scale + offset, y * scale + offset
    assert kid(wide_x, wide_y, n_boot=0, standardize=True)["kid"] == pytest.approx(by_hand, rel=1e-8)
    raw = kid(wide_x, wide_y, n_boot=0)["kid"]  # units dominate: about -1e13 here, even its sign is lost
    assert abs(raw) > 1e6 * abs(by_hand)
    null = kid(wide_x, rng.normal(size=(40, 6)) * scale + offset, n_boot=500, standardize=True)
    assert null["ci"][0] < 0 < null["ci"][1]
    shifted = kid(wide_x, rng.normal(0.7, 1.0, size=(40, 6)) * scale + offset, n_boot=500, standardize=True)
    assert shifted["ci"][0] > 0
    constant = np.c_[x, np.ones(len(x))], np.c_[y, np.ones(len(y))]  # a feature constant in the reference
    assert np.isfinite(kid(*constant, n_boot=0, standardize=True)["kid"])
