"""Notebook 05's augmentation arms (medlsdm.evaluation.augmentation): gains, the fraction of the oracle's gain,
the bar; lesion edits of real cases."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from evaluation_utils import AFFINE, make_case

from medlsdm.errors import DataError
from medlsdm.evaluation.augmentation import EXTRA_SETS, augmentation_experiment, lesion_arm_skipped
from medlsdm.evaluation.cases import Cases
from medlsdm.evaluation.sentences import augmentation_verdict, lesion_augmentation_sentence


def test_augmentation_arms_gains_fraction_of_oracle_and_bar(monkeypatch):
    """Arms with known per-case Dice: real-small 0.5, + oracle 0.7, + oracle through the autoencoder
    0.6, + synthetic 0.65 ± 0.01 → 0.155 / 0.2 = 77.5 % of the oracle arm's gain. Lesion Dice:
    real-small 0, + lesion edits 0.2 / 0.3, real-all 0.1 on the three test cases with a lesion."""
    import medlsdm.evaluation.augmentation as arms

    image, label = make_case(0)
    no_lesion = np.where(label == 2, 1, label)
    cases = Cases([f"c{i}" for i in range(6)], [image[None]] * 6, [label] * 6, [AFFINE] * 6)
    extras = {name: Cases([f"{name}_0"], [image[None]], [label], [AFFINE]) for name in EXTRA_SETS}
    test = Cases([f"t{i}" for i in range(4)], [image[None]] * 4, [label] * 3 + [no_lesion], [AFFINE] * 4)
    seen = []
    organ = {
        "small": [0.5] * 4,
        "oracle": [0.7] * 4,
        "oracle_autoencoded": [0.6] * 4,
        "synthetic": [0.65 + 0.01 * (i % 2) for i in range(4)],
        "lesion_edits": [0.5] * 4,
    }
    lesion = {"small": [0.0] * 3, "lesion_edits": [0.2, 0.3, 0.2]}

    def fake_train(cases, val, k, extra=None, **kw):  # a judge's fit, its model named by its arm
        seen.append((cases.ids, None if extra is None else extra.ids))
        return [SimpleNamespace(model=extra.ids[0][:-2] if extra is not None else "small")] * len(kw["seeds"])

    def fake_dice(models, cases, names):
        values, les = organ[models[0]], lesion.get(models[0], [0.0] * 3) + [float("nan")]
        return {
            "organ": values,
            "lesion": les,
            "organ_per_seed": [np.mean(values)] * len(models),
            "organ_by_seed": [values] * len(models),
            "lesion_by_seed": [les] * len(models),
            "lesions_found": [int(np.nansum(les) > 0)] * len(models),
            "lesions_total": [3] * len(models),
        }

    monkeypatch.setattr(arms, "train_judges", fake_train)
    monkeypatch.setattr(arms, "dice_over_seeds", fake_dice)
    real_all = {
        "organ": [0.8] * 4,
        "lesion": [0.1] * 3 + [float("nan")],
        "organ_per_seed": [0.79, 0.8, 0.81],
        "organ_by_seed": [[0.8] * 4] * 3,
        "lesion_by_seed": [[0.05] * 3 + [0.0], [0.1] * 4, [0.15] * 3 + [0.0]],
        "lesions_found": [2, 3, 3],
        "lesions_total": [3, 3, 3],
    }
    names = ["bg", "a", "lesion"]
    aug = augmentation_experiment(cases, cases, test, extras, names, real_all, n_small=2, seeds=[0, 1, 2])
    # the small arm is the first n_small training cases, in every arm, each extra set added on its own
    assert seen == [(["c0", "c1"], None)] + [(["c0", "c1"], [f"{n}_0"]) for n in EXTRA_SETS]
    assert list(aug["arms"]) == [
        "real_small",
        "real_small_oracle",
        "real_small_oracle_autoencoded",
        "real_small_synthetic",
        "real_small_lesion_edits",
        "real_all",
    ]
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
    without = {k: v for k, v in extras.items() if k != "lesion_edits"}
    aug = augmentation_experiment(
        cases, cases, test, without, names, real_all, n_small=2, seeds=[0], lesion_skipped="why"
    )
    assert "real_small_lesion_edits" not in aug["arms"] and aug["lesion_augmentation"] == {
        "skipped": "why",
        "lesions_total": 3,
        "lesions_found": {"real_all": [2, 3, 3]},
    }
    organ["oracle"] = [0.9] * 4  # now only 0.155 / 0.4 of the oracle's gain: below the bar, and the notebook says so
    aug = augmentation_experiment(cases, cases, test, extras, names, real_all, n_small=2, seeds=[0, 1, 2])
    assert not aug["bar_holds"] and "does **not** hold" in augmentation_verdict(aug)
    organ["oracle"] = [0.5, 0.52, 0.48, 0.5]  # the oracle arm gains nothing: the experiment cannot see a benefit
    aug = augmentation_experiment(cases, cases, test, extras, names, real_all, n_small=2, seeds=[0, 1, 2])
    assert math.isnan(aug["fraction_of_oracle_gain"]) or aug["fraction_of_oracle_gain"] > 1
    assert "cannot judge the generator" in augmentation_verdict(aug)
    # a synthetic gain above 0 beside an oracle gain the experiment cannot see: its share is a ratio to
    # noise (here above 1), and the bar does not hold
    organ["oracle"] = [0.60, 0.62, 0.40, 0.42]
    aug = augmentation_experiment(cases, cases, test, extras, names, real_all, n_small=2, seeds=[0, 1, 2])
    assert aug["oracle_gain"] > 0 and aug["oracle_gain_ci"][0] <= 0 and aug["gain_ci"][0] > 0
    assert aug["fraction_of_oracle_gain"] >= 0.5 and not aug["bar_holds"]
    assert "does **not** hold" in augmentation_verdict(aug)


def test_the_lesion_arm_runs_when_asked_or_when_its_control_finds_a_lesion():
    names = ["background", "liver", "lesion"]
    found, none = (
        {"lesions_found": [0, 2], "lesions_total": [19, 19]},
        {"lesions_found": [0, 0], "lesions_total": [19, 19]},
    )
    assert lesion_arm_skipped(None, found, names) is None and lesion_arm_skipped(True, none, names) is None
    assert "found 0 of 19 test lesions in each of its 2 seeds" in lesion_arm_skipped(None, none, names)
    assert lesion_arm_skipped(False, found, names) == "lesion_augmentation=False"
    assert lesion_arm_skipped(True, found, ["background", "liver"]) == "the data has no lesion class"
    said = lesion_augmentation_sentence({"skipped": lesion_arm_skipped(None, none, names)})
    assert said.startswith("The lesion augmentation arm did not run: the judge trained on all real cases")
    assert "not met" in said


def test_lesion_edits_insert_a_lesion_in_the_organ_and_keep_the_rest(tiny_pipeline, one_thread):
    from medlsdm.evaluation.augmentation import lesion_edits
    from medlsdm.evaluation.edits import outside_max_abs

    image, label = make_case(0, shape=(8, 16, 16))
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


def test_the_benchmark_sentence_sets_this_run_beside_the_pooled_one_of_its_decoder(tmp_path):
    from medlsdm.evaluation.augmentation import BENCHMARKS, benchmark_sentence

    def arm(gain, lo, hi, **kw):
        return {"gain": gain, "gain_ci": [lo, hi], **kw}

    def generator(decoder, steps=1000):
        return {"decoder": decoder, "vqgan_steps": steps, "disc_start": steps // 3, "diffusion_steps": steps}

    aug = {
        "arms": {
            "real_small": {},
            "real_small_oracle": arm(-0.03, -0.07, 0.01),
            "real_small_synthetic": arm(-0.07, -0.14, -0.01),
        }
    }
    bench = {
        "written": "2026-12-07T07:00:00",
        "judge": {"network": "basicunet"},
        "generator": generator("normal"),
        "arms": {
            "real_small": {"generators": None, "judge_seeds": 2},
            "real_small_oracle": arm(0.05, 0.03, 0.07, generators=None, judge_seeds=2),
            "real_small_synthetic": arm(-0.02, -0.05, 0.02, generators=3, judge_seeds=2),
        },
    }
    path = tmp_path / "augmentation.json"
    path.write_text(json.dumps(bench))
    paths = {"normal": path, "spade": tmp_path / "augmentation_spade.json"}
    said = benchmark_sentence(aug, generator("normal"), paths)
    assert (
        "(one generator: normal decoder, 1000 VQ-GAN steps (PatchGANs from 333), 1000 diffusion steps)" in said
        and "(3 generators with the same settings × 2 judge seeds" in said
        and "real small oracle -0.030 [-0.070, +0.010] here, +0.050 [+0.030, +0.070] there" in said
    )
    verdicts = said.split("Their verdicts differ for ")[1]
    assert verdicts.startswith(
        "real small oracle (no clear effect here, helps there); "
        "real small synthetic (hurts here, no clear effect there):"
    )
    # a benchmark of generators trained otherwise says how; one that did not record it says so
    said = benchmark_sentence(aug, generator("normal", 600), paths)
    assert "(3 generators with other settings: normal decoder, 1000 VQ-GAN steps (PatchGANs from 333)" in said
    # ... and on other data: a benchmark measured on an older phantom says which
    path.write_text(json.dumps({**bench, "generator": {**generator("normal"), "phantom": 4}}))
    said = benchmark_sentence(aug, {**generator("normal"), "phantom": 5}, paths)
    assert "(one generator: normal decoder, 1000 VQ-GAN steps (PatchGANs from 333), 1000 diffusion steps, " in said
    assert "phantom version 5)" in said and "other settings: normal decoder" in said and "phantom version 4;" in said
    path.write_text(json.dumps({**bench, "generator": None}))
    assert "generators with the same decoder, other settings not recorded; × 2 judge seeds" in benchmark_sentence(
        aug, generator("normal"), paths
    )
    bench["arms"]["real_small_oracle"] = arm(-0.01, -0.03, 0.02, generators=None, judge_seeds=2)
    bench["arms"]["real_small_synthetic"] = arm(-0.04, -0.06, -0.01, generators=3, judge_seeds=2)
    path.write_text(json.dumps(bench))
    said = benchmark_sentence(aug, generator("normal"), paths)
    assert "Every arm gets the same verdict (helps, hurts, or no clear effect) in both." in said
    assert "With the spade decoder" not in said  # no benchmark of the other decoder: nothing said of it
    # the other decoder's generator arms follow, from its own file (the generator-free arms are the same in both)
    spade = {
        **bench,
        "generator": generator("spade", 1500),
        "arms": {
            **bench["arms"],
            "real_small_synthetic": arm(0.04, 0.02, 0.06, generators=3, judge_seeds=2),
            "real_small_borrowed_codes": arm(0.05, 0.03, 0.07, generators=3, judge_seeds=2),
        },
    }
    paths["spade"].write_text(json.dumps(spade))
    said = benchmark_sentence(aug, generator("normal"), paths)
    assert said.endswith(
        "With the spade decoder (`benchmarks/results/augmentation_spade.md`, 3 generators: spade decoder, 1500 "
        "VQ-GAN steps (PatchGANs from 500), 1500 diffusion steps): real small synthetic +0.040 [+0.020, +0.060]; "
        "real small borrowed codes (new anatomies decoded from a real case's codes: no diffusion model) "
        "+0.050 [+0.030, +0.070]."
    )
    assert (
        "spade decoder, 1000 VQ-GAN steps (PatchGANs from 333), 1000 diffusion steps) beside `benchmarks/"
        "results/augmentation_spade.md`" in benchmark_sentence(aug, generator("spade"), paths)
    )
    assert "augmentation_spade.json missing" in benchmark_sentence(
        aug, generator("spade"), {**paths, "spade": tmp_path / "x" / "augmentation_spade.json"}
    )
    assert "missing" in benchmark_sentence(None, generator("normal"), paths)
    # the benchmark's share of the oracle's gain and its lesion gains, where it has them; judge seeds per arm
    bench["fraction_of_oracle_gain"] = 0.8
    bench["arms"]["real_small_oracle"] = arm(0.05, 0.03, 0.07, generators=None, judge_seeds=6)
    bench["arms"]["real_small_lesion_edits"] = arm(0.0, -0.02, 0.01, lesion_gain=0.034, lesion_gain_ci=[-0.079, 0.149])
    bench["arms"]["real_small_synthetic"]["lesion_gain"], bench["arms"]["real_small_synthetic"]["lesion_gain_ci"] = (
        0.162,
        [0.048, 0.283],
    )
    path.write_text(json.dumps(bench))
    said = benchmark_sentence(aug, generator("normal"), paths)
    assert "× 2-6 judge seeds" in said and "There the synthetic arm recovers 0.80 of the oracle arm's gain." in said
    assert (
        "Its lesion Dice gains (on the test cases with a lesion): real small synthetic +0.162 [+0.048, +0.283]; "
        "real small lesion edits (a lesion inserted by pipe.edit) +0.034 [-0.079, +0.149]." in said
    )
    assert {d: (p.name, p.parent.name) for d, p in BENCHMARKS.items()} == {
        "normal": ("augmentation.json", "results"),
        "spade": ("lesion_augmentation.json", "results"),
    }


def test_generator_settings_are_read_from_the_run(tmp_path):
    """The decoder from the pipeline, the steps from each trainer's train_params.json; None where a
    run lacks one (a run unpacked from a pack without them)."""
    from medlsdm.evaluation.augmentation import generator_settings
    from medlsdm.rundir import RunDir

    run = RunDir(tmp_path / "run")
    pipe = SimpleNamespace(vqgan=SimpleNamespace(config=SimpleNamespace(decoder_type="spade")))
    run.vqgan.mkdir(parents=True)
    (run.vqgan / "train_params.json").write_text(json.dumps({"steps": 1000, "disc_start": 333, "lr": 1e-3}))
    assert generator_settings(run, pipe) == {
        "decoder": "spade",
        "vqgan_steps": 1000,
        "disc_start": 333,
        "diffusion_steps": None,
        "phantom": None,  # no manifest: no data to name
    }
    run.diffusion.mkdir(parents=True)
    (run.diffusion / "train_params.json").write_text(json.dumps({"steps": 1500}))
    assert generator_settings(run, pipe)["diffusion_steps"] == 1500
    # the data: the phantom generator's version, from phantom.json in the manifest's data root
    raw = tmp_path / "raw"
    raw.mkdir()
    run.data.mkdir(parents=True)
    run.manifest_path.write_text(json.dumps({"data_root": str(raw)}))
    assert generator_settings(run, pipe)["phantom"] is None  # real data: no phantom.json
    (raw / "phantom.json").write_text(json.dumps({"version": 5, "complete": True}))
    assert generator_settings(run, pipe)["phantom"] == 5
    run.manifest_path.write_text(json.dumps({"data_root": "../../raw"}))  # a pack's: relative to data/
    assert generator_settings(run, pipe)["phantom"] == 5


def test_oracle_lesion_edits_add_the_phantoms_own_lesion_to_the_same_cases(phantom_data, one_thread):
    """The perfect lesion edit: each case with a liver, its label map plus one lesion (radius as
    lesion_edits draws it), the volume unchanged away from it; a changed stored label map is refused."""
    from scipy import ndimage

    from medlsdm.data.classes import TORSO_CT
    from medlsdm.data.prepare import load_manifest
    from medlsdm.evaluation.augmentation import oracle_lesion_edits
    from medlsdm.evaluation.cases import real_cases
    from medlsdm.evaluation.edits import lesion_site
    from medlsdm.rundir import RunDir

    run = RunDir(phantom_data.parent)
    cases = real_cases(run, [e.case_id for e in load_manifest(phantom_data).cases])
    names = list(TORSO_CT.names)
    lesion, liver = names.index("lesion"), names.index("liver")
    out = oracle_lesion_edits(run, cases, names, seed=0)
    keep = [i for i, lab in enumerate(cases.labels) if (lab == liver).any()]
    assert out.ids == [f"{cases.ids[i]}+lesion" for i in keep] and len(keep) >= 2
    for k, i in enumerate(keep):
        real, edited = cases.labels[i], out.labels[k]
        new = (edited == lesion) & (real != lesion)
        assert new.any() and (real[new] == liver).all() and (edited[~new] == real[~new]).all()
        assert new[lesion_site(real, liver, load_manifest(phantom_data).spacing)]  # where lesion_edits puts it
        far = ~ndimage.binary_dilation(new, iterations=3)
        # its own render: at most the phantom's whole-HU rounding (1 HU = 1e-3 in the [-1000, 1000] HU window),
        # which the blur's far tail can flip
        np.testing.assert_allclose(out.images[k][0][far], cases.images[i][0][far], atol=1.5e-3)
        assert out.images[k][0][new].mean() < cases.images[i][0][new].mean()  # hypodense where the liver was
    i = keep[0]
    label = cases.labels[i].copy()
    label[0, 0, 0] = liver  # a stored map that is no longer what the phantom draws
    with pytest.raises(DataError, match="differs from the stored one"):
        oracle_lesion_edits(run, Cases([cases.ids[i]], [cases.images[i]], [label], [cases.affines[i]]), names)
