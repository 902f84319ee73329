"""Whole-volume seam statistics and lesion edits (medlsdm.evaluation.whole_volume), on
controlled cases: a perfect sampler (another oracle draw) shows no seam, an artificial
discontinuity at a window border does; the edit keeps the real volume beyond its soft border."""
import numpy as np
import pytest

from medlsdm.errors import ConfigError, DataError
from medlsdm.evaluation import whole_volume as wv


def test_seam_slices_of_the_pipeline_default_windows():
    # 96 slices, windows of 32 overlapping by 8, VQ-GAN 4x: starts 0, 24, 48, 64 (the last moved back)
    border, centre = wv.seam_slices(96, 32, 8, 4)
    assert border.tolist() == [22, 23, 24, 25, 30, 31, 32, 33, 46, 47, 48, 49, 54, 55, 56, 57, 62, 63, 64, 65, 78, 79, 80, 81]
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
    np.testing.assert_allclose(stats["liver_mean"][:, :3], [[0.1] * 3, [-0.3] * 3], rtol=1e-6)  # a factor estimator per slice
    np.testing.assert_allclose(wv.oracle_errors(np.stack([ref, ref, ref]), label)[:, :3], 0)


def _oracle_like(n, rng, depth=96):
    """Volumes along depth: a smooth anatomy profile plus independent per-draw appearance and noise."""
    profile = np.sin(np.linspace(0, 6, depth))[:, None, None] * 0.3
    return (profile + rng.normal(0, 0.05, (n, 1, 1, 1)) + rng.normal(0, 0.1, (n, depth, 8, 8)))[:, None].astype(np.float32)


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


def test_lesion_site_is_the_deepest_organ_voxel():
    label = np.zeros((9, 11, 11), np.int64)
    zz, yy, xx = np.ogrid[:9, :11, :11]
    label[(zz - 4) ** 2 + (yy - 6) ** 2 + (xx - 5) ** 2 <= 9] = 2
    assert wv.lesion_site(label, 2) == (4, 6, 5)
    with pytest.raises(DataError, match="class 3"):
        wv.lesion_site(label, 3)


def test_outside_max_abs_sees_only_beyond_the_soft_border():
    mask = np.zeros((8, 8, 8), bool)
    mask[3:5, 3:5, 3:5] = True
    real = np.zeros((1, 8, 8, 8), np.float32)
    edited = real.copy()
    edited[0, 2:6, 2:6, 2:6] = 0.5  # inside the mask and within one voxel of it
    assert wv.outside_max_abs(edited, real, mask, soft_border=1) == 0.0
    edited[0, 0, 0, 0] = 0.2
    assert wv.outside_max_abs(edited, real, mask, soft_border=1) == pytest.approx(0.2)
    np.testing.assert_allclose(wv.region_means([edited], [mask]), [0.5])


def test_edit_with_lesion_keeps_the_real_volume_outside(tiny_pipeline, one_thread):
    label = np.zeros((16, 16, 16), np.int64)
    label[2:14, 2:14, 2:14] = 1
    image = np.random.default_rng(0).uniform(-1, 1, (1, 16, 16, 16)).astype(np.float32)
    out = wv.edit_with_lesion(tiny_pipeline, image, label, organ_class=1, lesion_class=2, radius_mm=2.0,
                              spacing=[1.0, 1.0, 1.0], steps=2)
    assert out["centre"] == (7, 7, 7) and out["mask"].sum() > 0 and (out["labels"][out["mask"]] == 2).all()
    assert out["edited"].shape == image.shape
    assert wv.outside_max_abs(out["edited"], image, out["mask"], out["soft_border"]) <= 1e-6
    assert not np.allclose(out["edited"][0][out["mask"]], image[0][out["mask"]])


@pytest.fixture(scope="module")
def tiny_phantom_run(tmp_path_factory):
    from medlsdm.data.phantom import make_phantom
    from medlsdm.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("phantom")
    make_phantom("torso-ct", root / "raw", 2, seed=0, shape=(32, 32, 16))
    prepare_dataset("torso-ct", root / "raw", root / "data", spacing=[12.0, 11.0, 11.0], block_shape=[16, 32, 32], n_cases=2)
    return root / "data"


def test_deep_scan_is_the_same_body_several_blocks_deep(tiny_phantom_run, one_thread):
    from medlsdm.data.prepare import load_manifest

    case = load_manifest(tiny_phantom_run)["cases"][0]["case_id"]
    scan = wv.deep_scan(tiny_phantom_run, case, n_blocks=3, n_oracle=2)
    assert scan.label.shape == (48, 32, 32) and scan.oracle.shape == (2, 1, 48, 32, 32)
    assert scan.z_extent_mm == pytest.approx(48 * 12.0)
    assert (scan.label > 0).any(axis=(1, 2)).all()  # body in every slice: the phantom scanned the whole length
    assert not np.allclose(scan.oracle[0], scan.oracle[1])  # fresh hidden factors and noise
    assert scan.oracle.min() >= -1 and scan.oracle.max() <= 1
    np.testing.assert_allclose(np.sqrt((scan.affine[:3, :3] ** 2).sum(0)), [11.0, 11.0, 12.0], rtol=1e-5)
    with pytest.raises(DataError, match="no case"):
        wv.deep_scan(tiny_phantom_run, "nope", n_blocks=2, n_oracle=2)
