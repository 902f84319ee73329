"""Image-quality metrics (PSNR, SSIM) and the VQ-GAN reconstruction evaluation.

Both metrics take an explicit ``data_range`` (max − min of the intensity scale): images in
this package are in [-1, 1], so ``data_range=2``. (The reference Med-LSDM code used a max
of 1 for PSNR — 6 dB off — and ``data_range=255`` with a 3-D window summing to 11 for
SSIM.) SSIM here matches ``skimage.metrics.structural_similarity(x, y, data_range=…,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import DataError

log = logging.getLogger(__name__)

ArrayLike = np.ndarray | torch.Tensor


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x.detach())
    return t.to("cpu", torch.float64)


def _check_pair(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.shape != y.shape:
        raise DataError(f"{name}: shapes differ, {tuple(x.shape)} vs {tuple(y.shape)}")


def psnr(x: ArrayLike, y: ArrayLike, *, data_range: float) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range² / MSE)`` in dB (``inf`` if equal).

    Args:
        x, y: arrays of the same shape (numpy or torch).
        data_range: intensity range, e.g. 2 for images in [-1, 1].
    """
    xt, yt = _as_tensor(x), _as_tensor(y)
    _check_pair(xt, yt, "psnr")
    mse = float(((xt - yt) ** 2).mean())
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


def ssim(x: ArrayLike, y: ArrayLike, *, data_range: float, sigma: float = 1.5) -> float:
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
    """
    xt, yt = _as_tensor(x), _as_tensor(y)
    _check_pair(xt, yt, "ssim")
    xt, yt = xt.squeeze(), yt.squeeze()
    kernel = gaussian_kernel(sigma)
    win = kernel.numel()
    if xt.ndim not in (2, 3) or min(xt.shape) < win:
        raise DataError(
            f"ssim: needs a 2-D or 3-D image with every side >= {win} (window of sigma={sigma}), "
            f"got shape {tuple(xt.shape)}"
        )
    return _ssim_and_cs(xt, yt, kernel, data_range)[0]


def naive_baseline(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """The compression baseline: average-pool ``factor``× per axis, then (bi/tri)linear upsample.

    Keeps as many numbers as the VQ-GAN latent of a 4× model has positions, so a learned
    autoencoder must beat it to be worth its training.

    Args:
        x: ``(B, C, *spatial)`` with 2 or 3 spatial axes divisible by ``factor``.
        factor: pooling factor per axis.
    """
    dims = x.ndim - 2
    if dims not in (2, 3):
        raise DataError(f"naive_baseline: expected (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)}")
    if any(s % factor for s in x.shape[2:]):
        raise DataError(f"naive_baseline: spatial size {tuple(x.shape[2:])} is not divisible by {factor}")
    pool = F.avg_pool3d if dims == 3 else F.avg_pool2d
    mode = "trilinear" if dims == 3 else "bilinear"
    small = pool(x.float(), factor)
    return F.interpolate(small, size=x.shape[2:], mode=mode, align_corners=False)


def _pad_to_multiple(x: torch.Tensor, factor: int) -> tuple[torch.Tensor, list[slice]]:
    pads = []
    crop = [slice(None), slice(None)]
    for s in reversed(x.shape[2:]):
        extra = (-s) % factor
        pads += [0, extra]
    for s in x.shape[2:]:
        crop.append(slice(0, s))
    if any(pads):
        x = F.pad(x, pads, mode="replicate")
    return x, crop


@torch.no_grad()
def evaluate_reconstruction(model, store, case_ids: Iterable[str], data_range: float = 2.0,
                            device: str | torch.device | None = None, progress: bool = True) -> dict[str, Any]:
    """Reconstruct whole cases with the VQ-GAN and compare with the naive baseline.

    Volumes whose sizes are not divisible by the model's downsampling factor are padded
    (edge values) for the model and cropped back before scoring.

    Args:
        model: a :class:`~medlsdm.models.VQGAN` (used in eval mode; the codebook is not updated).
        store: mapping ``case_id -> (image (1, D, H, W) float32 in [-1, 1], label (D, H, W) int64, affine)``,
            e.g. :class:`medlsdm.data.store.CaseStore`.
        case_ids: the cases to score (held-out ones).
        data_range: intensity range of the images.
        device: where to run the model (default: the model's device).
        progress: show a progress bar.

    Returns:
        ``{"psnr", "ssim", "baseline_psnr", "baseline_ssim", "psnr_gain", "usage",
        "perplexity", "n_cases", "per_case": {case_id: {...}}}`` (means over cases; usage
        and perplexity over all the cases' latent codes). SSIM is NaN (with a warning) for
        cases with a side shorter than its 11-voxel window.
    """
    from .models.vqgan import VectorQuantizerEMA

    case_ids = list(case_ids)
    if not case_ids:
        raise DataError("evaluate_reconstruction: no case ids given")
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    factor = model.downsample_factor
    per_case: dict[str, dict[str, float]] = {}
    all_indices = []
    try:
        for cid in tqdm(case_ids, desc="reconstruct", disable=not progress, leave=False):
            image, label, _ = store[cid]
            x = torch.as_tensor(np.asarray(image), dtype=torch.float32)[None].to(device)
            lab = torch.as_tensor(np.asarray(label), dtype=torch.long)[None].to(device)
            xp, crop = _pad_to_multiple(x, factor)
            labp, _ = _pad_to_multiple(lab[:, None].float(), factor)
            labels = labp[:, 0].long() if model.config.decoder_type == "spade" else None
            z = model.encode(xp)
            zq, indices, _ = model.quantize(z, update=False)
            recon = model.decode(zq, labels, force_not_quantize=True)[tuple(crop)].clamp(-1, 1)
            base = naive_baseline(xp, factor)[tuple(crop)]
            all_indices.append(indices.reshape(-1).cpu())
            xn, rn, bn = x[0, 0].cpu(), recon[0, 0].cpu(), base[0, 0].cpu()
            small = min(xn.shape) < gaussian_kernel().numel()
            if small and not per_case:
                log.warning("cases of shape %s are smaller than the SSIM window: ssim is NaN", tuple(xn.shape))
            per_case[cid] = {
                "psnr": psnr(rn, xn, data_range=data_range),
                "ssim": math.nan if small else ssim(rn, xn, data_range=data_range),
                "baseline_psnr": psnr(bn, xn, data_range=data_range),
                "baseline_ssim": math.nan if small else ssim(bn, xn, data_range=data_range),
            }
    finally:
        model.train(was_training)
    stats = VectorQuantizerEMA.code_stats(torch.cat(all_indices), model.config.num_embeddings)
    mean = {k: float(np.mean([c[k] for c in per_case.values()])) for k in next(iter(per_case.values()))}
    mean["psnr_gain"] = mean["psnr"] - mean["baseline_psnr"]
    return {**mean, "usage": float(stats["usage"]), "perplexity": float(stats["perplexity"]),
            "n_cases": len(case_ids), "per_case": per_case}


# ======================================================================================
# Segmentation overlap
# ======================================================================================
def dice_per_class(pred: ArrayLike, target: ArrayLike, num_classes: int) -> dict[int, float]:
    """Dice ``2|P∩T| / (|P| + |T|)`` of every foreground class ``1 … num_classes-1``.

    Background (class 0) is excluded (the reference code pooled it in, which inflates the
    score). A class absent from both ``pred`` and ``target`` has no defined Dice and is
    ``NaN``; :func:`mean_dice` leaves such classes out of the mean. A class present in only
    one of them scores 0.

    Args:
        pred, target: integer class maps of the same shape (any number of axes).
        num_classes: number of classes including background.

    Returns:
        ``{class_index: dice}`` for ``class_index`` in ``1 … num_classes-1``.
    """
    p = np.asarray(pred.detach().cpu() if isinstance(pred, torch.Tensor) else pred)
    t = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target)
    if p.shape != t.shape:
        raise DataError(f"dice_per_class: shapes differ, {p.shape} vs {t.shape}")
    for name, a in (("pred", p), ("target", t)):
        if not np.issubdtype(a.dtype, np.integer):
            raise DataError(f"dice_per_class: {name} must hold integer class indices, got {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise DataError(f"dice_per_class: {name} values must lie in [0, {num_classes - 1}], "
                            f"found [{a.min()}, {a.max()}]")
    p, t = p.ravel().astype(np.int64), t.ravel().astype(np.int64)
    n_pred = np.bincount(p, minlength=num_classes)
    n_true = np.bincount(t, minlength=num_classes)
    n_both = np.bincount(p[p == t], minlength=num_classes)
    out = {}
    for c in range(1, num_classes):
        denom = n_pred[c] + n_true[c]
        out[c] = math.nan if denom == 0 else float(2 * n_both[c] / denom)
    return out


def mean_dice(per_class: dict) -> float:
    """Mean of the non-NaN values of a :func:`dice_per_class` result (NaN if all are NaN)."""
    values = [v for v in per_class.values() if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


# ======================================================================================
# Paired image errors: RMSE, NMSE, MS-SSIM
# ======================================================================================
def rmse(x: ArrayLike, y: ArrayLike) -> float:
    """Root mean squared error ``sqrt(mean((x − y)²))`` (same units as the images)."""
    xt, yt = _as_tensor(x), _as_tensor(y)
    _check_pair(xt, yt, "rmse")
    return float(((xt - yt) ** 2).mean().sqrt())


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


#: Scale weights of Wang, Simoncelli & Bovik (2003), finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor, kernel: torch.Tensor, data_range: float) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure term ``(2σxy + C2) / (σx² + σy² + C2)`` over the
    positions where the window fits (same statistics as :func:`ssim`)."""
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mx, my = _filter_valid(x, kernel), _filter_valid(y, kernel)
    vx = _filter_valid(x * x, kernel) - mx * mx
    vy = _filter_valid(y * y, kernel) - my * my
    cxy = _filter_valid(x * y, kernel) - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return float((lum * cs).mean()), float(cs.mean())


def _halve(x: torch.Tensor) -> torch.Tensor:
    """2× average pooling along every axis (a trailing odd row is dropped)."""
    pool = F.avg_pool2d if x.ndim == 2 else F.avg_pool3d
    return pool(x[None, None], 2)[0, 0]


def ms_ssim(x: ArrayLike, y: ArrayLike, *, data_range: float, sigma: float = 1.5,
            scales: int | None = None, weights: Iterable[float] | None = None,
            return_terms: bool = False):
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
        raise DataError(f"ms_ssim: {scales} scales do not fit an image of shape {tuple(xt.shape)} "
                        f"(at most {fit} with a {win}-voxel window)")
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


# ======================================================================================
# Distances between distributions: Fréchet distance, MMD
# ======================================================================================
def _psd_eigvals(vals: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off removed: values below
    ``d · eps · max|λ|`` (zero within float64 precision, possibly negative) are set to 0,
    so that the square root of a singular matrix does not pick up ``sqrt(1e-16)`` noise."""
    tol = len(vals) * np.finfo(np.float64).eps * max(float(np.abs(vals).max(initial=0.0)), 1e-300)
    return np.where(vals > tol, vals, 0.0)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (see :func:`_psd_eigvals`)."""
    vals, vecs = np.linalg.eigh((a + a.T) / 2)
    return (vecs * np.sqrt(_psd_eigvals(vals))) @ vecs.T


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet (2-Wasserstein²) distance between Gaussians N(μ1, Σ1) and N(μ2, Σ2).

    ``d² = ‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1 Σ2)^{1/2}``.

    The trace term is computed without a general matrix square root: ``Σ1 Σ2`` has the same
    eigenvalues as the *symmetric* positive semi-definite matrix ``M = Σ1^{1/2} Σ2 Σ1^{1/2}``,
    so ``tr (Σ1 Σ2)^{1/2} = Σ_i sqrt(λ_i(M))``, with ``Σ1^{1/2}`` and ``λ(M)`` from symmetric
    eigen-decompositions (``numpy.linalg.eigh``; eigenvalues that are zero within float64
    round-off, including tiny negative ones, are set to 0). Unlike ``scipy.linalg.sqrtm`` of
    the non-symmetric ``Σ1 Σ2`` (pytorch-fid's way) this never produces complex parts, needs
    no ``eps·I`` offset, and is exact for singular covariances (fewer samples than feature
    dimensions, the usual case for 2048-d features), which the offset would bias. Float64
    throughout; the result is clamped at 0 (it is a squared distance).

    Args:
        mu1, mu2: mean vectors ``(d,)``.
        sigma1, sigma2: covariance matrices ``(d, d)`` (or scalars for ``d = 1``).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64)), np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise DataError(f"frechet_distance: shapes do not agree: mu {mu1.shape}, {mu2.shape}; "
                        f"sigma {s1.shape}, {s2.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", s1), ("sigma2", s2)):
        if not np.all(np.isfinite(a)):
            raise DataError(f"frechet_distance: {name} has NaN or Inf values")
    root1 = _sqrtm_psd(s1)
    m = root1 @ s2 @ root1
    tr_sqrt = float(np.sqrt(_psd_eigvals(np.linalg.eigvalsh((m + m.T) / 2))).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    return max(value, 0.0)


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(d,)`` and sample covariance ``(d, d)`` (``ddof=1``) of features ``(N, d)``, N ≥ 2."""
    f = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if f.ndim == 1:
        f = f[:, None]
    if f.ndim != 2 or f.shape[0] < 2:
        raise DataError(f"feature_statistics: need an (N, d) array with N >= 2 samples, got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise DataError("feature_statistics: features contain NaN or Inf")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance_from_features(features1: ArrayLike, features2: ArrayLike, *, method: str = "auto") -> float:
    """:func:`frechet_distance` of the Gaussians fitted to two feature sets ``(N1, d)``, ``(N2, d)``.

    Each set gets its *own* mean and sample covariance (``ddof=1``); the reference 2D-FID
    code used the real mean for both sets, which hides any shift of the synthetic
    distribution.

    Two exact ways to the same number (``method``):

    ``"covariance"``
        :func:`frechet_distance` of the ``d × d`` covariances.
    ``"samples"``
        With centred features ``A1``, ``A2`` and ``c = (N1 − 1)(N2 − 1)``, ``Σ1 Σ2`` has the
        same non-zero eigenvalues as ``K Kᵀ / c`` with ``K = A1 A2ᵀ`` (``N1 × N2``), so
        ``tr (Σ1 Σ2)^{1/2} = ‖K‖_* / √c`` (sum of singular values) and
        ``tr Σi = ‖Ai‖_F² / (Ni − 1)``. Much faster, and free of any matrix square root,
        when there are fewer samples than feature dimensions (the usual case for 2048-d
        Inception features of a few hundred slices).
    ``"auto"``
        ``"samples"`` when ``N1 · N2 ≤ d²``, else ``"covariance"``.
    """
    if method not in ("auto", "covariance", "samples"):
        raise DataError(f"frechet_distance_from_features: unknown method {method!r}")
    f1 = np.asarray(features1.detach().cpu() if isinstance(features1, torch.Tensor) else features1, dtype=np.float64)
    f2 = np.asarray(features2.detach().cpu() if isinstance(features2, torch.Tensor) else features2, dtype=np.float64)
    f1, f2 = (f[:, None] if f.ndim == 1 else f for f in (f1, f2))
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise DataError(f"frechet_distance_from_features: need (N1, d) and (N2, d) features, "
                        f"got {f1.shape} and {f2.shape}")
    n1, n2, d = f1.shape[0], f2.shape[0], f1.shape[1]
    if min(n1, n2) < 2:
        raise DataError(f"frechet_distance_from_features: need N >= 2 samples per set, got {n1} and {n2}")
    if not (np.all(np.isfinite(f1)) and np.all(np.isfinite(f2))):
        raise DataError("frechet_distance_from_features: features contain NaN or Inf")
    if method == "auto":
        method = "samples" if n1 * n2 <= d * d else "covariance"
    if method == "covariance":
        mu1, s1 = feature_statistics(f1)
        mu2, s2 = feature_statistics(f2)
        return frechet_distance(mu1, s1, mu2, s2)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a1, a2 = f1 - mu1, f2 - mu2
    c1, c2 = n1 - 1, n2 - 1
    nuclear = float(np.linalg.svd(a1 @ a2.T, compute_uv=False).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + (a1 * a1).sum() / c1 + (a2 * a2).sum() / c2 - 2 * nuclear / math.sqrt(c1 * c2))
    return max(value, 0.0)


def _as_samples(x: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a.reshape(a.shape[0], -1)
    if a.shape[0] < 2:
        raise DataError(f"mmd: {name} needs at least 2 samples, got {a.shape[0]}")
    return a


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.clip(d, 0, None)


def median_heuristic(x: ArrayLike, y: ArrayLike) -> float:
    """Median of the pairwise Euclidean distances between distinct samples of ``x ∪ y``."""
    z = np.concatenate([_as_samples(x, "x"), _as_samples(y, "y")])
    d = _sq_dists(z, z)[np.triu_indices(len(z), k=1)]
    med = float(np.sqrt(np.median(d)))
    if med == 0:
        raise DataError("median_heuristic: the median pairwise distance is 0; give a bandwidth")
    return med


def mmd(x: ArrayLike, y: ArrayLike, *, bandwidth: float | None = None) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy with a Gaussian RBF kernel.

    ``k(a, b) = exp(−‖a − b‖² / (2 σ²))`` and
    ``MMD²_u = mean_{i≠j} k(x_i, x_j) + mean_{i≠j} k(y_i, y_j) − 2 mean_{i,j} k(x_i, y_j)``
    (Gretton et al. 2012, eq. 3). Being unbiased it can be slightly negative when both
    samples come from the same distribution.

    Args:
        x, y: samples ``(n, …)`` and ``(m, …)`` (rows are flattened); ``n, m ≥ 2``.
        bandwidth: kernel width σ; ``None``: :func:`median_heuristic` of the pooled samples.
    """
    a, b = _as_samples(x, "x"), _as_samples(y, "y")
    if a.shape[1] != b.shape[1]:
        raise DataError(f"mmd: sample dimensions differ, {a.shape[1]} vs {b.shape[1]}")
    sigma = median_heuristic(a, b) if bandwidth is None else float(bandwidth)
    if not sigma > 0:
        raise DataError(f"mmd: bandwidth must be > 0, got {bandwidth}")
    n, m = len(a), len(b)
    kxx = np.exp(-_sq_dists(a, a) / (2 * sigma**2))
    kyy = np.exp(-_sq_dists(b, b) / (2 * sigma**2))
    kxy = np.exp(-_sq_dists(a, b) / (2 * sigma**2))
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
                 + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())


# ======================================================================================
# Feature-based metrics: FID on slices, 3D-FID, LPIPS, segmentation-feature distance
# ======================================================================================
#: Slice orientations of a ``(D, H, W)`` = (z, y, x) volume in canonical RAS orientation
#: (:mod:`medlsdm.data.io`): the array axis that is held fixed.
SLICE_AXES = {"axial": 0, "coronal": 1, "sagittal": 2}

#: What each feature metric needs in the ``weights`` dict of :func:`available_feature_metrics`.
FEATURE_METRIC_WEIGHTS = {
    "fid_2d": ("inception",),
    "fid_3d": ("medicalnet",),
    "lpips": ("vgg16", "lpips"),
    "segnet_fd": (),
}


def available_feature_metrics(weights: dict | None) -> dict[str, str]:
    """Which feature metrics can run with the given local weight files.

    Args:
        weights: ``{"inception": pt_inception-2015-12-05-*.pth, "medicalnet":
            resnet_10_23dataset.pth, "vgg16": vgg16 features state_dict, "lpips": lpips
            v0.1 vgg.pth}``; missing keys or ``None`` values mean "not available".

    Returns:
        ``{metric: "available" | "skipped (no weights: …)"}`` for ``fid_2d``, ``fid_3d``,
        ``lpips`` and ``segnet_fd`` (always available: it needs only the trained
        segmentation network).

    Raises:
        DataError: a path is given but the file does not exist (so a typo is not reported
            as a silently skipped metric).
    """
    from pathlib import Path

    weights = dict(weights or {})
    unknown = sorted(set(weights) - {k for need in FEATURE_METRIC_WEIGHTS.values() for k in need})
    if unknown:
        raise DataError(f"available_feature_metrics: unknown weight name(s) {unknown}; "
                        "known: inception, medicalnet, vgg16, lpips")
    for name, path in weights.items():
        if path is not None and not Path(path).is_file():
            raise DataError(f"{path}: {name} weights file not found")
    status = {}
    for metric, needs in FEATURE_METRIC_WEIGHTS.items():
        missing = [k for k in needs if weights.get(k) is None]
        status[metric] = "available" if not missing else f"skipped (no weights: {', '.join(missing)})"
    return status


def _volume(v: ArrayLike) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v.detach()).float().cpu()
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3:
        raise DataError(f"expected a (1, D, H, W) or (D, H, W) volume, got shape {tuple(t.shape)}")
    return t


def volume_slices(volume: ArrayLike, orientation: str, step: int = 1) -> torch.Tensor:
    """2-D slices ``(S, 1, h, w)`` of a volume along ``orientation`` (:data:`SLICE_AXES`),
    every ``step``-th slice."""
    if orientation not in SLICE_AXES:
        raise DataError(f"orientation must be one of {list(SLICE_AXES)}, got {orientation!r}")
    v = _volume(volume).movedim(SLICE_AXES[orientation], 0)
    return v[:: int(step)].unsqueeze(1).contiguous()


@torch.no_grad()
def _batched(fn, x: torch.Tensor, batch_size: int, device) -> np.ndarray:
    out = [fn(x[i:i + batch_size].to(device)).double().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy()


def _slice_set(volumes, orientation: str, step: int) -> torch.Tensor:
    slices = [volume_slices(v, orientation, step) for v in volumes]
    if not slices:
        raise DataError("no volumes given")
    shapes = sorted({tuple(s.shape[2:]) for s in slices})
    if len(shapes) > 1:
        raise DataError(f"{orientation} slices of different shapes {shapes}: give volumes of one shape")
    return torch.cat(slices)


def inception_slice_features(inception, volumes, orientation: str, *, slice_step: int = 1,
                             batch_size: int = 16, device="cpu") -> np.ndarray:
    """Pool3 features ``(S, 2048)`` of the 2-D slices of volumes in [-1, 1]: each slice is
    mapped to [0, 1], repeated to RGB and given to the network (which resizes it)."""
    s = _slice_set(volumes, orientation, slice_step)
    s = ((s.clamp(-1, 1) + 1) / 2).repeat(1, 3, 1, 1)
    return _batched(inception, s, batch_size, device)


def fid_2d(real, fake, inception, *, orientations=("axial", "coronal", "sagittal"), slice_step: int = 1,
           batch_size: int = 16, device="cpu") -> dict[str, float]:
    """FID between the 2-D slices of real and synthetic volumes, per orientation.

    Slices (every ``slice_step``-th) of all volumes of a set form one image set; both sets
    are mapped through :class:`~medlsdm.models.inception.InceptionV3Features` (pytorch-fid's
    weights; every slice is resized to 299×299 as pytorch-fid does, so non-square coronal
    and sagittal slices are stretched) and :func:`frechet_distance_from_features` is taken. FID is biased
    upward for small sets (it falls as the number of slices grows): compare values computed
    with the same numbers of slices only.

    Args:
        real, fake: sequences of ``(1, D, H, W)`` volumes in [-1, 1].
        inception: :func:`medlsdm.models.inception.load_inception` result.
        orientations: any of ``"axial"``, ``"coronal"``, ``"sagittal"``.
        slice_step: use every ``slice_step``-th slice (speed).

    Returns:
        ``{orientation: fid}``.
    """
    out = {}
    for o in orientations:
        fr = inception_slice_features(inception, real, o, slice_step=slice_step, batch_size=batch_size, device=device)
        ff = inception_slice_features(inception, fake, o, slice_step=slice_step, batch_size=batch_size, device=device)
        log.info("fid_2d %s: %d real and %d synthetic slices", o, len(fr), len(ff))
        out[o] = frechet_distance_from_features(fr, ff)
    return out


def _volume_batch(volumes) -> list[torch.Tensor]:
    volumes = [_volume(v)[None, None] for v in volumes]
    if not volumes:
        raise DataError("no volumes given")
    return volumes


@torch.no_grad()
def medicalnet_features(medicalnet, volumes, device="cpu") -> np.ndarray:
    """MedicalNet features ``(N, 512)`` of volumes (one forward pass per volume)."""
    return np.concatenate([medicalnet(v.to(device)).double().cpu().numpy() for v in _volume_batch(volumes)])


def fid_3d(real, fake, medicalnet, device="cpu") -> float:
    """3-D FID: Fréchet distance of MedicalNet ResNet features of whole volumes.

    With fewer volumes than the 512 feature dimensions the covariances are singular (handled
    exactly by :func:`frechet_distance`) and the estimate is strongly biased upward; compare
    only values computed with the same numbers of volumes.
    """
    return frechet_distance_from_features(medicalnet_features(medicalnet, real, device),
                                          medicalnet_features(medicalnet, fake, device))


@torch.no_grad()
def lpips_slices(real, fake, lpips_model, *, orientations=("axial", "coronal", "sagittal"),
                 slice_step: int = 1, batch_size: int = 16, device="cpu") -> dict[str, float]:
    """Mean LPIPS between corresponding slices of paired volumes (``real[i]`` ↔ ``fake[i]``,
    e.g. a real case and the volume synthesised from its label map), per orientation.

    Args:
        real, fake: equally long sequences of same-shaped ``(1, D, H, W)`` volumes in [-1, 1].
        lpips_model: :func:`medlsdm.models.lpips.load_lpips` result.
    """
    real, fake = list(real), list(fake)
    if len(real) != len(fake) or not real:
        raise DataError(f"lpips_slices: needs pairs, got {len(real)} real and {len(fake)} synthetic volumes")
    out = {}
    for o in orientations:
        values = []
        for r, f in zip(real, fake):
            sr, sf = volume_slices(r, o, slice_step), volume_slices(f, o, slice_step)
            if sr.shape != sf.shape:
                raise DataError(f"lpips_slices: paired volumes differ in shape, {tuple(sr.shape)} vs {tuple(sf.shape)}")
            for i in range(0, len(sr), batch_size):
                a, b = sr[i:i + batch_size].to(device), sf[i:i + batch_size].to(device)
                values.append(lpips_model(a, b).double().cpu())
        out[o] = float(torch.cat(values).mean())
    return out


@torch.no_grad()
def segnet_features(model, volumes, device=None) -> np.ndarray:
    """Bottleneck features ``(N, C)`` of :class:`~medlsdm.models.segnet.SegNet` (global
    average pool), volumes edge-padded to a size the network accepts."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        feats = []
        for v in _volume_batch(volumes):
            xp, _ = _pad_to_multiple(v.to(device), model.downsample_factor)
            feats.append(model.features(xp).double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(feats)


def segnet_feature_distance(model, real, fake, device=None) -> float:
    """Fréchet distance between real and synthetic volumes in the feature space of the
    downstream segmentation network (global average pool of its bottleneck).

    Always available (no downloaded weights), but **not comparable to published FIDs**: the
    features come from a small network trained on this run's data, so the number only
    compares models evaluated with the *same* segmentation network and set sizes.
    """
    return frechet_distance_from_features(segnet_features(model, real, device), segnet_features(model, fake, device))


# ======================================================================================
# Memorisation check
# ======================================================================================
def _downsampled(volumes, factor: int, name: str) -> torch.Tensor:
    vols = [_volume(v).double() for v in volumes]
    if not vols:
        raise DataError(f"nearest_neighbour_check: no {name} volumes")
    shapes = {tuple(v.shape) for v in vols}
    if len(shapes) != 1:
        raise DataError(f"nearest_neighbour_check: {name} volumes have different shapes {sorted(shapes)}")
    x = torch.stack(vols)[:, None]
    if factor > 1:
        x = F.avg_pool3d(x, factor)
    return x[:, 0]


def nearest_neighbour_check(synthetic, train, held_out, *, metric: str = "rmse", downsample: int = 2,
                            data_range: float = 2.0) -> dict[str, Any]:
    """Memorisation check: is any synthetic volume closer to a training volume than real
    unseen volumes ever are?

    Every volume is average-pooled ``downsample``× per axis (speed, and robustness to
    voxel noise). For each synthetic volume the distance to its nearest training volume is
    computed, and the same for each real held-out volume; the smallest held-out distance is
    the ``threshold``. A synthetic volume closer to a training volume than that threshold —
    closer than any independent real patient — is flagged as a possible copy.

    Args:
        synthetic, train, held_out: sequences of same-shaped ``(1, D, H, W)`` volumes.
        metric: ``"rmse"`` (root mean squared difference) or ``"1-ssim"`` (1 − :func:`ssim`
            with ``data_range``; needs every side ≥ 11 after downsampling).
        downsample: pooling factor.
        data_range: intensity range (for ``"1-ssim"``).

    Returns:
        ``{"metric", "downsample", "threshold", "held_out_nn_distance", "synthetic_nn_distance",
        "synthetic_nn_index" (index into ``train``), "flagged" (synthetic indices),
        "n_flagged", "n_synthetic"}``.
    """
    if metric not in ("rmse", "1-ssim"):
        raise DataError(f"nearest_neighbour_check: metric must be 'rmse' or '1-ssim', got {metric!r}")
    s = _downsampled(synthetic, downsample, "synthetic")
    t = _downsampled(train, downsample, "train")
    h = _downsampled(held_out, downsample, "held-out")
    if not (s.shape[1:] == t.shape[1:] == h.shape[1:]):
        raise DataError(f"nearest_neighbour_check: shapes differ: synthetic {tuple(s.shape[1:])}, "
                        f"train {tuple(t.shape[1:])}, held-out {tuple(h.shape[1:])}")

    def distances(a: torch.Tensor) -> torch.Tensor:
        if metric == "rmse":
            return torch.cdist(a.flatten(1), t.flatten(1)) / math.sqrt(t[0].numel())
        return torch.tensor([[1.0 - ssim(x, y, data_range=data_range) for y in t] for x in a], dtype=torch.float64)

    ds, dh = distances(s), distances(h)
    s_min, s_idx = ds.min(1)
    h_min = dh.min(1).values
    threshold = float(h_min.min())
    flagged = [int(i) for i in torch.nonzero(s_min < threshold).flatten()]
    return {
        "metric": metric, "downsample": int(downsample), "threshold": threshold,
        "held_out_nn_distance": h_min.tolist(), "synthetic_nn_distance": s_min.tolist(),
        "synthetic_nn_index": s_idx.tolist(), "flagged": flagged, "n_flagged": len(flagged),
        "n_synthetic": int(s.shape[0]),
    }


def class_intensity_error(synthetic: Sequence[np.ndarray], real: Sequence[np.ndarray],
                          labels: Sequence[np.ndarray], class_names: Sequence[str],
                          percentiles: tuple[float, float] = (0.5, 99.5)) -> dict[str, float]:
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
