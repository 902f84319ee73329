"""medlsdm.metrics.radiomics: FRD against frd-score itself, a set with itself, a set with other texture, the cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage

from medlsdm.errors import DataError

frd_score = pytest.importorskip("frd_score", reason="optional: pip install 'medlsdm[radiomics]'")
pytest.importorskip("radiomics", reason="optional: pip install 'medlsdm[radiomics]'")

from frd_score import frd as frd_module  # noqa: E402

from medlsdm.metrics.radiomics import feature_matrix, frd, radiomics_features  # noqa: E402

SHAPE = (12, 24, 24)


def _volumes(n, sigma, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        v = scipy.ndimage.gaussian_filter(rng.normal(size=SHAPE), sigma)
        out.append(np.clip(v / v.std() * 0.4, -1, 1).astype(np.float32)[None])
    return out


@pytest.fixture(scope="module")
def feature_sets():
    a = [radiomics_features(v) for v in _volumes(6, 1.5, 0)]
    b = [radiomics_features(v) for v in _volumes(6, 1.5, 1)]
    c = [radiomics_features(v) for v in _volumes(6, 0.6, 2)]  # other texture (finer grain)
    return a, b, c


def test_frd_of_a_set_with_itself_is_zero_and_other_texture_is_farther(feature_sets):
    a, b, c = feature_sets
    assert frd(a, a) == pytest.approx(0.0, abs=1e-6 * frd(a, c))
    assert frd(a, c) > 3 * frd(a, b) > 0


def test_frd_matches_frd_scores_normalisation_and_distance():
    rng = np.random.default_rng(3)
    fa = rng.normal(size=(8, 5)) * [1, 10, 100, 0, 1] + [0, 5, 0, 7, 0]  # column 3 constant in the reference
    fb = rng.normal(0.3, 1.5, size=(9, 5)) * [1, 10, 100, 1, 1]
    fb[2, 1] = np.nan  # a row with a NaN is dropped
    ours = frd(fa, fb)
    ra, rb = fa.astype(np.float32), fb.astype(np.float32)[~np.isnan(fb).any(axis=1)]
    za = frd_module.z_score_normalize(ra, 0, 1, replace_nan=False, base_distribution=ra, handle_std_zero=False)
    zb = frd_module.z_score_normalize(rb, 0, 1, replace_nan=False, base_distribution=ra, handle_std_zero=False)
    keep = np.isfinite(za).all(0) & np.isfinite(zb).all(0)
    assert keep.tolist() == [True, True, True, False, True]
    ref = frd_module.calculate_frechet_distance(
        za[:, keep].mean(0), np.cov(za[:, keep], rowvar=False), zb[:, keep].mean(0), np.cov(zb[:, keep], rowvar=False)
    )
    assert ours == pytest.approx(float(ref), rel=1e-4)


def test_frd_end_to_end_equals_frd_score_compute_frd(tmp_path):
    """frd-score's own pipeline on NIfTI folders reports log(d²) (v1); ours is d²."""
    import SimpleITK as sitk

    sets = {"real": _volumes(4, 1.5, 10), "syn": _volumes(4, 0.8, 11)}
    for name, vols in sets.items():
        (tmp_path / name).mkdir()
        for i, v in enumerate(vols):
            sitk.WriteImage(sitk.GetImageFromArray(v[0]), str(tmp_path / name / f"{i}.nii.gz"))
    ref = frd_score.compute_frd(
        [str(tmp_path / "real"), str(tmp_path / "syn")], image_types=["Original"], num_workers=1, frd_version="v1"
    )
    ours = frd([radiomics_features(v) for v in sets["real"]], [radiomics_features(v) for v in sets["syn"]])
    assert math.log(ours) == pytest.approx(float(ref), abs=1e-3)


def test_radiomics_features_cache(tmp_path, monkeypatch):
    v = _volumes(1, 1.5, 4)[0]
    mask = np.zeros(SHAPE, bool)
    mask[2:10, 4:20, 4:20] = True
    first = radiomics_features(v, mask, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1 and all(isinstance(x, float) for x in first.values())

    def no_extraction(*args, **kwargs):
        raise AssertionError("extracted again instead of reading the cache")

    monkeypatch.setattr(frd_module, "process_image_mask_pair", no_extraction)
    assert radiomics_features(v, mask, cache_dir=tmp_path) == first
    with pytest.raises(AssertionError, match="extracted again"):  # other content, other key
        radiomics_features(v * 0.5, mask, cache_dir=tmp_path)


def test_input_errors():
    with pytest.raises(DataError, match="does not fit"):
        radiomics_features(np.zeros(SHAPE), np.ones((3, 3, 3)))
    with pytest.raises(DataError, match="at most one voxel"):
        radiomics_features(np.zeros(SHAPE), np.zeros(SHAPE))
    with pytest.raises(DataError, match="other features"):
        feature_matrix([{"a": 1.0}, {"b": 1.0}])
    with pytest.raises(DataError, match="same d"):
        frd(np.zeros((3, 2)), np.zeros((3, 4)))
