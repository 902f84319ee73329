"""medlsdm.evaluation.features: slices, batched features, FID / 3-D FID / LPIPS / segmentation-feature distances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlsdm.errors import DataError
from medlsdm.evaluation.features import (
    available_feature_metrics,
    batched_features,
    inception_features,
    inception_slice_features,
    segnet_feature_distance,
    segnet_features,
    volume_slices,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class _ChannelStats(torch.nn.Module):
    """Stand-in for InceptionV3: per-channel mean, min and max of its input."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.cat([x.mean((2, 3)), x.amin((2, 3)), x.amax((2, 3))], 1)


def test_available_feature_metrics(tmp_path):
    status = available_feature_metrics({})
    assert status["segnet_fd"] == "available"
    assert status["fid_2d"].startswith("skipped (no weights") and "inception" in status["fid_2d"]
    assert status["lpips"] == "skipped (no weights: vgg16, lpips)"
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert available_feature_metrics({"inception": f, "vgg16": f})["fid_2d"] == "available"
    assert available_feature_metrics({"vgg16": f})["lpips"] == "skipped (no weights: lpips)"
    with pytest.raises(DataError, match="missing.pth"):
        available_feature_metrics({"medicalnet": tmp_path / "missing.pth"})
    with pytest.raises(DataError, match="unknown"):
        available_feature_metrics({"incepton": f})


def test_volume_slices_orientations():
    v = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 2, 3, 4)
    assert volume_slices(v, "axial").shape == (2, 1, 3, 4)
    assert volume_slices(v, "coronal").shape == (3, 1, 2, 4)
    assert volume_slices(v, "sagittal", step=2).shape == (2, 1, 2, 3)
    assert torch.equal(volume_slices(v, "coronal")[1, 0], v[0, :, 1, :])


def test_segnet_feature_distance():
    from medlsdm.models.segnet import SegNet

    torch.manual_seed(0)
    model = SegNet(spatial_dims=3, num_classes=3, channels=(8, 16))
    rng = np.random.default_rng(7)
    real = [rng.uniform(-1, 1, (1, 6, 10, 8)).astype(np.float32) for _ in range(4)]  # padded to even
    fake = [np.clip(v * 0.2 + 0.5, -1, 1) for v in real]
    assert segnet_feature_distance(model, real, real) == pytest.approx(0.0, abs=1e-9)
    assert segnet_feature_distance(model, real, fake) > 0


@pytest.mark.parametrize("form", ["array", "tensor", "list"])
@pytest.mark.parametrize("batch_size", [1, 2, 5, 8])
def test_batched_features_any_batch_size(form, batch_size):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(5, 2, 4, 6)).astype(np.float32)
    ref = images.reshape(5, 2, -1).mean(-1)  # fn: the mean of each channel
    given = {"array": images, "tensor": torch.tensor(images), "list": list(images)}[form]
    got = batched_features(lambda x: x.flatten(2).mean(-1), given, batch_size=batch_size, device="cpu")
    assert got.dtype == np.float64 and got.shape == (5, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)


def test_batched_features_volumes_of_different_shapes_one_at_a_time():
    volumes = [np.full((1, 2, 3, 4), 1.0, np.float32), np.full((1, 4, 4, 4), 3.0, np.float32)]
    got = batched_features(lambda x: x.flatten(1).mean(1, keepdim=True), volumes, batch_size=1, device="cpu")
    np.testing.assert_allclose(got, [[1.0], [3.0]], rtol=0)
    with pytest.raises(RuntimeError):  # two shapes cannot form one batch
        batched_features(lambda x: x.flatten(1).mean(1, keepdim=True), volumes, batch_size=2, device="cpu")


def test_segnet_features_of_2d_slices_batched_and_padded():
    """Features of a batch of 2-D slices equal those of each slice alone, edge-padded by hand
    (10 is not divisible by the network's factor 4); the network's mode is restored."""
    from medlsdm.models.segnet import SegNet

    torch.manual_seed(0)
    model = SegNet(spatial_dims=2, num_classes=3, channels=(4, 8, 8), norm_num_groups=4).train()
    slices = np.random.default_rng(1).uniform(-1, 1, (5, 1, 12, 10)).astype(np.float32)
    got = segnet_features(model, slices, batch_size=3)
    assert model.training and got.shape == (5, 8)
    with torch.no_grad():
        model.eval()
        ref = np.concatenate(
            [
                model.features(torch.nn.functional.pad(torch.tensor(s)[None], (0, 2, 0, 0), mode="replicate"))
                .double()
                .numpy()
                for s in slices
            ]
        )
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    assert segnet_feature_distance(model, slices, slices, batch_size=2) == pytest.approx(0.0, abs=1e-9)
    assert segnet_feature_distance(model, slices, np.clip(slices * 0.2 + 0.5, -1, 1), batch_size=2) > 0


def test_inception_features_see_rgb_in_unit_range():
    slices = np.random.default_rng(2).uniform(-1.5, 1.5, (7, 1, 6, 5)).astype(np.float32)  # beyond [-1, 1]: clamped
    got = inception_features(_ChannelStats(), slices, batch_size=3)
    unit = (np.clip(slices[:, 0], -1, 1) + 1) / 2
    for c in range(3):  # the grey slice repeated to three channels
        np.testing.assert_allclose(got[:, c], unit.mean((1, 2)), rtol=1e-6)
        np.testing.assert_allclose(got[:, 3 + c], unit.min((1, 2)), rtol=0, atol=1e-7)
        np.testing.assert_allclose(got[:, 6 + c], unit.max((1, 2)), rtol=0, atol=1e-7)
    volume = slices[:, 0][None]  # the slices as the axial slices of one volume
    np.testing.assert_allclose(inception_slice_features(_ChannelStats(), [volume], "axial"), got, rtol=1e-6)
    assert not np.allclose(inception_slice_features(_ChannelStats(), [volume], "coronal")[:, 0], got[:6, 0])
