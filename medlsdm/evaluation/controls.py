"""Checks that come with their controls and references, so that they can fail (notebook 05).

- :func:`memorisation_controls`: the memorisation check with a positive control (training
  volumes copied with a small shift and noise) and a negative control (oracle re-renders of
  the training anatomies on phantoms; held-out real volumes on real data, where no oracle
  exists), the threshold set by those two distributions.
- :func:`distances_with_references`: KID (with a bootstrap CI) on the segmentation network's
  features and, when ``frd-score`` is installed, the Fréchet Radiomics Distance, each beside
  its real-vs-real reference (validation vs test) and, on phantoms, oracle-vs-real.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.phantom.oracle import oracle_samples
from ..errors import ConfigError
from ..metrics.distribution import kid
from ..metrics.privacy import copy_control, memorisation_with_controls
from ..metrics.radiomics import frd as frd_distance
from ..metrics.radiomics import radiomics_features
from .features import segnet_features

log = logging.getLogger(__name__)

#: What each negative control is, for the notebook and ``metrics.json``.
NEGATIVE_CONTROLS = {
    "oracle": "oracle re-renders of the training anatomies (same label map, new appearance)",
    "held_out": "held-out real volumes (no oracle for real data: other patients, so an easier control "
    "than a re-render of the same anatomy)",
}


def memorisation_controls(
    data_dir: str | os.PathLike,
    train_ids: Sequence[str],
    train_images: Sequence[np.ndarray],
    synthetic: Mapping[str, Sequence[np.ndarray]],
    held_out_images: Sequence[np.ndarray],
    *,
    seed: int = 0,
    shift: Sequence[float] = (0.0, 1.0, 1.0),
    noise_std: float = 0.02,
    quantile: float = 0.05,
    negative_control: str = "oracle",
) -> dict[str, Any]:
    """:func:`medlsdm.metrics.privacy.memorisation_with_controls` with this run's controls.

    Positive control: every training volume through :func:`copy_control` (``shift`` voxels,
    Gaussian noise ``noise_std``; seed ``seed + i`` for volume ``i``). Negative control: one
    oracle re-render of every training anatomy (:func:`medlsdm.data.phantom.oracle.oracle_samples`
    with seed ``seed + 1``); when the run is not a phantom (``ConfigError``), or when asked
    (``negative_control="held_out"``), the held-out real volumes instead, and the result says so.

    Args:
        data_dir: the run's ``RUN/data``.
        train_ids, train_images: the training cases (``(1, D, H, W)`` volumes).
        synthetic: named sets of synthetic volumes to judge (e.g. from training and from test label maps).
        held_out_images: real volumes never trained on (the fallback negative control).
        seed: seed of the controls.
        shift, noise_std: the positive control's shift (voxels, ``(D, H, W)``) and noise.
        quantile: see :func:`medlsdm.metrics.privacy.memorisation_threshold`.
        negative_control: ``"oracle"`` (re-renders of the training anatomies where the data
            is a phantom, else the held-out volumes) or ``"held_out"`` (the held-out volumes:
            other patients, an easier control that moves the threshold up).

    Returns:
        The check's result plus ``negative_control`` (which one, in words) and
        ``negative_control_kind`` (``"oracle"`` or ``"held_out"``).

    Raises:
        ConfigError: ``negative_control`` is neither ``"oracle"`` nor ``"held_out"`` (before any work).
    """
    if negative_control not in NEGATIVE_CONTROLS:
        raise ConfigError(f"negative_control={negative_control!r}: choose one of {sorted(NEGATIVE_CONTROLS)}")
    positive = [copy_control(v, shift=shift, noise_std=noise_std, rng=seed + i) for i, v in enumerate(train_images)]
    negative, kind = list(held_out_images), "held_out"
    if negative_control == "oracle":
        try:
            negative, kind = list(oracle_samples(data_dir, list(train_ids), 1, seed=seed + 1)[:, 0]), "oracle"
        except ConfigError as err:
            log.info("memorisation: %s; the held-out real volumes are the negative control", err)
    result = memorisation_with_controls(dict(synthetic), list(train_images), positive, negative, quantile=quantile)
    return {
        **result,
        "negative_control": NEGATIVE_CONTROLS[kind],
        "negative_control_kind": kind,
        "positive_control": f"training volumes shifted by {tuple(shift)} voxels plus noise of sd {noise_std}",
    }


#: The spacing (mm) handed to the radiomics extraction: frd-score resamples every volume to 2 mm,
#: which at the quick profile's 6 × 5.5 × 5.5 mm grid means ~36× the voxels and ~10 s a volume on
#: one core. Declaring the voxel grid as 2 mm keeps every voxel as it is (~1 s a volume): texture
#: features are then per voxel and shape features in voxel units, the same for every set, so
#: FRD compares the sets of this notebook with each other, not with published FRD values.
FRD_GRID_SPACING = (2.0, 2.0, 2.0)


def frd_status() -> str:
    """``"available"``, or why the Fréchet Radiomics Distance is skipped (its optional packages)."""
    try:
        import frd_score  # noqa: F401, PLC0415  (optional: medlsdm[radiomics])
        import radiomics  # noqa: F401, PLC0415
    except ImportError as err:
        return f"skipped: frd-score / pyradiomics-bhklab not installed (pip install 'medlsdm[radiomics]'): {err}"
    return "available"


def distances_with_references(
    model,
    sets: Mapping[str, Sequence[np.ndarray]],
    pairs: Mapping[str, tuple[str, str]],
    *,
    frd: bool = True,
    spacing: Sequence[float] = FRD_GRID_SPACING,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """KID on segmentation features and FRD for named pairs of volume sets.

    Each pair ``name → (reference set, other set)`` is measured the same way, so the
    synthetic-vs-real number can be read beside real-vs-real (``"reference"``: validation vs
    test, the distance two samples of the real distribution have at this size) and
    oracle-vs-real.

    Args:
        model: the trained segmentation network (its bottleneck features,
            :func:`medlsdm.evaluation.features.segnet_features`).
        sets: named lists of ``(1, D, H, W)`` volumes.
        pairs: ``{name: (set a, set b)}``; ``a`` is the reference whose feature mean and
            standard deviation normalise both sets, for FRD and for KID.
        frd: also compute the Fréchet Radiomics Distance when its packages are installed.
        spacing: voxel size (mm) declared to the radiomics extraction (see :data:`FRD_GRID_SPACING`).
        cache_dir: per-volume radiomics feature cache (:func:`medlsdm.metrics.radiomics.radiomics_features`).
        seed: seed of KID's bootstrap.

    Returns:
        ``{"kid": {pair: {"kid", "ci", "n1", "n2"}}, "frd": {pair: value} or None,
        "frd_skipped": reason or None}``.
    """
    needed = sorted({s for pair in pairs.values() for s in pair})
    features = {s: segnet_features(model, sets[s], batch_size=4) for s in needed}
    out: dict[str, Any] = {
        "kid": {name: kid(features[a], features[b], seed=seed, standardize=True) for name, (a, b) in pairs.items()},
        "frd": None,
        "frd_skipped": None,
    }
    status = frd_status() if frd else "skipped: frd=False"
    if status != "available":
        out["frd_skipped"] = status
        return out

    radiomics = {s: [radiomics_features(v, spacing=spacing, cache_dir=cache_dir) for v in sets[s]] for s in needed}
    out["frd"] = {name: frd_distance(radiomics[a], radiomics[b]) for name, (a, b) in pairs.items()}
    return out
