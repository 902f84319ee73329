"""Texture measures: the noise level in homogeneous regions and the in-plane high-frequency power.

PSNR against the one real volume rewards blur; these two measures do not. Both are taken on
volumes in the package's intensity units (``[-1, 1]``; e.g. 1 unit = 1000 HU under the
default CT window) and compared as *ratios* of a set of volumes over a reference set (a
generator's samples over raw oracle re-renders, reconstructions over originals), beside the
same ratio between two disjoint halves of the reference (what "1.0 within noise" looks like).

- :func:`noise_level`: a robust standard deviation of neighbour differences inside an eroded
  mask, divided by √2: for white noise of sd σ it is σ; smooth shading inside the region
  barely moves it (each axis's differences are centred on their median), nor do the few pairs
  across an edge (values beyond 4 robust sds are left out). For spatially *correlated* noise
  (CT's, the phantom's) it is ``σ·sqrt(1 − ρ₁)`` (ρ₁ the correlation of neighbours), not σ:
  use it for ratios of like with like.
- :func:`hf_power`: the power of each axial slice (the last two axes) above a radial frequency
  ``cutoff`` (in units of the Nyquist frequency; default 0.5, half Nyquist), inside the body
  (a window tapered to 0 at the body's edge), per body voxel.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage, special

from ..errors import DataError

#: Consistency constant of the median absolute deviation for a Gaussian: ``sd = MAD · 1.4826``.
MAD_TO_SD = 1.482602218505602


def _squeeze(volume, mask) -> tuple[np.ndarray, np.ndarray]:
    """The volume without a leading channel axis of 1, and the mask as bool, checked to match."""
    x = np.asarray(volume, np.float64)
    m = np.asarray(mask, bool)
    if x.ndim == m.ndim + 1 and x.shape[0] == 1:
        x = x[0]
    if x.shape != m.shape:
        raise DataError(f"texture: volume of shape {np.shape(volume)} does not match its mask {m.shape}")
    return x, m


def neighbour_differences(volume, mask, *, axes: Sequence[int] | None = None, erosion: int = 2) -> list[np.ndarray]:
    """Differences of neighbouring voxels ``x[i+1] − x[i]`` along each axis, both voxels inside the
    mask eroded by ``erosion`` voxels (6-connected), each axis's differences centred on their median.

    Centring removes a linear shading (a constant difference along the axis); erosion keeps the
    region's border (partial volume with its neighbours) out.

    Args:
        volume: ``(*spatial)`` or ``(1, *spatial)``.
        mask: ``(*spatial)`` bool, the region.
        axes: spatial axes to difference along (default: every axis).
        erosion: voxels eroded from the mask first (0: none). The default 2 reaches past what a
            blur of about a voxel carries across the region's edge: a blurred copy must not
            score higher because its neighbour (air next to subcutaneous fat) leaks in.

    Returns:
        one 1-D array per axis (empty where the eroded region holds no pair).
    """
    x, m = _squeeze(volume, mask)
    if erosion > 0 and m.any():
        m = ndimage.binary_erosion(m, iterations=erosion)
    out = []
    for axis in range(x.ndim) if axes is None else axes:
        first, second = [slice(None)] * x.ndim, [slice(None)] * x.ndim
        first[axis], second[axis] = slice(None, -1), slice(1, None)
        first, second = tuple(first), tuple(second)
        d = (x[second] - x[first])[m[first] & m[second]]
        out.append(d - np.median(d) if d.size else d)
    return out


def robust_sd(values, clip: float = 4.0) -> float:
    """The sd of values, robust to outliers: the sd of those within ``clip`` robust sds of the
    median (robust sd: ``1.4826 · MAD``), divided by the sd that truncation at ``± clip`` leaves
    of a Gaussian (0.9995 for 4). Unlike the MAD itself it does not jump with values rounded to
    a coarse step (whole HU). NaN if empty.

    Args:
        values: any array (flattened).
        clip: the cut in robust sds.
    """
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        return float("nan")
    centre = np.median(v)
    scale = MAD_TO_SD * np.median(np.abs(v - centre))
    kept = v[np.abs(v - centre) <= clip * scale]
    z = special.ndtr(clip) - special.ndtr(-clip)
    truncated = np.sqrt(1 - 2 * clip * np.exp(-(clip**2) / 2) / np.sqrt(2 * np.pi) / z)
    return float(kept.std() / truncated)


def noise_level(volume, mask, *, axes: Sequence[int] | None = None, erosion: int = 2, min_pairs: int = 20) -> float:
    """The noise sd inside a homogeneous region: the robust sd of neighbour differences / √2.

    The differences of all ``axes`` are pooled (:func:`neighbour_differences`, each axis centred
    on its median); :func:`robust_sd` of them over √2 is σ for white noise of sd σ. A linear
    shading does not move it; a smooth one changing by half a noise sd per voxel moves it by
    about 1 %. For correlated noise it is ``σ·sqrt(1 − ρ₁)``, lower than σ, and a blurred copy
    of a volume scores far lower than the volume: what a texture measure must see.

    Args:
        volume: ``(*spatial)`` or ``(1, *spatial)`` in the volume's intensity units.
        mask: ``(*spatial)`` bool, a homogeneous region (one organ).
        axes, erosion: as in :func:`neighbour_differences`.
        min_pairs: fewer voxel pairs than this give NaN (a region too small after erosion).

    Returns:
        the noise sd, in the volume's intensity units.
    """
    d = np.concatenate(neighbour_differences(volume, mask, axes=axes, erosion=erosion))
    return robust_sd(d) / np.sqrt(2.0) if d.size >= min_pairs else float("nan")


def noise_levels(
    volume, labels, classes: Iterable[int], *, axes: Sequence[int] | None = None, erosion: int = 2, min_pairs: int = 20
) -> dict:
    """:func:`noise_level` in each class of a label map, and ``"pooled"`` over all of them (the
    robust sd of every class's centred differences together, / √2).

    Returns:
        ``{class index: sd, ..., "pooled": sd}``; NaN for a class absent or too small after erosion.
    """
    labels = np.asarray(labels)
    out, pooled = {}, []
    for c in classes:
        d = np.concatenate(neighbour_differences(volume, labels == c, axes=axes, erosion=erosion))
        out[int(c)] = robust_sd(d) / np.sqrt(2.0) if d.size >= min_pairs else float("nan")
        if d.size >= min_pairs:
            pooled.append(d)
    out["pooled"] = robust_sd(np.concatenate(pooled)) / np.sqrt(2.0) if pooled else float("nan")
    return out


def radial_frequency(h: int, w: int) -> np.ndarray:
    """``(h, w)`` radial frequency of each bin of a 2-D FFT (numpy's order), in units of the
    Nyquist frequency: ``sqrt((2 f_y)² + (2 f_x)²)`` with ``f`` in cycles per voxel
    (:func:`numpy.fft.fftfreq`); 1 at Nyquist along an axis, √2 in the corners. Voxel units:
    an anisotropic in-plane spacing is ignored."""
    fy, fx = np.meshgrid(2 * np.fft.fftfreq(h), 2 * np.fft.fftfreq(w), indexing="ij")
    return np.hypot(fy, fx)


def body_window(mask, taper: float = 3.0) -> np.ndarray:
    """A tapered window on a 2-D mask: 0 outside and on the mask's outermost voxels, rising as
    a raised cosine, ``sin²(π/2 · (d − 1) / taper)``, to 1 at in-plane distance ``d = 1 + taper``
    voxels from the outside (the image border counts as outside). ``taper = 0``: the plain mask."""
    m = np.asarray(mask, bool)
    if taper <= 0:
        return m.astype(np.float64)
    d = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    return np.sin(np.pi / 2 * np.clip((d - 1) / taper, 0, 1)) ** 2


def _slice_powers(volume, mask, taper: float, min_voxels: float):
    """Per axial slice whose window holds at least ``min_voxels`` (``Σ w²``): the power
    ``|FFT|² / (H·W)`` of ``(x − weighted mean) · w`` (:func:`body_window`; ``w = 1`` everywhere
    without a mask) and ``Σ w²``."""
    x, m = _squeeze(volume, np.ones(np.shape(volume), bool) if mask is None else mask)
    for xs, ms in zip(x.reshape(-1, *x.shape[-2:]), m.reshape(-1, *m.shape[-2:])):
        w = np.ones(ms.shape) if mask is None else body_window(ms, taper)
        n = float((w**2).sum())
        if n >= min_voxels:
            windowed = (xs - (w * xs).sum() / w.sum()) * w
            yield np.abs(np.fft.fft2(windowed)) ** 2 / windowed.size, n


def hf_power(
    volume, mask=None, *, cutoff: float = 0.5, relative: bool = False, taper: float = 3.0, min_voxels: float = 16
) -> float:
    """In-plane power above ``cutoff`` inside the body, over the axial slices.

    Each slice (the last two axes) is *windowed* by its mask: values minus their weighted mean,
    times :func:`body_window` (0 on the body's outermost voxels, rising smoothly over ``taper``
    voxels), so neither the step between air and body nor the body's partial-volume rim puts
    power at high frequencies (a hard mask would: a blurred rim would then *raise* the power).
    The organ boundaries inside stay; they are the same for two volumes of one label map. The
    slice's power spectrum is ``P = |FFT|² / (H·W)`` (``ΣP`` is its weighted sum of squares,
    Parseval); with ``r`` the :func:`radial_frequency` and ``w`` the window:

    - absolute (default): ``Σ_slices Σ_{r > cutoff} P / Σ_slices Σ w²``, the mean square per
      (window-weighted) body voxel above the cutoff, in intensity units²; white noise of sd σ
      gives ``σ² · #{r > cutoff} / (H·W)`` in expectation (up to the mean's removal), e.g.
      ``≈ (1 − π/16) σ²`` at half Nyquist on a large slice;
    - ``relative``: ``Σ_{r > cutoff} P / Σ P`` over the slices, a fraction in [0, 1].

    This is the radially averaged power spectrum (:func:`radial_power_spectrum`) summed above
    the cutoff, each radius weighted by its number of frequencies. Slices are pooled, i.e.
    averaged with weights ``Σ w²``. It counts the sharpness of organ edges as well as texture:
    on a coarse grid a painted label map (sharp steps, no noise) can keep most of a scan's
    power, so read it beside :func:`noise_level`, which sees the noise alone.

    Args:
        volume: ``(*lead, H, W)`` or ``(1, *lead, H, W)`` (e.g. ``(D, H, W)``: D axial slices).
        mask: same spatial shape, bool (e.g. the body, ``labels > 0``); default: the whole
            slices, untapered (the FFT's periodic frame; right for stationary noise).
        cutoff: radial frequency in Nyquist units (0.5: half Nyquist, 0.25 cycles per voxel).
        relative: return the fraction of power above the cutoff instead of the amount.
        taper: width of the window's ramp in voxels (0: the hard mask).
        min_voxels: slices whose window holds less (``Σ w²``) are left out.

    Returns:
        the power (NaN when no slice has enough of the body).
    """
    above = total = n = 0.0
    for p, count in _slice_powers(volume, mask, taper, min_voxels):
        high = radial_frequency(*p.shape) > cutoff
        above, total, n = above + float(p[high].sum()), total + float(p.sum()), n + count
    if n == 0:
        return float("nan")
    return above / total if relative else above / n


def radial_power_spectrum(
    volume, mask=None, *, bins: int = 16, taper: float = 3.0, min_voxels: float = 16
) -> tuple[np.ndarray, np.ndarray]:
    """The radially averaged in-plane power spectrum, windowed as in :func:`hf_power`.

    Returns:
        ``(frequency, power)``: ``bins`` bin centres on [0, √2] Nyquist units, and the mean
        power ``P`` of the frequencies in each bin times (slice voxels / ``Σ w²``), so that
        white noise of sd σ gives σ² in every bin (NaN for an empty bin).
    """
    edges = np.linspace(0.0, np.sqrt(2.0), bins + 1)
    sums, counts, pixels, n = np.zeros(bins), np.zeros(bins), 0, 0.0
    for p, count in _slice_powers(volume, mask, taper, min_voxels):
        idx = np.clip(np.digitize(radial_frequency(*p.shape), edges) - 1, 0, bins - 1).ravel()
        sums += np.bincount(idx, p.ravel(), bins)
        counts += np.bincount(idx, minlength=bins)
        pixels, n = pixels + p.size, n + count
    with np.errstate(invalid="ignore", divide="ignore"):
        return (edges[:-1] + edges[1:]) / 2, sums / counts * (pixels / n if n else np.nan)


def texture_values(
    volumes: Sequence[np.ndarray], labels: Sequence[np.ndarray], noise_classes: Iterable[int], *, cutoff: float = 0.5
) -> dict[str, np.ndarray]:
    """Both measures on each volume: ``"noise"`` (:func:`noise_levels` pooled over ``noise_classes``)
    and ``"hf_power"`` (:func:`hf_power`, absolute, inside the body ``labels > 0``).

    Args:
        volumes: ``(1, *spatial)`` or ``(*spatial)`` arrays; labels: their label maps.
        noise_classes: class indices of homogeneous regions (e.g. liver, fat, aorta).

    Returns:
        ``{"noise": (N,), "hf_power": (N,)}``, NaN where a volume lacks the region.
    """
    if len(volumes) != len(labels):
        raise DataError(f"texture_values: {len(volumes)} volumes but {len(labels)} label maps")
    classes = list(noise_classes)
    noise = [noise_levels(v, lab, classes)["pooled"] for v, lab in zip(volumes, labels)]
    hf = [hf_power(v, np.asarray(lab) > 0, cutoff=cutoff) for v, lab in zip(volumes, labels)]
    return {"noise": np.asarray(noise, np.float64), "hf_power": np.asarray(hf, np.float64)}


def ratio(values, reference) -> float:
    """``mean(values) / mean(reference)`` over the finite entries of each (NaN if either has none
    or the reference mean is 0): a set of volumes over a reference set."""
    a, b = (np.asarray(v, np.float64) for v in (values, reference))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0 or b.mean() == 0:
        return float("nan")
    return float(a.mean() / b.mean())


def texture_ratios(
    volumes, labels, reference, reference_labels, noise_classes: Iterable[int], *, cutoff: float = 0.5
) -> dict[str, float]:
    """``{"noise_ratio", "hf_power_ratio"}``: :func:`texture_values` of ``volumes`` over those of
    ``reference`` (:func:`ratio`). 1 is the reference's texture; a blurred set scores far below.
    Applied to two disjoint halves of one set (e.g. oracle re-renders), it gives the spread
    that a ratio of 1 carries on this many volumes."""
    classes = list(noise_classes)
    a = texture_values(volumes, labels, classes, cutoff=cutoff)
    b = texture_values(reference, reference_labels, classes, cutoff=cutoff)
    return {"noise_ratio": ratio(a["noise"], b["noise"]), "hf_power_ratio": ratio(a["hf_power"], b["hf_power"])}


#: Target ranges of the ratios (issue 24's bars): a noise level within 30 % of the reference's;
#: the power, a square of the intensities, within a factor 2.
TARGETS = {"noise_ratio": (0.7, 1.3), "hf_power_ratio": (0.5, 2.0)}


def where(value: float, key: str) -> str:
    """``"inside"``, ``"below"`` or ``"above"`` the :data:`TARGETS` range of ``key``
    (``"not measurable against"`` for NaN): words for a sentence generated from the numbers."""
    lo, hi = TARGETS[key]
    if not np.isfinite(value):
        return "not measurable against"
    return "below" if value < lo else "above" if value > hi else "inside"
