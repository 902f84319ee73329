import numpy as np
import pytest

from medlsdm.errors import DataError
from medlsdm.training.augment import class_mean_table, swap_class_means


def _cases(n=5, seed=0):
    """Label maps with classes 0-3 (class 3 missing from case 0) and images whose class means differ per case."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=(n, 6, 8, 8))
    labels[0][labels[0] == 3] = 2
    offsets = rng.uniform(-0.5, 0.5, size=(n, 4))
    images = np.stack([offsets[i][labels[i]] + rng.normal(0, 0.05, labels[i].shape) for i in range(n)])[:, None]
    return images.astype(np.float32), labels


def test_class_mean_table_matches_a_direct_mean():
    images, labels = _cases()
    means, present = class_mean_table(images[:, 0], labels, 5)
    assert not present[0, 3] and not present[:, 4].any() and present[1:, 3].all()
    for i in range(len(images)):
        for k in range(4):
            if present[i, k]:
                assert means[i, k] == pytest.approx(images[i, 0][labels[i] == k].mean(), abs=1e-6)


def test_swapped_copies_take_a_partners_class_means_and_keep_their_texture():
    images, labels = _cases()
    out, out_labels = swap_class_means(images, labels, 3, num_classes=4, seed=1)
    assert out.shape == (15, *images.shape[1:]) and np.array_equal(out_labels, np.tile(labels, (3, 1, 1, 1)))
    means, present = class_mean_table(images[:, 0], labels, 4)
    new_means, _ = class_mean_table(out[:, 0], out_labels, 4)
    n = len(images)
    for j in range(3):
        for a in range(n):
            copy = out[j * n + a, 0]
            # background is kept voxel for voxel
            assert np.array_equal(copy[labels[a] == 0], images[a, 0][labels[a] == 0])
            # the partner: the other case whose class means the copy now has (never the case itself)
            partners = [
                b
                for b in range(n)
                if b != a
                and all(
                    abs(new_means[j * n + a, k] - means[b, k]) < 1e-5 for k in (1, 2) if present[a, k] and present[b, k]
                )
            ]
            assert partners, f"copy {j} of case {a} has no partner's class means"
            b = partners[0]
            for k in (1, 2, 3):
                if present[a, k]:
                    deviation = copy[labels[a] == k] - copy[labels[a] == k].mean()
                    assert np.allclose(deviation, images[a, 0][labels[a] == k] - means[a, k], atol=1e-5)
                if present[a, k] and not present[b, k]:  # a class the partner lacks stays as it was
                    assert new_means[j * n + a, k] == pytest.approx(means[a, k], abs=1e-5)


def test_swaps_are_seeded_clipped_and_need_two_cases():
    images, labels = _cases()
    a, _ = swap_class_means(images, labels, 2, seed=3)
    b, _ = swap_class_means(images, labels, 2, seed=3)
    c, _ = swap_class_means(images, labels, 2, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    bright = images.copy()
    bright[1, 0][labels[1] == 1] = 0.99
    out, _ = swap_class_means(bright * 1.0, labels, 4, seed=0)
    assert out.min() >= -1 and out.max() <= 1
    assert swap_class_means(images, labels, 0)[0].shape[0] == 0
    with pytest.raises(DataError, match="two cases"):
        swap_class_means(images[:1], labels[:1], 1)
