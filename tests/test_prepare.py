"""End-to-end tests of medlsdm.data.prepare on fixture files and on a phantom."""

import json
import re

import nibabel as nib
import numpy as np
import pytest

from medlsdm.data.adapters import get_adapter
from medlsdm.data.classes import AUTOPET, TORSO_CT
from medlsdm.data.datasets import validate_cases
from medlsdm.data.io import dhw_to_world, read_nifti
from medlsdm.data.prepare import CaseEntry, load_manifest, prepare_dataset
from medlsdm.data.splits import check_split, load_split
from medlsdm.data.store import CaseStore
from medlsdm.errors import ConfigError, DataError

# LPS-like source orientation with thick slices: reorientation and resampling are exercised.
SOURCE_AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, -1.5, 0, 20.0], [0, 0, 4.0, -10.0], [0, 0, 0, 1]])


def _write_study(folder, seed):
    """A 24x24x6 CT study (HU) with a lesion box at a seed-dependent place."""
    rng = np.random.default_rng(seed)
    image = rng.normal(-800, 30, size=(24, 24, 6)).astype(np.float32)
    label = np.zeros((24, 24, 6), np.uint8)
    x0, y0 = 6 + seed % 5, 8 + seed % 3
    label[x0 : x0 + 8, y0 : y0 + 6, 2:5] = 1
    image[label == 1] = 50.0
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("CTres.nii.gz", image), ("SEG.nii.gz", label)):
        nib.save(nib.Nifti1Image(data, SOURCE_AFFINE), str(folder / name))


@pytest.fixture
def autopet_root(tmp_path):
    root = tmp_path / "autopet"
    studies = [("PETCT_a", "s1"), ("PETCT_a", "s2"), ("PETCT_b", "s1"), ("PETCT_c", "s1"), ("PETCT_d", "s1")]
    for i, (patient, study) in enumerate(studies):
        _write_study(root / patient / study, seed=i)
    return root


def _world_centroid(label, affine, value=1):
    return dhw_to_world(affine, np.argwhere(label == value).mean(axis=0))


def test_prepare_end_to_end(autopet_root, tmp_path):
    out = tmp_path / "data"
    manifest = prepare_dataset(
        "autopet",
        autopet_root,
        out,
        spacing=(6.0, 2.0, 2.0),
        block_shape=(4, 16, 16),
        n_cases=4,
        seed=1,
        labels="lesion",
    )
    assert manifest == load_manifest(out)
    assert manifest.dataset == "autopet" and manifest.modality == "CT"
    assert manifest.classes == list(AUTOPET.names)
    assert manifest.normalisation["method"] == "ct_window"
    assert manifest.spacing == [6.0, 2.0, 2.0] and manifest.block_shape == [4, 16, 16]
    cases = manifest.cases
    assert [c.case_id for c in cases] == ["PETCT_a_s1", "PETCT_a_s2", "PETCT_b_s1", "PETCT_c_s1"]
    assert cases[0].source_image == "PETCT_a/s1/CTres.nii.gz"
    assert cases[0].source_shape == [6, 24, 24] and cases[0].source_spacing == pytest.approx([4.0, 1.5, 1.5])

    store = CaseStore(out / "cases.h5")
    assert store.ids() == [c.case_id for c in cases]
    for entry in cases:
        image, affine = read_nifti(out / entry.image)
        label, label_affine = read_nifti(out / entry.label, kind="label")
        assert nib.load(str(out / entry.label)).get_data_dtype() == np.uint8
        assert image.shape == label.shape == (4, 16, 16)
        assert -1 <= image.min() and image.max() <= 1
        np.testing.assert_array_equal(affine, label_affine)
        cached_image, cached_label, cached_affine = store[entry.case_id]
        np.testing.assert_allclose(cached_image[0], image, atol=1e-6)
        np.testing.assert_array_equal(cached_label, label)
        np.testing.assert_allclose(cached_affine, affine, atol=1e-4)
        assert entry.class_voxels == np.bincount(label.ravel(), minlength=2).tolist()
        # the lesion is where it was in the source, in world coordinates (within half a 6 mm slice:
        # nearest-neighbour resampling)
        src_label, src_affine = read_nifti(autopet_root / entry.source_label, kind="label")
        np.testing.assert_allclose(_world_centroid(label, affine), _world_centroid(src_label, src_affine), atol=3.1)
        # HU window (-1000, 1000): lesion 50 HU → 0.05 (lower at partial-volume edges), background -800 HU → -0.8
        assert image[label == 1].max() == pytest.approx(0.05, abs=1e-4)
        assert image[label == 1].mean() > image[label == 0].mean() + 0.3
        assert image[label == 0].mean() == pytest.approx(-0.8, abs=0.1)
    store.close()

    split = load_split(out / "split.json")
    check_split(split, cases)
    where = {c: k for k, ids in split.items() for c in ids}
    assert where["PETCT_a_s1"] == where["PETCT_a_s2"]  # two studies, one patient
    # the output folder is itself a dataset in the generic layout
    adapter = get_adapter("nifti", modality="CT", classes=AUTOPET)
    validate_cases(adapter.find_cases(out), adapter)


def test_blocks_per_case_and_stale_files(autopet_root, tmp_path):
    out = tmp_path / "data"
    manifest = prepare_dataset(
        "autopet", autopet_root, out, spacing=(2.0, 3.0, 3.0), block_shape=(4, 8, 8), blocks_per_case=2, labels="lesion"
    )
    ids = [c.case_id for c in manifest.cases]
    assert ids[:2] == ["PETCT_a_s1_b0", "PETCT_a_s1_b1"] and len(ids) == 10
    first, second = manifest.cases[:2]
    assert first.patient_id == second.patient_id == "PETCT_a"
    assert (first.block_start, second.block_start) == (0, 7)  # 6 slices at 4 mm → 11 at 2 mm: blocks at 0 and 11 - 4
    _, a0 = read_nifti(out / first.image)
    _, a1 = read_nifti(out / second.image)
    np.testing.assert_allclose(dhw_to_world(a1, (0, 0, 0)), dhw_to_world(a0, (7, 0, 0)), atol=1e-4)
    # rerun with fewer cases: files of the previous run that are not in the new one go away
    prepare_dataset(
        "autopet", autopet_root, out, spacing=(2.0, 3.0, 3.0), block_shape=(4, 8, 8), n_cases=3, labels="lesion"
    )
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "PETCT_a_s1.nii.gz",
        "PETCT_a_s2.nii.gz",
        "PETCT_b_s1.nii.gz",
    ]


def test_bad_file_stops_before_any_output(autopet_root, tmp_path):
    bad = autopet_root / "PETCT_d" / "s1" / "SEG.nii.gz"
    nib.save(nib.Nifti1Image(np.full((24, 24, 6), 3, np.uint8), SOURCE_AFFINE), str(bad))
    out = tmp_path / "data"
    with pytest.raises(DataError, match="label values") as info:
        prepare_dataset("autopet", autopet_root, out, spacing=(4, 2, 2), block_shape=(4, 8, 8), labels="lesion")
    assert str(bad) in str(info.value)
    assert not out.exists()


def test_parameter_errors(autopet_root, tmp_path):
    with pytest.raises(DataError, match="only 5"):
        prepare_dataset(
            "autopet",
            autopet_root,
            tmp_path / "o",
            spacing=(4, 2, 2),
            block_shape=(4, 8, 8),
            n_cases=9,
            labels="lesion",
        )
    with pytest.raises(ConfigError, match="spacing"):
        prepare_dataset("autopet", autopet_root, tmp_path / "o", spacing=(4, 2), block_shape=(4, 8, 8), labels="lesion")
    with pytest.raises(ConfigError, match="block_shape"):
        prepare_dataset(
            "autopet", autopet_root, tmp_path / "o", spacing=(4, 2, 2), block_shape=(0, 8, 8), labels="lesion"
        )
    with pytest.raises(ConfigError, match="fractions"):
        prepare_dataset(
            "autopet",
            autopet_root,
            tmp_path / "o",
            spacing=(4, 2, 2),
            block_shape=(4, 8, 8),
            fractions=(1, 1, 0),
            labels="lesion",
        )
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="unknown dataset"):
        prepare_dataset("nope", autopet_root, tmp_path / "o", spacing=(4, 2, 2), block_shape=(4, 8, 8))


def test_load_manifest_missing(tmp_path):
    with pytest.raises(DataError, match="notebook 01") as info:
        load_manifest(tmp_path)
    assert str(tmp_path / "manifest.json") in str(info.value)


def test_manifest_round_trips_and_keeps_keys_it_does_not_know(autopet_root, tmp_path):
    out = tmp_path / "data"
    manifest = prepare_dataset(
        "autopet", autopet_root, out, spacing=(6, 2, 2), block_shape=(4, 8, 8), n_cases=2, labels="lesion"
    )
    text = (out / "manifest.json").read_text()
    assert load_manifest(out) == manifest and load_manifest(out).to_dict() == json.loads(text)
    assert json.dumps(manifest.to_dict(), indent=2) + "\n" == text  # the file is to_dict() as it was written
    entry = {**json.loads(text)["cases"][0], "source_frame": 1}  # a block of a 4-D file names its frame, last
    assert list(CaseEntry.from_dict(entry).to_dict().items()) == list(entry.items())
    # an older file (no "preprocessing") holding keys this version does not know: loads, and keeps them
    old = {k: v for k, v in json.loads(text).items() if k != "preprocessing"}
    old["note"], old["cases"][0]["qc"] = "from elsewhere", {"ok": True}
    (out / "manifest.json").write_text(json.dumps(old))
    again = load_manifest(out)
    assert again.preprocessing == "resample" and [c.case_id for c in again.cases] == [c.case_id for c in manifest.cases]
    assert again.extra == {"note": "from elsewhere"} and again.cases[0].extra == {"qc": {"ok": True}}
    assert again.to_dict() == {**old, "preprocessing": "resample"}


@pytest.mark.parametrize(
    "content, problem",
    [
        ("[1]", "not a medlsdm manifest (no 'cases' list)"),
        ('{"cases": []}', "no 'dataset', 'classes', 'spacing'"),
        ('{"dataset": "x", "cases": [1]}', "case 0 is not a JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_load_manifest_names_the_file_and_the_problem(tmp_path, content, problem):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(DataError, match=re.escape(problem)) as info:
        load_manifest(tmp_path)
    assert str(tmp_path / "manifest.json") in str(info.value)


def test_load_manifest_names_a_case_key_that_is_missing(autopet_root, tmp_path):
    out = tmp_path / "data"
    prepare_dataset("autopet", autopet_root, out, spacing=(6, 2, 2), block_shape=(4, 8, 8), n_cases=1, labels="lesion")
    values = json.loads((out / "manifest.json").read_text())
    del values["cases"][0]["patient_id"]
    (out / "manifest.json").write_text(json.dumps(values))
    with pytest.raises(DataError, match=re.escape("manifest.json: case 0: no 'patient_id'")):
        load_manifest(out)


def test_prepare_phantom(tmp_path):
    phantom = pytest.importorskip("medlsdm.data.phantom")
    raw = tmp_path / "raw"
    phantom.make_phantom("torso-ct", raw, 3, seed=0, shape=(32, 32, 8))
    manifest = prepare_dataset("torso-ct", raw, tmp_path / "data", spacing=(12.0, 11.0, 11.0), block_shape=(8, 16, 16))
    assert len(manifest.cases) == 3 and manifest.classes == list(TORSO_CT.names)
    split = load_split(tmp_path / "data" / "split.json")
    assert all(len(ids) == 1 for ids in split.values())
    voxels = np.array([c.class_voxels for c in manifest.cases])
    assert voxels.sum(axis=1).tolist() == [8 * 16 * 16] * 3
    assert (voxels[:, TORSO_CT.index("liver")] > 0).all()
    header = nib.load(str(tmp_path / "data" / manifest.cases[0].image)).header
    assert header["descrip"].item() == b""  # no header text copied from the source


def _nifti_folder(root, n=4):
    for i in range(n):
        rng = np.random.default_rng(i)
        image = rng.normal(500, 100, size=(16, 16, 8)).astype(np.float32)
        label = np.zeros((16, 16, 8), np.uint8)
        label[4:12, 4:12, 2:6] = 1 + i % 3
        for sub, data in (("images", image), ("labels", label)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 4.0, 1.0])), str(root / sub / f"case_{i}.nii.gz"))
    return root


def test_cli_preprocess_nifti_options(tmp_path, caplog):
    from medlsdm import cli

    root = _nifti_folder(tmp_path / "raw")
    args = [
        "preprocess",
        "--dataset",
        "nifti",
        "--data-root",
        str(root),
        "--out-dir",
        str(tmp_path / "data"),
        "--spacing",
        "4,2,2",
        "--block-shape",
        "4,8,8",
    ]
    assert cli.main(args + ["--modality", "MR", "--num-classes", "4", "--percentiles", "1,99"]) == 0
    manifest = load_manifest(tmp_path / "data")
    assert manifest.modality == "MR" and manifest.classes == ["background", "class_1", "class_2", "class_3"]
    assert manifest.normalisation["percentiles"] == [1.0, 99.0] and len(manifest.cases) == 4
    for extra, message in [
        ([], "option modality='CT' or 'MR' (--modality), got None"),
        (["--modality", "XR", "--num-classes", "4"], "got 'XR'"),
        (["--modality", "MR"], "num_classes=K (--num-classes)"),
        (["--modality", "MR", "--num-classes", "4", "--regions", "brain"], r"invalid option\(s\) \['regions'\]"),
        (["--modality", "MR", "--classes-file", str(tmp_path / "no.json")], "no.json: class table file not found"),
    ]:
        caplog.clear()
        assert cli.main(args + extra) == 2, extra
        assert message in caplog.text or re.search(message, caplog.text), (extra, caplog.text)
    caplog.clear()
    assert cli.main(["preprocess", "--dataset", "nifti", "--out-dir", str(tmp_path / "o")]) == 2
    assert "option --data-root is required" in caplog.text


def test_prepare_paper_handling(tmp_path):
    root = _nifti_folder(tmp_path / "raw")
    manifest = prepare_dataset(
        "nifti",
        root,
        tmp_path / "data",
        spacing=(6, 6, 6),
        block_shape=(2, 8, 8),
        preprocessing="paper",
        modality="MR",
        num_classes=4,
        seed=3,
    )
    assert manifest.preprocessing == "paper" and manifest.normalisation["method"] == "minmax_per_block"
    assert manifest.spacing == [4.0, 2.0, 2.0]  # the native spacing (median), not the asked 6 mm
    ids = [c.case_id for c in manifest.cases]
    assert all(re.fullmatch(r"case_\d_b\d", i) for i in ids)
    store = CaseStore(tmp_path / "data" / "cases.h5")
    for entry in manifest.cases:
        image, label, _ = store[entry.case_id]
        assert image.min() == -1.0 and image.max() == pytest.approx(1.0, abs=1e-6) and label.any()
    again = prepare_dataset(
        "nifti",
        root,
        tmp_path / "data2",
        spacing=(6, 6, 6),
        block_shape=(2, 8, 8),
        preprocessing="paper",
        modality="MR",
        num_classes=4,
        seed=3,
    )
    assert [c.case_id for c in again.cases] == ids  # same seed, same blocks
    with pytest.raises(ConfigError, match="option preprocessing"):
        prepare_dataset(
            "nifti",
            root,
            tmp_path / "d3",
            spacing=(6, 6, 6),
            block_shape=(2, 8, 8),
            preprocessing="monai",
            modality="MR",
            num_classes=4,
        )


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_crafted_manifest_deletes_nothing_outside_the_folder(autopet_root, tmp_path):
    victim = tmp_path / "victim" / "notes.nii.gz"
    victim.parent.mkdir()
    victim.write_bytes(b"keep me")
    out = tmp_path / "data"
    out.mkdir()
    (out / "manifest.json").write_text(
        '{"cases": [{"image": "../victim/notes.nii.gz", "label": "../victim/notes.nii.gz"}]}'
    )
    prepare_dataset("autopet", autopet_root, out, spacing=(4, 2, 2), block_shape=(4, 8, 8), n_cases=2, labels="lesion")
    assert victim.read_bytes() == b"keep me"
    assert len(load_manifest(out).cases) == 2


def test_an_out_dir_holding_other_files_is_refused(autopet_root, tmp_path):
    out = tmp_path / "data"
    (out / "images").mkdir(parents=True)
    (out / "images" / "my_notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="my_notes.txt.*not written by medlsdm preprocess"):
        prepare_dataset("autopet", autopet_root, out, spacing=(4, 2, 2), block_shape=(4, 8, 8), labels="lesion")
    with pytest.raises(ConfigError, match="must not be data_root"):
        prepare_dataset("autopet", autopet_root, tmp_path, spacing=(4, 2, 2), block_shape=(4, 8, 8), labels="lesion")
    assert (out / "images" / "my_notes.txt").read_text() == "mine"


@pytest.mark.parametrize("where", ["nifti", "hdf5", "interrupt"])
def test_a_failing_preprocess_leaves_the_old_folder_and_no_temporary_files(autopet_root, tmp_path, monkeypatch, where):
    import errno

    from medlsdm.data import prepare

    out = tmp_path / "data"
    prepare_dataset("autopet", autopet_root, out, spacing=(4, 2, 2), block_shape=(4, 8, 8), n_cases=3, labels="lesion")
    before = _snapshot(out)
    calls = []

    def fail_on_third(real):
        def wrapped(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt() if where == "interrupt" else OSError(errno.ENOSPC, "No space left on device")
            return real(*args, **kwargs)

        return wrapped

    if where == "hdf5":
        monkeypatch.setattr(prepare.CaseStore, "add", fail_on_third(prepare.CaseStore.add))
    else:
        monkeypatch.setattr(prepare, "write_nifti", fail_on_third(prepare.write_nifti))
    with pytest.raises((OSError, KeyboardInterrupt)):
        prepare_dataset("autopet", autopet_root, out, spacing=(6, 3, 3), block_shape=(4, 8, 8), labels="lesion")
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["autopet", "data"]  # no staging folder left
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_too_many_classes_and_too_large_volumes_are_refused_before_any_output(tmp_path, caplog):
    from medlsdm import cli

    root = _nifti_folder(tmp_path / "raw")
    out = tmp_path / "data"
    with pytest.raises(ConfigError, match="301 classes, more than the 256"):
        prepare_dataset("nifti", root, out, spacing=(4, 2, 2), block_shape=(4, 8, 8), modality="MR", num_classes=301)
    with pytest.raises(
        ConfigError, match=r"spacing \[0.01, 0.01, 0.01\] mm.*case_0.nii.gz.*GiB.*MAX_VOLUME_BYTES"
    ) as info:
        prepare_dataset(
            "nifti", root, out, spacing=(0.01, 0.01, 0.01), block_shape=(4, 8, 8), modality="MR", num_classes=4
        )
    assert str(root / "images" / "case_0.nii.gz") in str(info.value)
    with pytest.raises(ConfigError, match="block_shape"):
        prepare_dataset(
            "nifti", root, out, spacing=(4, 2, 2), block_shape=(4, 40000, 40000), modality="MR", num_classes=4
        )
    with pytest.raises(ConfigError, match="spacing must be three positive numbers"):
        prepare_dataset(
            "nifti", root, out, spacing=(4, float("nan"), 2), block_shape=(4, 8, 8), modality="MR", num_classes=4
        )
    args = ["preprocess", "--dataset", "nifti", "--data-root", str(root), "--out-dir", str(out), "--modality", "MR"]
    assert cli.main(args + ["--num-classes", "301", "--spacing", "4,2,2", "--block-shape", "4,8,8"]) == 2
    assert "301 classes" in caplog.text
    assert cli.main(args + ["--num-classes", "4", "--spacing", "0.01,0.01,0.01", "--block-shape", "4,8,8"]) == 2
    assert "GiB" in caplog.text
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_the_manifest_names_no_folder_outside_the_dataset_root(autopet_root, tmp_path):
    labels = tmp_path / "Secret-Study-Folder"  # anatomical label maps outside the dataset root
    labels.mkdir()
    for seg in autopet_root.glob("*/*/SEG.nii.gz"):
        nib.save(nib.load(str(seg)), str(labels / f"{seg.parent.parent.name}_{seg.parent.name}.nii.gz"))
    classes = tmp_path / "classes.txt"
    classes.write_text("0 background\n1 liver\n")
    manifest = prepare_dataset(
        "autopet",
        autopet_root,
        tmp_path / "data",
        spacing=(4, 2, 2),
        block_shape=(4, 8, 8),
        n_cases=2,
        labels_dir=labels,
        classes_file=classes,
    )
    assert manifest.cases[0].source_label == "PETCT_a_s1.nii.gz"
    assert manifest.cases[0].source_image == "PETCT_a/s1/CTres.nii.gz"
    assert "Secret-Study-Folder" not in (tmp_path / "data" / "manifest.json").read_text()
