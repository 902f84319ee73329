"""The nnU-Net raw format: the ``nnunet`` adapter (in) and ``write_nnunet_dataset`` / ``synthesize --format
nnunet`` (out)."""

import json
import re

import nibabel as nib
import numpy as np
import pytest

from medlsdm import cli
from medlsdm.data.adapters import get_adapter
from medlsdm.data.classes import ClassTable
from medlsdm.data.datasets import validate_cases
from medlsdm.data.io import read_nifti, write_nifti
from medlsdm.data.nnunet import NNUNetWriter, write_nnunet_dataset
from medlsdm.data.prepare import load_manifest
from medlsdm.errors import ConfigError, DataError

SHAPE = (8, 8, 4)  # nibabel (x, y, z)


def _save(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 3.0, 1.0])), str(path))


def _nnunet_raw(root, cases=("liver_003", "liver_001", "liver_002"), channels=("CT",), v1=False):
    """An nnU-Net v2 raw dataset (or MSD/v1 when ``v1``) with the extra files real ones carry."""
    for i, case in enumerate(cases):
        rng = np.random.default_rng(i)
        for c in range(len(channels)):
            name = f"{case}.nii.gz" if v1 else f"{case}_{c:04d}.nii.gz"
            _save(root / "imagesTr" / name, rng.normal(size=SHAPE).astype(np.float32) * 100 + c * 1000)
        _save(root / "labelsTr" / f"{case}.nii.gz", rng.integers(0, 3, SHAPE).astype(np.uint8))
    _save(root / "imagesTs" / "liver_100_0000.nii.gz", np.zeros(SHAPE, np.float32))
    for folder in ("imagesTr", "labelsTr", ""):
        (root / folder / ".DS_Store").write_text("")
    (root / "splits_final.json").write_text("[]")
    labels = {"0": "background", "1": "liver", "2": "tumour"} if v1 else {"background": 0, "liver": 1, "tumour": 2}
    key = "modality" if v1 else "channel_names"
    meta = {key: {str(i): n for i, n in enumerate(channels)}, "labels": labels, "numTraining": len(cases)}
    if not v1:
        meta["file_ending"] = ".nii.gz"
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_nnunet_adapter_reads_v2(tmp_path):
    root = _nnunet_raw(tmp_path / "Dataset003_Liver")
    adapter = get_adapter("nnunet")
    cases = adapter.find_cases(root)
    assert [c.case_id for c in cases] == ["liver_001", "liver_002", "liver_003"]
    assert cases[0].image.name == "liver_001_0000.nii.gz" and cases[0].label.name == "liver_001.nii.gz"
    assert adapter.modality == "CT" and adapter.classes.names == ("background", "liver", "tumour")
    assert adapter.normalisation["method"] == "ct_window"
    validate_cases(cases, adapter)


def test_nnunet_adapter_channels_and_msd(tmp_path):
    root = _nnunet_raw(tmp_path / "mr", channels=("T2", "ADC"))
    adapter = get_adapter("nnunet", channel=1)
    cases = adapter.find_cases(root)
    assert adapter.modality == "MR" and cases[0].image.name == "liver_001_0001.nii.gz"
    assert get_adapter("nnunet", modality="ct").find_cases(root)[0].image.name == "liver_001_0000.nii.gz"
    with pytest.raises(ConfigError, match="channel=2"):
        get_adapter("nnunet", channel=2).find_cases(root)
    msd = _nnunet_raw(tmp_path / "Task03_Liver", v1=True)
    adapter = get_adapter("nnunet")
    cases = adapter.find_cases(msd)
    assert [c.image.name for c in cases] == ["liver_001.nii.gz", "liver_002.nii.gz", "liver_003.nii.gz"]
    assert adapter.classes.names == ("background", "liver", "tumour")
    validate_cases(cases, adapter)


def test_nnunet_adapter_errors(tmp_path):
    root = _nnunet_raw(tmp_path / "d")
    (root / "labelsTr" / "liver_002.nii.gz").unlink()
    _save(root / "labelsTr" / "liver_009.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(DataError, match="unpaired") as info:
        get_adapter("nnunet").find_cases(root)
    assert "liver_009.nii.gz has no image liver_009_0000.nii.gz" in str(info.value)
    assert "images of case liver_002" in str(info.value)
    (root / "dataset.json").unlink()
    with pytest.raises(DataError, match="dataset.json: not found"):
        get_adapter("nnunet").find_cases(root)
    (root / "dataset.json").write_text('{"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": [1, 2]}}')
    with pytest.raises(DataError, match="region-based"):
        get_adapter("nnunet").find_cases(root)
    with pytest.raises(ConfigError, match="option channel"):
        get_adapter("nnunet", channel=-1)


NNUNET_IMAGE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.nii\.gz$")


def check_nnunet_naming(root):
    """nnU-Net v2's rules (dataset_format.md): every label has one image per channel, nothing else in the folders."""
    meta = json.loads((root / "dataset.json").read_text())
    assert set(meta) >= {"channel_names", "labels", "numTraining", "file_ending"}
    assert meta["file_ending"] == ".nii.gz" and meta["labels"]["background"] == 0
    assert sorted(meta["labels"].values()) == list(range(len(meta["labels"])))  # consecutive integers
    labels = sorted(p.name[: -len(".nii.gz")] for p in (root / "labelsTr").iterdir())
    images = sorted(p.name for p in (root / "imagesTr").iterdir())
    assert all(NNUNET_IMAGE.match(name) for name in images), images
    expected = sorted(f"{case}_{int(c):04d}.nii.gz" for case in labels for c in meta["channel_names"])
    assert images == expected and meta["numTraining"] == len(labels)
    for case in labels:
        label = np.asarray(nib.load(root / "labelsTr" / f"{case}.nii.gz").dataobj)
        assert set(np.unique(label).tolist()) <= set(meta["labels"].values())
        image = nib.load(root / "imagesTr" / f"{case}_0000.nii.gz")
        assert image.shape == label.shape
        np.testing.assert_allclose(image.affine, nib.load(root / "labelsTr" / f"{case}.nii.gz").affine)
    return meta, labels


def test_write_nnunet_dataset_round_trip(tmp_path):
    classes = ClassTable(("background", "liver", "tumour"), (0, 1, 2))
    affine = np.array([[1.5, 0, 0, -10.0], [0, 1.5, 0, 4.0], [0, 0, 3.0, 7.0], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    cases = [
        (rng.uniform(-1, 1, (1, 4, 8, 8)).astype(np.float32), rng.integers(0, 3, (4, 8, 8)), affine) for _ in range(3)
    ]
    out = tmp_path / "Dataset501_Synthetic"
    ids = write_nnunet_dataset(out, cases, classes=classes, channel_name="CT", prefix="syn")
    assert ids == ["syn_000", "syn_001", "syn_002"]
    meta, labels = check_nnunet_naming(out)
    assert meta["labels"] == {"background": 0, "liver": 1, "tumour": 2} and labels == ids
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files left
    adapter = get_adapter("nnunet")
    back = adapter.find_cases(out)
    assert [c.case_id for c in back] == ids and adapter.classes == classes and adapter.modality == "CT"
    validate_cases(back, adapter)
    image, read_affine = adapter.read_image(back[1])
    label, _ = adapter.read_label(back[1])
    np.testing.assert_allclose(image, cases[1][0][0], atol=1e-6)
    assert np.array_equal(label, cases[1][1]) and np.allclose(read_affine, affine)
    with pytest.raises(ConfigError, match="already holds files"):
        NNUNetWriter(out, classes=classes, channel_name="CT")
    writer = NNUNetWriter(tmp_path / "bad", classes=classes, channel_name="MRI")
    with pytest.raises(DataError, match="outside 0…2"):
        writer.add(cases[0][0], np.full((4, 8, 8), 3), affine)
    with pytest.raises(DataError, match="no cases"):
        writer.close()


def test_cli_synthesize_nnunet(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "run" / "pipeline")
    n = tiny_pipeline.unet.config.num_classes
    manifest = {"modality": "MR", "classes": ["background"] + [f"tissue_{i}" for i in range(1, n)]}
    (tmp_path / "run" / "data").mkdir()
    (tmp_path / "run" / "data" / "manifest.json").write_text(json.dumps(manifest))
    for name, value in (("a.nii.gz", 1), ("b.nii.gz", 2)):
        lab = np.zeros((8, 16, 16), np.uint8)
        lab[2:6, 4:12, 4:12] = value
        write_nifti(tmp_path / "labels" / name, lab, np.diag([5.5, 5.5, 6.0, 1.0]), kind="label")
    out = tmp_path / "Dataset502_MedLSDM"
    code = cli.main(
        [
            "synthesize",
            "--pipeline",
            str(tmp_path / "run" / "pipeline"),
            "--labels",
            str(tmp_path / "labels"),
            "--out-dir",
            str(out),
            "--steps",
            "2",
            "--num-per-label",
            "2",
            "--format",
            "nnunet",
        ]
    )
    assert code == 0
    meta, labels = check_nnunet_naming(out)
    assert labels == ["medlsdm_000", "medlsdm_001", "medlsdm_002", "medlsdm_003"]
    assert meta["channel_names"] == {"0": "MRI"} and list(meta["labels"]) == manifest["classes"]
    label, _ = read_nifti(out / "labelsTr" / "medlsdm_002.nii.gz", kind="label")
    source, _ = read_nifti(tmp_path / "labels" / "b.nii.gz", kind="label")
    assert np.array_equal(label, source)  # sample 0 of the second label map
    adapter = get_adapter("nnunet")
    validate_cases(adapter.find_cases(out), adapter)
    assert adapter.modality == "MR"


def test_cli_preprocess_nnunet(tmp_path):
    root = _nnunet_raw(tmp_path / "raw", cases=[f"liver_{i:03d}" for i in range(5)])
    code = cli.main(
        [
            "preprocess",
            "--dataset",
            "nnunet",
            "--data-root",
            str(root),
            "--out-dir",
            str(tmp_path / "data"),
            "--spacing",
            "3,1.5,1.5",
            "--block-shape",
            "4,8,8",
        ]
    )
    assert code == 0
    manifest = load_manifest(tmp_path / "data")
    assert manifest.dataset == "nnunet" and manifest.classes == ["background", "liver", "tumour"]
    assert len(manifest.cases) == 5
