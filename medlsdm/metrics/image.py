"""Image-quality metrics (PSNR, SSIM), MS-SSIM, RMSE, NMSE, their paired means and class intensities.

Both metrics take an explicit ``data_range`` (max − min of the intensity scale): images in
this package are in [-1, 1], so ``data_range=2``. (The reference Med-LSDM code used a max
of 1 for PSNR — 6 dB off — and ``data_range=255`` with a 3-D window summing to 11 for
SSIM.) SSIM here matches ``skimage.metrics.structural_similarity(x, y, data_range=…,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
"""

from __future__ import annotations

import logging
import math
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError

log = logging.getLogger(__name__)


ArrayLike = np.ndarray | torch.Tensor


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x.detach())
    return t.to("cpu", torch.float64)


def _check_pair(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.shape != y.shape:
        raise DataError(f"{name}: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")


def _mask(mask: ArrayLike | None, like: torch.Tensor, name: str) -> torch.Tensor | None:
    """A boolean mask of ``like``'s shape (size-1 axes may differ), or ``None``."""
    if mask is None:
        return None
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask.detach()).to("cpu").bool()
    if m.numel() != like.numel():
        raise DataError(f"{name}: mask of shape {tuple(m.shape)} does not match the images {tuple(like.shape)}")
    m = m.reshape(like.shape)
    if not m.any():
        raise DataError(f"{name}: the mask is empty")
    return m


def psnr(x: ArrayLike, y: ArrayLike, *, data_range: float, mask: ArrayLike | None = None) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range² / MSE)`` in dB (``inf`` if equal).

    Args:
        x, y: arrays of the same shape (numpy or torch).
        data_range: intensity range, e.g. 2 for images in [-1, 1].
        mask: the MSE is taken over these voxels only (e.g. the body, ``label > 0``), so that
            a large, easy background does not inflate the number.
    """
    xt, yt = _as_tensor(x), _as_tensor(y)
    _check_pair(xt, yt, "psnr")
    m = _mask(mask, xt, "psnr")
    mse = float(((xt - yt) ** 2).mean() if m is None else ((xt - yt)[m] ** 2).mean())
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def gaussian_kernel(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """Normalised 1-D Gaussian (sums to 1) of radius ``int(truncate·sigma + 0.5)``."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _filter_valid(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter over every axis of ``x``, keeping only 'valid' positions."""
    out = x
    for axis in range(x.ndim):
        moved = out.movedim(axis, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        filt = F.conv1d(flat, kernel.view(1, 1, -1))
        out = filt.reshape(*shape[:-1], filt.shape[-1]).movedim(-1, axis)
    return out


def ssim(x: ArrayLike, y: ArrayLike, *, data_range: float, sigma: float = 1.5, mask: ArrayLike | None = None) -> float:
    """Mean structural similarity of two 2-D or 3-D images with a Gaussian window.

    The window is a normalised Gaussian (``sigma``, truncated at 3.5σ: 11 taps for
    σ = 1.5) applied separably along every axis; local statistics use population
    covariances; ``C1 = (0.01·data_range)²`` and ``C2 = (0.03·data_range)²``; the SSIM map
    is averaged over the positions where the window fits entirely inside the image —
    exactly as ``skimage.metrics.structural_similarity`` with ``gaussian_weights=True,
    use_sample_covariance=False``.

    Args:
        x, y: arrays of the same shape; size-1 axes (batch/channel) are dropped, every
            remaining axis is spatial and must be at least the window size.
        data_range: intensity range, e.g. 2 for images in [-1, 1].
        sigma: Gaussian window standard deviation.
        mask: average the SSIM map only over window centres inside this mask (same shape
            as the images; e.g. the body).
    """
    xt, yt = _as_tensor(x), _as_tensor(y)
    _check_pair(xt, yt, "ssim")
    m = _mask(mask, xt, "ssim")
    xt, yt = xt.squeeze(), yt.squeeze()
    kernel = gaussian_kernel(sigma)
    win = kernel.numel()
    if xt.ndim not in (2, 3) or min(xt.shape) < win:
        raise DataError(
            f"ssim: needs a 2-D or 3-D image with every side >= {win} (window of sigma={sigma}), "
            f"got shape {tuple(xt.shape)}"
        )
    if m is not None:
        radius = win // 2
        m = m.reshape(xt.shape)[tuple(slice(radius, n - radius) for n in xt.shape)]
        if not m.any():
            raise DataError("ssim: no voxel of the mask lies where the window fits inside the image")
    return _ssim_and_cs(xt, yt, kernel, data_range, m)[0]


def rmse(x: ArrayLike, y: ArrayLike, *, mask: ArrayLike | None = None) -> float:
    """Root mean squared error ``sqrt(mean((x − y)²))`` (same units as the images), over the
    voxels of ``mask`` when given."""
    xt, yt = _as_tensor(x), _as_tensor(y)
    _check_pair(xt, yt, "rmse")
    m = _mask(mask, xt, "rmse")
    d = xt - yt if m is None else (xt - yt)[m]
    return float((d**2).mean().sqrt())


def nmse(x: ArrayLike, y: ArrayLike) -> float:
    """Normalised mean squared error ``‖x − y‖² / ‖y‖²`` with ``y`` the reference (real) image.

    Not symmetric: the error of ``x`` relative to the energy of the reference ``y``. On
    [-1, 1] images the "energy" includes the -1 of air, so compare NMSE values only between
    images with the same intensity convention.
    """
    xt, yt = _as_tensor(x), _as_tensor(y)
    _check_pair(xt, yt, "nmse")
    energy = float((yt**2).sum())
    if energy == 0:
        raise DataError("nmse: the reference image is all zeros (‖y‖ = 0)")
    return float(((xt - yt) ** 2).sum()) / energy


#: The metrics of :func:`paired_metrics`.
PAIRED_METRICS = ("ssim", "psnr", "rmse", "nmse")


def paired_metrics(
    real: Sequence[ArrayLike],
    synthetic: Sequence[ArrayLike],
    *,
    data_range: float = 2.0,
    metrics: Sequence[str] = PAIRED_METRICS,
    masks: Sequence[ArrayLike] | None = None,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Image metrics of each pair ``synthetic[i]`` against ``real[i]`` (2-D slices or 3-D
    volumes) and their means over the pairs.

    ``metrics``: any of :data:`PAIRED_METRICS` — :func:`ssim` and :func:`psnr` with
    ``data_range``, :func:`rmse`, :func:`nmse` (``real`` is the reference). ``masks``: one
    per pair; SSIM, PSNR and RMSE are then taken inside it (NMSE stays whole-image).

    Returns:
        ``({metric: mean}, [{metric: value} per pair])``.
    """
    fns = {
        "ssim": lambda s, r, m: ssim(s, r, data_range=data_range, mask=m),
        "psnr": lambda s, r, m: psnr(s, r, data_range=data_range, mask=m),
        "rmse": lambda s, r, m: rmse(s, r, mask=m),
        "nmse": lambda s, r, m: nmse(s, r),
    }
    unknown = sorted(set(metrics) - set(fns))
    if unknown:
        raise DataError(f"paired_metrics: unknown metric(s) {unknown}; known: {list(PAIRED_METRICS)}")
    if len(real) != len(synthetic) or len(real) == 0:
        raise DataError(f"paired_metrics: needs pairs, got {len(real)} real and {len(synthetic)} synthetic images")
    if masks is not None and len(masks) != len(real):
        raise DataError(f"paired_metrics: {len(masks)} masks for {len(real)} pairs")
    masks = masks if masks is not None else [None] * len(real)
    per_pair = [{k: fns[k](s, r, m) for k in metrics} for r, s, m in zip(real, synthetic, masks)]
    return {k: float(np.mean([p[k] for p in per_pair])) for k in metrics}, per_pair


#: Scale weights of Wang, Simoncelli & Bovik (2003), finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _ssim_and_cs(
    x: torch.Tensor, y: torch.Tensor, kernel: torch.Tensor, data_range: float, mask: torch.Tensor | None = None
) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term ``(2σxy + C2) / (σx² + σy² + C2)`` over the
    positions where the window fits (same statistics as :func:`ssim`), or over those of
    them in ``mask`` (given at the size of the valid region)."""
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mx, my = _filter_valid(x, kernel), _filter_valid(y, kernel)
    vx = _filter_valid(x * x, kernel) - mx * mx
    vy = _filter_valid(y * y, kernel) - my * my
    cxy = _filter_valid(x * y, kernel) - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    s = lum * cs
    if mask is not None:
        s, cs = s[mask], cs[mask]
    return float(s.mean()), float(cs.mean())


def _halve(x: torch.Tensor) -> torch.Tensor:
    """2× average pooling along every axis (a trailing odd row is dropped)."""
    pool = F.avg_pool2d if x.ndim == 2 else F.avg_pool3d
    return pool(x[None, None], 2)[0, 0]


def ms_ssim(
    x: ArrayLike,
    y: ArrayLike,
    *,
    data_range: float,
    sigma: float = 1.5,
    scales: int | None = None,
    weights: Iterable[float] | None = None,
    return_terms: bool = False,
):
    """Multi-scale SSIM (Wang et al. 2003) of two 2-D or 3-D images.

    At scales ``j = 1 … M`` (the image halved by 2× average pooling between scales) it
    measures the mean contrast-structure term ``cs_j``; at the coarsest scale the full mean
    SSIM. ``MS-SSIM = Π_{j<M} max(cs_j, 0)^{w_j} · max(SSIM_M, 0)^{w_M}``. Negative terms
    are clamped to 0 so that fractional powers stay real. Statistics are those of
    :func:`ssim`: a normalised Gaussian window (sum 1, ``sigma``, 11 taps for σ = 1.5,
    separable along every axis), population covariances, ``C1 = (0.01·data_range)²``,
    ``C2 = (0.03·data_range)²``, positions where the window fits; with one scale MS-SSIM is
    exactly :func:`ssim`.

    Small volumes cannot have the five scales of the paper (a 32-slice block halves to 8
    slices after two scales, less than the 11-voxel window), so by default ``scales`` is the
    largest number ``≤ 5`` whose coarsest image still holds a window, and the first
    ``scales`` paper weights are renormalised to sum to 1. Report the number of scales with
    the value (``return_terms=True``).

    Args:
        x, y: arrays of the same shape; size-1 axes are dropped, 2 or 3 axes must remain.
        data_range: intensity range, e.g. 2 for images in [-1, 1].
        sigma: Gaussian window standard deviation.
        scales: number of scales (default: as many as fit, at most 5).
        weights: one weight per scale (default: the paper's, renormalised).
        return_terms: also return ``{"scales", "weights", "cs", "ssim"}`` (per-scale terms).
    """
    xt, yt = _as_tensor(x), _as_tensor(y)
    _check_pair(xt, yt, "ms_ssim")
    xt, yt = xt.squeeze(), yt.squeeze()
    kernel = gaussian_kernel(sigma)
    win = kernel.numel()
    if xt.ndim not in (2, 3):
        raise DataError(f"ms_ssim: needs a 2-D or 3-D image, got shape {tuple(xt.shape)}")
    fit = 0
    while fit < len(MS_SSIM_WEIGHTS) and min(xt.shape) // 2**fit >= win:
        fit += 1
    if fit == 0:
        raise DataError(f"ms_ssim: every side must be >= {win} (window of sigma={sigma}), got shape {tuple(xt.shape)}")
    if weights is not None:
        w = [float(v) for v in weights]
        scales = len(w) if scales is None else scales
        if len(w) != scales:
            raise DataError(f"ms_ssim: {len(w)} weights for {scales} scales")
    else:
        scales = fit if scales is None else int(scales)
        w = list(MS_SSIM_WEIGHTS[:scales])
        w = [v / sum(w) for v in w]
    if not 1 <= scales <= fit:
        raise DataError(
            f"ms_ssim: {scales} scales do not fit an image of shape {tuple(xt.shape)} "
            f"(at most {fit} with a {win}-voxel window)"
        )
    cs_terms, ssim_terms = [], []
    for j in range(scales):
        s, cs = _ssim_and_cs(xt, yt, kernel, data_range)
        cs_terms.append(cs)
        ssim_terms.append(s)
        if j < scales - 1:
            xt, yt = _halve(xt), _halve(yt)
    value = math.prod(max(c, 0.0) ** wj for c, wj in zip(cs_terms[:-1], w[:-1])) * max(ssim_terms[-1], 0.0) ** w[-1]
    if return_terms:
        return value, {"scales": scales, "weights": w, "cs": cs_terms, "ssim": ssim_terms}
    return value


def class_intensity_error(
    synthetic: Sequence[np.ndarray],
    real: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    class_names: Sequence[str],
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> dict[str, float]:
    """Per class: |mean synthetic − mean real| inside the class, over the real intensity range.

    Means are pooled over all volumes (voxels of a class in every label map); the range is
    the ``percentiles`` spread of all real voxels (robust to single outliers). Background
    (index 0) is included — it is part of the volume too. A class absent from every label
    map is left out.

    Args:
        synthetic / real: volumes made from the same ``labels`` (same shapes).
        labels: class-index label maps.
        class_names: name of each class index.
    """
    if not (len(synthetic) == len(real) == len(labels)):
        raise DataError("synthetic, real and labels must have the same number of volumes")
    real_all = np.concatenate([np.ravel(r) for r in real])
    lo, hi = np.percentile(real_all, percentiles)
    span = float(hi - lo)
    if span <= 0:
        raise DataError("the real volumes have no intensity range")
    out = {}
    for k, name in enumerate(class_names):
        masks = [np.asarray(lab) == k for lab in labels]
        count = sum(int(m.sum()) for m in masks)
        if count == 0:
            continue
        mean_syn = sum(float(np.asarray(s).reshape(m.shape)[m].sum()) for s, m in zip(synthetic, masks)) / count
        mean_real = sum(float(np.asarray(r).reshape(m.shape)[m].sum()) for r, m in zip(real, masks)) / count
        out[name] = abs(mean_syn - mean_real) / span
    return out


def as_volume(v: ArrayLike) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v.detach()).float().cpu()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3:
        raise DataError(f"expected a (1, D, H, W) or (D, H, W) volume, got shape {tuple(t.shape)}")
    return t
