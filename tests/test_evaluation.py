"""The evaluation steps (notebook 05, ``medlsdm evaluate``) on real NIfTI files."""
import json
import math

import numpy as np
import pytest

from medlsdm.data.io import write_nifti
from medlsdm.errors import ConfigError, DataError
from medlsdm.evaluation.augmentation import EXTRA_SETS, augmentation_experiment
from medlsdm.evaluation.run import Cases, image_quality, pipeline_digest, read_cases, synthetic_folder, synthetic_sets
from medlsdm.evaluation.segmentation import average_over_seeds, case_scores, lesion_classes
from medlsdm.evaluation.summary import augmentation_verdict, lesion_augmentation_sentence, results_tables, with_ci
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
    (run.data / "manifest.json").write_text(json.dumps({"data_root": str(run.data), "cases": []}))  # not a phantom
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


def test_synthetic_sets_are_made_once_per_setting_in_their_own_folder(tmp_path, tiny_pipeline, one_thread):
    run, split = _write_run(tmp_path)
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

    run, split = _write_run(tmp_path)
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


def _metrics():
    """A ``05_evaluation`` entry as :func:`medlsdm.evaluation.summary.evaluation_metrics` writes it (the keys the tables read)."""
    per_class = {"liver": 0.9, "lesion": float("nan")}
    per_case = {"ssim": [0.4, 0.6], "dice_real_test": [0.8, 1.0], "dice_lesion_real_test": [float("nan"), 0.2]}
    return {"dataset": "torso-ct", "decoder": "spade", "channels": "16-32-64", "fid": None, "fid_3d": None,
            "lpips": {"axial": 0.2, "coronal": 0.4, "sagittal": 0.3}, "ssim": 0.5, "rmse": 0.1, "psnr": 22.0,
            "dice_per_class": {"real_test": per_class, "synthetic": per_class}, "dice_real_test": 0.9,
            "dice_real_test_sd_seeds": 0.01, "dice_synthetic": 0.9, "dice_synthetic_sd_seeds": 0.02,
            "dice_lesion_real_test": 0.2, "dice_lesion_synthetic": float("nan"), "dice_ratio": 1.0, "n_test": 2,
            "judge_seeds": 3, "per_case": per_case, "ci": with_ci(per_case),
            "privacy_controls": {"positive_flagged": 1.0, "negative_flagged": 0.0, "negative_control_kind": "oracle",
                                 "synthetic_flagged": {"from_train_maps": 0.0}},
            "kid": 0.1, "kid_ci": [0.05, 0.2], "kid_reference": 0.01, "kid_reference_ci": [0.0, 0.02], "kid_oracle": 0.0,
            "frd": None, "frd_reference": None, "frd_oracle": None, "augmentation": None,
            "paper_conventions_table": {"psnr": {"ours": 22.0, "paper": 15.98, "convention": "6 dB lower"}}}


def test_results_tables_use_the_papers_columns_and_show_cis_controls_and_references():
    tables = results_tables(_metrics())
    head, _, row = tables["quality"].splitlines()
    assert head.startswith("| dataset | decoder | #channels | FID") and "PSNR" in head
    assert row == "| torso-ct | spade | 16-32-64 | skipped | skipped | 0.3 | 0.5 | 0.1 | 22 |"
    assert "| lesion | n/a | n/a |" in tables["dice"] and "| **organ mean** | 0.9 | 0.9 |" in tables["dice"]
    assert "| dice real test | 0.9 | ± 0.01 | [0.8, 1] |" in tables["summary"]
    assert "| dice lesion real test | 0.2 |  | – |" in tables["summary"]  # one finite value: no CI
    assert "| positive control (copies) | 100% |" in tables["controls"]
    assert "| KID (segmentation features) | 0.1 [0.05, 0.2] | 0.01 [0, 0.02] | 0 |" in tables["distances"]
    assert "| psnr | 22 | 15.98 | 6 dB lower |" in tables["conventions"] and "augmentation" not in tables


def test_case_scores_keep_the_lesion_apart_and_seeds_average_per_case():
    names = ["background", "liver", "kidney", "lesion"]
    assert lesion_classes(names) == ["lesion"] and lesion_classes(["bg", "Tumour core", "liver"]) == ["Tumour core"]
    dice = {"per_case": [{"liver": 0.8, "kidney": 0.6, "lesion": 0.0}, {"liver": 1.0, "kidney": float("nan"), "lesion": float("nan")}]}
    scores = case_scores(dice, names)
    assert scores["organ"] == pytest.approx([0.7, 1.0]) and scores["lesion"][0] == 0.0 and math.isnan(scores["lesion"][1])
    avg = average_over_seeds([[0.2, float("nan")], [0.4, float("nan")]])
    assert avg[0] == pytest.approx(0.3) and math.isnan(avg[1])


def test_augmentation_arms_gains_fraction_of_oracle_and_bar(monkeypatch):
    """Arms with known per-case Dice: real-small 0.5, + oracle 0.7, + oracle through the autoencoder
    0.6, + synthetic 0.65 ± 0.01 → 0.155 / 0.2 = 77.5 % of the oracle arm's gain. Lesion Dice:
    real-small 0, + lesion edits 0.2 / 0.3, real-all 0.1 on the three test cases with a lesion."""
    import medlsdm.evaluation.run as ev

    image, label = _case(0)
    no_lesion = np.where(label == 2, 1, label)
    cases = Cases([f"c{i}" for i in range(6)], [image[None]] * 6, [label] * 6, [AFFINE] * 6)
    extras = {name: Cases([f"{name}_0"], [image[None]], [label], [AFFINE]) for name in EXTRA_SETS}
    test = Cases([f"t{i}" for i in range(4)], [image[None]] * 4, [label] * 3 + [no_lesion], [AFFINE] * 4)
    seen = []
    organ = {"small": [0.5] * 4, "oracle": [0.7] * 4, "oracle_autoencoded": [0.6] * 4,
             "synthetic": [0.65 + 0.01 * (i % 2) for i in range(4)], "lesion_edits": [0.5] * 4}
    lesion = {"small": [0.0] * 3, "lesion_edits": [0.2, 0.3, 0.2]}

    def fake_train(cases, val, k, extra=None, **kw):
        seen.append((cases.ids, None if extra is None else extra.ids))
        return [extra.ids[0][:-2] if extra is not None else "small"] * len(kw["seeds"])

    def fake_dice(models, cases, names):
        values, les = organ[models[0]], lesion.get(models[0], [0.0] * 3) + [float("nan")]
        return {"organ": values, "lesion": les, "organ_per_seed": [np.mean(values)] * len(models),
                "organ_by_seed": [values] * len(models), "lesion_by_seed": [les] * len(models),
                "lesions_found": [int(np.nansum(les) > 0)] * len(models), "lesions_total": [3] * len(models)}

    monkeypatch.setattr(ev, "train_judges", fake_train)
    monkeypatch.setattr(ev, "dice_over_seeds", fake_dice)
    real_all = {"organ": [0.8] * 4, "lesion": [0.1] * 3 + [float("nan")], "organ_per_seed": [0.79, 0.8, 0.81],
                "organ_by_seed": [[0.8] * 4] * 3, "lesion_by_seed": [[0.05] * 3 + [0.0], [0.1] * 4, [0.15] * 3 + [0.0]],
                "lesions_found": [2, 3, 3], "lesions_total": [3, 3, 3]}
    names = ["bg", "a", "lesion"]
    aug = augmentation_experiment(cases, cases, test, extras, names, real_all, n_small=2, seeds=[0, 1, 2])
    # the small arm is the first n_small training cases, in every arm, each extra set added on its own
    assert seen == [(["c0", "c1"], None)] + [(["c0", "c1"], [f"{n}_0"]) for n in EXTRA_SETS]
    assert list(aug["arms"]) == ["real_small", "real_small_oracle", "real_small_oracle_autoencoded",
                                 "real_small_synthetic", "real_small_lesion_edits", "real_all"]
    assert aug["oracle_gain"] == pytest.approx(0.2) and aug["gain"] == pytest.approx(0.155)
    assert aug["arms"]["real_small_oracle_autoencoded"]["gain"] == pytest.approx(0.1)
    assert aug["arms"]["real_all"]["gain"] == pytest.approx(0.3) and aug["mix"] == 0.5
    assert aug["fraction_of_oracle_gain"] == pytest.approx(0.775) and aug["gain_ci"][0] > 0 and aug["bar_holds"]
    said = augmentation_verdict(aug)
    assert "can see a benefit" in said and "holds" in said and "not" not in said
    # the lesion gain counts only the test cases with a lesion (the fourth has none)
    la = aug["lesion_augmentation"]
    assert la["n_lesion_cases"] == 3 and la["gain"] == pytest.approx(0.7 / 3) and la["gain_ci"][0] > 0
    assert la["control_gain"] == pytest.approx(0.3 / 3) and la["control_gain_ci"][0] > 0
    assert la["lesions_found"] == {"real_small": [0] * 3, "real_small_lesion_edits": [1] * 3, "real_all": [2, 3, 3]}
    organ["oracle"] = [0.9] * 4  # now only 0.155 / 0.4 of the oracle's gain: below the bar, and the notebook says so
    aug = augmentation_experiment(cases, cases, test, extras, names, real_all, n_small=2, seeds=[0, 1, 2])
    assert not aug["bar_holds"] and "does **not** hold" in augmentation_verdict(aug)
    organ["oracle"] = [0.5, 0.52, 0.48, 0.5]  # the oracle arm gains nothing: the experiment cannot see a benefit
    aug = augmentation_experiment(cases, cases, test, extras, names, real_all, n_small=2, seeds=[0, 1, 2])
    assert math.isnan(aug["fraction_of_oracle_gain"]) or aug["fraction_of_oracle_gain"] > 1
    assert "cannot judge the generator" in augmentation_verdict(aug)


def _lesion_augmentation(gain_ci, control_ci, found=(1, 1)):
    return {"gain": sum(gain_ci) / 2, "gain_ci": gain_ci, "n_lesion_cases": 9, "n_edits": 4,
            "control_gain": sum(control_ci) / 2, "control_gain_ci": control_ci, "lesions_total": 19,
            "lesions_found": {"real_small": [0, 0], "real_small_lesion_edits": list(found), "real_all": list(found)}}


def test_the_lesion_augmentation_sentence_follows_its_numbers():
    said = lesion_augmentation_sentence(_lesion_augmentation([0.02, 0.1], [0.05, 0.2]))
    assert "can see a lesion gain; the edits give one too" in said and "bar (a lesion gain with its CI above 0) holds" in said
    said = lesion_augmentation_sentence(_lesion_augmentation([-0.02, 0.1], [0.05, 0.2]))
    assert "do not give one distinguishable from zero" in said and "does **not** hold" in said
    said = lesion_augmentation_sentence(_lesion_augmentation([-0.2, -0.1], [0.05, 0.2]))
    assert "the edits give none" in said
    said = lesion_augmentation_sentence(_lesion_augmentation([-0.02, 0.1], [-0.05, 0.2]))
    assert "cannot judge the edits either way" in said
    said = lesion_augmentation_sentence(_lesion_augmentation([0.0, 0.0], [0.0, 0.0], found=(0, 0)))
    assert "No judge in any of these arms found a lesion" in said and "does **not** hold" in said
    assert "did not run" in lesion_augmentation_sentence(None)
    assert "cannot be scored" in lesion_augmentation_sentence({**_lesion_augmentation([0, 0], [0, 0]), "n_lesion_cases": 0})


def test_lesion_edits_insert_a_lesion_in_the_organ_and_keep_the_rest(tiny_pipeline, one_thread):
    from medlsdm.evaluation.augmentation import lesion_edits
    from medlsdm.evaluation.edits import outside_max_abs

    image, label = _case(0, shape=(8, 16, 16))
    label = np.where(label == 2, 1, label)
    label[:, 4:12, 4:12] = 1  # a wide organ, class 1
    plain = np.zeros_like(label)  # no voxel of the organ: left out
    names = ["background", "liver", "lesion"]
    cases = Cases(["a", "b"], [image[None], image[None]], [label, plain], [AFFINE] * 2)
    out = lesion_edits(tiny_pipeline, cases, names, (6.0, 5.5, 5.5), radius_mm=(8.0, 8.0), steps=2, seed=0)
    assert out.ids == ["a+lesion"] and out.affines[0] is AFFINE and out.images[0].shape == image[None].shape
    new = out.labels[0] == 2
    assert new.any() and (label[new] == 1).all() and (out.labels[0][~new] == label[~new]).all()
    # the real volume kept beyond the edit's soft border (one latent voxel) around the new lesion
    assert outside_max_abs(out.images[0], image[None], new, tiny_pipeline.vqgan.downsample_factor) == 0.0
    assert not np.array_equal(out.images[0][0][new], image[new])
    with pytest.raises(DataError, match="no class \\['lesion'\\]"):
        lesion_edits(tiny_pipeline, cases, ["background", "liver", "kidney"], (6.0, 5.5, 5.5))
    with pytest.raises(DataError, match="no case has a voxel of 'liver'"):
        lesion_edits(tiny_pipeline, Cases(["b"], [image[None]], [plain], [AFFINE]), names, (6.0, 5.5, 5.5))


def test_segnet_early_stopping_keeps_the_best_validation_weights(one_thread):
    from medlsdm.training.segnet import train_segnet

    images = [_case(i)[0][None] for i in range(3)]
    labels = [_case(i)[1] for i in range(3)]
    model = train_segnet(images[:2], labels[:2], num_classes=3, steps=6, eval_every=2, val_images=images[2:],
                         val_labels=labels[2:], channels=(4, 8), norm_num_groups=4, progress=False)
    steps, scores = zip(*model.val_history)
    assert steps == (2, 4, 6) and model.best_step == steps[int(np.argmax(scores))]
    with pytest.raises(ConfigError, match="val_images and val_labels"):
        train_segnet(images, labels, num_classes=3, steps=1, val_images=images, progress=False)


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory):
    """A tiny torso phantom run's data folder: 4 cases, prepared like notebook 01 (small grid)."""
    from medlsdm.data.phantom import make_phantom
    from medlsdm.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("phantom")
    make_phantom("torso-ct", root / "raw", 4, seed=0, shape=(48, 48, 20))
    prepare_dataset("torso-ct", root / "raw", root / "data", spacing=(12.0, 11.0, 11.0), block_shape=(16, 32, 32))
    return root / "data"


def test_memorisation_flags_the_copies_and_passes_the_oracle_rerenders(phantom_data):
    """The positive control (shifted, noisy copies) is flagged, the negative control (oracle re-renders) is not;
    on a folder that is not a phantom the held-out volumes take the negative control's place, and it says so."""
    from medlsdm.data.prepare import load_manifest
    from medlsdm.evaluation.controls import memorisation_controls
    from medlsdm.evaluation.run import real_cases

    ids = [e["case_id"] for e in load_manifest(phantom_data)["cases"]]
    cases = real_cases(RunDir(phantom_data.parent), ids)
    train, held_out = cases.images[:3], cases.images[3:]
    check = memorisation_controls(phantom_data, ids[:3], train, {"held_out": held_out}, held_out)
    assert check["negative_control_kind"] == "oracle"
    assert check["positive_flagged"] == 1.0 and check["negative_flagged"] == 0.0
    assert check["synthetic"]["held_out"]["n_flagged"] == 0
    run, _ = _write_run(phantom_data.parent / "not_a_phantom")
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


def test_with_ci_leaves_out_nan_and_needs_two_values():
    ci = with_ci({"a": [1.0, 2.0, float("nan"), 3.0], "b": [1.0, float("nan")]})
    assert ci["b"] is None and ci["a"][0] >= 1.0 and ci["a"][1] <= 3.0


def test_the_distance_sentence_follows_the_numbers():
    from medlsdm.evaluation.summary import distance_sentence

    m = {"frd": 292.4, "frd_reference": 52.2, "frd_oracle": 29.0, "kid": -0.42, "kid_ci": [-1.63, 1.10], "kid_reference": 0.48}
    said = distance_sentence(m)
    assert "5.6× as far" in said and "the gap is the generator's" in said
    assert "does not separate" in said and "look at different things" in said
    m.update(frd=60.0, kid=3.1, kid_ci=[2.0, 4.2])  # now near the real-vs-real FRD, and KID separates
    said = distance_sentence(m)
    assert "1.1× as far" in said and "separates them" in said and "does not separate" not in said
    assert "different things" not in said
    m.update(frd_oracle=80.0)  # an oracle outside the real-vs-real distance: no claim about whose gap it is
    assert "generator's" not in distance_sentence(m)


def test_judge_sentence_follows_its_numbers():
    from medlsdm.evaluation.summary import judge_sentence

    judge = {"network": "MONAI BasicUNet + DiceCELoss", "dice_real_test": 0.81, "lesion_dice_real_test": 0.2,
             "lesion_detection_rate": 0.5, "lesions_per_seed": 18, "best_steps": [300, 300], "stopped_steps": [300, 300],
             "max_steps": 300}
    dice = {"real_test": {"organ": [0.8, 0.82]}, "synthetic": {"organ": [0.6, 0.62]}, "oracle": {"organ": [0.8, 0.8]}}
    said = judge_sentence(judge, dice)
    assert "organ Dice of 0.810" in said and "0.5 of the 18 test lesions" in said
    assert "still improving" in said and "synthetic volumes of the same label maps 0.753" in said
    assert "oracle re-renders (perfect synthesis) 0.988" in said
    judge["best_steps"], judge["stopped_steps"] = [200, 300], [300, 300]
    said = judge_sentence(judge, dice)
    assert "Early stopping chose a step before the last in 1 of 2 seeds" in said and "still improving" not in said


def test_augmentation_table_lists_every_arm_with_its_gain():
    m = _metrics()
    arm = {"mean": 0.7, "lesion": float("nan"), "sd_seeds": 0.01, "per_case": [0.7, 0.7], "lesions_found": [0, 1]}
    m["augmentation"] = {"arms": {"real_small": arm, "real_small_oracle": {
        **arm, "gain": 0.1, "gain_ci": [0.05, 0.15], "lesion_gain": 0.02, "lesion_gain_ci": [-0.01, 0.05]}}}
    table = results_tables(m)["augmentation"]
    assert "| real small | 0.7 | 0.01 | – (baseline) |  | n/a | – (baseline) | 0, 1 |" in table
    assert "| real small oracle | 0.7 | 0.01 | 0.1 | [0.05, 0.15] | n/a | 0.02 [-0.01, 0.05] | 0, 1 |" in table
