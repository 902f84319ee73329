"""The 05_evaluation entry's tables and sentences (medlsdm.evaluation.summary) follow their numbers: each
sentence test flips a number across the line that decides the wording and sees the sentence flip."""

from medlsdm.evaluation.summary import results_tables, with_ci


def _metrics():
    """A ``05_evaluation`` entry as :func:`medlsdm.evaluation.summary.evaluation_metrics` writes it (the keys the
    tables read)."""
    per_class = {"liver": 0.9, "lesion": float("nan")}
    per_case = {"ssim": [0.4, 0.6], "dice_real_test": [0.8, 1.0], "dice_lesion_real_test": [float("nan"), 0.2]}
    return {
        "dataset": "torso-ct",
        "decoder": "spade",
        "channels": "16-32-64",
        "fid": None,
        "fid_3d": None,
        "lpips": {"axial": 0.2, "coronal": 0.4, "sagittal": 0.3},
        "ssim": 0.5,
        "rmse": 0.1,
        "psnr": 22.0,
        "dice_per_class": {"real_test": per_class, "synthetic": per_class},
        "dice_real_test": 0.9,
        "dice_real_test_sd_seeds": 0.01,
        "dice_synthetic": 0.9,
        "dice_synthetic_sd_seeds": 0.02,
        "dice_lesion_real_test": 0.2,
        "dice_lesion_synthetic": float("nan"),
        "dice_ratio": 1.0,
        "n_test": 2,
        "judge_seeds": 3,
        "per_case": per_case,
        "ci": with_ci(per_case),
        "privacy_controls": {
            "positive_flagged": 1.0,
            "negative_flagged": 0.0,
            "negative_control_kind": "oracle",
            "synthetic_flagged": {"from_train_maps": 0.0},
        },
        "kid": 0.1,
        "kid_ci": [0.05, 0.2],
        "kid_reference": 0.01,
        "kid_reference_ci": [0.0, 0.02],
        "kid_oracle": 0.0,
        "frd": None,
        "frd_reference": None,
        "frd_oracle": None,
        "augmentation": None,
        "paper_conventions_table": {"psnr": {"ours": 22.0, "paper": 15.98, "convention": "6 dB lower"}},
    }


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


def test_with_ci_leaves_out_nan_and_needs_two_values():
    ci = with_ci({"a": [1.0, 2.0, float("nan"), 3.0], "b": [1.0, float("nan")]})
    assert ci["b"] is None and ci["a"][0] >= 1.0 and ci["a"][1] <= 3.0


def test_augmentation_table_lists_every_arm_with_its_gain():
    m = _metrics()
    arm = {"mean": 0.7, "lesion": float("nan"), "sd_seeds": 0.01, "per_case": [0.7, 0.7], "lesions_found": [0, 1]}
    m["augmentation"] = {
        "arms": {
            "real_small": arm,
            "real_small_oracle": {
                **arm,
                "gain": 0.1,
                "gain_ci": [0.05, 0.15],
                "lesion_gain": 0.02,
                "lesion_gain_ci": [-0.01, 0.05],
            },
        }
    }
    table = results_tables(m)["augmentation"]
    assert "| real small | 0.7 | 0.01 | – (baseline) |  | n/a | – (baseline) | 0, 1 |" in table
    assert "| real small oracle | 0.7 | 0.01 | 0.1 | [0.05, 0.15] | n/a | 0.02 [-0.01, 0.05] | 0, 1 |" in table
