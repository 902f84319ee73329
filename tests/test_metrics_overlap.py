"""medlsdm.metrics.overlap (Dice) by hand and against SciPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import scipy.spatial.distance
import torch

from medlsdm.errors import DataError
from medlsdm.metrics.overlap import dice_per_class, mean_dice

pytestmark = pytest.mark.usefixtures("one_thread")


def test_dice_hand_computed_and_absent_class():
    pred = np.array([[0, 1, 1, 2], [2, 2, 0, 0]])
    target = np.array([[0, 1, 2, 2], [2, 0, 0, 0]])
    d = dice_per_class(pred, target, num_classes=4)
    # class 1: |P|=2, |T|=1, |P∩T|=1 → 2/3; class 2: |P|=3, |T|=3, |P∩T|=2 → 2/3; class 3 absent
    assert d[1] == pytest.approx(2 / 3) and d[2] == pytest.approx(2 / 3)
    assert math.isnan(d[3]) and 0 not in d
    assert mean_dice(d) == pytest.approx(2 / 3)  # NaN left out
    assert math.isnan(mean_dice({1: math.nan}))
    # present in only one of them → 0
    assert dice_per_class(np.array([0, 1]), np.array([0, 0]), 2)[1] == 0.0


def test_dice_against_scipy():
    rng = np.random.default_rng(4)
    target = rng.integers(0, 5, (6, 7, 8))
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 5, target.shape))
    d = dice_per_class(torch.tensor(pred), target, 5)
    for c in range(1, 5):
        assert d[c] == pytest.approx(1 - scipy.spatial.distance.dice((pred == c).ravel(), (target == c).ravel()))
    with pytest.raises(DataError, match="integer"):
        dice_per_class(pred.astype(float), target, 5)
    with pytest.raises(DataError, match=r"\[0, 3\]"):
        dice_per_class(pred, target, 4)
