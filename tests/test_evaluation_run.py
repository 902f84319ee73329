"""The evaluation of a run, step by step (medlsdm.evaluation.run: notebook 05, ``medlsdm evaluate``), on real
NIfTI files; the memorisation controls on a tiny phantom run."""

import json
import math

import numpy as np
import pytest
from evaluation_utils import AFFINE, make_case, write_run

from medlsdm.data.io import write_nifti
from medlsdm.errors import ConfigError, DataError
from medlsdm.evaluation.cases import Cases, read_cases
from medlsdm.evaluation.run import image_quality, pipeline_digest, synthetic_folder, synthetic_sets
from medlsdm.rundir import RunDir


def test_read_cases_checks_the_grid_and_names_the_file(tmp_path):
    run, split = write_run(tmp_path)
    cases = read_cases([run.data / "images" / "case0.nii.gz"], [run.data / "labels" / "case0.nii.gz"], ["case0"])
    assert cases.images[0].shape == (1, 16, 16, 16) and cases.labels[0].dtype == np.int64
    moved = tmp_path / "moved.nii.gz"
    write_nifti(moved, cases.images[0][0], np.diag([5.5, 5.5, 3.0, 1.0]), kind="image")
    with pytest.raises(DataError, match="moved.nii.gz.*not on the grid"):
        read_cases([moved], [run.data / "labels" / "case0.nii.gz"], ["case0"])


def test_image_quality_closed_form():
    """A constant offset c: RMSE = c, PSNR = 20 log10(2 / c), NMSE = c² N / ‖real‖²."""
    image, label = make_case(0)
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


def test_synthetic_sets_are_made_once_per_setting_in_their_own_folder(tmp_path, tiny_pipeline, one_thread):
    run, split = write_run(tmp_path)
    settings = dict(scheduler="ddim", steps=2, guidance_scale=1.0, seed=0)
    sets, folder = synthetic_sets(run, tiny_pipeline, split, n_new=2, **settings)  # not a phantom: no new anatomies
    test, train = sets["test"], sets["train"]
    assert sets["new"] is None
    assert folder == synthetic_folder(run, **settings) and folder.name == "ddim-2-g1-s0"
    assert sorted(p.name for p in (folder / "test").iterdir()) == ["case3_syn0.nii.gz"]
    assert train.ids == ["case0", "case1"] and test.labels[0].shape == test.images[0].shape[1:]
    stamp = (folder / "test" / "case3_syn0.nii.gz").stat().st_mtime_ns
    again, _ = synthetic_sets(run, None, split, n_train_maps=1, **settings)  # reused: no pipeline needed
    assert (folder / "test" / "case3_syn0.nii.gz").stat().st_mtime_ns == stamp and again["train"].ids == ["case0"]
    np.testing.assert_array_equal(again["test"].images[0], test.images[0])
    with pytest.raises(DataError, match="missing and no pipeline"):
        synthetic_sets(run, None, split, **{**settings, "steps": 3})


def test_synthetic_volumes_of_other_pipeline_weights_are_not_reused(tmp_path, one_thread):
    """The cache of synthetic volumes is keyed by the pipeline's weights too: after a retrain
    (here: one UNet weight changed) the volumes are synthesised afresh, not scored again."""
    import torch
    from conftest import make_tiny_pipeline

    run, split = write_run(tmp_path)
    settings = dict(scheduler="ddim", steps=2, guidance_scale=1.0, seed=0)
    pipe = make_tiny_pipeline()
    first, folder = synthetic_sets(run, pipe, split, **settings)
    path = folder / "test" / "case3_syn0.nii.gz"
    stamp = path.stat().st_mtime_ns
    synthetic_sets(run, pipe, split, **settings)
    assert path.stat().st_mtime_ns == stamp  # same weights: reused
    with torch.no_grad():
        next(pipe.unet.parameters()).add_(0.5)
    again, _ = synthetic_sets(run, pipe, split, n_train_maps=1, **settings)
    assert not np.array_equal(again["test"].images[0], first["test"].images[0])
    assert sorted(p.name for p in (folder / "train").iterdir()) == ["case0_syn0.nii.gz"]  # case1's old volume removed
    assert json.loads((folder / "pipeline.json").read_text())["pipeline_digest"] == pipeline_digest(pipe)


def test_memorisation_flags_the_copies_and_passes_the_oracle_rerenders(phantom_data):
    """The positive control (shifted, noisy copies) is flagged, the negative control (oracle re-renders) is not;
    on a folder that is not a phantom the held-out volumes take the negative control's place, and it says so."""
    from medlsdm.data.prepare import load_manifest
    from medlsdm.evaluation.cases import real_cases
    from medlsdm.evaluation.controls import memorisation_controls

    ids = [e.case_id for e in load_manifest(phantom_data).cases]
    cases = real_cases(RunDir(phantom_data.parent), ids)
    train, held_out = cases.images[:3], cases.images[3:]
    check = memorisation_controls(phantom_data, ids[:3], train, {"held_out": held_out}, held_out)
    assert check["negative_control_kind"] == "oracle"
    assert check["positive_flagged"] == 1.0 and check["negative_flagged"] == 0.0
    assert check["synthetic"]["held_out"]["n_flagged"] == 0
    run, _ = write_run(phantom_data.parent / "not_a_phantom")
    fallback = memorisation_controls(run.data, ids[:3], train, {}, held_out)
    assert fallback["negative_control_kind"] == "held_out" and "held-out real volumes" in fallback["negative_control"]
    assert fallback["positive_flagged"] == 1.0
    # asked for on a phantom (notebook 05's negative_control): the held-out volumes, the positive control unchanged
    asked = memorisation_controls(phantom_data, ids[:3], train, {}, held_out, negative_control="held_out")
    assert asked["negative_control_kind"] == "held_out"
    assert asked["negative"]["nn_distance"] == pytest.approx(fallback["negative"]["nn_distance"])
    assert asked["positive"]["nn_distance"] == pytest.approx(check["positive"]["nn_distance"])
    with pytest.raises(ConfigError, match="negative_control='held-out'"):
        memorisation_controls(phantom_data, ids[:3], train, {}, held_out, negative_control="held-out")


def test_segmentation_experiment_reads_what_each_judge_fit_chose(one_thread):
    """The judge's summary comes from the fits train_judge returns (nothing hung on the networks)."""
    from medlsdm.evaluation.run import segmentation_experiment

    pairs = [make_case(i) for i in range(4)]
    cases = Cases([f"c{i}" for i in range(4)], [im[None] for im, _ in pairs], [lb for _, lb in pairs], [AFFINE] * 4)
    options = {"max_steps": 2, "eval_every": 1, "features": [4, 8, 8], "crop_shape": [16, 16, 16]}
    seg = segmentation_experiment(
        cases.head(2), cases, cases, cases, ["bg", "organ", "lesion"], seeds=[0, 1], options=options, progress=False
    )
    judge = seg.summary()
    assert judge["network"].startswith("medlsdm SegNet") and judge["max_steps"] == 2 and len(judge["seconds"]) == 2
    assert judge["best_steps"] == [f.best_step for f in seg.fits] and judge["stopped_steps"] == [2, 2]
    assert seg.models == [f.model for f in seg.fits] and not hasattr(seg.models[0], "best_step")
    assert set(seg.dice) == {"real_test", "synthetic"} and len(seg.dice["real_test"]["organ_per_seed"]) == 2
