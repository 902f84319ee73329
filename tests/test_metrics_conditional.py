"""medlsdm.metrics.conditional on a tiny oracle the test builds: a label map re-rendered with fresh hidden factors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from medlsdm.errors import DataError
from medlsdm.metrics.conditional import (
    class_means,
    diversity,
    diversity_ratio,
    factor_comparison,
    paint_labels,
    painting_r2,
    within_map_spread,
)

SHAPE = (6, 10, 12)


def _anatomy(rng):
    """A label map: background 0, a body 1 with two organs 2 and 3 at random places."""
    lab = np.zeros(SHAPE, dtype=np.int64)
    lab[:, 1:9, 1:11] = 1
    for c in (2, 3):
        z, y, x = rng.integers(0, 3), rng.integers(1, 5), rng.integers(1, 7)
        lab[z : z + 3, y : y + 4, x : x + 4] = c
    return lab


def _render(lab, rng):
    """The oracle: hidden factors (organ 2 contrast, organ 3 attenuation) and noise → an image."""
    f, s = rng.uniform(0, 1), rng.uniform(0, 1)
    base = np.array([-1.0, 0.0, 0.2 + 0.5 * f, 0.3 - 0.4 * s])
    img = base[lab] + rng.normal(0, 0.05, SHAPE)
    return img[None].astype(np.float32), {"organ2": float(img[lab == 2].mean()), "organ3": float(img[lab == 3].mean())}


def test_within_map_spread_hand_computed():
    # map 0: 1, 3 (sd √2); map 1: 2, 2 (sd 0); map 2 lacks the class (NaN): skipped
    assert within_map_spread([1.0, 3.0, 2.0, 2.0, np.nan, 1.0], 2) == pytest.approx(math.sqrt(2) / 2)
    assert within_map_spread(np.arange(6.0), 3) == pytest.approx(1.0)
    with pytest.raises(DataError):
        within_map_spread([np.nan, 1.0], 2)
    with pytest.raises(DataError):
        within_map_spread([1.0, 2.0], 1)


def test_diversity_hand_computed_and_masked():
    a, b, c = np.zeros((2, 3)), np.ones((2, 3)), np.full((2, 3), 3.0)
    assert diversity([a, b, c]) == pytest.approx((1 + 3 + 2) / 3)
    mask = np.array([[True, False, False], [False, False, False]])
    b2 = b.copy()
    b2[1, 2] = 100.0  # outside the mask: ignored
    assert diversity([a, b2], mask) == pytest.approx(1.0)
    assert diversity([a, b2]) == pytest.approx(math.sqrt((5 + 100**2) / 6))
    with pytest.raises(DataError, match="at least 2"):
        diversity([a])
    with pytest.raises(DataError, match="no voxel"):
        diversity([a, b], np.zeros((2, 3), bool))
    with pytest.raises(DataError, match="does not fit"):
        diversity([a, b], np.ones((4,), bool))


def test_oracle_vs_oracle_ratio_near_one_and_a_collapsed_sampler_near_zero():
    rng = np.random.default_rng(0)
    maps = [_anatomy(rng) for _ in range(6)]
    masks = [lab > 0 for lab in maps]
    oracle_a = [[_render(lab, rng)[0] for _ in range(6)] for lab in maps]
    oracle_b = [[_render(lab, rng)[0] for _ in range(6)] for lab in maps]
    ratio, per_map = diversity_ratio(oracle_a, oracle_b, masks, return_per_map=True)
    assert 0.75 < ratio < 1.33 and len(per_map) == 6
    collapsed = [[draws[0]] * 4 for draws in oracle_a]  # same output for every seed
    assert diversity_ratio(collapsed, oracle_b, masks) == pytest.approx(0.0)
    # the conditional mean for every seed plus a little noise: still far from 1
    means = [[np.mean(d, axis=0) + rng.normal(0, 0.005, d[0].shape) for _ in range(4)] for d in oracle_a]
    assert diversity_ratio(means, oracle_b, masks) < 0.2
    with pytest.raises(DataError, match="identical"):
        diversity_ratio(oracle_a[:1], collapsed[:1])


def test_factor_comparison_oracle_vs_oracle_and_shifted():
    rng = np.random.default_rng(1)
    lab = _anatomy(rng)

    def factors(n):
        values = [_render(lab, rng)[1] for _ in range(n)]
        return {k: [v[k] for v in values] for k in ("organ2", "organ3")}

    a, b = factors(40), factors(40)
    same = factor_comparison(a, b)
    assert all(r["ks_p"] > 0.01 and r["n_synthetic"] == r["n_oracle"] == 40 for r in same.values())
    shifted = {k: list(np.asarray(v) + 0.3) for k, v in a.items()}
    diff = factor_comparison(shifted, b)
    assert all(r["ks_p"] < 1e-6 and r["w1"] > same[k]["w1"] for k, r in diff.items())
    with pytest.raises(DataError, match="factors differ"):
        factor_comparison({"x": [1, 2]}, {"y": [1, 2]})


def test_factor_comparison_w1_and_ks_hand_computed():
    r = factor_comparison({"f": [0.0, 1.0, 3.0]}, {"f": [1.0, 2.0, 6.0]})["f"]
    assert r["w1"] == pytest.approx((1 + 1 + 3) / 3)  # sorted values paired for equal sizes
    assert r["ks"] == pytest.approx(1 / 3)  # CDFs differ by at most 1/3 (at x = 0, 1 and 3)
    r2 = factor_comparison({"f": [0.0, 1.0]}, {"f": [0.0, 0.0, 1.0, 1.0]})["f"]
    assert r2["w1"] == pytest.approx(0.0) and r2["ks"] == pytest.approx(0.0) and r2["ks_p"] == pytest.approx(1.0)


def test_class_means_and_paint_labels():
    lab = np.array([[0, 1], [1, 2]])
    img = np.array([[5.0, 1.0], [3.0, 7.0]])
    means = class_means([img, img + 1], [lab, lab], num_classes=4)
    assert means[:3] == pytest.approx([5.5, 2.5, 7.5]) and np.isnan(means[3])
    assert paint_labels(lab, means).tolist() == [[5.5, 2.5], [2.5, 7.5]]
    with pytest.raises(DataError, match=r"no class mean for classes \[3\]"):
        paint_labels(np.array([3]), means)
    with pytest.raises(DataError, match="integer"):
        paint_labels(lab.astype(float), means)


def test_painting_r2_exact_painting_noise_and_hand_case():
    rng = np.random.default_rng(2)
    maps = [_anatomy(rng) for _ in range(4)]
    train = [_render(lab, rng)[0] for lab in maps[:3]]
    means = class_means(train, maps[:3])
    painted = [paint_labels(lab, means)[None] for lab in maps]
    assert painting_r2(painted, maps, train, maps[:3]) == pytest.approx(1.0)
    noise = [rng.normal(0, 1, (1, *SHAPE)) for _ in maps]
    assert abs(painting_r2(noise, maps, noise, maps)) < 0.02
    # realistic case lies in between; inside the body only the organs are left to explain
    r2_all = painting_r2([_render(lab, rng)[0] for lab in maps], maps, train, maps[:3])
    assert 0.5 < r2_all < 1.0
    # hand-computed: train means class0 = 0, class1 = 2; evaluated x = [1, 3, 2], labels [0, 1, 1]
    r2 = painting_r2([np.array([1.0, 3.0, 2.0])], [np.array([0, 1, 1])], [np.array([0.0, 2.0])], [np.array([0, 1])])
    sse, sst = 1 + 1 + 0, (1 - 2) ** 2 + (3 - 2) ** 2 + 0
    assert r2 == pytest.approx(1 - sse / sst)
    # a mask restricts the voxels: only the first two
    r2m = painting_r2(
        [np.array([1.0, 3.0, 2.0])],
        [np.array([0, 1, 1])],
        [np.array([0.0, 2.0])],
        [np.array([0, 1])],
        masks=[np.array([True, True, False])],
    )
    assert r2m == pytest.approx(1 - 2 / 2)
    with pytest.raises(DataError, match="constant"):
        painting_r2([np.ones(3)], [np.array([0, 1, 1])], [np.ones(2)], [np.array([0, 1])])


def test_diversity_equals_brute_force_pairs():
    rng = np.random.default_rng(3)
    s = [rng.normal(size=(1, 4, 5, 6)) for _ in range(5)]
    mask = rng.uniform(size=(4, 5, 6)) > 0.5
    ref = np.mean([np.sqrt(np.mean((a[0][mask] - b[0][mask]) ** 2)) for a, b in itertools.combinations(s, 2)])
    assert diversity(s, mask) == pytest.approx(ref)
