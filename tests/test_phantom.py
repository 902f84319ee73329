"""Tests of medlsdm.data.phantom: files, geometry, intensities, noise, factors, re-renders, determinism, errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medlsdm.data.classes import BREAST_MR, CARDIAC, TORSO_CT
from medlsdm.data.phantom import (
    FACTOR_TABLES,
    draw_anatomy,
    draw_factors,
    generate_case,
    load_factors,
    make_phantom,
    oracle_rerenders,
    phantom_version,
    render_anatomy,
    render_case,
)
from medlsdm.data.phantom.common import DEFAULT_SHAPES, PHANTOM_KINDS, PHANTOM_VERSION, SPACING_RANGES
from medlsdm.data.phantom.torso import TISSUE_CLASS, TISSUE_NAMES, tissue_hu
from medlsdm.errors import ConfigError, DataError

TABLES = {"torso-ct": TORSO_CT, "breast-mr": BREAST_MR, "cardiac-2d": CARDIAC}
CUBE = np.ones((3, 3, 3), bool)
SMALL = {"torso-ct": (48, 48, 20), "breast-mr": (48, 32, 20), "cardiac-2d": (48, 48, 8)}


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


def test_torso_tissue_mean_hu():
    """Each large tissue's core has the HU its factors give it (texture and noise average out)."""
    for index in range(2):
        anatomy = draw_anatomy("torso-ct", 0, index)
        factors = draw_factors("torso-ct", index)
        image = render_anatomy(anatomy, factors, np.random.default_rng(index))
        expected = tissue_hu(factors)
        for t, name in enumerate(TISSUE_NAMES):
            core = ndimage.binary_erosion(anatomy.tissue == t, CUBE)
            if core.sum() >= 50 and name not in ("bowel_gas", "rib"):  # thin, partial volume everywhere
                assert abs(image[core].mean() - expected[t]) < 25, name


def test_torso_tissues_carry_their_class():
    """Unlabelled anatomy lies inside the class it is labelled as."""
    for index in range(2):
        anatomy = draw_anatomy("torso-ct", 0, index)
        assert np.array_equal(TISSUE_CLASS[anatomy.tissue], anatomy.label)
        soft = anatomy.label == TORSO_CT.index("soft_tissue")
        found = set(np.unique(anatomy.tissue[soft]).tolist())
        for name in ("muscle", "rib", "spleen", "bowel_wall", "mesenteric_fat", "heart"):
            assert TISSUE_NAMES.index(name) in found, name


def test_torso_noise_level_and_texture():
    """noise_hu sets the std of the added noise, which is spatially correlated (not white)."""
    _, label, _, factors = render_case("torso-ct", 1, 0, SMALL["torso-ct"], appearance_seed=0)
    low = render_case("torso-ct", 1, 0, SMALL["torso-ct"], appearance_seed=0, factors={"noise_hu": 8.0})[0]
    high = render_case("torso-ct", 1, 0, SMALL["torso-ct"], appearance_seed=0, factors={"noise_hu": 24.0})[0]
    body = ndimage.binary_erosion(label > 0, CUBE)
    d = (high - low).astype(np.float64)
    assert 15.0 < d[body].std() < 17.0  # (24 - 8) HU, plus rounding
    pairs = body[:-1] & body[1:]
    assert np.corrcoef(d[:-1][pairs], d[1:][pairs])[0, 1] > 0.2  # band-passed: neighbours correlate (white: 0)


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


# ---- two-step draw: factors, oracle re-renders, stored factors


@pytest.mark.parametrize("kind", PHANTOM_KINDS)
def test_rerender_keeps_label_and_changes_image(kind):
    image, label, affine, factors = render_case(kind, 2, 1, SMALL[kind])
    again, label_b, affine_b, factors_b = render_case(kind, 2, 1, SMALL[kind], appearance_seed=0)
    assert label.tobytes() == label_b.tobytes() and np.array_equal(affine, affine_b)
    assert factors != factors_b
    body = label > 0
    rms = np.sqrt(np.mean((image[body] - again[body]) ** 2))
    assert rms > 0.02 * np.abs(image[body]).mean() + 1.0
    # the case's own appearance is what generate_case (and make_phantom) give
    assert np.array_equal(image, generate_case(kind, 2, 1, SMALL[kind])[0])


def test_rerender_redraws_the_unlabelled_anatomy_only():
    """p(image | label map) varies what the label map does not show: bowel, muscles, ribs, vessels."""
    own = draw_anatomy("torso-ct", 2, 1, SMALL["torso-ct"])
    redrawn = draw_anatomy("torso-ct", 2, 1, SMALL["torso-ct"], detail_seed=0)
    assert np.array_equal(own.label, redrawn.label)
    changed = own.tissue != redrawn.tissue
    assert changed.any() and np.array_equal(TISSUE_CLASS[redrawn.tissue], redrawn.label)  # still the same classes
    same = draw_anatomy("torso-ct", 2, 1, SMALL["torso-ct"], detail_seed=0)
    assert np.array_equal(same.tissue, redrawn.tissue)  # deterministic
    assert np.array_equal(draw_anatomy("torso-ct", 2, 1, SMALL["torso-ct"]).tissue, own.tissue)  # the case's own stays


@pytest.mark.parametrize("kind", PHANTOM_KINDS)
def test_oracle_rerenders_equal_render_case(kind):
    label, affine, images, factors = oracle_rerenders(kind, 3, 0, [0, 5], SMALL[kind])
    for k, image, f in zip((0, 5), images, factors):
        ref = render_case(kind, 3, 0, SMALL[kind], appearance_seed=k)
        assert np.array_equal(image, ref[0]) and np.array_equal(label, ref[1]) and f == ref[3]
    assert not np.array_equal(images[0], images[1])
    # deterministic: the same appearance seed gives the same image
    assert np.array_equal(oracle_rerenders(kind, 3, 0, [5], SMALL[kind])[2][0], images[1])


@pytest.mark.parametrize("kind", PHANTOM_KINDS)
def test_factors_lie_in_documented_ranges(kind):
    draws = [draw_factors(kind, np.random.default_rng(s)) for s in range(300)]
    for spec in FACTOR_TABLES[kind]:
        values = [d[spec.name] for d in draws]
        if spec.choices:
            assert set(values) == set(spec.choices), spec.name
        else:
            assert spec.low <= min(values) and max(values) <= spec.high, spec.name
            assert max(values) - min(values) > 0.5 * (spec.high - spec.low), spec.name  # it varies
        assert spec.scale in ("large", "fine") and spec.distribution and spec.effect
    assert all(set(d) == {f.name for f in FACTOR_TABLES[kind]} for d in draws)
    assert draw_factors(kind, 4) == draw_factors(kind, np.random.default_rng(4))


def test_torso_phase_and_contrast():
    draws = [draw_factors("torso-ct", s) for s in range(400)]
    phases = [d["phase"] for d in draws]
    assert 0.15 < phases.count("non-contrast") / 400 < 0.35 and 0.38 < phases.count("portal-venous") / 400 < 0.62
    assert all((d["contrast"] == 0) == (d["phase"] == "non-contrast") for d in draws)
    assert 0.2 < np.mean([d["oral_contrast_hu"] > 0 for d in draws]) < 0.4


def test_torso_steatosis_follows_the_population_prior():
    """Unenhanced liver HU (60 − 80 × steatosis) at or below 40 in 6.2 % of cases, the prevalence of
    moderate-to-severe steatosis at unenhanced CT (Boyce et al. 2010); 70 % of livers lose at most 8 HU."""
    from medlsdm.data.phantom.torso import STEATOSIS_HU, TORSO_TISSUES

    steatosis = np.array([draw_factors("torso-ct", np.random.default_rng(s))["steatosis"] for s in range(4000)])
    liver = TORSO_TISSUES["liver"][1] - STEATOSIS_HU * steatosis
    assert abs(np.mean(liver <= 40.0) - 0.062) < 0.015  # binomial sd 0.004
    assert abs(np.mean(steatosis <= 0.1) - 0.70) < 0.03
    assert steatosis.min() >= 0.0 and steatosis.max() <= 1.0 and steatosis.max() > 0.8  # the whole range occurs


def _core_mean(image, label, name):
    core = ndimage.binary_erosion(label == TORSO_CT.index(name), CUBE)
    return float(image[core].mean())


def test_torso_factors_change_what_they_should():
    """Contrast raises the aorta, steatosis lowers the liver; neither moves what it should not."""
    anatomy = draw_anatomy("torso-ct", 0, 2)
    label = anatomy.label
    base = {**draw_factors("torso-ct", 1), "phase": "portal-venous", "contrast": 0.3, "steatosis": 0.0}

    def render(**change):  # the same texture and noise every time
        return render_anatomy(anatomy, {**base, **change}, np.random.default_rng(1))

    ref = render()
    more_contrast = render(contrast=0.9)
    fatty = render(steatosis=1.0)
    arterial = render(phase="arterial", contrast=0.9)
    assert _core_mean(more_contrast, label, "aorta") - _core_mean(ref, label, "aorta") > 0.8 * 160 * 0.6
    assert _core_mean(arterial, label, "aorta") > _core_mean(more_contrast, label, "aorta") + 80
    assert _core_mean(ref, label, "liver") - _core_mean(fatty, label, "liver") > 0.8 * 80
    # negative controls: steatosis leaves the aorta, bone and lung alone; contrast leaves bone and fat alone
    for name in ("aorta", "bone", "lung"):
        assert abs(_core_mean(fatty, label, name) - _core_mean(ref, label, name)) < 1.0, name
    for name in ("bone", "fat"):
        assert abs(_core_mean(more_contrast, label, name) - _core_mean(ref, label, name)) < 1.0, name


def test_mr_factors_change_what_they_should():
    shape = SMALL["cardiac-2d"]
    f = dict(gain=1.0, blood_signal=0.9, bias_strength=0.2, slice_gain_spread=0.0, noise_rel=0.02)
    low, label, _, _ = render_case("cardiac-2d", 0, 0, shape, appearance_seed=0, factors=f)
    high = render_case("cardiac-2d", 0, 0, shape, appearance_seed=0, factors={**f, "blood_signal": 1.1})[0]
    core = {
        n: ndimage.binary_erosion(label == CARDIAC.index(n), CUBE[..., 1:2]) for n in ("lv_blood_pool", "myocardium")
    }
    assert high[core["lv_blood_pool"]].mean() > 1.15 * low[core["lv_blood_pool"]].mean()
    assert abs(high[core["myocardium"]].mean() / low[core["myocardium"]].mean() - 1) < 0.03  # negative control
    g = dict(gain=0.9, bias_strength=0.1, coil_gradient=0.001, fat_signal=1.0, noise_rel=0.02)
    dim, label, _, _ = render_case("breast-mr", 0, 0, SMALL["breast-mr"], appearance_seed=0, factors=g)
    bright = render_case("breast-mr", 0, 0, SMALL["breast-mr"], appearance_seed=0, factors={**g, "gain": 1.05})[0]
    fgt = label == BREAST_MR.index("fibroglandular")
    assert bright[fgt].mean() / dim[fgt].mean() == pytest.approx(1.05 / 0.9, rel=0.03)


@pytest.mark.parametrize("kind", ["torso-ct", "cardiac-2d"])
def test_stored_factors_round_trip(tmp_path, kind):
    make_phantom(kind, tmp_path, 3, seed=5, shape=SMALL[kind])
    stored = load_factors(tmp_path)
    assert sorted(stored) == sorted(p.name[: -len(".nii.gz")] for p in (tmp_path / "images").iterdir())
    for i, case_id in enumerate(sorted(stored)):
        assert stored[case_id] == render_case(kind, 5, i, SMALL[kind])[3]
    # the label map holds no factor: it is the same for every appearance
    label = np.asarray(nib.load(tmp_path / "labels" / f"{sorted(stored)[0]}.nii.gz").dataobj)
    assert np.array_equal(label, render_case(kind, 5, 0, SMALL[kind], appearance_seed=9)[1])


def test_render_anatomy_with_given_factors():
    anatomy = draw_anatomy("breast-mr", 0, 0, SMALL["breast-mr"])
    factors = draw_factors("breast-mr", 0)
    a = render_anatomy(anatomy, factors, np.random.default_rng(1))
    b = render_anatomy(anatomy, factors, np.random.default_rng(1))
    assert np.array_equal(a, b)
    with pytest.raises(ConfigError, match="missing"):
        render_anatomy(anatomy, {"gain": 1.0}, np.random.default_rng(1))


@pytest.mark.parametrize(
    "factors, match",
    [
        ({"contrast": 1.5}, "outside its range"),
        ({"phase": "venous"}, "must be one of"),
        ({"dose": 1.0}, "unknown torso-ct factor"),
        ({"steatosis": "high"}, "must be a number"),
    ],
)
def test_bad_factors(factors, match):
    with pytest.raises(ConfigError, match=match):
        render_case("torso-ct", 0, 0, SMALL["torso-ct"], factors=factors)


def test_bad_appearance_seed():
    with pytest.raises(ConfigError, match="appearance_seed must be >= 0"):
        render_case("torso-ct", 0, 0, SMALL["torso-ct"], appearance_seed=-1)


def test_phantom_version_reads_the_record(tmp_path):
    assert phantom_version(tmp_path) is None and phantom_version(None) is None  # real data: no record
    make_phantom("torso-ct", tmp_path, 1, seed=0, shape=SMALL["torso-ct"])
    assert phantom_version(tmp_path) == PHANTOM_VERSION


def test_load_factors_errors(tmp_path):
    with pytest.raises(DataError, match="no phantom record"):
        load_factors(tmp_path)
    (tmp_path / "phantom.json").write_text(json.dumps({"version": 1, "kind": "torso-ct", "complete": True}))
    with pytest.raises(DataError, match="version 1 < 2"):
        load_factors(tmp_path)


@pytest.mark.parametrize("kind", PHANTOM_KINDS)
def test_factors_do_not_depend_on_the_grid(kind):
    for appearance_seed in (None, 2):
        small = render_case(kind, 1, 0, SMALL[kind], appearance_seed=appearance_seed)[3]
        smaller = render_case(kind, 1, 0, tuple(max(n // 2, 8) for n in SMALL[kind]), appearance_seed=appearance_seed)[
            3
        ]
        assert small == smaller


@pytest.mark.parametrize("kind", PHANTOM_KINDS)
def test_own_factors_are_stratified_in_runs_of_cases(kind):
    """Each run of 12 cases takes every twelfth of each numeric factor's range once (the cases'
    own draws); twelve oracle re-renders of one case are i.i.d. and miss some twelfths."""
    from scipy import stats

    from medlsdm.data.phantom.common import STRATUM_CASES, UnitDraws, stratified_units
    from medlsdm.data.phantom.render import _appearance
    from medlsdm.data.phantom.torso import STEATOSIS_QUANTILES

    numeric = [f for f in FACTOR_TABLES[kind] if not f.choices and f.name not in ("contrast", "oral_contrast_hu")]

    def twelfths(factors, spec):
        values = np.array([d[spec.name] for d in factors])
        if kind == "torso-ct" and spec.name == "steatosis":  # drawn through its quantile function: back to units
            units = np.interp(values, STEATOSIS_QUANTILES[1], STEATOSIS_QUANTILES[0])
        else:
            units = (values - spec.low) / (spec.high - spec.low)
        return np.sort((units * 12).astype(int))

    for group in range(3):
        own = [_appearance(kind, 5, i, None, None)[0] for i in range(12 * group, 12 * group + STRATUM_CASES)]
        for spec in numeric:
            assert np.array_equal(twelfths(own, spec), np.arange(12)), (group, spec.name)
    rerenders = [_appearance(kind, 5, 0, k, None)[0] for k in range(12)]
    assert any(not np.array_equal(twelfths(rerenders, spec), np.arange(12)) for spec in numeric)
    # each stratified number is still U(0, 1): 100 runs of 12 cases, every draw position
    units = np.concatenate([stratified_units(kind, 1, i, np.random.default_rng(i)) for i in range(1200)])
    assert stats.kstest(units, "uniform").pvalue > 0.01 and units.min() >= 0 and units.max() < 1
    # UnitDraws answers like a Generator
    draws = UnitDraws([0.25, 0.5, 0.95])
    assert draws.random() == 0.25 and draws.uniform(2.0, 4.0) == 3.0 and draws.choice(3, p=[0.2, 0.5, 0.3]) == 2


def test_stratified_torso_phases_follow_their_probabilities():
    """Stratified phases: each run of 12 cases has exactly 3 non-contrast, 3 arterial and 6
    portal-venous cases (probabilities 0.25, 0.25, 0.5); contrast is 0 exactly when non-contrast."""
    from medlsdm.data.phantom.render import _appearance

    for group in range(4):
        own = [_appearance("torso-ct", 0, i, None, None)[0] for i in range(12 * group, 12 * group + 12)]
        phases = [d["phase"] for d in own]
        assert [phases.count(p) for p in ("non-contrast", "arterial", "portal-venous")] == [3, 3, 6], phases
        assert all((d["contrast"] == 0) == (d["phase"] == "non-contrast") for d in own)


def test_an_added_liver_lesion_is_drawn_like_the_phantoms_own_and_changes_nothing_else():
    """add_liver_lesion: liver voxels within the radius (mm) become lesion with rim and necrotic core;
    rendered through render_case(edit=), the image changes only within the blur's reach of them."""
    from medlsdm.data.phantom.torso import CT_BLUR_SIGMA, LESION_RIM, add_liver_lesion

    L, T = TORSO_CT.index, TISSUE_NAMES.index
    plain = draw_anatomy("torso-ct", 0, 0, SMALL["torso-ct"])
    centre = tuple(int(c) for c in np.argwhere(plain.label == L("liver"))[0])  # at the liver's edge: partly outside
    edited = add_liver_lesion(plain, centre, 15.0, 0.4)
    new = (edited.label == L("lesion")) & (plain.label != L("lesion"))
    mm = np.sqrt(sum(((np.indices(plain.label.shape)[a] - centre[a]) * plain.spacing[a]) ** 2 for a in range(3)))
    np.testing.assert_array_equal(new, (mm <= 15.0) & (plain.label == L("liver")))  # only liver, only in the sphere
    assert new.any() and ((mm <= 15.0) & ~new & (plain.label != L("lesion"))).any()  # other classes kept inside
    assert (edited.tissue[new & (mm > LESION_RIM * 15.0)] == T("lesion_rim")).all()
    assert (edited.tissue[new & (mm < 0.4 * 15.0)] == T("lesion_core")).all()
    assert (edited.tissue[new & (mm >= 0.4 * 15.0) & (mm <= LESION_RIM * 15.0)] == T("lesion_solid")).all()
    np.testing.assert_array_equal(edited.label[~new], plain.label[~new])
    np.testing.assert_array_equal(edited.tissue[~new], plain.tissue[~new])
    assert np.array_equal(TISSUE_CLASS[edited.tissue], edited.label)  # the tissue carries its class

    image, label, _, factors = render_case("torso-ct", 0, 0, SMALL["torso-ct"])
    image2, label2, _, factors2 = render_case(
        "torso-ct", 0, 0, SMALL["torso-ct"], edit=lambda a: add_liver_lesion(a, centre, 15.0, 0.4)
    )
    assert factors2 == factors and np.array_equal(label2, edited.label)
    reach = ndimage.binary_dilation(new, iterations=int(np.ceil(4 * CT_BLUR_SIGMA)) + 1)  # the blur's truncation
    np.testing.assert_array_equal(image2[~reach], image[~reach])  # same factors, texture and noise
    assert image2[new].mean() < image[new].mean() - 10  # a hypodense lesion where the liver was
