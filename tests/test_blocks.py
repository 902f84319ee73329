"""Tests of medlsdm.models.blocks helpers: one-hot encoding and padding to a multiple."""

import numpy as np
import pytest
import torch

from medlsdm.errors import DataError
from medlsdm.models.blocks import one_hot, pad_to_multiple


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 4, 5)])  # batched 3-D and 2-D maps
def test_one_hot_matches_an_independent_encoding(shape):
    label = torch.from_numpy(np.random.default_rng(0).integers(0, 4, size=shape))
    out = one_hot(label, 4)
    ref = np.stack([(label.numpy() == k) for k in range(4)], axis=1).astype(np.float32)
    assert out.dtype == torch.float32 and out.shape == (shape[0], 4, *shape[1:])
    np.testing.assert_array_equal(out.numpy(), ref)
    np.testing.assert_array_equal(one_hot(label[:, None], 4).numpy(), ref)  # (B, 1, *spatial) too


def test_one_hot_rejects_bad_labels():
    with pytest.raises(DataError, match=r"\[0, 2\]"):
        one_hot(torch.tensor([[0, 3]]), 3)
    with pytest.raises(DataError, match="integer"):
        one_hot(torch.tensor([[0.0, 1.0]]), 3)


def test_pad_to_multiple_pads_the_end_with_edge_values_and_crops_back():
    x = torch.arange(2 * 5 * 6, dtype=torch.float32).reshape(1, 2, 5, 6)
    padded, crop = pad_to_multiple(x, 4)
    assert padded.shape == (1, 2, 8, 8)
    torch.testing.assert_close(padded[crop], x)
    torch.testing.assert_close(padded[:, :, 5:, :6], x[:, :, 4:5].expand(-1, -1, 3, -1))  # last row repeated
    same, crop = pad_to_multiple(x[..., :4, :4], 4)
    assert same.shape == (1, 2, 4, 4)  # already a multiple: nothing added
