"""Fréchet Radiomics Distance (FRD): radiomics features of each volume (``frd-score``'s extraction, cached), their
Fréchet distance.

Needs the optional packages ``frd-score`` and ``pyradiomics-bhklab`` (which provides
``radiomics``; ``pip install "medlsdm[radiomics]"``). No neural-network weights are needed,
so FRD runs offline. Extraction takes about 1 s for a 32×64×64 volume on one core with
``image_types=("Original",)`` (frd-score's default adds LoG and wavelet images and is far
slower), hence the per-volume cache.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..atomic import read_json, write_json
from ..errors import ConfigError, DataError
from .distribution import frechet_distance_from_features
from .image import ArrayLike

log = logging.getLogger(__name__)

#: pyradiomics image types of :func:`radiomics_features` by default (frd-score v1 uses Original, LoG, Wavelet).
DEFAULT_IMAGE_TYPES = ("Original",)


def _frd_module():
    try:
        import radiomics  # noqa: F401, PLC0415  (optional; frd-score imports it lazily and does not declare it)
        from frd_score import frd  # noqa: PLC0415
    except ImportError as err:
        raise ConfigError(
            f"FRD needs the packages frd-score and pyradiomics-bhklab (pip install 'medlsdm[radiomics]'): {err}"
        ) from None
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    return frd


@functools.lru_cache(maxsize=8)
def _extractor(image_types: tuple[str, ...]):
    frd = _frd_module()
    return frd.get_feature_extractor(frd_version=frd.FRD_VERSION_V1, image_dim=3, image_types=list(image_types))


def _cache_key(
    image: np.ndarray, mask: np.ndarray | None, spacing: tuple[float, ...], image_types: tuple[str, ...]
) -> str:
    import frd_score  # noqa: PLC0415  (optional: medlsdm[radiomics])
    import radiomics  # noqa: PLC0415

    h = hashlib.sha256()
    h.update(repr((image.shape, spacing, image_types, frd_score.__version__, radiomics.__version__)).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    if mask is not None:
        h.update(np.ascontiguousarray(mask).tobytes())
    return h.hexdigest()


def radiomics_features(
    volume: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    image_types: Sequence[str] = DEFAULT_IMAGE_TYPES,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Radiomics features of one volume, extracted exactly as ``frd-score`` (v1, 3-D) does.

    The volume (and mask) are written to a temporary NIfTI file and passed to
    ``frd_score.frd.process_image_mask_pair`` with frd-score's v1 3-D extractor
    (``extraction_3d.yaml``: intensities z-scored per image, resampled to 2 mm, bin width 5),
    restricted to ``image_types``. Without a mask the whole volume is the region (frd-score
    leaves out one corner voxel, a pyradiomics workaround).

    With ``cache_dir`` the features are stored as ``<sha256>.json`` (a hash of the voxels,
    mask, spacing, image types and package versions), written atomically, and read back on
    the next call with the same content.

    Args:
        volume: ``(1, D, H, W)`` or ``(D, H, W)`` image.
        mask: region of interest of the shape of ``volume`` (non-zero = inside), or ``None``.
        spacing: voxel size in mm along ``(D, H, W)``.
        image_types: pyradiomics image types (``"Original"``, ``"LoG"``, ``"Wavelet"``, …).
        cache_dir: folder of the feature cache, or ``None`` (no cache).

    Returns:
        ``{feature name: value}`` in frd-score's order.
    """
    img = np.asarray(volume.detach().cpu() if isinstance(volume, torch.Tensor) else volume, dtype=np.float32)
    img = img[0] if img.ndim == 4 and img.shape[0] == 1 else img
    if img.ndim != 3:
        raise DataError(f"radiomics_features: expected a (1, D, H, W) or (D, H, W) volume, got shape {img.shape}")
    m = None
    if mask is not None:
        m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
        m = (m.reshape(img.shape) if m.size == img.size else m) != 0
        if m.shape != img.shape:
            raise DataError(f"radiomics_features: mask of shape {m.shape} does not fit the volume {img.shape}")
        if m.sum() <= 1:
            raise DataError("radiomics_features: the mask holds at most one voxel")
        m = m.astype(np.uint8)
    spacing, image_types = tuple(float(s) for s in spacing), tuple(image_types)
    if len(spacing) != 3:
        raise DataError(f"radiomics_features: spacing needs 3 values (D, H, W), got {spacing}")
    frd = _frd_module()
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{_cache_key(img, m, spacing, image_types)}.json"
        if path.exists():
            cached = read_json(path)
            return dict(zip(cached["names"], cached["values"]))
    import SimpleITK as sitk  # noqa: PLC0415  (comes with pyradiomics, optional)

    with tempfile.TemporaryDirectory(prefix="medlsdm-radiomics-") as tmp:
        files = []
        for name, arr in (("image", img), ("mask", m)):
            if arr is None:
                files.append(None)
                continue
            itk = sitk.GetImageFromArray(arr)
            itk.SetSpacing(spacing[::-1])  # SimpleITK counts axes x, y, z
            files.append(str(Path(tmp) / f"{name}.nii.gz"))
            sitk.WriteImage(itk, files[-1])
        result = frd.process_image_mask_pair(
            tuple(files), feature_extractor=_extractor(image_types), frd_version=frd.FRD_VERSION_V1
        )
    if result is None:
        raise DataError("radiomics_features: frd-score extracted no features (mask with at most one voxel)")
    features = {k: float(v) for k, v in result[1].items()}
    if path is not None:
        write_json(path, {"names": list(features), "values": list(features.values())})
    return features


def feature_matrix(features: Sequence[Mapping[str, float]]) -> tuple[np.ndarray, list[str]]:
    """Stack per-volume feature dicts into an ``(N, d)`` array; every dict must have the same names."""
    if not features:
        raise DataError("feature_matrix: no feature sets")
    names = list(features[0])
    for i, f in enumerate(features):
        if list(f) != names:
            raise DataError(
                f"feature_matrix: volume {i} has other features than volume 0 ({sorted(set(f) ^ set(names))[:5]} …)"
            )
    return np.array([[f[n] for n in names] for f in features], dtype=np.float64), names


def frd(
    features_a: ArrayLike | Sequence[Mapping[str, float]], features_b: ArrayLike | Sequence[Mapping[str, float]]
) -> float:
    """Fréchet distance of two sets of radiomics features, normalised as ``frd-score`` v1 does.

    As ``frd_score.frd.calculate_feature_statistics`` (v1): features are cast to float32;
    a volume (row) with a NaN feature is dropped from its set; both sets are z-scored with
    the mean and population standard deviation of set **a** (the reference, e.g. the real
    volumes); a feature (column) that is then NaN or infinite in either set — constant in
    the reference — is dropped. The result is the squared Fréchet distance
    (:func:`~medlsdm.metrics.distribution.frechet_distance_from_features`, exact for
    singular covariances). frd-score reports ``log`` of this number for v1; take
    ``np.log`` to compare with its output (the log of a set against itself is −∞).

    Args:
        features_a: reference set, ``(N_a, d)`` array or a list of :func:`radiomics_features` dicts.
        features_b: the other set, same features.
    """
    fa, fb = (
        feature_matrix(f)[0] if not isinstance(f, (np.ndarray, torch.Tensor)) else np.asarray(f)
        for f in (features_a, features_b)
    )
    if fa.ndim != 2 or fb.ndim != 2 or fa.shape[1] != fb.shape[1]:
        raise DataError(f"frd: need (N, d) feature sets with the same d, got {fa.shape} and {fb.shape}")
    fa, fb = (f.astype(np.float32)[~np.isnan(f).any(axis=1)] for f in (fa, fb))
    if min(len(fa), len(fb)) < 2:
        raise DataError(f"frd: fewer than 2 volumes without NaN features ({len(fa)} and {len(fb)})")
    mean, std = fa.mean(axis=0), fa.std(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        za, zb = (fa - mean) / std, (fb - mean) / std
    keep = np.isfinite(za).all(axis=0) & np.isfinite(zb).all(axis=0)
    if not keep.any():
        raise DataError("frd: no feature varies within the reference set")
    log.debug("frd: %d of %d features kept (the others are constant in the reference set)", keep.sum(), keep.size)
    return frechet_distance_from_features(za[:, keep].astype(np.float64), zb[:, keep].astype(np.float64))
