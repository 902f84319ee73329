"""Texture measures (medlsdm.metrics.texture) against closed-form cases, with controls: white noise
of a known sd gives that sd and its analytic share of power above half Nyquist; a blurred copy fails
both; smooth shading does not inflate the noise; identical sets give ratio 1."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medlsdm.errors import DataError
from medlsdm.metrics.texture import (
    body_window,
    hf_power,
    noise_level,
    noise_levels,
    radial_frequency,
    radial_power_spectrum,
    ratio,
    robust_sd,
    texture_ratios,
)

SD = 0.02


def _phantom(seed=0, shape=(16, 64, 64)):
    """A piecewise-constant body (an ellipse, value 0.1) with two organs (0.3, −0.2) in air (−1), and its labels."""
    d, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    labels = np.zeros(shape, np.int64)
    labels[:, (yy - h / 2) ** 2 / (0.44 * h) ** 2 + (xx - w / 2) ** 2 / (0.38 * w) ** 2 < 1] = 1
    labels[:, 10:40, 14:40] = 2
    labels[:, 42:52, 30:40] = 3
    return np.choose(labels, [-1.0, 0.1, 0.3, -0.2]), labels


def test_white_noise_on_a_piecewise_constant_volume_gives_its_sd():
    clean, labels = _phantom()
    noisy = clean + np.random.default_rng(0).normal(0, SD, clean.shape)
    assert noise_level(noisy, labels == 2) == pytest.approx(SD, rel=0.03)
    assert noise_level(noisy[None], labels == 2) == pytest.approx(SD, rel=0.03)  # (1, D, H, W) too
    levels = noise_levels(noisy, labels, [1, 2, 3])
    assert all(levels[c] == pytest.approx(SD, rel=0.05) for c in (1, 2, 3))
    assert levels["pooled"] == pytest.approx(SD, rel=0.03)
    # one axis at a time, and a whole body holding three regions (the robust spread ignores the few edge pairs)
    assert noise_level(noisy, labels == 2, axes=[0]) == pytest.approx(SD, rel=0.05)
    assert noise_level(noisy, labels > 0) == pytest.approx(SD, rel=0.05)
    assert noise_level(clean, labels == 2) == 0.0


def test_values_rounded_to_whole_hu_keep_their_noise_level():
    """CT is stored in whole HU (0.001 here): the MAD of integer differences jumps in steps of
    about 1 HU; the clipped sd does not."""
    clean, labels = _phantom()
    rng = np.random.default_rng(7)
    for sd in (0.009, 0.0105, 0.012):
        noisy = clean + rng.normal(0, sd, clean.shape)
        assert noise_level(np.round(noisy, 3), labels == 2) == pytest.approx(
            np.hypot(sd, 0.001 / np.sqrt(12)), rel=0.03
        )
    values = rng.normal(0, 1.0, 100_000)
    assert robust_sd(values) == pytest.approx(1.0, rel=0.01)
    assert robust_sd(np.concatenate([values, np.full(2000, 50.0)])) == pytest.approx(1.0, rel=0.01)  # 2 % outliers
    assert np.isnan(robust_sd([]))


def test_smooth_shading_inside_the_organ_does_not_inflate_the_noise():
    clean, labels = _phantom()
    z, y, x = np.meshgrid(*(np.arange(s) for s in clean.shape), indexing="ij")
    # a ramp and two waves: the organ's values span ±6 noise sds, changing by up to 0.7 sd per voxel
    shading = 0.005 * y + 0.1 * np.sin(x / 12.0) + 0.1 * np.cos(z / 8.0)
    noisy = clean + np.random.default_rng(1).normal(0, SD, clean.shape)
    assert noise_level(noisy + shading, labels == 2) == pytest.approx(noise_level(noisy, labels == 2), rel=0.02)
    ramp = noise_level(noisy + 0.02 * y, labels == 2)  # a linear ramp alone: centring removes it
    assert ramp == pytest.approx(noise_level(noisy, labels == 2), rel=1e-3)
    # the plain sd of the organ's voxels is several times the noise
    assert (noisy + shading)[labels == 2].std() > 3 * SD


def test_a_blurred_copy_loses_its_noise_and_an_empty_region_is_nan():
    clean, labels = _phantom()
    noisy = clean + np.random.default_rng(2).normal(0, SD, clean.shape)
    blurred = ndimage.gaussian_filter(noisy, 1.0)
    assert noise_level(blurred, labels == 2) < 0.2 * SD
    assert np.isnan(noise_level(noisy, labels == 7))
    assert np.isnan(noise_levels(noisy, labels, [7])["pooled"])
    with pytest.raises(DataError, match="does not match"):
        noise_level(noisy[:, :10], labels == 2)


def test_white_noise_has_its_analytic_share_of_power_above_half_nyquist():
    h, w = 64, 48
    # the exact share for this definition: the FFT bins whose radius in Nyquist units exceeds 0.5
    fy, fx = np.fft.fftfreq(h) / 0.5, np.fft.fftfreq(w) / 0.5
    exact = np.mean([[np.hypot(a, b) > 0.5 for b in fx] for a in fy])
    assert exact == pytest.approx(1 - np.pi / 16, abs=0.01)  # the disc of radius 1/2 in the square [-1, 1)²
    assert (radial_frequency(h, w) > 0.5).mean() == exact
    noise = np.random.default_rng(3).normal(0, 0.5, (40, h, w))
    assert hf_power(noise) == pytest.approx(0.25 * exact, rel=0.02)  # σ² × share
    assert hf_power(noise, relative=True) == pytest.approx(exact, rel=0.02)
    assert hf_power(noise, cutoff=0.0, relative=True) == pytest.approx(1.0, abs=1e-3)  # only the removed mean below
    # the radially averaged spectrum of white noise is flat at σ²
    _, spectrum = radial_power_spectrum(noise, bins=8)
    np.testing.assert_allclose(spectrum[1:], 0.25, rtol=0.05)


def test_white_noise_inside_a_body_window_keeps_its_share():
    _, labels = _phantom()
    noise = np.random.default_rng(4).normal(0, 1.0, labels.shape)
    share = (radial_frequency(*labels.shape[1:]) > 0.5).mean()
    assert hf_power(noise, labels > 0) == pytest.approx(share, rel=0.03)
    window = body_window(labels[0] > 0)
    assert window.max() == 1 and window[labels[0] == 0].max() == 0
    rim = (labels[0] > 0) & ~ndimage.binary_erosion(labels[0] > 0)
    assert window[rim].max() == 0  # the body's outermost voxels (partial volume with air) count for nothing


def test_a_blurred_copy_loses_its_high_frequencies_the_body_edge_notwithstanding():
    clean, labels = _phantom()
    noisy = clean + np.random.default_rng(5).normal(0, SD, clean.shape)
    blurred = ndimage.gaussian_filter(noisy, 1.0)  # blurs the air-body edge into the body too
    assert hf_power(blurred, labels > 0) < 0.1 * hf_power(noisy, labels > 0)
    # the control: a hard mask turns the blurred rim into a step and *raises* the power
    assert hf_power(blurred, labels > 0, taper=0) > hf_power(noisy, labels > 0, taper=0)
    assert np.isnan(hf_power(noisy, labels > 5))


def test_ratios_identical_sets_give_one_and_a_blurred_set_fails():
    clean, labels = _phantom(shape=(8, 64, 64))
    rng = np.random.default_rng(6)
    vols = [clean + rng.normal(0, SD, clean.shape) for _ in range(4)]
    labs = [labels] * 4
    same = texture_ratios(vols, labs, vols, labs, [2, 3])
    assert same == {"noise_ratio": 1.0, "hf_power_ratio": 1.0}
    fresh = [clean + rng.normal(0, SD, clean.shape) for _ in range(4)]  # the same distribution: ≈ 1
    again = texture_ratios(fresh, labs, vols, labs, [2, 3])
    assert again["noise_ratio"] == pytest.approx(1, abs=0.05) and again["hf_power_ratio"] == pytest.approx(1, abs=0.05)
    blurred = texture_ratios([ndimage.gaussian_filter(v, 1.0) for v in vols], labs, vols, labs, [2, 3])
    assert blurred["noise_ratio"] < 0.3 and blurred["hf_power_ratio"] < 0.1
    assert (
        ratio([1.0, np.nan, 3.0], [2.0]) == 1.0 and np.isnan(ratio([np.nan], [1.0])) and np.isnan(ratio([1.0], [0.0]))
    )
