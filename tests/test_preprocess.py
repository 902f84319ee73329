"""Tests of medlsdm.data.preprocess against closed forms and independent references."""

import numpy as np
import pytest

from medlsdm.data.classes import ClassTable
from medlsdm.data.io import dhw_to_world
from medlsdm.data.labels import remap_labels
from medlsdm.data.preprocess import (
    crop_or_pad,
    crop_or_pad_offset,
    depth_block_starts,
    normalize_ct,
    normalize_mr,
    preprocess_case,
    resample,
    resampled_affine,
    resampled_shape,
    select_block_starts,
    shift_affine,
)
from medlsdm.errors import ConfigError, DataError

AFFINE = np.array([[0.0, -0.8, 0.0, 40.0], [-0.7, 0.0, 0.0, 30.0], [0.0, 0.0, 3.0, -20.0], [0, 0, 0, 1]])


def _grid(shape):
    return np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")


def _ramp(d, h, w):
    return 2.0 * d + 3.0 * h - 1.5 * w + 7.0


@pytest.mark.parametrize("spacing, target", [((1.0, 2.0, 3.0), (3.0, 1.5, 0.7)), ((2.5, 1.0, 1.0), (2.0, 2.0, 2.0))])
def test_linear_resample_of_a_ramp_is_exact(spacing, target):
    image = _ramp(*_grid((10, 9, 8))).astype(np.float32)
    out = resample(image, spacing, target, order=1)
    assert out.shape == resampled_shape(image.shape, spacing, target)
    # output voxel i sits at i * target / spacing input voxels
    coords = [g * t / s for g, s, t in zip(_grid(out.shape), spacing, target)]
    np.testing.assert_allclose(out, _ramp(*coords), atol=1e-4)
    # the new grid stays inside the old one (no extrapolation) and reaches its last voxel within one step
    for n, m, s, t in zip(image.shape, out.shape, spacing, target):
        assert (m - 1) * t <= (n - 1) * s + 1e-6 < m * t


def test_resampled_affine_maps_voxels_to_the_same_world_point():
    spacing, target = (3.0, 0.8, 0.7), (6.0, 1.6, 0.35)
    new = resampled_affine(AFFINE, spacing, target)
    for idx in [(0, 0, 0), (1, 2, 3), (4, 5, 6)]:
        old_idx = np.array(idx) * np.array(target) / np.array(spacing)
        np.testing.assert_allclose(dhw_to_world(new, idx), dhw_to_world(AFFINE, old_idx))
    from medlsdm.data.io import spacing_dhw

    assert spacing_dhw(new) == pytest.approx(target)


def test_nearest_resample_keeps_labels():
    label = np.zeros((12, 12, 12), np.int64)
    label[2:8, 2:10, 3:9] = 1
    label[6:12, 0:4, 0:12] = 3
    label[0:4, 8:12, 8:12] = 7
    out = resample(label, (1.0, 1.0, 1.0), (2.0, 0.5, 1.5), order=0)
    assert out.dtype == np.int64
    assert set(np.unique(out)) == set(np.unique(label))
    # identity spacing is a copy
    np.testing.assert_array_equal(resample(label, (1, 1, 1), (1, 1, 1), order=0), label)
    # integer downsampling by 2 picks every other voxel
    np.testing.assert_array_equal(resample(label, (1, 1, 1), (2, 2, 2), order=0), label[::2, ::2, ::2])


def test_normalisation_endpoints():
    hu = np.array([-3000.0, -1000.0, 0.0, 500.0, 1000.0, 4000.0], np.float32)
    np.testing.assert_allclose(normalize_ct(hu), [-1, -1, 0, 0.5, 1, 1], atol=1e-6)
    np.testing.assert_array_equal(normalize_ct(hu, window=(-500, 500)), [-1, -1, 0, 1, 1, 1])
    mr = np.random.default_rng(0).gamma(2.0, 100.0, size=10_000).astype(np.float32)
    out = normalize_mr(mr, (1.0, 99.0))
    lo, hi = np.percentile(mr, [1.0, 99.0])
    assert out.min() == pytest.approx(-1.0, abs=1e-6) and out.max() == pytest.approx(1.0, abs=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.clip((mr - lo) / (hi - lo) * 2 - 1, -1, 1), atol=1e-5)
    assert np.all(normalize_mr(np.full(10, 5.0)) == -1.0)
    with pytest.raises(ConfigError, match="low < high"):
        normalize_ct(hu, window=(10, -10))


def test_crop_then_pad_and_pad_then_crop():
    rng = np.random.default_rng(0)
    array = rng.normal(size=(7, 10, 9)).astype(np.float32)
    target = (5, 6, 4)
    cropped = crop_or_pad(array, target, pad_value=-1)
    offset = crop_or_pad_offset(array.shape, target)
    np.testing.assert_array_equal(
        cropped, array[offset[0] : offset[0] + 5, offset[1] : offset[1] + 6, offset[2] : offset[2] + 4]
    )
    back = crop_or_pad(cropped, array.shape, pad_value=-1)
    inside = np.zeros(array.shape, bool)
    inside[offset[0] : offset[0] + 5, offset[1] : offset[1] + 6, offset[2] : offset[2] + 4] = True
    np.testing.assert_array_equal(back[inside], array[inside])
    assert np.all(back[~inside] == -1)
    padded = crop_or_pad(array, (10, 13, 9), pad_value=0)
    np.testing.assert_array_equal(crop_or_pad(padded, array.shape), array)
    # mixed crop/pad, None keeps an axis, leading channel axis untouched
    mixed = crop_or_pad(array[None], (None, 4, 12), pad_value=0)
    assert mixed.shape == (1, 7, 4, 12)


def test_crop_pad_affine_keeps_world_positions():
    array = np.arange(7 * 10 * 9).reshape(7, 10, 9)
    target = (9, 6, 4)  # pad D, crop H and W
    out = crop_or_pad(array, target, pad_value=-1)
    offset = crop_or_pad_offset(array.shape, target)
    new = shift_affine(AFFINE, offset)
    for idx in [(1, 0, 0), (5, 3, 2), (7, 5, 3)]:
        old = np.array(idx) + np.array(offset)
        assert out[idx] == array[tuple(old)]
        np.testing.assert_allclose(dhw_to_world(new, idx), dhw_to_world(AFFINE, old))


def test_depth_blocks():
    array = np.arange(10)[:, None, None] * np.ones((1, 2, 3))
    assert depth_block_starts(10, 4) == [0, 4, 6]
    assert depth_block_starts(10, 4, stride=3) == [0, 3, 6]
    assert depth_block_starts(8, 4) == [0, 4]
    blocks = [array[s : s + 4] for s in depth_block_starts(10, 4)]
    assert [b[:, 0, 0].tolist() for b in blocks] == [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]]  # the end covered
    assert select_block_starts(10, 4) == [3]
    assert select_block_starts(10, 4, 3) == [0, 3, 6]
    with pytest.raises(ConfigError, match="block depth 4"):
        depth_block_starts(3, 4)


def test_remap_labels():
    table = ClassTable(("background", "a", "b"), (0, 5, 2))
    label = np.array([[[0, 5, 2, 2, 5]]])
    np.testing.assert_array_equal(remap_labels(label, table), [[[0, 1, 2, 2, 1]]])
    with pytest.raises(DataError, match=r"seg.nii.gz: label values \[3, 9\]"):
        remap_labels(np.array([[[0, 3, 9, 5]]]), table, "seg.nii.gz")


def test_preprocess_case_geometry():
    """A labelled box keeps its world position through the whole chain."""
    shape = (8, 20, 18)
    image = np.full(shape, -1000.0, np.float32)
    label = np.zeros(shape, np.int64)
    image[2:6, 5:15, 4:12], label[2:6, 5:15, 4:12] = 40.0, 3
    affine = np.diag([0.9, 1.1, 3.0, 1.0])
    affine[:3, 3] = (-5, 7, 12)
    table = ClassTable(("bg", "x"), (0, 3))
    blocks = preprocess_case(
        image,
        label,
        affine,
        classes=table,
        normalisation={"method": "ct_window", "window": [-1000, 1000]},
        spacing=(2.0, 2.0, 2.0),
        block_shape=(16, 8, 8),
        n_blocks=1,
    )
    (block,) = blocks
    assert block.image.shape == (1, 16, 8, 8) and block.label.shape == (16, 8, 8)
    assert block.image.min() >= -1 and block.image.max() <= 1
    assert set(np.unique(block.label)) == {0, 1}
    # centre of mass of the class in world coordinates is the same (within a voxel)
    src = dhw_to_world(affine, np.argwhere(label == 3).mean(0))
    out = dhw_to_world(block.affine, np.argwhere(block.label == 1).mean(0))
    np.testing.assert_allclose(out, src, atol=2.0)
    # padded depth is background and -1
    assert np.all(block.image[0, 0] == -1) and np.all(block.label[0] == 0)
    many = preprocess_case(
        image,
        label,
        affine,
        classes=table,
        normalisation={"method": "ct_window", "window": [-1000, 1000]},
        spacing=(1.0, 2.0, 2.0),
        block_shape=(8, 8, 8),
        n_blocks=3,
    )
    assert [b.start for b in many] == [0, 7, 14]
    np.testing.assert_allclose(dhw_to_world(many[1].affine, (0, 0, 0)), dhw_to_world(many[0].affine, (7, 0, 0)))


def test_preprocess_case_samples_the_right_world_points():
    """An image that is a linear function of world position comes out as that function of the
    block's voxel world positions (trilinear resampling of a linear field is exact)."""
    shape = (9, 21, 17)
    affine = np.diag([1.1, 0.9, 2.5, 1.0])
    affine[:3, 3] = (-12.0, 4.0, 30.0)

    def field(world):  # HU, kept inside the (-1000, 1000) window
        return 10.0 * world[..., 0] - 7.0 * world[..., 1] + 5.0 * world[..., 2] - 100.0

    world = dhw_to_world(affine, np.stack(_grid(shape), axis=-1))
    image = field(world).astype(np.float32)
    label = np.zeros(shape, np.int64)
    (block,) = preprocess_case(
        image,
        label,
        affine,
        classes=ClassTable(("bg",), (0,)),
        normalisation={"method": "ct_window", "window": [-1000, 1000]},
        spacing=(2.0, 1.5, 2.0),
        block_shape=(6, 10, 6),
    )
    out_world = dhw_to_world(block.affine, np.stack(_grid(block.label.shape), axis=-1))
    np.testing.assert_allclose(block.image[0], field(out_world) / 1000.0, atol=1e-5)


# ------------------------------------------------------------------ the paper's data handling


def test_paper_block_starts_closed_form():
    from medlsdm.data.preprocess import paper_block_starts

    rng = np.random.default_rng(0)
    starts = paper_block_starts(100, 32, rng)
    # 100 // 4 = 25 distinct random starts in 0…68, plus the last block (68) when not drawn
    assert len(starts) in (25, 26) and starts[-1] == 68 and starts == sorted(set(starts))
    assert min(starts) >= 0
    assert paper_block_starts(34, 32, rng) == [0, 1, 2]  # 34 // 4 = 8 > 3 possible starts: all of them
    assert paper_block_starts(32, 32, rng) == [0]
    with pytest.raises(ConfigError):
        paper_block_starts(16, 32, rng)


def test_preprocess_case_paper_closed_form():
    from medlsdm.data.classes import ClassTable
    from medlsdm.data.preprocess import minmax_to_unit, preprocess_case_paper

    np.testing.assert_allclose(minmax_to_unit(np.array([2.0, 4.0, 6.0])), [-1.0, 0.0, 1.0])
    assert np.all(minmax_to_unit(np.full(3, 5.0)) == -1.0)
    depth, size = 12, 10
    image = np.arange(depth * size * size, dtype=np.float32).reshape(depth, size, size)  # value = flat index
    label = np.zeros_like(image, dtype=np.int64)
    label[8:10, 4:6, 4:6] = 5  # foreground only in slices 8 and 9
    affine = np.diag([0.8, 0.7, 3.0, 1.0])  # W, H, D spacings 0.8, 0.7 and 3 mm
    table = ClassTable(("background", "organ"), (0, 5))
    blocks = preprocess_case_paper(
        image, label, affine, classes=table, block_shape=(4, 6, 6), rng=np.random.default_rng(1)
    )
    assert blocks and all(b.start + 4 > 8 and b.start <= 9 for b in blocks)  # empty blocks skipped
    for block in blocks:
        # native spacing, centred 6x6 crop starting at in-plane index 2: the affine moves by 2 voxels
        np.testing.assert_allclose(block.affine[:3, :3], affine[:3, :3])
        np.testing.assert_allclose(block.affine[:3, 3], [2 * 0.8, 2 * 0.7, block.start * 3.0])
        source = image[block.start : block.start + 4, 2:8, 2:8]
        expected = (source - source.min()) / (source.max() - source.min()) * 2 - 1
        np.testing.assert_allclose(block.image[0], expected, atol=1e-6)
        assert set(np.unique(block.label)) <= {0, 1} and block.label.dtype == np.int64
    assert (
        preprocess_case_paper(
            image, np.zeros_like(label), affine, classes=table, block_shape=(4, 6, 6), rng=np.random.default_rng(1)
        )
        == []
    )
