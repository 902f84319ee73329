"""Tests of medlsdm.data.phantom: files, geometry, intensities, noise, determinism, errors."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medlsdm.data.classes import BREAST_MR, CARDIAC, TORSO_CT
from medlsdm.data.phantom import generate_case, make_phantom
from medlsdm.data.phantom.common import DEFAULT_SHAPES, PHANTOM_KINDS, SPACING_RANGES
from medlsdm.data.phantom.torso import CT_NOISE_HU, TORSO_HU
from medlsdm.errors import ConfigError, DataError

TABLES = {"torso-ct": TORSO_CT, "breast-mr": BREAST_MR, "cardiac-2d": CARDIAC}
CUBE = np.ones((3, 3, 3), bool)


@pytest.fixture(scope="module")
def torso_cases():
    return [generate_case("torso-ct", 0, i) for i in range(4)]


def _spacing(affine):
    return np.sqrt((affine[:3, :3] ** 2).sum(0))


def _world_centroid(mask, affine):
    ijk = np.argwhere(mask).mean(0)
    return affine[:3, :3] @ ijk + affine[:3, 3]


def _volume_ml(mask, affine):
    return mask.sum() * np.prod(_spacing(affine)) / 1000.0


@pytest.mark.parametrize("kind", PHANTOM_KINDS)
def test_case_arrays_and_affine(kind):
    image, label, affine = generate_case(kind, 3, 1)
    assert image.shape == label.shape == DEFAULT_SHAPES[kind]
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert np.isfinite(image).all()
    assert label.max() < TABLES[kind].num_classes
    assert affine.shape == (4, 4) and np.allclose(affine[3], [0, 0, 0, 1])
    (lo, hi), (zlo, zhi) = SPACING_RANGES[kind]
    sx, sy, sz = _spacing(affine)
    assert lo <= sx <= hi and lo <= sy <= hi and zlo <= sz <= zhi
    # not RAS: the reader has to reorient
    assert nib.aff2axcodes(affine) != ("R", "A", "S")


def test_orientations():
    assert nib.aff2axcodes(generate_case("torso-ct", 0, 0)[2]) == ("L", "P", "S")
    assert nib.aff2axcodes(generate_case("breast-mr", 0, 0)[2]) == ("L", "A", "S")
    _, _, affine = generate_case("cardiac-2d", 0, 0)
    rot = affine[:3, :3] / _spacing(affine)
    assert np.allclose(rot.T @ rot, np.eye(3), atol=1e-9)  # orthogonal axes
    assert not np.allclose(np.abs(rot), np.eye(3), atol=0.1)  # double oblique
    assert nib.aff2axcodes(affine)[2] in ("S", "I")  # slices stack along the body axis


def test_torso_every_class_present(torso_cases):
    for _, label, _ in torso_cases:
        present = set(np.unique(label).tolist())
        required = {TORSO_CT.index(n) for n in TORSO_CT.names if n != "lesion"}
        assert required <= present


def test_torso_class_mean_hu(torso_cases):
    for image, label, _ in torso_cases:
        for name in TORSO_CT.names:
            core = ndimage.binary_erosion(label == TORSO_CT.index(name), CUBE)
            if name == "lesion" and core.sum() < 20:  # small or absent lesions
                continue
            assert core.sum() >= 20, name
            assert abs(image[core].mean() - TORSO_HU[name]) < 30, name


def test_torso_noise_std(torso_cases):
    for image, label, _ in torso_cases:
        core = ndimage.binary_erosion(label == TORSO_CT.index("soft_tissue"), CUBE, iterations=2)
        # high-pass residual: voxel minus the mean of its 6 neighbours; for white noise of std
        # s its std is s * sqrt(1 + 1/6), while the smooth texture mostly cancels.
        kernel = np.zeros((3, 3, 3))
        kernel[1, 1, 1] = 1.0
        for axis in range(3):
            for offset in (0, 2):
                idx = [1, 1, 1]
                idx[axis] = offset
                kernel[tuple(idx)] = -1 / 6
        residual = ndimage.convolve(image.astype(np.float64), kernel, mode="nearest")
        noise = residual[core].std() / np.sqrt(7 / 6)
        assert 0.85 * CT_NOISE_HU < noise < 1.2 * CT_NOISE_HU


def test_torso_anatomy_in_world_coordinates(torso_cases):
    """The anatomy agrees with the affine: liver right, lungs above kidneys, aorta in front."""
    L = TORSO_CT.index
    for _, label, affine in torso_cases:
        liver = _world_centroid(label == L("liver"), affine)
        body = _world_centroid(label > 0, affine)
        bone = _world_centroid(label == L("bone"), affine)
        aorta = _world_centroid(label == L("aorta"), affine)
        lung = _world_centroid(label == L("lung"), affine)
        kidney = _world_centroid(label == L("kidney"), affine)
        assert liver[0] > body[0] + 20  # RAS: +x is the patient's right
        assert lung[2] > kidney[2] + 40  # lungs superior
        assert aorta[1] > bone[1] and aorta[0] < bone[0]  # aorta anterior-left of the spine
        assert kidney[1] < body[1]  # kidneys posterior
        # the body fits the field of view: no body voxel on the in-plane border
        assert not (label[[0, -1]] > 0).any() and not (label[:, [0, -1]] > 0).any()


def test_torso_anatomy_varies(torso_cases):
    livers = [_volume_ml(lab == TORSO_CT.index("liver"), aff) for _, lab, aff in torso_cases]
    widths = [np.ptp(np.argwhere(lab > 0)[:, 0]) * _spacing(aff)[0] for _, lab, aff in torso_cases]
    assert len({round(v) for v in livers}) == len(livers)
    assert max(livers) / min(livers) > 1.05
    assert all(260 < w < 380 for w in widths) and np.ptp(widths) > 5


def test_shape_override_keeps_anatomy():
    _, lab_a, aff_a = generate_case("torso-ct", 5, 2)
    _, lab_b, aff_b = generate_case("torso-ct", 5, 2, shape=(48, 48, 20))
    assert lab_b.shape == (48, 48, 20)
    fov_a = _spacing(aff_a) * np.array(lab_a.shape)
    fov_b = _spacing(aff_b) * np.array(lab_b.shape)
    assert np.allclose(fov_a, fov_b)
    for name in ("liver", "lung", "soft_tissue"):
        va = _volume_ml(lab_a == TORSO_CT.index(name), aff_a)
        vb = _volume_ml(lab_b == TORSO_CT.index(name), aff_b)
        assert abs(va - vb) / va < 0.15, name


@pytest.mark.parametrize("kind", PHANTOM_KINDS)
def test_determinism(kind):
    a = generate_case(kind, 7, 2)
    b = generate_case(kind, 7, 2)
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    c = generate_case(kind, 8, 2)
    d = generate_case(kind, 7, 3)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])
    assert not np.array_equal(a[1], d[1])


def test_breast_mr():
    fractions = []
    for i in range(3):
        image, label, affine = generate_case("breast-mr", 1, i)
        assert set(np.unique(label).tolist()) == {0, 1, 2, 3}
        assert image.min() >= 0 and 200 < np.percentile(image, 99.5) < 1300
        core = {n: ndimage.binary_erosion(label == BREAST_MR.index(n), CUBE) for n in ("breast", "fibroglandular")}
        fat, fgt = image[core["breast"]].mean(), image[core["fibroglandular"]].mean()
        vessel = image[label == BREAST_MR.index("vessel")].mean()
        assert fgt > 1.8 * fat and vessel > 2 * fat  # fat-saturated T1: fat dark, FGT and vessels bright
        tissue = label > 0
        fractions.append((label == BREAST_MR.index("fibroglandular")).sum() / tissue.sum())
        # prone breasts protrude anteriorly (RAS +y) from the thorax, which is labelled background
        thorax = (label == 0) & (image > 250)
        assert _world_centroid(tissue, affine)[1] > _world_centroid(thorax, affine)[1] + 40
    assert np.ptp(fractions) > 0.02


def test_cardiac_2d():
    for i in range(3):
        image, label, affine = generate_case("cardiac-2d", 2, i)
        lv, myo, rv = (label == CARDIAC.index(n) for n in ("lv_blood_pool", "myocardium", "rv"))
        areas = lv.sum(axis=(0, 1))
        assert areas[0] > 0 and areas[0] > areas[-1]  # shrinks from base to apex
        assert rv[:, :, 0].any()  # RV in the basal slice
        assert myo.sum() > 0
        # the myocardium surrounds the blood pool: LV never touches background or RV in-plane
        ring = ndimage.binary_dilation(lv, np.array([[[0], [1], [0]], [[1], [1], [1]], [[0], [1], [0]]], bool))
        assert not (ring & ((label == 0) | rv)).any()
        assert image[ndimage.binary_erosion(lv, CUBE[..., 1:2])].mean() > 2 * image[myo].mean()
        # RV lies toward the patient's right (RAS +x) of the LV
        assert _world_centroid(rv, affine)[0] > _world_centroid(lv, affine)[0]


def test_make_phantom_files(tmp_path):
    pairs = make_phantom("torso-ct", tmp_path, 2, seed=4)
    assert [p.name for p, _ in pairs] == ["torso_000.nii.gz", "torso_001.nii.gz"]
    assert pairs == sorted(pairs)
    for i, (image_path, label_path) in enumerate(pairs):
        assert image_path.parent.name == "images" and label_path.parent.name == "labels"
        image_ref, label_ref, affine_ref = generate_case("torso-ct", 4, i)
        img, lab = nib.load(image_path), nib.load(label_path)
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        assert img.shape == lab.shape == image_ref.shape
        for nii in (img, lab):
            assert np.allclose(nii.affine, affine_ref, atol=1e-4)
            assert int(nii.header["sform_code"]) == 1 and int(nii.header["qform_code"]) == 1
        assert np.array_equal(np.asarray(img.dataobj), image_ref)
        assert np.array_equal(np.asarray(lab.dataobj), label_ref)
    record = json.loads((tmp_path / "phantom.json").read_text())
    assert record["kind"] == "torso-ct" and record["n_cases"] == 2 and record["complete"]


def test_make_phantom_mr_dtype_and_case_independence(tmp_path):
    one = make_phantom("cardiac-2d", tmp_path / "a", 1, seed=3)
    two = make_phantom("cardiac-2d", tmp_path / "b", 2, seed=3)
    assert nib.load(one[0][0]).get_data_dtype() == np.float32
    for k in (0, 1):
        assert np.array_equal(np.asarray(nib.load(one[0][k]).dataobj), np.asarray(nib.load(two[0][k]).dataobj))


def test_make_phantom_idempotent(tmp_path):
    pairs = make_phantom("cardiac-2d", tmp_path, 3, seed=0)
    stamps = [p.stat().st_mtime_ns for pair in pairs for p in pair]
    again = make_phantom("cardiac-2d", tmp_path, 3, seed=0, shape=list(DEFAULT_SHAPES["cardiac-2d"]))
    assert again == pairs
    assert [p.stat().st_mtime_ns for pair in again for p in pair] == stamps
    # fewer cases: the stale case is removed, so the folder holds exactly the new dataset
    fewer = make_phantom("cardiac-2d", tmp_path, 2, seed=0)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [p.name for p, _ in fewer]
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == [p.name for _, p in fewer]
    # a different seed regenerates
    make_phantom("cardiac-2d", tmp_path, 2, seed=1)
    assert np.array_equal(np.asarray(nib.load(fewer[0][0]).dataobj), generate_case("cardiac-2d", 1, 0)[0])
    assert json.loads((tmp_path / "phantom.json").read_text())["seed"] == 1


def test_make_phantom_refuses_foreign_files(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "patient_1.nii.gz").write_bytes(b"not ours")
    with pytest.raises(DataError, match="patient_1.nii.gz"):
        make_phantom("cardiac-2d", tmp_path, 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="liver-ct", n_cases=1), "unknown phantom kind 'liver-ct'"),
        (dict(kind="torso-ct", n_cases=0), "n_cases must be >= 1"),
        (dict(kind="torso-ct", n_cases=2.5), "n_cases must be an integer"),
        (dict(kind="torso-ct", n_cases=1, seed=-1), "seed must be >= 0"),
        (dict(kind="torso-ct", n_cases=1, shape=(64, 64)), "shape must be three integers"),
        (dict(kind="torso-ct", n_cases=1, shape=(8, 64, 32)), "too small"),
    ],
)
def test_errors(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_phantom(out_dir=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing written before the check


def test_generate_case_errors():
    with pytest.raises(ConfigError, match="unknown phantom kind"):
        generate_case("ct", 0, 0)
    with pytest.raises(ConfigError, match="index must be >= 0"):
        generate_case("torso-ct", 0, -1)
