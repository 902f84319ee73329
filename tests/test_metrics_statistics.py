"""medlsdm.metrics.statistics: coverage in simulation, scipy's bootstrap as reference, paired controls."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from medlsdm.errors import DataError
from medlsdm.metrics.statistics import bootstrap_ci, mean_sd, paired_bootstrap_ci, summarise


def test_bootstrap_ci_covers_the_known_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    reps, covered = 200, 0
    for r in range(reps):
        x = rng.normal(3.0, 2.0, size=30)
        low, high = bootstrap_ci(x, seed=r)
        covered += low <= 3.0 <= high
    assert 0.88 <= covered / reps <= 0.99
    # negative control: a 50 % interval must cover far less often
    covered50 = sum(
        lo <= 3.0 <= hi
        for lo, hi in (bootstrap_ci(rng.normal(3.0, 2.0, size=30), level=0.5, seed=r) for r in range(reps))
    )
    assert 0.35 <= covered50 / reps <= 0.65


def test_bootstrap_ci_matches_scipy_percentile_bootstrap():
    x = np.random.default_rng(1).gamma(2.0, size=40)
    for stat in (np.mean, np.median):
        low, high = bootstrap_ci(x, stat=stat, n_boot=20000, seed=3)
        ref = scipy.stats.bootstrap(
            (x,), stat, n_resamples=20000, method="percentile", random_state=np.random.default_rng(4)
        ).confidence_interval
        width = ref.high - ref.low
        assert low == pytest.approx(ref.low, abs=0.05 * width) and high == pytest.approx(ref.high, abs=0.05 * width)


def test_bootstrap_ci_is_seeded_and_checks_input():
    x = [1.0, 2.0, 4.0, 8.0]
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(x, seed=5)
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    with pytest.raises(DataError, match="NaN"):
        bootstrap_ci([1.0, np.nan, 2.0])
    with pytest.raises(DataError, match="at least 2"):
        bootstrap_ci([1.0])
    with pytest.raises(DataError, match="level"):
        bootstrap_ci(x, level=95)
    with pytest.raises(DataError, match="one number per resample"):
        bootstrap_ci(x, stat=lambda a, axis: a)


def test_paired_bootstrap_ci_excludes_zero_for_a_shift_and_covers_it_for_none():
    rng = np.random.default_rng(2)
    case_effect = rng.normal(0, 1.0, size=20)  # large between-case spread, common to both arms
    a = case_effect + rng.normal(0, 0.05, size=20)
    shifted = case_effect + 0.1 + rng.normal(0, 0.05, size=20)
    same = case_effect + rng.normal(0, 0.05, size=20)
    low, high = paired_bootstrap_ci(shifted, a)
    assert 0 < low < 0.1 < high
    low, high = paired_bootstrap_ci(same, a)
    assert low < 0 < high
    # the unpaired interval of the mean of one arm is far wider than the shift: pairing is what finds it
    lo_a, hi_a = bootstrap_ci(shifted)
    assert hi_a - lo_a > 5 * (high - low)
    with pytest.raises(DataError, match="pair up"):
        paired_bootstrap_ci([1.0, 2.0], [1.0, 2.0, 3.0])


def test_mean_sd_and_summarise():
    assert mean_sd([1.0, 2.0, 3.0, 6.0]) == pytest.approx((3.0, np.std([1, 2, 3, 6], ddof=1)))
    s = summarise([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["sd"] == 1.0 and s["n"] == 3 and s["per_case"] == [1.0, 2.0, 3.0]
    assert s["ci"][0] <= 2.0 <= s["ci"][1]


def _coverage(n_seeds: int, sd_seed: float, reps: int = 200) -> tuple[float, float]:
    """How often the 95 % intervals of the hierarchical and of the case-only bootstrap hold the true
    gain 0.02 in a simulation: cases shared by both arms (sd 0.1), one offset per network (sd_seed)
    and noise per network and case (sd 0.02); 12 cases."""
    from medlsdm.metrics.statistics import hierarchical_bootstrap_ci, paired_bootstrap_ci

    rng = np.random.default_rng(1)
    hits = np.zeros(2)
    for r in range(reps):
        case = rng.normal(0, 0.1, 12)
        a = 0.72 + case + rng.normal(0, sd_seed, (n_seeds, 1)) + rng.normal(0, 0.02, (n_seeds, 12))
        b = 0.70 + case + rng.normal(0, sd_seed, (n_seeds, 1)) + rng.normal(0, 0.02, (n_seeds, 12))
        for k, (lo, hi) in enumerate(
            (
                hierarchical_bootstrap_ci(a, b, n_boot=500, seed=r),
                paired_bootstrap_ci(a.mean(0), b.mean(0), n_boot=500, seed=r),
            )
        ):
            hits[k] += lo <= 0.02 <= hi
    return tuple(hits / reps)


def test_hierarchical_bootstrap_covers_a_known_gain_where_the_case_only_one_does_not():
    hierarchical, case_only = _coverage(n_seeds=5, sd_seed=0.03)
    assert hierarchical >= 0.85  # nominal 0.95; the percentile method is a little narrow with 5 networks
    assert case_only <= 0.6  # negative control: judge seeds vary the mean, the case-only interval ignores it
    hierarchical, case_only = _coverage(n_seeds=5, sd_seed=0.0)
    assert hierarchical >= 0.85 and case_only >= 0.85  # without a seed effect both hold it


def test_hierarchical_bootstrap_resamples_generators_when_given_them():
    """Synthetic arm ``(generators, judge seeds, cases)`` with one offset per generator (sd 0.03)
    against a real arm ``(judge seeds, cases)``: the nested interval holds the true gain 0.02 at
    about its level; flattening the generators into networks (their two judges then look like
    independent draws) holds it less often."""
    from medlsdm.metrics.statistics import hierarchical_bootstrap_ci

    rng = np.random.default_rng(2)
    hits = np.zeros(2)
    for r in range(100):
        case = rng.normal(0, 0.1, 12)
        a = (
            0.72
            + case
            + rng.normal(0, 0.03, (4, 1, 1))
            + rng.normal(0, 0.01, (4, 2, 1))
            + rng.normal(0, 0.02, (4, 2, 12))
        )
        b = 0.70 + case + rng.normal(0, 0.01, (2, 1)) + rng.normal(0, 0.02, (2, 12))
        for k, arm in enumerate((a, a.reshape(8, 12))):
            lo, hi = hierarchical_bootstrap_ci(arm, b, n_boot=300, seed=r)
            hits[k] += lo <= 0.02 <= hi
    nested, flat = hits / 100
    assert nested >= 0.85 and flat < nested
    flat_ones = np.full((3, 2, 5), 0.7)
    assert hierarchical_bootstrap_ci(flat_ones, flat_ones[0], n_boot=50) == pytest.approx((0.0, 0.0))


def test_hierarchical_bootstrap_refuses_arms_that_do_not_pair():
    from medlsdm.metrics.statistics import hierarchical_bootstrap_ci

    with pytest.raises(DataError, match="same >= 2 cases"):
        hierarchical_bootstrap_ci(np.zeros((2, 5)), np.zeros((2, 4)))
    with pytest.raises(DataError, match="finite"):
        hierarchical_bootstrap_ci(np.full((2, 5), np.nan), np.zeros((2, 5)))
