"""Tests of medlsdm.data.datasets: every adapter on tiny files in its layout, and validation."""

import nibabel as nib
import numpy as np
import pytest

from medlsdm.data.adapters import adapter_names, get_adapter
from medlsdm.data.classes import ClassTable
from medlsdm.data.datasets import Case, validate_cases
from medlsdm.errors import ConfigError, DataError

SHAPE = (8, 8, 4)  # nibabel (x, y, z)


def _write(path, data, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _pair(image_path, label_path, seed=0, shape=SHAPE, max_label=1):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=shape).astype(np.float32) * 100
    label = rng.integers(0, max_label + 1, size=shape).astype(np.uint8)
    return _write(image_path, image), _write(label_path, label)


def _folder(root, ids, ext=".nii.gz", max_label=1):
    for i, case_id in enumerate(ids):
        _pair(root / "images" / f"{case_id}{ext}", root / "labels" / f"{case_id}{ext}", seed=i, max_label=max_label)
    return root


@pytest.mark.parametrize("name, modality", [("torso-ct", "CT"), ("breast-mr", "MR"), ("cardiac-2d", "MR")])
def test_phantom_adapters(tmp_path, name, modality):
    root = _folder(tmp_path, ["case_002", "case_000", "case_001"], max_label=3)
    (root / "images" / ".DS_Store").write_text("")
    adapter = get_adapter(name)
    assert adapter.is_phantom and adapter.modality == modality and adapter.name == name
    cases = adapter.find_cases(root)
    assert [c.case_id for c in cases] == ["case_000", "case_001", "case_002"]
    assert cases[0] == Case("case_000", "case_000", root / "images/case_000.nii.gz", root / "labels/case_000.nii.gz")
    image, affine = adapter.read_image(cases[0])
    assert image.shape == SHAPE[::-1] and image.dtype == np.float32
    info = validate_cases(cases, adapter)
    assert info["case_000"]["shape"] == list(SHAPE[::-1])
    method = "ct_window" if modality == "CT" else "mr_percentile"
    assert adapter.normalisation["method"] == method


def test_nifti_adapter(tmp_path):
    root = _folder(tmp_path, ["b", "a"], ext=".nii", max_label=2)
    adapter = get_adapter("nifti", modality="mr", num_classes=3)
    assert adapter.modality == "MR" and adapter.classes.names == ("background", "class_1", "class_2")
    assert [c.case_id for c in adapter.find_cases(root)] == ["a", "b"]
    validate_cases(adapter.find_cases(root), adapter)
    table = ClassTable(("bg", "x", "y"), (0, 1, 2))
    assert get_adapter("nifti", modality="CT", classes=table).classes is table
    with pytest.raises(ConfigError, match="modality"):
        get_adapter("nifti", num_classes=3)
    with pytest.raises(ConfigError, match="num_classes"):
        get_adapter("nifti", modality="CT")


def test_get_adapter_names_and_errors():
    assert {"torso-ct", "breast-mr", "cardiac-2d", "nifti", "autopet", "synthrad2023", "duke_breast", "mnms"} <= set(adapter_names())
    assert get_adapter("duke-breast").name == "duke_breast"
    assert get_adapter("torso_ct", window=(-200, 300)).normalisation["window"] == [-200.0, 300.0]
    with pytest.raises(ConfigError, match="unknown dataset"):
        get_adapter("brats")
    with pytest.raises(ConfigError, match="invalid option"):
        get_adapter("torso-ct", colour="red")


def test_autopet(tmp_path):
    for patient, study in [("PETCT_0b", "2003-01-01-NA-PET-CT 1"), ("PETCT_0b", "2004-05-05-NA-PET-CT 2"), ("PETCT_0a", "s1")]:
        _pair(tmp_path / patient / study / "CTres.nii.gz", tmp_path / patient / study / "SEG.nii.gz")
        _write(tmp_path / patient / study / "PET.nii.gz", np.zeros(SHAPE, np.float32))
    adapter = get_adapter("autopet")
    cases = adapter.find_cases(tmp_path)
    assert [c.patient_id for c in cases] == ["PETCT_0a", "PETCT_0b", "PETCT_0b"]
    assert cases[1].case_id == "PETCT_0b_2003-01-01-NA-PET-CT_1"
    assert all(c.image.name == "CTres.nii.gz" and c.label.name == "SEG.nii.gz" for c in cases)
    validate_cases(cases, adapter)
    (tmp_path / "PETCT_0a" / "s1" / "SEG.nii.gz").unlink()
    with pytest.raises(DataError, match="SEG.nii.gz"):
        adapter.find_cases(tmp_path)


def test_synthrad2023(tmp_path):
    for task, region, subject in [("Task1", "brain", "1BA001"), ("Task2", "pelvis", "2PA004"), ("Task1", "pelvis", "1PA002")]:
        folder = tmp_path / task / region / subject
        _pair(folder / "ct.nii.gz", folder / "mask.nii.gz")
        _write(folder / "mr.nii.gz", np.zeros(SHAPE, np.float32))
    adapter = get_adapter("synthrad2023")
    cases = adapter.find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["1BA001", "1PA002", "2PA004"]
    assert adapter.modality == "CT" and adapter.classes.names == ("background", "body")
    validate_cases(cases, adapter)
    assert [c.case_id for c in get_adapter("synthrad2023", tasks=["Task1"], regions=["brain"]).find_cases(tmp_path)] == ["1BA001"]


def test_duke_breast(tmp_path):
    root = _folder(tmp_path, ["Breast_MRI_002", "Breast_MRI_001"], max_label=3)
    adapter = get_adapter("duke_breast")
    cases = adapter.find_cases(root)
    assert [c.case_id for c in cases] == ["Breast_MRI_001", "Breast_MRI_002"]
    assert adapter.modality == "MR"
    validate_cases(cases, adapter)


def test_mnms_reads_labelled_frames(tmp_path):
    code = "A0S9V9"
    folder = tmp_path / "Training" / "Labeled" / code
    image = np.stack([np.full(SHAPE, t, np.float32) for t in range(5)], axis=-1)
    gt = np.zeros(SHAPE + (5,), np.uint8)
    gt[2:4, 2:4, 1, 1] = 1  # small LV: end-systole at t=1
    gt[1:6, 1:6, 1, 3] = 1  # large LV: end-diastole at t=3
    gt[0, 0, 0, 3] = 2
    _write(folder / f"{code}_sa.nii.gz", image)
    _write(folder / f"{code}_sa_gt.nii.gz", gt)
    adapter = get_adapter("mnms")
    cases = adapter.find_cases(tmp_path)
    assert [(c.case_id, c.patient_id, c.frame) for c in cases] == [(f"{code}_ED", code, 3), (f"{code}_ES", code, 1)]
    image_ed, _ = adapter.read_image(cases[0])
    label_ed, _ = adapter.read_label(cases[0])
    assert image_ed.shape == SHAPE[::-1] and np.all(image_ed == 3)
    assert label_ed.sum() == 25 + 2
    validate_cases(cases, adapter)
    gt[..., 1] = 0
    _write(folder / f"{code}_sa_gt.nii.gz", gt)
    with pytest.raises(DataError, match="sa_gt.nii.gz: expected 2 labelled frames"):
        adapter.find_cases(tmp_path)


# --------------------------------------------------------------------- error kinds


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        get_adapter("torso-ct").find_cases(tmp_path / "nope")
    assert "nope" in str(info.value)
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="labels: folder not found"):
        get_adapter("torso-ct").find_cases(tmp_path)


def test_empty_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(DataError, match="no NIfTI files") as info:
        get_adapter("torso-ct").find_cases(tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(DataError, match="no studies"):
        get_adapter("autopet").find_cases(tmp_path / "images")


def test_unpaired(tmp_path):
    root = _folder(tmp_path, ["a", "b"])
    (root / "labels" / "b.nii.gz").unlink()
    _pair(root / "x" / "c.nii.gz", root / "labels" / "c.nii.gz")
    with pytest.raises(DataError, match="unpaired") as info:
        get_adapter("torso-ct").find_cases(root)
    assert "images/b.nii.gz has no label" in str(info.value)
    assert "labels/c.nii.gz has no image" in str(info.value)


def _break(root, kind):
    """Make case 'bad' of a two-case folder invalid in one way; return the file to be named."""
    image, label = root / "images" / "bad.nii.gz", root / "labels" / "bad.nii.gz"
    data = np.zeros(SHAPE, np.float32)
    if kind == "shape":
        _write(label, np.zeros((8, 8, 5), np.uint8))
        return label
    if kind == "affine":
        _write(label, np.zeros(SHAPE, np.uint8), np.diag([1.0, 1.0, 2.0, 1.0]))
        return label
    if kind == "not3d":
        _write(image, np.zeros(SHAPE + (3,), np.float32))
        return image
    if kind in ("nan", "inf"):
        data[1, 2, 3] = np.nan if kind == "nan" else -np.inf
        _write(image, data)
        return image
    if kind == "noninteger":
        _write(label, np.full(SHAPE, 0.5, np.float32))
        return label
    if kind == "outside":
        _write(label, np.full(SHAPE, 9, np.uint8))
        return label
    big = np.random.default_rng(0).normal(size=(32, 32, 16)).astype(np.float32)
    _write(image, big)
    _write(label, np.zeros(big.shape, np.uint8))
    raw = image.read_bytes()
    if kind == "truncated":
        image.write_bytes(raw[: len(raw) // 2])
    else:  # corrupt
        corrupt = bytearray(raw)
        corrupt[len(raw) // 2 : len(raw) // 2 + 64] = np.random.default_rng(7).integers(0, 256, 64, dtype=np.uint8).tobytes()
        image.write_bytes(bytes(corrupt))
    return image


@pytest.mark.parametrize(
    "kind, pattern",
    [
        ("shape", "label shape"),
        ("affine", "affine differs"),
        ("not3d", "3-D"),
        ("nan", "NaN"),
        ("inf", "Inf"),
        ("noninteger", "non-integer"),
        ("outside", r"label values \[9\]"),
        ("truncated", "NIfTI"),
        ("corrupt", "NIfTI"),
    ],
)
def test_validation_errors_name_the_file(tmp_path, kind, pattern):
    root = _folder(tmp_path, ["bad", "good"])
    bad_file = _break(root, kind)
    adapter = get_adapter("torso-ct")
    with pytest.raises(DataError, match=pattern) as info:
        validate_cases(adapter.find_cases(root), adapter)
    message = str(info.value)
    assert str(bad_file) in message
    assert "1 of 2 cases failed" in message and "good.nii.gz" not in message


def test_validation_reports_all_bad_cases(tmp_path):
    root = _folder(tmp_path, ["a", "b", "c"])
    _write(root / "labels" / "a.nii.gz", np.full(SHAPE, 9, np.uint8))
    _write(root / "labels" / "c.nii.gz", np.full(SHAPE, 0.5, np.float32))
    adapter = get_adapter("torso-ct")
    with pytest.raises(DataError, match="2 of 3 cases failed") as info:
        validate_cases(adapter.find_cases(root), adapter)
    assert "labels/a.nii.gz" in str(info.value) and "labels/c.nii.gz" in str(info.value)
