"""Feature-space distances of real and synthetic volumes: FID on 2-D slices, 3-D FID
(MedicalNet), LPIPS, and the Fréchet distance in a segmentation network's feature space.
The weights of the feature networks are read from local files (nothing is downloaded).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..data.store import as_cases
from ..errors import DataError
from ..metrics.distribution import frechet_distance_from_features
from ..metrics.image import ArrayLike, as_volume
from ..models.blocks import pad_to_multiple

log = logging.getLogger(__name__)


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

    weights = dict(weights or {})
    unknown = sorted(set(weights) - {k for need in FEATURE_METRIC_WEIGHTS.values() for k in need})
    if unknown:
        raise DataError(
            f"available_feature_metrics: unknown weight name(s) {unknown}; known: inception, medicalnet, vgg16, lpips"
        )
    for name, path in weights.items():
        if path is not None and not Path(path).is_file():
            raise DataError(f"{path}: {name} weights file not found")
    status = {}
    for metric, needs in FEATURE_METRIC_WEIGHTS.items():
        missing = [k for k in needs if weights.get(k) is None]
        status[metric] = "available" if not missing else f"skipped (no weights: {', '.join(missing)})"
    return status


def volume_slices(volume: ArrayLike, orientation: str, step: int = 1) -> torch.Tensor:
    """2-D slices ``(S, 1, h, w)`` of a volume along ``orientation`` (:data:`SLICE_AXES`),
    every ``step``-th slice."""
    if orientation not in SLICE_AXES:
        raise DataError(f"orientation must be one of {list(SLICE_AXES)}, got {orientation!r}")
    v = as_volume(volume).movedim(SLICE_AXES[orientation], 0)
    return v[:: int(step)].unsqueeze(1).contiguous()


@torch.no_grad()
def batched_features(fn, images, *, batch_size: int, device) -> np.ndarray:
    """``fn`` (a feature network) over images ``batch_size`` at a time, as float64 ``(N, F)``.

    Args:
        fn: maps a float32 batch ``(B, C, *spatial)`` on ``device`` to ``(B, F)``.
        images: 2-D slices or 3-D volumes: an ``(N, C, *spatial)`` array or tensor, or a
            sequence of ``(C, *spatial)`` arrays (stacked per batch: with ``batch_size=1``
            they may differ in shape).
        device: where ``fn`` runs.
    """
    out = []
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size]
        if isinstance(batch, (np.ndarray, torch.Tensor)):
            x = torch.as_tensor(batch, dtype=torch.float32)
        else:
            x = torch.stack([torch.as_tensor(np.asarray(v, np.float32)) for v in batch])
        out.append(fn(x.to(device)).double().cpu())
    return torch.cat(out).numpy()


def _device(model, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def _slice_set(volumes, orientation: str, step: int) -> torch.Tensor:
    slices = [volume_slices(v, orientation, step) for v in volumes]
    if not slices:
        raise DataError("no volumes given")
    shapes = sorted({tuple(s.shape[2:]) for s in slices})
    if len(shapes) > 1:
        raise DataError(f"{orientation} slices of different shapes {shapes}: give volumes of one shape")
    return torch.cat(slices)


def inception_features(inception, slices, *, batch_size: int = 16, device=None) -> np.ndarray:
    """Pool3 features ``(N, 2048)`` of 2-D slices ``(N, 1, H, W)`` in [-1, 1]: each slice is
    mapped to [0, 1], repeated to RGB (as FID does for grey images) and given to the network
    (which resizes it). ``device``: default the network's."""
    return batched_features(
        lambda x: inception(((x.clamp(-1, 1) + 1) / 2).repeat(1, 3, 1, 1)),
        slices,
        batch_size=batch_size,
        device=_device(inception, device),
    )


def inception_slice_features(
    inception, volumes, orientation: str, *, slice_step: int = 1, batch_size: int = 16, device="cpu"
) -> np.ndarray:
    """:func:`inception_features` ``(S, 2048)`` of the 2-D slices of volumes in [-1, 1] along
    ``orientation`` (every ``slice_step``-th)."""
    return inception_features(
        inception, _slice_set(volumes, orientation, slice_step), batch_size=batch_size, device=device
    )


def fid_2d(
    real,
    fake,
    inception,
    *,
    orientations=("axial", "coronal", "sagittal"),
    slice_step: int = 1,
    batch_size: int = 16,
    device="cpu",
) -> dict[str, float]:
    """FID between the 2-D slices of real and synthetic volumes, per orientation.

    Slices (every ``slice_step``-th) of all volumes of a set form one image set; both sets
    are mapped through :class:`~medlsdm.models.feature_nets.inception.InceptionV3Features` (pytorch-fid's
    weights; every slice is resized to 299×299 as pytorch-fid does, so non-square coronal
    and sagittal slices are stretched) and :func:`frechet_distance_from_features` is taken. FID is biased
    upward for small sets (it falls as the number of slices grows): compare values computed
    with the same numbers of slices only.

    Args:
        real, fake: sequences of ``(1, D, H, W)`` volumes in [-1, 1].
        inception: :func:`medlsdm.models.feature_nets.inception.load_inception` result.
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
    volumes = [as_volume(v)[None, None] for v in volumes]
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
    return frechet_distance_from_features(
        medicalnet_features(medicalnet, real, device), medicalnet_features(medicalnet, fake, device)
    )


@torch.no_grad()
def lpips_slices(
    real,
    fake,
    lpips_model,
    *,
    orientations=("axial", "coronal", "sagittal"),
    slice_step: int = 1,
    batch_size: int = 16,
    device="cpu",
) -> dict[str, float]:
    """Mean LPIPS between corresponding slices of paired volumes (``real[i]`` ↔ ``fake[i]``,
    e.g. a real case and the volume synthesised from its label map), per orientation.

    Args:
        real, fake: equally long sequences of same-shaped ``(1, D, H, W)`` volumes in [-1, 1].
        lpips_model: :func:`medlsdm.models.feature_nets.lpips.load_lpips` result.
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
                a, b = sr[i : i + batch_size].to(device), sf[i : i + batch_size].to(device)
                values.append(lpips_model(a, b).double().cpu())
        out[o] = float(torch.cat(values).mean())
    return out


def segnet_features(model, images, device=None, batch_size: int = 1) -> np.ndarray:
    """Bottleneck features ``(N, C)`` of :class:`~medlsdm.models.segnet.SegNet` (global
    average pool) of 2-D slices or 3-D volumes (``(N, 1, *spatial)`` or a sequence of
    ``(1, *spatial)``), ``batch_size`` at a time (a batch must be one shape), edge-padded to
    a size the network accepts. The network runs in eval mode (its mode is restored)."""
    images, _ = as_cases(images)
    was_training = model.training
    model.eval()
    try:
        return batched_features(
            lambda x: model.features(pad_to_multiple(x, model.downsample_factor)[0]),
            images,
            batch_size=batch_size,
            device=_device(model, device),
        )
    finally:
        model.train(was_training)


def segnet_feature_distance(model, real, fake, device=None, batch_size: int = 1) -> float:
    """Fréchet distance between real and synthetic images (2-D slices or 3-D volumes) in the
    feature space of the downstream segmentation network (:func:`segnet_features`).

    Always available (no downloaded weights), but **not comparable to published FIDs**: the
    features come from a small network trained on this run's data, so the number only
    compares models evaluated with the *same* segmentation network and set sizes.
    """
    return frechet_distance_from_features(
        segnet_features(model, real, device, batch_size), segnet_features(model, fake, device, batch_size)
    )
