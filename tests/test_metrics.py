"""Tests of medlsdm.metrics against scikit-image and closed-form cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medlsdm.errors import DataError
from medlsdm.evaluation.reconstruction import evaluate_reconstruction, naive_baseline
from medlsdm.metrics.image import gaussian_kernel, psnr, ssim
from medlsdm.models import VQGAN
from medlsdm.training.datasets import ArrayStore

pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(shape, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, shape)
    y = np.clip(x + rng.normal(0, noise, shape), -1, 1)
    return x, y


def test_psnr_closed_form_and_skimage():
    x = np.zeros((4, 5, 6))
    y = np.full((4, 5, 6), 0.1)
    assert psnr(x, y, data_range=2.0) == pytest.approx(10 * math.log10(4 / 0.01))
    assert psnr(x, x, data_range=2.0) == math.inf
    a, b = _pair((8, 12, 10))
    assert psnr(a, b, data_range=2.0) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=2.0))
    assert psnr(torch.tensor(a), torch.tensor(b), data_range=2.0) == pytest.approx(psnr(a, b, data_range=2.0))


def test_masked_psnr_ssim_rmse_against_skimage_and_by_hand():
    a, b = _pair((14, 16, 15), seed=3)
    mask = np.zeros(a.shape, bool)
    mask[3:10, 4:12, 2:14] = True
    b[~mask] = a[~mask] + 0.9  # a large error outside the mask must not count
    mse = float(((a - b)[mask] ** 2).mean())
    assert psnr(a, b, data_range=2.0, mask=mask) == pytest.approx(10 * math.log10(4 / mse))
    assert psnr(a, b, data_range=2.0) < psnr(a, b, data_range=2.0, mask=mask) - 3  # negative control
    from medlsdm.metrics.image import rmse

    assert rmse(a, b, mask=mask) == pytest.approx(math.sqrt(mse))
    # SSIM in a mask = skimage's full SSIM map averaged over the mask's voxels where the window fits
    _, smap = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=2, full=True)
    inner = tuple(slice(5, n - 5) for n in a.shape)
    assert ssim(a, b, data_range=2.0, mask=mask) == pytest.approx(float(smap[inner][mask[inner]].mean()), abs=1e-10)
    assert ssim(a, b, data_range=2.0, mask=np.ones(a.shape, bool)) == pytest.approx(ssim(a, b, data_range=2.0))
    with pytest.raises(DataError, match="empty"):
        psnr(a, b, data_range=2.0, mask=np.zeros(a.shape, bool))
    with pytest.raises(DataError, match="does not match"):
        ssim(a, b, data_range=2.0, mask=mask[:5])


def test_gaussian_window_is_normalised():
    k = gaussian_kernel(1.5)
    assert k.numel() == 11 and float(k.sum()) == pytest.approx(1.0)
    window3d = k[:, None, None] * k[None, :, None] * k[None, None, :]
    assert float(window3d.sum()) == pytest.approx(1.0)  # (the reference code's summed to 11)


@pytest.mark.parametrize("shape,noise", [((12, 16, 14), 0.3), ((11, 13, 20), 0.05), ((32, 40), 0.5)])
def test_ssim_matches_skimage(shape, noise):
    x, y = _pair(shape, seed=len(shape), noise=noise)
    ref = structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2)
    assert ssim(x, y, data_range=2.0) == pytest.approx(ref, abs=1e-10)
    assert ssim(x, x, data_range=2.0) == pytest.approx(1.0)
    # float32 torch input with a channel axis gives the same number
    got = ssim(torch.tensor(x, dtype=torch.float32)[None], torch.tensor(y, dtype=torch.float32)[None], data_range=2.0)
    assert got == pytest.approx(ref, abs=1e-5)


def test_ssim_data_range_matters_and_errors():
    x, y = _pair((12, 12, 12))
    assert ssim(x, y, data_range=2.0) != pytest.approx(ssim(x, y, data_range=255.0))
    with pytest.raises(DataError, match=">= 11"):
        ssim(np.zeros((8, 32, 32)), np.zeros((8, 32, 32)), data_range=2.0)
    with pytest.raises(DataError, match="shapes differ"):
        ssim(np.zeros((12, 12)), np.zeros((12, 13)), data_range=2.0)


def test_naive_baseline():
    x = torch.full((1, 1, 8, 8, 8), 0.25)
    assert torch.allclose(naive_baseline(x), x)
    rng = torch.Generator().manual_seed(0)
    v = torch.rand(2, 1, 8, 12, 16, generator=rng)
    b = naive_baseline(v)
    assert b.shape == v.shape
    assert torch.allclose(torch.nn.functional.avg_pool3d(b, 4).mean(), v.mean(), atol=1e-2)
    assert naive_baseline(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    with pytest.raises(DataError, match="divisible by 4"):
        naive_baseline(torch.zeros(1, 1, 8, 8, 10))


def test_evaluate_reconstruction(tmp_path):
    rng = np.random.default_rng(0)
    store = ArrayStore()
    for i in range(2):
        label = rng.integers(0, 3, (12, 16, 14))  # 14: not divisible by 4 → padded and cropped back
        image = (label - 1.0 + rng.normal(0, 0.05, label.shape)).clip(-1, 1).astype(np.float32)[None]
        store[f"c{i}"] = (image, label, np.eye(4))
    torch.manual_seed(0)
    model = VQGAN(channels=(8, 8, 8), num_embeddings=8, embedding_dim=4, norm_num_groups=4,
                  decoder_type="spade", num_classes=3)
    codebook = model.quantizer.codebook.clone()
    res = evaluate_reconstruction(model, store, ["c0", "c1"])
    assert torch.equal(model.quantizer.codebook, codebook) and model.training  # untouched
    assert set(res) >= {"psnr", "ssim", "baseline_psnr", "baseline_ssim", "psnr_gain", "usage", "perplexity"}
    assert res["n_cases"] == 2 and set(res["per_case"]) == {"c0", "c1"}
    image = torch.tensor(store["c0"][0])[None]
    padded = torch.nn.functional.pad(image, (0, 2, 0, 0, 0, 0), mode="replicate")
    expected = psnr(naive_baseline(padded)[..., :14], image, data_range=2.0)
    assert res["per_case"]["c0"]["baseline_psnr"] == pytest.approx(expected)
    assert res["psnr_gain"] == pytest.approx(res["psnr"] - res["baseline_psnr"])
    assert 0 < res["usage"] <= 1 and 1 <= res["perplexity"] <= 8
    with pytest.raises(DataError):
        evaluate_reconstruction(model, store, [])
