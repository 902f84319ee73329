"""Whole-volume seam statistics (medlsdm.evaluation.whole_volume), on controlled cases: a perfect
sampler (another oracle draw) shows no seam, an artificial discontinuity at the window borders
does. (The phantom scan several blocks deep is tested in test_phantom_oracle.py.)"""

import numpy as np
import pytest

from medlsdm.errors import ConfigError, DataError
from medlsdm.evaluation import whole_volume as wv


def test_seam_slices_of_the_pipeline_default_windows():
    # 96 slices, windows of 32 overlapping by 8, VQ-GAN 4x: starts 0, 24, 48, 64 (the last moved back)
    border, centre = wv.seam_slices(96, 32, 8, 4)
    assert border.tolist() == [
        22,
        23,
        24,
        25,
        30,
        31,
        32,
        33,
        46,
        47,
        48,
        49,
        54,
        55,
        56,
        57,
        62,
        63,
        64,
        65,
        78,
        79,
        80,
        81,
    ]
    assert centre.tolist() == [14, 15, 16, 17, 38, 39, 40, 41]  # the middles at 64 and 80 fall on borders
    with pytest.raises(ConfigError, match="one window"):
        wv.seam_slices(32, 32, 8, 4)


def test_slice_errors_and_statistics_closed_form():
    label = np.zeros((4, 8, 8), np.int64)
    label[:3, 2:6, 2:6] = 1  # no body in the last slice
    ref = np.zeros((1, 4, 8, 8), np.float32)
    vols = np.stack([ref + 0.1, ref - 0.3])
    errors = wv.slice_errors(vols, ref, label)
    np.testing.assert_allclose(errors[:, :3], [[0.1] * 3, [0.3] * 3], rtol=1e-6)
    assert np.isnan(errors[:, 3]).all()
    stats = wv.slice_statistics(vols, label, ["background", "liver"], dataset=None)
    np.testing.assert_allclose(stats["body_mean"][:, :3], [[0.1] * 3, [-0.3] * 3], rtol=1e-6)
    np.testing.assert_allclose(stats["body_std"][:, :3], 0, atol=1e-6)
    np.testing.assert_allclose(
        stats["liver_mean"][:, :3], [[0.1] * 3, [-0.3] * 3], rtol=1e-6
    )  # a factor estimator per slice
    np.testing.assert_allclose(wv.oracle_errors(np.stack([ref, ref, ref]), label)[:, :3], 0)


def _oracle_like(n, rng, depth=96):
    """Volumes along depth: a smooth anatomy profile plus independent per-draw appearance and noise."""
    profile = np.sin(np.linspace(0, 6, depth))[:, None, None] * 0.3
    return (profile + rng.normal(0, 0.05, (n, 1, 1, 1)) + rng.normal(0, 0.1, (n, depth, 8, 8)))[:, None].astype(
        np.float32
    )


def test_a_perfect_sampler_has_no_seam_and_a_discontinuity_at_a_border_is_found():
    rng = np.random.default_rng(0)
    label = np.ones((96, 8, 8), np.int64)
    oracle, samples = _oracle_like(8, rng), _oracle_like(3, rng)
    border, centre = wv.seam_slices(96, 32, 8, 4)
    mean = oracle.mean(0)
    perfect = wv.seam_gap(wv.slice_errors(samples, mean, label), border, centre)
    assert perfect["passes"] and abs(perfect["gap"]) < 0.02 and perfect["ci"][0] <= 0 <= perfect["ci"][1]
    reference = wv.seam_gap(wv.oracle_errors(oracle, label), border, centre)
    assert reference["passes"]
    seamed = samples.copy()
    seamed[:, :, border] += 0.25  # an artefact at every window border
    broken = wv.seam_gap(wv.slice_errors(seamed, mean, label), border, centre)
    assert not broken["passes"] and broken["gap"] > 0.02 and broken["ci"][0] > 0


def test_excess_errors_remove_what_the_anatomy_leaves_open():
    # appearance varies twice as much around the borders (a variable stretch of anatomy): a
    # perfect sampler's raw errors are larger there, its excess over the oracle's own errors is not
    rng = np.random.default_rng(2)
    label = np.ones((96, 8, 8), np.int64)
    border, centre = wv.seam_slices(96, 32, 8, 4)
    spread = np.full(96, 0.05)
    spread[border] = 0.2

    def draws(n):
        return (rng.normal(0, 1, (n, 1, 1, 1)) * spread[:, None, None] + rng.normal(0, 0.05, (n, 96, 8, 8)))[
            :, None
        ].astype(np.float32)

    oracle, samples = draws(16), draws(10)
    mean = oracle.mean(0)
    raw = wv.seam_gap(wv.slice_errors(samples, mean, label), border, centre)
    assert not raw["passes"]  # the anatomy alone fails the raw comparison
    reference = wv.oracle_errors(oracle, label)
    excess = wv.excess_errors(wv.slice_errors(samples, mean, label), reference)
    assert wv.seam_gap(excess, border, centre)["passes"]
    seamed = samples.copy()
    seamed[:, :, border] += 0.5  # a real artefact at the borders still shows
    broken = wv.seam_gap(wv.excess_errors(wv.slice_errors(seamed, mean, label), reference), border, centre)
    assert not broken["passes"] and broken["ci"][0] > 0


def test_seam_gap_against_one_pass_separates_seams_from_anatomy_the_model_finds_hard():
    # the model is worse at the anatomy where the borders happen to lie, windowed or not: the
    # plain gap fails for both, the gap less one pass's passes; an artefact only the windows
    # make is still found
    rng = np.random.default_rng(3)
    label = np.ones((96, 8, 8), np.int64)
    border, centre = wv.seam_slices(96, 32, 8, 4)
    oracle = _oracle_like(8, rng)
    mean = oracle.mean(0)

    def samples():
        x = _oracle_like(4, rng)
        x[:, :, border] += 0.2  # a bias at that anatomy, in every mode
        return x

    windowed, one_pass = samples(), samples()
    errors = {name: wv.slice_errors(x, mean, label) for name, x in (("windowed", windowed), ("one pass", one_pass))}
    assert not wv.seam_gap(errors["windowed"], border, centre)["passes"]
    assert not wv.seam_gap(errors["one pass"], border, centre)["passes"]
    fair = wv.seam_gap(errors["windowed"], border, centre, baseline=errors["one pass"])
    assert fair["passes"] and abs(fair["gap"]) < 0.03
    seamed = windowed.copy()
    seamed[:, :, border] += 0.2
    broken = wv.seam_gap(wv.slice_errors(seamed, mean, label), border, centre, baseline=errors["one pass"])
    assert not broken["passes"] and broken["ci"][0] > 0
    # an unpaired baseline (another number of volumes): the closed-form difference in differences
    w, o = errors["windowed"], errors["one pass"][:3]
    expected = (w[:, border].mean() - w[:, centre].mean()) - (o[:, border].mean() - o[:, centre].mean())
    assert wv.seam_gap(w, border, centre, baseline=o)["gap"] == pytest.approx(expected)


def test_seam_gap_needs_slices_with_body():
    errors = np.full((2, 96), np.nan)
    with pytest.raises(DataError, match="no border"):
        wv.seam_gap(errors, *wv.seam_slices(96, 32, 8, 4))


def test_oracle_band_holds_the_mean_in_its_ci():
    values = np.random.default_rng(1).normal(0, 1, (8, 5))
    values[:, 4] = np.nan
    band = wv.oracle_band({"s": values}, n_boot=200)["s"]
    assert np.all(band["low"][:4] <= band["mean"][:4]) and np.all(band["mean"][:4] <= band["high"][:4])
    assert np.all(band["min"][:4] <= band["low"][:4]) and np.isnan(band["mean"][4])


def test_resolve_windows_uses_the_pipeline_defaults(tiny_pipeline):
    assert wv.resolve_windows(tiny_pipeline, 16, None) == (16, 4)  # a quarter of the window
    with pytest.raises(ConfigError, match="block_shape"):
        wv.resolve_windows(tiny_pipeline, None, None)  # the tiny pipeline records no block
