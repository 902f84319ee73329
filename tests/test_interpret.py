"""The sentences of medlsdm.interpret and interpret_synthesis follow their numbers: each test flips a number
across the line that decides the wording and sees the sentence flip. (Notebook 05's sentences, of
medlsdm.evaluation.summary, are tested in test_evaluation_summary.py.)"""

import math

import numpy as np

from medlsdm import interpret as I
from medlsdm import interpret_synthesis as S


def test_ci_helpers_place_a_ci_against_zero():
    assert I.ci_side([0.01, 0.2]) == "above 0" and I.ci_side([-0.2, -0.01]) == "below 0"
    assert (
        I.ci_side([-0.1, 0.1]) == "straddles 0" and I.ci_side(None) == "no CI" and I.ci_side([math.nan, 1]) == "no CI"
    )
    assert I.ci_text([0.005, 0.095]) == "[+0.005, +0.095]" and I.ci_text(None) == ""
    assert I.bullets(["a.", "", "b."], "T") == "**T**\n\n- A.\n- B."


# ---------------------------------------------------------------- 01


def test_class_balance_names_the_extremes_and_flips_with_the_ratio():
    said = I.class_balance_sentence({"background": 0.5, "liver": 0.3, "aorta": 0.004, "lesion": 0.001})
    assert said.startswith("Background fills 50.0 %") and "lesion 0.10 % and aorta 0.40 %" in said
    assert "500× fewer" in said and "fail first" in said
    said = I.class_balance_sentence({"background": 0.4, "liver": 0.35, "kidney": 0.25})
    assert "2× fewer" in said and "comparable size" in said and "fail first" not in said


def test_split_sentence_sees_a_shared_patient_and_says_when_the_check_cannot_fail():
    split = {"train": ["a1", "b1"], "test": ["c1"]}
    one_each = {"a1": "a", "b1": "b", "c1": "c"}
    said = I.split_sentence(split, one_each)
    assert "3 cases of 3 patients: 2 train, 1 test" in said and "No patient appears in two splits" in said
    assert "cannot fail" in said
    follow_up = {"train": ["a1", "b1"], "test": ["c1", "c2"]}
    said = I.split_sentence(follow_up, {**one_each, "c2": "c"})
    assert "No patient appears" in said and "cannot fail" not in said  # a patient with two cases: the check matters
    said = I.split_sentence(split, {"a1": "a", "b1": "b", "c1": "a"})
    assert "**1 patients appear in two splits** (a)" in said


def test_painting_sentence_says_what_is_left_and_flags_an_image_the_labels_fix():
    said = I.painting_sentence(0.775)
    assert "explains 77.5 %" in said and "other 22.5 %" in said and "almost nothing" not in said
    assert "almost nothing" in I.painting_sentence(0.98)
    assert "fixes little" in I.painting_sentence(0.2)


def test_takeaways_01_are_bullets_from_the_entry():
    m = {
        "n_cases": 10,
        "dataset": "torso-ct",
        "block_shape": [8, 16, 16],
        "spacing": [6, 5.5, 5.5],
        "n_train": 6,
        "n_val": 2,
        "n_test": 2,
        "class_fraction": {"background": 0.9, "liver": 0.1},
        "painting_r2": 0.5,
    }
    said = I.takeaways_01(m)
    assert said.startswith("**Takeaways**\n\n- 10 torso-ct cases") and "split 6 / 2 / 2" in said
    assert "explains 50.0 %" in said


# ---------------------------------------------------------------- 02


def test_reconstruction_sentence_flips_when_the_autoencoder_does_not_beat_pooling():
    r = {"psnr": 29.9, "ssim": 0.83, "baseline_psnr": 23.8, "baseline_ssim": 0.63}
    assert "+6.10 dB" in I.reconstruction_sentence(r) and "hold more than block averages" in I.reconstruction_sentence(
        r
    )
    r["psnr"] = 24.0
    said = I.reconstruction_sentence(r)
    assert "+0.20 dB" in said and "does not clearly beat" in said


def test_latent_sentence_tells_a_decoder_that_needs_its_latent_from_one_that_paints():
    said = I.latent_sentence({"own": 27.5, "other": 15.2, "random": 12.7})
    assert "12.3 dB lost" in said and "needs its latent" in said
    said = I.latent_sentence({"own": 27.5, "other": 27.0, "random": 26.0})
    assert "0.5 dB lost" in said and "paints the label map" in said and "needs its latent" not in said


def test_codebook_sentence_sees_a_collapse():
    assert "no collapse" in I.codebook_sentence(0.99, 305, 512) and "60 %" in I.codebook_sentence(0.99, 305, 512)
    said = I.codebook_sentence(0.05, 12, 512)
    assert "collapsed" in said and "no collapse" not in said


def test_takeaways_02_compare_with_painting_plus_residual_on_both_metrics():
    m = {
        "psnr": 29.9,
        "ssim": 0.83,
        "baseline_psnr": 23.8,
        "baseline_ssim": 0.63,
        "codebook_usage": 0.99,
        "perplexity": 300.0,
        "latent_ablation": {"own": 27.5, "other": 15.2, "random": 12.7},
        "body": {"VQ-GAN": {"psnr": 27.5, "ssim": 0.76}, "painting + pooled residual": {"psnr": 25.5, "ssim": 0.79}},
        "texture": {"noise_ratio": 1.27, "hf_power_ratio": 1.15},
    }
    said = I.takeaways_02(m, 512)
    assert "wins on PSNR (27.50 vs 25.50 dB) and loses on SSIM (0.760 vs 0.790)" in said and "noise 1.27×" in said
    m["body"]["VQ-GAN"]["ssim"] = 0.8
    assert "wins on PSNR (27.50 vs 25.50 dB) and wins on SSIM" in I.takeaways_02(m, 512)


# ---------------------------------------------------------------- 03


def test_latent_scale_sentence_flips_with_the_spread_of_the_channels():
    said = I.latent_scale_sentence([0.3, 1.0, 1.8])
    assert "from 0.30 (channel 0) to 1.80 (channel 2), 6.0× apart" in said and "per-channel" in said
    assert "nearly as well" in I.latent_scale_sentence([0.9, 1.0, 1.1])


def test_loss_sentence_reads_the_loss_against_predicting_zero():
    falling = [0.9] * 5 + [0.5] * 10 + [0.2] * 5
    said = I.loss_sentence(falling, "v_prediction")
    assert "from 0.900" in said and "to 0.200" in said and "about 80 %" in said and "velocity v" in said
    assert "cannot be learnt" in said
    assert "little more than nothing" in I.loss_sentence([1.0] * 10 + [0.95] * 5, "epsilon")
    said = I.loss_sentence([0.5] * 10 + [0.45] * 5, "epsilon")
    assert "noise ε" in said and "had not fallen much" in said
    assert I.loss_sentence([], "epsilon") == "No loss was logged."


def test_takeaways_03():
    result = {
        "steps": 100,
        "conditioning": "concat",
        "prediction_type": "v_prediction",
        "train_seconds": 12.0,
        "final_loss": 0.3,
    }
    said = I.takeaways_03(result, [0.9] * 5 + [0.3] * 5)
    assert "100 steps of a concat-conditioned UNet" in said and "final loss 0.300" in said and "to 0.300" in said


# ---------------------------------------------------------------- 06


def test_slice_order_is_read_off_the_labelled_area():
    def stack(case, areas):
        out = []
        for a in areas:
            lab = np.zeros((10, 10), np.int64)
            lab.flat[:a] = 1
            out.append((case, lab))
        return out

    rising = stack("a", [5, 10, 20]) + stack("b", [3, 9, 30])
    said = I.slice_order_sentence(rising)
    assert "In 2 of 2 subjects the labelled area grows" in said and "from apex to base" in said
    falling = stack("a", [20, 10, 5]) + stack("b", [30, 9, 3]) + stack("c", [1, 2, 3])
    said = I.slice_order_sentence(falling)
    assert "In 2 of 3 subjects the labelled area shrinks" in said and "from base to apex" in said


def test_ablation_sentence_explains_a_dice_above_the_ceiling_and_flips_with_the_numbers():
    scores = {
        "edges": {"ssim": 0.48, "nmse": 0.17, "fd_seg": 1.2, "dice": 0.69},
        "semantic": {"ssim": 0.53, "nmse": 0.20, "fd_seg": 3.3, "dice": 0.89},
        "edges+semantic": {"ssim": 0.61, "nmse": 0.08, "fd_seg": 5.3, "dice": 0.86},
    }
    ceiling = {"ssim": 0.81, "nmse": 0.02, "fd_seg": 0.02, "dice": 0.855}
    said = I.ablation_sentence(scores, ceiling)
    assert "raises SSIM (0.530 → 0.610) and lowers NMSE" in said and "edges carry" in said
    assert "Slices of the semantic and edges+semantic models score a higher Dice" in said and "not of Dice" in said
    assert "every mode stays below the reconstruction's SSIM (0.810)" in said
    assert "FD-seg ranks edges closest" in said and "they disagree" in said
    ceiling["dice"] = 0.95  # now no mode beats the reconstruction's Dice: nothing to explain
    scores["edges+semantic"].update(ssim=0.50, nmse=0.25, fd_seg=1.0)
    said = I.ablation_sentence(scores, ceiling)
    assert "higher Dice" not in said and "does not raise SSIM" in said and "does not lower NMSE" in said
    assert "FD-seg and SSIM agree: semantic" not in said and "edges carry" not in said
    scores["semantic"]["ssim"] = 0.99  # a mode above the ceiling's SSIM: the sentence does not call it a ceiling
    ceiling["dice"] = 0.5
    said = I.ablation_sentence(scores, ceiling)
    assert "as a ceiling should" not in said and "check the evaluation" in said


def test_vqvae_sentence_and_takeaways_06():
    val = {"val_psnr": 28.9, "val_baseline_psnr": 23.0, "val_ssim": 0.83, "val_usage": 0.6, "val_perplexity": 70.0}
    assert "+5.90 dB" in I.vqvae_sentence(val, 256) and "no collapse" in I.vqvae_sentence(val, 256)
    result = {
        "n_slices": 320,
        "size": 64,
        "dataset": "cardiac-2d",
        "n_test_slices": 64,
        "fid": "skipped",
        "ablation": {"semantic": {"ssim": 0.5, "nmse": 0.2, "fd_seg": 3.0, "dice": 0.9}},
        "reconstruction": {"ssim": 0.8, "nmse": 0.02, "fd_seg": 0.02, "dice": 0.85},
    }
    said = I.takeaways_06(result)
    assert "Closest to the real slices on SSIM: semantic (0.500; the VQ-VAE ceiling 0.800)" in said
    assert "higher Dice" in said


# ---------------------------------------------------------------- 04


def _judged():
    return {
        "counted": ["liver_mean", "bone_mean"],
        "factor_preserved": {"aorta_mean": 0.82, "liver_mean": 0.96, "bone_mean": 0.93},
        "factor_ks_p": {"liver_mean": 0.875, "bone_mean": 0.001},
        "factor_w1": {"liver_mean": 0.008, "bone_mean": 0.035},
        "factor_reference": {"aorta_mean": {"w1": 0.03}, "liver_mean": {"w1": 0.008}, "bone_mean": {"w1": 0.021}},
        "factor_spread_ratio": {"liver_mean": 0.38, "bone_mean": 0.21},
        "factor_spread_reference": {"liver_mean": 1.3, "bone_mean": 1.5},
        "diversity_ratio": 1.11,
        "diversity_reference": 1.17,
    }


def test_factor_sentence_flips_with_the_ks_p_value():
    j = _judged()
    said = S.factor_sentence(j)
    assert "bone_mean (KS p 0.001, W1 1.7× the oracle's own) differs" in said
    assert "For liver_mean (KS p 0.875, W1 1.0× the oracle's own) the test sees no difference" in said
    assert "Not counted: aorta_mean (r 0.82)" in said
    j["factor_ks_p"]["bone_mean"] = 0.4
    said = S.factor_sentence(j)
    assert (
        "differ" not in said.replace("no difference", "")
        and "liver_mean (KS p 0.875, W1 1.0× the oracle's own) and bone_mean" in said
    )
    j["counted"] = []
    assert "No factor is counted" in S.factor_sentence(j)


def test_paired_sentence_splits_the_gap_between_autoencoder_and_diffusion():
    paired = {
        "synthetic": {"ssim": 0.5},
        "oracle re-render": {"ssim": 0.7},
        "oracle via the autoencoder": {"ssim": 0.6},
        "oracle mean": {"ssim": 0.75},
    }
    said = S.paired_sentence(paired)
    assert "autoencoder owns 50 %" in said and "rewards the conditional mean" in said
    paired["oracle via the autoencoder"]["ssim"] = 0.65
    assert "autoencoder owns 25 %" in S.paired_sentence(paired)
    paired["oracle mean"]["ssim"] = 0.65  # the mean no longer beats a right answer: no claim about blur
    assert "rewards the conditional mean" not in S.paired_sentence(paired)
    paired["synthetic"]["ssim"] = 0.72
    assert "suspect blur" in S.paired_sentence(paired)
    assert "nothing to read it against" in S.paired_sentence({"synthetic": {"ssim": 0.5}})


def test_class_error_sentence_names_the_worst_class():
    said = S.class_error_sentence({"liver": 0.01, "aorta": 0.05, "fat": 0.0})
    assert "0.020 of the real range" in said and "aorta, by 0.050 (2.5× the average)" in said


def test_guidance_sentence_reads_the_sweep_against_the_floor():
    err = {"0.0": 0.076, "1.0": 0.0067, "2.0": 0.0092, "4.0": 0.016}
    said = S.guidance_sentence(err, 0.0070)
    assert "11.3× that of the conditional model" in said and "follow their label maps" in said
    assert "lowest error is at s = 1 (0.0067), larger scales raise it (s = 2: 0.0092, s = 4: 0.0160)" in said
    assert "the best scale is at that floor" in said
    said = S.guidance_sentence(err, 0.002)
    assert "the best scale is above that floor" in said
    said = S.guidance_sentence({0.0: 0.01, 1.0: 0.009, 2.0: 0.005}, None)
    assert "hardly matters" in said and "s = 2 (0.0050)." in said and "floor" not in said


def test_scheduler_sentence_flags_a_solver_far_from_the_oracle():
    sched = {
        "ddpm-1000": {"seconds_per_volume": 31.5, "w1_oracle": {"a": 0.03, "b": 0.032}},
        "unipc-10": {"seconds_per_volume": 0.7, "w1_oracle": {"a": 0.029, "b": 0.03}},
    }
    said = S.scheduler_sentence(sched)
    assert said.startswith("unipc-10 takes 0.70 s a volume, 45× less than ddpm-1000") and "No faster solver" in said
    sched["unipc-10"]["w1_oracle"] = {"a": 0.06, "b": 0.06}
    said = S.scheduler_sentence(sched)
    assert "unipc-10 lands further from the oracle" in said and "No faster solver" not in said
    sched["unipc-10"]["seconds_per_volume"] = 40.0
    assert S.scheduler_sentence(sched).startswith("The reference ddpm-1000 is already the fastest (31.50 s a volume)")


def test_takeaways_04_read_diversity_beside_the_within_map_spread():
    result = {
        **_judged(),
        "n_samples": 24,
        "n_samples_per_map": 4,
        "scheduler": "ddim",
        "steps": 50,
        "guidance_scale": 1.0,
        "paired_body": {"synthetic": {"ssim": 0.5}},
        "guidance_error": {"0.0": 0.07, "1.0": 0.007},
        "guidance_floor": None,
        "texture": {"noise_ratio": 1.8, "hf_power_ratio": 0.94},
    }
    said = S.takeaways_04(result)
    assert "24 volumes from 6 test label maps" in said and "Diversity ratio 1.11 (oracle against itself 1.17)" in said
    assert "does not contradict this" in said and "noise 1.80×" in said


# ---------------------------------------------------------------- 07


def test_seam_sentence_passes_or_fails_with_the_bar_ci():
    windowed = {"gap": 0.0165, "ci": [0.0063, 0.0264]}
    one_pass = {"gap": 0.0167, "ci": [0.0099, 0.0237]}
    said = S.seam_sentence({"gap": -0.0002, "ci": [-0.0074, 0.0075]}, windowed, one_pass)
    assert "the windows add no error at their borders" in said and "not from the windows" in said
    said = S.seam_sentence({"gap": 0.02, "ci": [0.01, 0.03]}, windowed, one_pass)
    assert "**the windows leave seams**" in said and "add no error" not in said
    said = S.seam_sentence({"gap": 0.0, "ci": [-0.01, 0.01]}, windowed, {"gap": 0.0, "ci": [-0.01, 0.01]})
    assert "add no error" in said and "not from the windows" not in said


def test_edit_sentence_counts_lesions_inside_the_oracle_range():
    said = S.edit_sentence(0.0, [0.116, 0.1, -0.052, 0.013], [0.005, 0.048])
    assert "exactly as it was" in said and "1 of 4 inserted lesions" in said and "2 are brighter and 1 darker" in said
    said = S.edit_sentence(1e-3, [0.01, 0.02], [0.005, 0.048])
    assert "exactly" not in said and "2 of 2" in said and "brighter" not in said
    assert "no reference" in S.edit_sentence(0.0, [0.1], None)


def test_detection_sentence_reads_the_edit_against_real_lesions():
    said = S.detection_sentence({"dice_mean": 0.0, "recall_mean": 0.0}, {"dice_mean": 0.0})
    assert "says nothing about the edit" in said and "labels lesion far beyond" not in said
    said = S.detection_sentence({"dice_mean": 0.01, "recall_mean": 1.0}, {"dice_mean": 0.009})
    assert "says nothing about the edit" in said and "labels lesion far beyond the lesions" in said
    said = S.detection_sentence({"dice_mean": 0.3, "recall_mean": 0.5}, {"dice_mean": 0.4})
    assert "about as well as real ones" in said and "50 %" in said
    said = S.detection_sentence({"dice_mean": 0.05, "recall_mean": 0.1}, {"dice_mean": 0.4})
    assert "misses most inserted ones" in said


def test_takeaways_07_without_a_whole_scan():
    result = {
        "edit_outside_max_abs": 0.0,
        "edit_lesion_mean": [0.01],
        "oracle_lesion_range": None,
        "edit_lesion_dice": 0.0,
        "edit_lesion_recall": 0.0,
        "real_lesion_dice": 0.0,
    }
    said = S.takeaways_07(result)
    assert said.startswith("**Takeaways**") and "seam" not in said and "says nothing about the edit" in said


def test_mode_loss_sentence_ranks_the_modes():
    said = I.mode_loss_sentence({"edges": 0.327, "semantic": 0.308, "edges+semantic": 0.2685})
    assert (
        "edges+semantic 0.2685, semantic 0.3080, edges 0.3270" in said and "Edges+semantic leaves the least" not in said
    )
    assert "edges+semantic leaves the least to guess, edges the most" in said
    said = I.mode_loss_sentence({"edges": 0.2, "semantic": 0.308})
    assert "edges leaves the least to guess, semantic the most" in said
    said = I.mode_loss_sentence({"edges": 1.0075, "semantic": 1.0076})
    assert "within 0.0001 of each other" in said and "least to guess" not in said
