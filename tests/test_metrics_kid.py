"""medlsdm.metrics.distribution.kid against a direct NumPy computation, with same- and shifted-distribution controls."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from medlsdm.errors import DataError
from medlsdm.metrics.distribution import kid


def _kid_by_hand(x, y):
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1) ** 3

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(a, b) for a in x for b in y) / (n * m)
    return xx + yy - 2 * xy


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
