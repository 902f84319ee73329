"""The evaluation steps (notebook 05, ``medlsdm evaluate``) on real NIfTI files."""
import math

import numpy as np
import pytest

from medlsdm.data.io import write_nifti
from medlsdm.errors import DataError
from medlsdm.evaluate import (
    Cases,
    image_quality,
    privacy_check,
    read_cases,
    results_tables,
    synthetic_folder,
    synthetic_test_and_train,
)
from medlsdm.rundir import RunDir

AFFINE = np.diag([5.5, 5.5, 6.0, 1.0])


def _case(seed, shape=(16, 16, 16)):
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.int64)
    label[2:6, 4:12, 4:12] = 1
    label[3:5, 6:10, 10:14] = 2
    image = np.where(label == 0, -0.8, np.where(label == 1, 0.2, 0.7)) + rng.normal(0, 0.05, shape)
    return image.astype(np.float32), label


def _write_run(root, n=4):
    """A run's data folder (images/, labels/) of ``n`` small cases, split 2/1/1."""
    run = RunDir(root)
    ids = [f"case{i}" for i in range(n)]
    for i, cid in enumerate(ids):
        image, label = _case(i)
        write_nifti(run.data / "images" / f"{cid}.nii.gz", image, AFFINE, kind="image")
        write_nifti(run.data / "labels" / f"{cid}.nii.gz", label, AFFINE, kind="label")
    return run, {"train": ids[:2], "val": ids[2:3], "test": ids[3:]}


def test_read_cases_checks_the_grid_and_names_the_file(tmp_path):
    run, split = _write_run(tmp_path)
    cases = read_cases([run.data / "images" / "case0.nii.gz"], [run.data / "labels" / "case0.nii.gz"], ["case0"])
    assert cases.images[0].shape == (1, 16, 16, 16) and cases.labels[0].dtype == np.int64
    moved = tmp_path / "moved.nii.gz"
    write_nifti(moved, cases.images[0][0], np.diag([5.5, 5.5, 3.0, 1.0]), kind="image")
    with pytest.raises(DataError, match="moved.nii.gz.*not on the grid"):
        read_cases([moved], [run.data / "labels" / "case0.nii.gz"], ["case0"])


def test_image_quality_closed_form():
    """A constant offset c: RMSE = c, PSNR = 20 log10(2 / c), NMSE = c² N / ‖real‖²."""
    image, label = _case(0)
    real = Cases(["a"], [image[None]], [label], [AFFINE])
    c = 0.1
    syn = Cases(["a"], [image[None] + np.float32(c)], [label], [AFFINE])
    q = image_quality(real, syn)
    assert q["rmse"] == pytest.approx(c, rel=1e-5)
    assert q["psnr"] == pytest.approx(20 * math.log10(2 / c), rel=1e-4)
    assert q["nmse"] == pytest.approx(c**2 * image.size / float(np.sum(image.astype(np.float64) ** 2)), rel=1e-4)
    assert image_quality(real, real)["ssim"] == pytest.approx(1.0)
    with pytest.raises(DataError, match="differ"):
        image_quality(real, Cases(["b"], syn.images, syn.labels, syn.affines))


def test_privacy_check_flags_a_copy_of_a_training_case():
    images = [_case(i)[0][None] for i in range(5)]
    labels = [_case(i)[1] for i in range(5)]

    def cases(idx, prefix):
        return Cases([f"{prefix}{i}" for i in idx], [images[i] for i in idx], [labels[i] for i in idx], [AFFINE] * len(idx))

    train, held_out = cases([0, 1], "t"), cases([2, 3], "h")
    copy = Cases(["copy", "new"], [images[0] + 0.001, images[4] + 0.5], [labels[0], labels[4]], [AFFINE] * 2)
    check = privacy_check(copy, train, held_out)
    assert check["flagged_ids"] == ["copy"] and check["nearest_train_ids"][0] == "t0"


def test_synthetic_sets_are_made_once_per_setting_in_their_own_folder(tmp_path, tiny_pipeline, one_thread):
    run, split = _write_run(tmp_path)
    settings = dict(scheduler="ddim", steps=2, guidance_scale=1.0, seed=0)
    test, train, folder = synthetic_test_and_train(run, tiny_pipeline, split, **settings)
    assert folder == synthetic_folder(run, **settings) and folder.name == "ddim-2-g1-s0"
    assert sorted(p.name for p in (folder / "test").iterdir()) == ["case3_syn0.nii.gz"]
    assert train.ids == ["case0", "case1"] and test.labels[0].shape == test.images[0].shape[1:]
    stamp = (folder / "test" / "case3_syn0.nii.gz").stat().st_mtime_ns
    again, _, _ = synthetic_test_and_train(run, None, split, augment=False, **settings)  # reused: no pipeline needed
    assert (folder / "test" / "case3_syn0.nii.gz").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.images[0], test.images[0])
    with pytest.raises(DataError, match="missing and no pipeline"):
        synthetic_test_and_train(run, None, split, **{**settings, "steps": 3})


def test_results_tables_use_the_papers_columns_and_say_what_was_skipped():
    per_class = {"liver": 0.9, "lesion": float("nan")}
    m = {"dataset": "torso-ct", "decoder": "spade", "channels": "16-32-64", "fid": None, "fid_3d": None,
         "lpips": {"axial": 0.2, "coronal": 0.4, "sagittal": 0.3}, "ssim": 0.5, "rmse": 0.1, "psnr": 22.0,
         "dice_per_class": {"real_train": per_class, "real_test": per_class, "synthetic": per_class},
         "dice_real_train": 0.9, "dice_real_test": 0.9, "dice_synthetic": 0.9, "dice_ratio": 1.0,
         "dice_augmented": None, "fd_seg": 1.5, "privacy_flagged": 0, "n_test": 6}
    tables = results_tables(m)
    head, _, row = tables["quality"].splitlines()
    assert head.startswith("| dataset | decoder | #channels | FID") and "PSNR" in head
    assert row == "| torso-ct | spade | 16-32-64 | skipped | skipped | 0.3 | 0.5 | 0.1 | 22 |"
    assert "| lesion | n/a | n/a | n/a |" in tables["dice"] and "augmented" not in tables["dice"]
    assert "0 of 6" in tables["summary"]
