"""medlsdm.evaluation.sentences: each sentence says what its numbers say, and changes when they change."""

import pytest

from medlsdm.evaluation.sentences import (
    lesion_augmentation_sentence,
    lesion_sentence,
    memorisation_sentence,
    paper_sentence,
    takeaways_05,
)
from medlsdm.evaluation.summary import results_tables, with_ci


def _lesion_augmentation(gain_ci, control_ci, found=(1, 1)):
    return {
        "gain": sum(gain_ci) / 2,
        "gain_ci": gain_ci,
        "n_lesion_cases": 9,
        "n_edits": 4,
        "control_gain": sum(control_ci) / 2,
        "control_gain_ci": control_ci,
        "lesions_total": 19,
        "lesions_found": {"real_small": [0, 0], "real_small_lesion_edits": list(found), "real_all": list(found)},
    }


def _judge(rate=0.0):
    return {"lesion_detection_rate": rate, "lesions_per_seed": 19, "max_steps": 200}


def _privacy(positive=1.0, negative=0.0, synthetic=0.0):
    return {
        "positive_flagged": positive,
        "negative_flagged": negative,
        "negative_control_kind": "oracle",
        "threshold": 0.033,
        "synthetic_flagged": {"from_train_maps": synthetic},
        "distances": {"positive": [0.007, 0.008], "negative": [0.06, 0.08], "from_train_maps": [0.08, 0.09]},
    }


def _metrics05():
    per_case = {"dice_real_test": [0.55, 0.6], "dice_synthetic": [0.5, 0.55]}
    return {
        "dataset": "torso-ct",
        "dice_ratio": 0.924,
        "dice_ratio_oracle": 1.016,
        "fid_3d": None,
        "paper_conventions_table": {"dice": {"ours": 0.475, "paper": 0.799, "convention": "pooled"}},
        "dice_real_test": 0.576,
        "dice_synthetic": 0.532,
        "n_test": 2,
        "per_case": per_case,
        "ci": with_ci(per_case),
        "judge": _judge(),
        "dice_lesion_real_test": 0.0,
        "dice_lesion_synthetic": 0.0,
        "augmentation": None,
        "privacy_controls": _privacy(),
        "frd": None,
        "kid": None,
    }


def _tables_conventions(m):
    full = {
        "model": None,
        "channels": "16",
        "decoder": "normal",
        "fid": None,
        "lpips": None,
        "ssim": 0.5,
        "rmse": 0.1,
        "psnr": 22.0,
        "dice_per_class": {"real_test": {"liver": 0.9}},
        "judge_seeds": 2,
        "kid_ci": None,
        "kid_reference": None,
        "kid_reference_ci": None,
        "kid_oracle": None,
        "frd_reference": None,
        "frd_oracle": None,
        **m,
    }
    return results_tables(full)["conventions"]


def test_the_lesion_augmentation_sentence_follows_its_numbers():
    said = lesion_augmentation_sentence(_lesion_augmentation([0.02, 0.1], [0.05, 0.2]))
    assert (
        "can see a lesion gain; the edits give one too" in said
        and "bar (a lesion gain with its CI above 0) holds" in said
    )
    said = lesion_augmentation_sentence(_lesion_augmentation([-0.02, 0.1], [0.05, 0.2]))
    assert "do not give one distinguishable from zero" in said and "does **not** hold" in said
    said = lesion_augmentation_sentence(_lesion_augmentation([-0.2, -0.1], [0.05, 0.2]))
    assert "the edits give none" in said
    said = lesion_augmentation_sentence(_lesion_augmentation([-0.02, 0.1], [-0.05, 0.2]))
    assert "cannot judge the edits either way" in said
    said = lesion_augmentation_sentence(_lesion_augmentation([0.0, 0.0], [0.0, 0.0], found=(0, 0)))
    assert "No judge in any of these arms found a lesion" in said and "does **not** hold" in said
    assert "did not run" in lesion_augmentation_sentence(None)
    assert "cannot be scored" in lesion_augmentation_sentence(
        {**_lesion_augmentation([0, 0], [0, 0]), "n_lesion_cases": 0}
    )


def test_the_distance_sentence_follows_the_numbers():
    from medlsdm.evaluation.sentences import distance_sentence

    m = {
        "frd": 292.4,
        "frd_reference": 52.2,
        "frd_oracle": 29.0,
        "kid": -0.42,
        "kid_ci": [-1.63, 1.10],
        "kid_reference": 0.48,
    }
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
    from medlsdm.evaluation.sentences import judge_sentence

    judge = {
        "network": "MONAI BasicUNet + DiceCELoss",
        "dice_real_test": 0.81,
        "lesion_dice_real_test": 0.2,
        "lesion_detection_rate": 0.5,
        "lesions_per_seed": 18,
        "best_steps": [300, 300],
        "stopped_steps": [300, 300],
        "max_steps": 300,
    }
    dice = {"real_test": {"organ": [0.8, 0.82]}, "synthetic": {"organ": [0.6, 0.62]}, "oracle": {"organ": [0.8, 0.8]}}
    said = judge_sentence(judge, dice)
    assert "organ Dice of 0.810" in said and "0.5 of the 18 test lesions" in said
    assert "still improving" in said and "synthetic volumes of the same label maps 0.753" in said
    assert "oracle re-renders (perfect synthesis) 0.988" in said
    judge["best_steps"], judge["stopped_steps"] = [200, 300], [300, 300]
    said = judge_sentence(judge, dice)
    assert "Early stopping chose a step before the last in 1 of 2 seeds" in said and "still improving" not in said


def test_lesion_sentence_calls_zero_dice_a_judge_that_finds_nothing_not_noise():
    said = lesion_sentence(_judge(), {"real_test": 0.0, "synthetic": 0.0, "oracle": float("nan")})
    assert "not noise" in said and "0 of the 19 test lesions" in said and "200 steps" in said
    said = lesion_sentence(_judge(0.5), {"real_test": 0.4, "synthetic": 0.2})
    assert "not noise" not in said and "Synthetic over real: 0.50" in said


def test_memorisation_sentence_trusts_the_check_only_when_its_controls_behave():
    said = memorisation_sentence(_privacy())
    assert "it can fail" in said and "no copies found" in said and "median distance 0.085" in said
    said = memorisation_sentence(_privacy(negative=0.5))
    assert "do not behave" in said and "no copies found" not in said
    assert "no copies found" not in memorisation_sentence(_privacy(synthetic=0.25))


def test_paper_sentence_quotes_the_abstract_with_its_source_beside_our_numbers():
    said = paper_sentence(_metrics05())
    assert "arXiv:2507.00206" in said and "0.70964" in said and "0.71496" in said and "ratio 0.993" in said
    assert "Here the ratio is 0.924, and 1.016 for perfect synthesis" in said and "0.475; pooled" in said
    assert "3D-FID is skipped" in said and "0.0054 is not comparable" in said
    m = {**_metrics05(), "fid_3d": 12.5, "dice_ratio_oracle": None}
    said = paper_sentence(m)
    assert "3D-FID is 12.5" in said and "perfect synthesis" not in said


def test_takeaways_05_and_the_conventions_table_name_what_fid_is_computed_on():
    said = takeaways_05(_metrics05())
    assert said.startswith("**Takeaways**") and "synthetic over real 0.924" in said and "not noise" in said
    m = {
        **_metrics05(),
        "paper_conventions_table": {
            "fid_2d": {"ours": 30.3, "paper": 22.7, "convention": "real mean twice"},
            "dice": {"ours": 0.475, "paper": 0.799, "convention": "pooled"},
        },
    }
    table = _tables_conventions(m)
    assert "| FID convention, on the segmentation network's features (not Inception" in table
    assert "| dice | 0.475 | 0.799 | pooled | 0.70964 synthetic, 0.71496 real (Duke Breast) |" in table
    assert "| 3D-FID (MedicalNet features) | skipped | – |" in table and "| 0.0054 (Duke Breast) |" in table


def test_augmentation_verdict_counts_the_cases_and_lays_the_loss_on_the_autoencoder():
    from medlsdm.evaluation.sentences import augmentation_verdict

    def arm(gain, ci):
        return {"mean": 0.5 + gain, "gain": gain, "gain_ci": ci}

    aug = {
        "n_small": 4,
        "n_extra": {"oracle": 12},
        "gain_per_case": [-0.03] * 10 + [0.01, 0.02],
        "fraction_of_oracle_gain": float("nan"),
        "bar_holds": False,
        "bar": "half",
        "arms": {
            "real_small": {"mean": 0.525},
            "real_all": arm(0.05, [0.005, 0.095]),
            "real_small_oracle": arm(-0.006, [-0.06, 0.045]),
            "real_small_oracle_autoencoded": arm(-0.026, [-0.07, 0.02]),
            "real_small_synthetic": arm(-0.02, [-0.075, 0.032]),
        },
    }
    said = augmentation_verdict(aug)
    assert "10 of the 12 test cases score lower" in said and "lose about as much (-0.026 against -0.020)" in said
    assert "n/a" not in said and "does **not** hold" in said
    aug["arms"]["real_small_oracle"] = arm(
        0.05, [0.02, 0.08]
    )  # the experiment sees a benefit: the loss is the generator's to explain
    aug["fraction_of_oracle_gain"] = -0.4
    said = augmentation_verdict(aug)
    assert "lose about as much" not in said and "-0.4 of the oracle arm's gain" in said


@pytest.mark.parametrize("kid_oracle, claims", [(-0.86, True), (3.0, False)])
def test_distance_sentence_explains_a_kid_below_the_real_reference_only_with_the_oracle_as_evidence(kid_oracle, claims):
    from medlsdm.evaluation.sentences import distance_sentence

    m = {"frd": None, "kid": -0.38, "kid_ci": [-1.29, 0.79], "kid_reference": 2.24, "kid_oracle": kid_oracle}
    assert ("shares the test set's anatomy" in distance_sentence(m)) is claims


def test_distance_sentence_claims_nothing_from_a_kid_without_ci_or_an_frd_below_its_reference():
    from medlsdm.evaluation.sentences import distance_sentence

    m = {
        "frd": 20.0,
        "frd_reference": 50.0,
        "frd_oracle": 10.0,
        "kid": 4.0,
        "kid_ci": [float("nan"), float("nan")],
        "kid_reference": 1.0,
    }
    said = distance_sentence(m)
    assert "without a CI" in said and "separates" not in said and "generator's" not in said and "0.4× as far" in said
    m.update(frd=120.0, kid_ci=[3.0, 5.0])
    said = distance_sentence(m)
    assert "the gap is the generator's" in said and "separates them" in said


def test_quality_sentence_names_the_cases_at_either_end():
    from medlsdm.evaluation.sentences import quality_sentence

    q = {"ssim": 0.6, "psnr": 24.0, "per_case": {"a": {"ssim": 0.5, "psnr": 23.0}, "b": {"ssim": 0.7, "psnr": 25.0}}}
    said = quality_sentence(q)
    assert "Over 2 test cases: SSIM 0.600" in said and "from a (SSIM 0.500) to b (0.700)" in said
    q["per_case"]["a"]["ssim"] = 0.9
    assert "from b (SSIM 0.700) to a (0.900)" in quality_sentence(q)
