"""medlsdm.metrics.privacy with controls: a near-copy is flagged, a fresh rendering of a training anatomy is not."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.ndimage

from medlsdm.errors import DataError
from medlsdm.metrics.privacy import (
    copy_control,
    memorisation_check,
    memorisation_threshold,
    memorisation_with_controls,
    nearest_distances,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (8, 16, 16)


def _anatomy(rng):
    """A smooth random label map with 4 classes."""
    field = scipy.ndimage.gaussian_filter(rng.normal(size=SHAPE), 2.0)
    return np.digitize(field, np.quantile(field, [0.4, 0.65, 0.85])).astype(np.int64)


def _render(lab, rng):
    """Appearance: class intensities set by hidden per-case factors, plus correlated texture."""
    means = np.array([-0.8, -0.2, 0.1, 0.4]) + rng.uniform(-0.15, 0.15, 4)
    texture = scipy.ndimage.gaussian_filter(rng.normal(size=SHAPE), 0.8) * 0.15
    return np.clip(means[lab] + texture, -1, 1)[None].astype(np.float32)


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    maps = [_anatomy(rng) for _ in range(10)]
    train_maps, new_maps = maps[:6], maps[6:]
    train = [_render(lab, rng) for lab in train_maps]
    positive = [copy_control(v, shift=(0, 1, 1), noise_std=0.02, rng=rng) for v in train]
    negative = [_render(lab, rng) for lab in train_maps]
    return rng, train_maps, new_maps, train, positive, negative


def test_copy_control_is_close_but_not_equal():
    v = np.linspace(-1, 1, 4 * 5 * 6).reshape(1, 4, 5, 6).astype(np.float32)
    c = copy_control(v, shift=(0, 0, 1), noise_std=0.0)
    assert c.shape == v.shape and c.dtype == np.float32
    assert np.allclose(c[0, :, :, 1:], v[0, :, :, :-1]) and np.allclose(c[0, :, :, 0], v[0, :, :, 0])
    noisy = copy_control(v[0], shift=(0, 0, 0), noise_std=0.1, rng=1)
    assert noisy.shape == (4, 5, 6) and 0.05 < np.std(noisy - v[0]) < 0.15
    assert np.array_equal(noisy, copy_control(v[0], shift=(0, 0, 0), noise_std=0.1, rng=1))
    with pytest.raises(DataError, match="one value per spatial axis"):
        copy_control(v, shift=(1, 1))


def test_threshold_rule_hand_computed_and_overlap_warning(caplog):
    assert memorisation_threshold([0.1, 0.2], [1.0, 2.0, 3.0], quantile=0.0) == pytest.approx(0.6)
    neg = np.linspace(1, 2, 101)
    assert memorisation_threshold([0.2], neg, quantile=0.1) == pytest.approx((0.2 + 1.1) / 2)
    with caplog.at_level(logging.WARNING, logger="medlsdm.metrics.privacy"):
        memorisation_threshold([1.5], [1.0, 2.0], quantile=0.0)
    assert "controls overlap" in caplog.text
    with pytest.raises(DataError, match="both controls"):
        memorisation_threshold([], [1.0])


def test_positive_control_flagged_negative_control_not(world):
    rng, train_maps, new_maps, train, positive, negative = world
    fresh_copies = [copy_control(v, shift=(0, -1, 0), noise_std=0.02, rng=rng) for v in train[:3]]
    new_anatomy = [_render(lab, rng) for lab in new_maps]
    res = memorisation_with_controls({"copies": fresh_copies, "new_anatomy": new_anatomy}, train, positive, negative)
    assert res["positive_flagged"] == 1.0 and res["negative_flagged"] <= 0.1
    assert res["synthetic"]["copies"]["flagged"] == [True] * 3
    assert res["synthetic"]["copies"]["nn_index"] == [0, 1, 2]
    assert res["synthetic"]["new_anatomy"]["n_flagged"] == 0
    assert max(res["positive"]["nn_distance"]) < res["threshold"] < min(res["negative"]["nn_distance"])


def test_without_the_shift_search_a_shifted_copy_is_missed(world):
    """Why max_shift exists: a one-voxel shift of a sharp-edged image is farther than a new rendering."""
    _, _, _, train, positive, negative = world
    pos0, _ = nearest_distances(positive, train, max_shift=0)
    neg0, _ = nearest_distances(negative, train, max_shift=0)
    assert max(pos0) > min(neg0)
    pos1, idx1 = nearest_distances(positive, train, max_shift=1)
    neg1, _ = nearest_distances(negative, train, max_shift=1)
    assert max(pos1) < 0.5 * min(neg1) and idx1 == list(range(len(train)))


def test_a_degenerate_threshold_fails_a_control(world):
    """Negative controls of the check itself: a threshold that is too high flags the renderings too."""
    _, _, _, train, positive, negative = world
    neg_d, _ = nearest_distances(negative, train, max_shift=1)
    too_high = memorisation_check(negative, train, max(neg_d) * 1.01)
    assert too_high["fraction_flagged"] == 1.0
    too_low = memorisation_check(positive, train, 0.0)
    assert too_low["fraction_flagged"] == 0.0


def test_nearest_distances_hand_computed():
    a = np.zeros((1, 4, 4, 4), np.float32)
    b = np.full((1, 4, 4, 4), 0.5, np.float32)
    d, idx = nearest_distances([b, a + 0.1], [a, b + 0.2], downsample=1)
    assert d == pytest.approx([0.2, 0.1]) and idx == [1, 0]
    with pytest.raises(DataError, match="metric"):
        nearest_distances([a], [a], metric="l1")
    with pytest.raises(DataError, match="shapes differ"):
        nearest_distances([a], [np.zeros((1, 4, 4, 6))])
    with pytest.raises(DataError, match="max_shift"):
        nearest_distances([a], [a], max_shift=2)
    # a copy moved by one voxel along W is found at distance 0 by the shift search
    ramp = np.broadcast_to(np.arange(8.0), (1, 6, 6, 8)).copy()
    moved = np.roll(ramp, 1, axis=-1)
    assert nearest_distances([moved], [ramp], downsample=1, max_shift=1)[0][0] == pytest.approx(0.0)
    assert nearest_distances([moved], [ramp], downsample=1)[0][0] > 0.9


def test_nearest_distances_ssim_metric():
    """1 − SSIM: a copy is at distance 0 from its training volume, and noise is farther from
    the training set than any held-out volume (the smallest held-out distance)."""
    rng = np.random.default_rng(6)
    vols = [scipy.ndimage.gaussian_filter(rng.normal(size=(1, 22, 24, 24)), 1.5) for _ in range(5)]
    noise = rng.normal(size=(1, 22, 24, 24))
    d, idx = nearest_distances([vols[0].copy(), noise], vols[:3], metric="1-ssim")
    held_out, _ = nearest_distances(vols[3:], vols[:3], metric="1-ssim")
    assert d[0] == pytest.approx(0.0, abs=1e-9) and idx[0] == 0
    assert d[0] < min(held_out) <= d[1]
