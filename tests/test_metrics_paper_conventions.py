"""medlsdm.metrics.paper_conventions: each reference-code convention against a hand-computed case."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from medlsdm.errors import DataError
from medlsdm.metrics.paper_conventions import (
    CONVENTIONS,
    paper_convention_table,
    paper_dice,
    paper_fid,
    paper_psnr,
    paper_ssim,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_paper_psnr_is_six_db_below_the_true_range():
    x, y = np.zeros((4, 12, 12)), np.full((4, 12, 12), 0.1)
    assert paper_psnr(x, y) == pytest.approx(10 * math.log10(1 / 0.01))  # 20 dB
    assert paper_psnr(x, y) == pytest.approx(20.0)


def test_paper_psnr_and_ssim_in_the_table():
    rng = np.random.default_rng(0)
    real = [np.clip(rng.normal(0, 0.3, (1, 12, 14, 16)), -1, 1) for _ in range(2)]
    syn = [np.clip(r + rng.normal(0, 0.1, r.shape), -1, 1) for r in real]
    t = paper_convention_table(real=real, synthetic=syn)
    assert t["psnr"]["ours"] - t["psnr"]["paper"] == pytest.approx(20 * math.log10(2))
    assert t["ssim"]["paper"] > 0.999 > t["ssim"]["ours"]
    assert t["psnr"]["convention"] == CONVENTIONS["psnr"] and set(t) == {"psnr", "ssim"}


def test_paper_ssim_hand_computed_constant_slices():
    # constant slices: only the luminance term is left, (2ab + C1) / (a² + b² + C1)
    x, y = np.full((3, 12, 12), 0.5), np.full((3, 12, 12), -0.5)
    c1 = (0.01 * 255) ** 2
    assert paper_ssim(x, y) == pytest.approx((2 * -0.25 + c1) / (0.5 + c1))  # 0.857: looks "similar"
    c1_true = (0.01 * 2) ** 2
    assert paper_ssim(x, y, data_range=2.0) == pytest.approx((2 * -0.25 + c1_true) / (0.5 + c1_true))  # -0.998


def test_paper_ssim_is_the_mean_of_per_slice_skimage_values():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (1, 4, 16, 13))
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1)
    ref = np.mean(
        [
            structural_similarity(
                x[0, d], y[0, d], data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            )
            for d in range(4)
        ]
    )
    assert paper_ssim(x, y) == pytest.approx(ref, abs=1e-6)
    with pytest.raises(DataError, match="shapes differ"):
        paper_ssim(x, y[:, :3])


def test_paper_fid_hand_computed_mean_term_vanishes():
    real = np.array([[-1.0], [1.0]])  # mean 0, variance 2
    syn = np.array([[9.0], [11.0]])  # mean 10, variance 2
    assert paper_fid(real, syn) == pytest.approx(0.0, abs=1e-12)
    t = paper_convention_table(real_features=real, synthetic_features=syn)
    assert t["fid_2d"]["ours"] == pytest.approx(100.0) and t["fid_2d"]["paper"] == pytest.approx(0.0, abs=1e-12)
    wide = np.array([[7.0], [13.0]])  # variance 18: covariance terms still count, (sqrt 2 − sqrt 18)² = 8
    assert paper_fid(real, wide) == pytest.approx(8.0)


def test_paper_dice_hand_computed_equals_voxel_agreement():
    target = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 2])  # class 1 missed, class 2 half found
    # pooled one-hot: 2·(6 + 0 + 1) / (10 + 10) = 0.7; ours: mean of Dice(1) = 0 and Dice(2) = 2/3
    assert paper_dice(pred, target, 3) == pytest.approx(0.7)
    t = paper_convention_table(pred_labels=[pred], true_labels=[target], num_classes=3)
    assert t["dice"]["ours"] == pytest.approx(1 / 3) and t["dice"]["paper"] == pytest.approx(0.7)
    with pytest.raises(DataError, match="integer"):
        paper_dice(pred.astype(float), target, 3)


def test_table_checks_its_input():
    with pytest.raises(DataError, match="both real and synthetic images"):
        paper_convention_table(real=[np.zeros((12, 12, 12))])
    with pytest.raises(DataError, match="num_classes"):
        paper_convention_table(pred_labels=[np.zeros(3, int)], true_labels=[np.zeros(3, int)])
