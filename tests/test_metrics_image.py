"""medlsdm.metrics.image (PSNR, SSIM, MS-SSIM, RMSE, NMSE, paired metrics) against scikit-image, SciPy and closed
forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import scipy.spatial.distance
import torch
from skimage.metrics import mean_squared_error, normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from medlsdm.errors import DataError
from medlsdm.metrics.image import MS_SSIM_WEIGHTS, gaussian_kernel, ms_ssim, nmse, paired_metrics, psnr, rmse, ssim

pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(shape, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, shape)
    y = np.clip(x + rng.normal(0, noise, shape), -1, 1)
    return x, y


def _smooth_pair(shape, seed=0, noise=0.2):
    """A smooth image in [-1, 1] and a noisy copy."""
    rng = np.random.default_rng(seed)
    x = scipy.ndimage.gaussian_filter(rng.uniform(-1, 1, shape), 1.0) * 3
    y = np.clip(x + rng.normal(0, noise, shape), -1, 1)
    return np.clip(x, -1, 1), y


def _reference_terms(x, y, data_range, sigma=1.5):
    """SSIM and cs with scipy's Gaussian filter, valid region (skimage's procedure)."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    f = lambda a: scipy.ndimage.gaussian_filter(a, sigma, truncate=3.5)  # noqa: E731
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    s = (2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs
    crop = tuple(slice(5, -5) for _ in x.shape)
    return s[crop].mean(), cs[crop].mean()


def _halve(a):
    a = a[tuple(slice(0, s - s % 2) for s in a.shape)]
    for axis in range(a.ndim):
        a = a.reshape(*a.shape[:axis], a.shape[axis] // 2, 2, *a.shape[axis + 1 :]).mean(axis + 1)
    return a


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
    _, smap = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2, full=True
    )
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


def test_rmse_nmse_against_skimage():
    x, y = _smooth_pair((6, 10, 12))
    assert rmse(x, y) == pytest.approx(math.sqrt(mean_squared_error(x, y)))
    # NMSE = ‖x − y‖² / ‖y‖² (y the reference) = skimage's euclidean NRMSE(image_true=y)²
    assert nmse(x, y) == pytest.approx(normalized_root_mse(y, x, normalization="euclidean") ** 2)
    assert nmse(y, y) == 0 and rmse(x, x) == 0
    # PSNR and RMSE agree on data in [-1, 1] (data_range 2)
    assert psnr(x, y, data_range=2.0) == pytest.approx(20 * math.log10(2.0 / rmse(x, y)))
    with pytest.raises(DataError, match="all zeros"):
        nmse(x, np.zeros_like(x))


@pytest.mark.parametrize("shape,scales", [((64, 70), 3), ((24, 45, 46), 2)])
def test_ms_ssim_against_scipy_and_skimage(shape, scales):
    x, y = _smooth_pair(shape, seed=len(shape))
    value, terms = ms_ssim(x, y, data_range=2.0, return_terms=True)
    assert terms["scales"] == scales
    w = np.array(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    assert np.allclose(terms["weights"], w)
    a, b, expected = x, y, 1.0
    for j in range(scales):
        s_ref, cs_ref = _reference_terms(a, b, 2.0)
        sk = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2)
        assert terms["ssim"][j] == pytest.approx(sk, abs=1e-9)  # per scale, against skimage
        assert terms["ssim"][j] == pytest.approx(s_ref, abs=1e-9)
        assert terms["cs"][j] == pytest.approx(cs_ref, abs=1e-9)
        expected *= (cs_ref if j < scales - 1 else s_ref) ** w[j]
        a, b = _halve(a), _halve(b)
    assert value == pytest.approx(expected, rel=1e-9)
    assert ms_ssim(x, x, data_range=2.0) == pytest.approx(1.0)
    # one scale is plain SSIM; data_range matters
    assert ms_ssim(x, y, data_range=2.0, scales=1) == pytest.approx(ssim(x, y, data_range=2.0))
    assert ms_ssim(x, y, data_range=255.0) != pytest.approx(value)


def test_ms_ssim_errors():
    with pytest.raises(DataError, match="do not fit"):
        ms_ssim(np.zeros((24, 24)), np.zeros((24, 24)), data_range=2.0, scales=3)
    with pytest.raises(DataError, match=">= 11"):
        ms_ssim(np.zeros((8, 30)), np.zeros((8, 30)), data_range=2.0)


def test_paired_metrics_closed_form_and_skimage():
    """A constant offset c per pair: RMSE = c, PSNR = 20 log10(2 / c), NMSE = c² N / ‖real‖²;
    SSIM against scikit-image; the means are over pairs."""
    real = [_smooth_pair((16, 16), seed=s)[0] for s in range(3)]
    offsets = [0.05, 0.1, 0.2]
    fake = [r + c for r, c in zip(real, offsets)]
    means, per_pair = paired_metrics(real, fake)
    assert len(per_pair) == 3 and set(means) == {"ssim", "psnr", "rmse", "nmse"}
    for r, c, m in zip(real, offsets, per_pair):
        np.testing.assert_allclose(m["rmse"], c, rtol=1e-9)
        np.testing.assert_allclose(m["psnr"], 20 * math.log10(2 / c), rtol=1e-9)
        np.testing.assert_allclose(m["nmse"], c**2 * r.size / np.sum(r**2), rtol=1e-9)
    np.testing.assert_allclose(means["rmse"], np.mean(offsets), rtol=1e-9)
    ref = [
        structural_similarity(f, r, data_range=2.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for r, f in zip(real, fake)
    ]
    np.testing.assert_allclose(means["ssim"], np.mean(ref), rtol=1e-6)
    stacked, _ = paired_metrics(
        np.stack(real)[:, None], np.stack(real)[:, None], metrics=("ssim", "nmse")
    )  # (N, 1, H, W)
    assert stacked == {"ssim": pytest.approx(1.0, abs=1e-12), "nmse": 0.0}
    with pytest.raises(DataError, match="pairs"):
        paired_metrics(real, fake[:2])
    with pytest.raises(DataError, match="unknown metric"):
        paired_metrics(real, fake, metrics=("mae",))
