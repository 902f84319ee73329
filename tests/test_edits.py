"""Lesion edits of real volumes (medlsdm.evaluation.edits): where the lesion goes, that the edit
keeps the real volume beyond its soft border, and the detection scores on controlled cases."""

import numpy as np
import pytest

from medlsdm.errors import DataError
from medlsdm.evaluation import edits as ed


def test_lesion_site_is_the_deepest_organ_voxel():
    label = np.zeros((9, 11, 11), np.int64)
    zz, yy, xx = np.ogrid[:9, :11, :11]
    label[(zz - 4) ** 2 + (yy - 6) ** 2 + (xx - 5) ** 2 <= 9] = 2
    assert ed.lesion_site(label, 2) == (4, 6, 5)
    with pytest.raises(DataError, match="class 3"):
        ed.lesion_site(label, 3)


def test_outside_max_abs_sees_only_beyond_the_soft_border():
    mask = np.zeros((8, 8, 8), bool)
    mask[3:5, 3:5, 3:5] = True
    real = np.zeros((1, 8, 8, 8), np.float32)
    edited = real.copy()
    edited[0, 2:6, 2:6, 2:6] = 0.5  # inside the mask and within one voxel of it
    assert ed.outside_max_abs(edited, real, mask, soft_border=1) == 0.0
    edited[0, 0, 0, 0] = 0.2
    assert ed.outside_max_abs(edited, real, mask, soft_border=1) == pytest.approx(0.2)
    np.testing.assert_allclose(ed.region_means([edited], [mask]), [0.5])


def test_edit_with_lesion_keeps_the_real_volume_outside(tiny_pipeline, one_thread):
    label = np.zeros((16, 16, 16), np.int64)
    label[2:14, 2:14, 2:14] = 1
    image = np.random.default_rng(0).uniform(-1, 1, (1, 16, 16, 16)).astype(np.float32)
    out = ed.edit_with_lesion(
        tiny_pipeline, image, label, organ_class=1, lesion_class=2, radius_mm=2.0, spacing=[1.0, 1.0, 1.0], steps=2
    )
    assert out["centre"] == (7, 7, 7) and out["mask"].sum() > 0 and (out["labels"][out["mask"]] == 2).all()
    assert out["edited"].shape == image.shape
    assert ed.outside_max_abs(out["edited"], image, out["mask"], out["soft_border"]) <= 1e-6
    assert not np.allclose(out["edited"][0][out["mask"]], image[0][out["mask"]])


def test_lesion_detection_scores_a_found_and_a_missed_lesion():
    lab = np.zeros((4, 4, 4), np.int64)
    lab[1:3, 1:3, 1:3] = 2
    mask = lab == 2
    found, missed = lab.copy(), np.zeros_like(lab)
    out = ed.lesion_detection([found, missed], [lab, lab], [mask, mask], lesion_class=2, num_classes=3)
    assert out["dice"] == [1.0, 0.0] and out["recall"] == [1.0, 0.0] and out["dice_mean"] == 0.5
