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
    with pytest.raises(ConfigError, match="exactly one"):
        get_adapter("nifti", modality="CT", num_classes=3, classes=table)
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("0 background\n1 x\n2 y\n")
    assert get_adapter("nifti", modality="MR", classes_file=classes_file).classes.names == ("background", "x", "y")


def test_get_adapter_names_and_errors():
    assert {"torso-ct", "breast-mr", "cardiac-2d", "nifti", "autopet", "synthrad2023", "duke_breast", "mnms"} <= set(
        adapter_names()
    )
    assert get_adapter("duke-breast").name == "duke_breast"
    assert get_adapter("nnUNet").name == "nnunet"
    assert get_adapter("torso_ct", window=(-200, 300)).normalisation["window"] == [-200.0, 300.0]
    with pytest.raises(ConfigError, match="unknown dataset"):
        get_adapter("brats")
    with pytest.raises(ConfigError, match=r"invalid option\(s\) \['colour'\]; it takes window, percentiles"):
        get_adapter("torso-ct", colour="red")


CLASSES_TXT = "# value name\n0 background\n1 liver\n2 spleen\n"


def _classes_file(tmp_path, text=CLASSES_TXT, name="classes.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _autopet_tree(root):
    studies = [("PETCT_0b", "2003-01-01-NA-PET-CT 1"), ("PETCT_0b", "2004-05-05-NA-PET-CT 2"), ("PETCT_0a", "s1")]
    for patient, study in studies:
        folder = root / patient / study
        _pair(folder / "CTres.nii.gz", folder / "SEG.nii.gz")
        for extra in ("CT.nii.gz", "PET.nii.gz", "SUV.nii.gz"):
            _write(folder / extra, np.zeros(SHAPE, np.float32))
    (root / "Clinical Metadata FDG PET_CT Lesions.csv").write_text("Subject ID,diagnosis\n")
    (root / "__MACOSX").mkdir()
    return ["PETCT_0a_s1", "PETCT_0b_2003-01-01-NA-PET-CT_1", "PETCT_0b_2004-05-05-NA-PET-CT_2"]


def test_autopet_anatomy(tmp_path):
    ids = _autopet_tree(tmp_path / "autopet")
    labels = tmp_path / "totalseg"
    for i, case_id in enumerate(ids):
        _write(labels / f"{case_id}.nii.gz", np.random.default_rng(i).integers(0, 3, SHAPE).astype(np.uint8))
    (labels / "notes.txt").write_text("")
    classes = _classes_file(tmp_path)
    adapter = get_adapter("autopet", labels_dir=labels, classes_file=classes)
    assert adapter.classes.names == ("background", "liver", "spleen") and adapter.modality == "CT"
    cases = adapter.find_cases(tmp_path / "autopet")
    assert [c.case_id for c in cases] == ids
    assert [c.patient_id for c in cases] == ["PETCT_0a", "PETCT_0b", "PETCT_0b"]
    assert all(c.image.name == "CTres.nii.gz" and c.label.parent == labels for c in cases)
    validate_cases(cases, adapter)
    assert (
        get_adapter("autopet", labels_dir=labels, classes_file=classes, image="CT")
        .find_cases(tmp_path / "autopet")[0]
        .image.name
        == "CT.nii.gz"
    )

    merged = get_adapter("autopet", labels_dir=labels, classes_file=classes, merge_lesion=True)
    assert merged.classes.names[-1] == "lesion" and merged.classes.source_values[-1] == 3
    case = merged.find_cases(tmp_path / "autopet")[0]
    label, _ = merged.read_label(case)
    lesion, _ = get_adapter("autopet", labels="lesion").read_label(
        case.__class__(case.case_id, case.patient_id, case.image, case.image.parent / "SEG.nii.gz")
    )
    anatomy, _ = adapter.read_label(case)
    assert np.array_equal(label, np.where(lesion > 0, 3, anatomy))
    validate_cases([case], merged)

    (labels / f"{ids[1]}.nii.gz").unlink()
    with pytest.raises(DataError, match=f"no label map .*{ids[1]}"):
        adapter.find_cases(tmp_path / "autopet")
    with pytest.raises(ConfigError, match="labels_dir"):
        get_adapter("autopet", classes_file=classes)
    with pytest.raises(ConfigError, match="classes_file"):
        get_adapter("autopet", labels_dir=labels)
    with pytest.raises(ConfigError, match="merge_lesion needs image='CTres'"):
        get_adapter("autopet", labels_dir=labels, classes_file=classes, merge_lesion=True, image="CT")
    with pytest.raises(ConfigError, match="option labels must be one of"):
        get_adapter("autopet", labels="organs")


def test_autopet_lesion(tmp_path):
    ids = _autopet_tree(tmp_path)
    adapter = get_adapter("autopet", labels="lesion")
    cases = adapter.find_cases(tmp_path)
    assert [c.case_id for c in cases] == ids and adapter.classes.names == ("background", "lesion")
    assert all(c.image.name == "CTres.nii.gz" and c.label.name == "SEG.nii.gz" for c in cases)
    validate_cases(cases, adapter)
    _write(cases[0].label, np.zeros(SHAPE, np.uint8))  # a lesion-free study: a real AutoPET case
    validate_cases(cases, adapter)
    with pytest.raises(ConfigError, match="apply to labels='anatomy'"):
        get_adapter("autopet", labels="lesion", merge_lesion=True)
    (tmp_path / "PETCT_0a" / "s1" / "SEG.nii.gz").unlink()
    with pytest.raises(DataError, match="SEG.nii.gz"):
        adapter.find_cases(tmp_path)


def _synthrad_tree(root):
    subjects = [("Task1", "brain", "1BA001"), ("Task2", "pelvis", "2PA004"), ("Task1", "pelvis", "1PA002")]
    for task, region, subject in subjects:
        folder = root / task / region / subject
        _pair(folder / "ct.nii.gz", folder / "mask.nii.gz")
        _write(folder / ("mr.nii.gz" if task == "Task1" else "cbct.nii.gz"), np.ones(SHAPE, np.float32))
    for task, region in [("Task1", "brain"), ("Task1", "pelvis"), ("Task2", "pelvis")]:
        overview = root / task / region / "overview"
        overview.mkdir()
        (overview / f"{task}_{region}_train.xlsx").write_text("")
        (root / task / region / ".DS_Store").write_text("")


def test_synthrad2023(tmp_path):
    _synthrad_tree(tmp_path / "sr")
    labels = tmp_path / "labels"
    _write(labels / "1BA001_ct_label.nii.gz", np.ones(SHAPE, np.uint8))
    _write(labels / "1PA002.nii.gz", np.full(SHAPE, 2, np.uint8))
    classes = _classes_file(tmp_path)
    adapter = get_adapter("synthrad2023", labels_dir=labels, classes_file=classes)
    assert adapter.modality == "MR" and adapter.tasks == ("Task1",)
    cases = adapter.find_cases(tmp_path / "sr")
    assert [(c.case_id, c.image.name, c.label.name) for c in cases] == [
        ("1BA001", "mr.nii.gz", "1BA001_ct_label.nii.gz"),
        ("1PA002", "mr.nii.gz", "1PA002.nii.gz"),
    ]
    validate_cases(cases, adapter)

    body = get_adapter("synthrad2023", image="ct", labels="body")
    assert body.modality == "CT" and body.classes.names == ("background", "body")
    assert [c.case_id for c in body.find_cases(tmp_path / "sr")] == ["1BA001", "1PA002", "2PA004"]
    cbct = get_adapter("synthrad2023", image="cbct", labels="body", regions=["pelvis"])
    assert [(c.case_id, c.image.name) for c in cbct.find_cases(tmp_path / "sr")] == [("2PA004", "cbct.nii.gz")]
    validate_cases(cbct.find_cases(tmp_path / "sr"), cbct)
    assert [
        c.case_id for c in get_adapter("synthrad2023", labels="body", regions=["brain"]).find_cases(tmp_path / "sr")
    ] == ["1BA001"]
    with pytest.raises(ConfigError, match="option tasks"):
        get_adapter("synthrad2023", image="mr", tasks=["Task2"], labels="body")
    with pytest.raises(ConfigError, match="option regions"):
        get_adapter("synthrad2023", labels="body", regions=["abdomen"])
    (tmp_path / "sr" / "Task1" / "brain" / "1BA001" / "mr.nii.gz").unlink()
    with pytest.raises(DataError, match="1BA001/mr.nii.gz"):
        adapter.find_cases(tmp_path / "sr")


def test_class_table_files(tmp_path):
    from medlsdm.data.classes import read_class_table

    v2 = _classes_file(
        tmp_path, '{"labels": {"background": 0, "liver": 1, "spleen": 2}, "channel_names": {"0": "CT"}}', "v2.json"
    )
    v1 = _classes_file(tmp_path, '{"labels": {"0": "background", "2": "spleen", "1": "liver"}}', "v1.json")
    totalseg = _classes_file(tmp_path, '{"1": "liver", "2": "spleen"}', "ts.json")
    for path in (v2, v1, totalseg, _classes_file(tmp_path)):
        table = read_class_table(path)
        assert table.names == ("background", "liver", "spleen") and table.source_values == (0, 1, 2), path
    assert read_class_table(_classes_file(tmp_path, "value,name\n5,kidney\n2,liver\n", "c.csv")).source_values == (
        0,
        2,
        5,
    )
    for text, pattern in [
        ('{"labels": {"a": [1, 2]}}', "region-based"),
        ("1 a\n1 b\n", "appears twice"),
        ("1 a\nx\n", r"c.txt:2"),
        ('{"labels": {"0": "bg"}}', "besides background"),
    ]:
        name = "c.json" if text.startswith("{") else "c.txt"
        with pytest.raises(ConfigError, match=pattern):
            read_class_table(_classes_file(tmp_path, text, name))
    with pytest.raises(ConfigError, match="not found"):
        read_class_table(tmp_path / "none.json")


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
        get_adapter("autopet", labels="lesion").find_cases(tmp_path / "images")


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
    if kind == "background":
        _write(label, np.zeros(SHAPE, np.uint8))
        return label
    if kind in ("rgb", "complex"):
        rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        _write(image, rgb if kind == "rgb" else np.ones(SHAPE, np.complex64))
        return image
    big = np.random.default_rng(0).normal(size=(32, 32, 16)).astype(np.float32)
    _write(image, big)
    _write(label, np.zeros(big.shape, np.uint8))
    raw = image.read_bytes()
    if kind == "truncated":
        image.write_bytes(raw[: len(raw) // 2])
    else:  # corrupt
        corrupt = bytearray(raw)
        corrupt[len(raw) // 2 : len(raw) // 2 + 64] = (
            np.random.default_rng(7).integers(0, 256, 64, dtype=np.uint8).tobytes()
        )
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
        ("background", "all background"),
        ("rgb", "voxel type"),
        ("complex", "voxel type complex64"),
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


def test_mnms2_per_phase_files(tmp_path):
    root = tmp_path / "MnM2"
    (root / "dataset_information.csv").parent.mkdir(parents=True)
    (root / "dataset_information.csv").write_text(
        "SUBJECT_CODE,DISEASE,VENDOR,SCANNER,FIELD\n1,NOR,SIEMENS,Avanto,1.5\n2,DLV,GE,Signa,3\n"
    )
    for sid in ("001", "002", "003"):  # 003 is not in the CSV: skipped with a warning
        folder = root / "dataset" / sid
        for view, shape in (("SA", SHAPE), ("LA", (8, 8, 1))):
            for phase in ("ED", "ES"):
                _pair(
                    folder / f"{sid}_{view}_{phase}.nii.gz",
                    folder / f"{sid}_{view}_{phase}_gt.nii.gz",
                    shape=shape,
                    max_label=3,
                )
            _write(folder / f"{sid}_{view}_CINE.nii.gz", np.zeros(shape + (3,), np.float32))
    adapter = get_adapter("mnms", views=["SA", "la"])
    cases = adapter.find_cases(root)
    assert [c.case_id for c in cases] == [
        "001_LA_ED",
        "001_LA_ES",
        "001_SA_ED",
        "001_SA_ES",
        "002_LA_ED",
        "002_LA_ES",
        "002_SA_ED",
        "002_SA_ES",
    ]
    assert {c.patient_id for c in cases} == {"001", "002"} and all(c.frame is None for c in cases)
    validate_cases(cases, adapter)
    assert [c.case_id for c in get_adapter("mnms").find_cases(root)] == [
        "001_SA_ED",
        "001_SA_ES",
        "002_SA_ED",
        "002_SA_ES",
    ]
    (root / "dataset" / "002" / "002_SA_ES_gt.nii.gz").unlink()
    with pytest.raises(DataError, match="002_SA_ES_gt.nii.gz"):
        adapter.find_cases(root)
    (root / "dataset_information.csv").write_text("SUBJECT_CODE\n1\n2\n7\n")
    with pytest.raises(DataError, match=r"dataset_information.csv: 1 subject\(s\) without a folder: \['7'\]"):
        adapter.find_cases(root)
    (root / "dataset_information.csv").write_text("ID\n1\n")
    with pytest.raises(DataError, match="SUBJECT_CODE"):
        adapter.find_cases(root)
    with pytest.raises(ConfigError, match="option views"):
        get_adapter("mnms", views=["4CH"])


def test_mnms1_has_no_long_axis(tmp_path):
    (tmp_path / "Training" / "Labeled" / "A0").mkdir(parents=True)
    with pytest.raises(ConfigError, match="needs M&Ms-2"):
        get_adapter("mnms", views=["LA"]).find_cases(tmp_path)
