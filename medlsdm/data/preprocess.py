"""Preprocessing transforms: resample, normalise, crop/pad, depth blocks.

Arrays are ``(D, H, W)`` (or ``(C, D, H, W)`` where said); the spatial transforms act on the
last three axes. Every transform that moves voxels has a companion that updates the affine
(the nibabel affine described in :mod:`medlsdm.data.io`), so a preprocessed block keeps its
true position in world coordinates:

- :func:`resample` ↔ :func:`resampled_affine`
- :func:`crop_or_pad` ↔ :func:`crop_or_pad_offset` + :func:`shift_affine`
- depth blocks: :func:`depth_block_starts` / :func:`select_block_starts` + :func:`shift_affine`

:func:`preprocess_case` chains them for one case.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..errors import ConfigError, DataError
from .classes import ClassTable
from .io import spacing_dhw
from .labels import remap_labels

logger = logging.getLogger(__name__)


def _as_triple(values, name: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in values)
    if len(values) != 3 or not all(v > 0 for v in values):
        raise ConfigError(f"{name} must be three positive numbers (D, H, W), got {values}")
    return values


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]
) -> tuple[int, int, int]:
    """Shape of the grid :func:`resample` produces.

    The new grid starts at the centre of voxel 0 and steps by ``target_spacing`` while it stays
    inside the old grid (from the first to the last voxel centre), so nothing is extrapolated:
    ``n_new = floor((n - 1) * spacing / target_spacing) + 1`` per axis.

    Args:
        shape: ``(D, H, W)`` of the input.
        spacing: input voxel size (mm), ``(D, H, W)``.
        target_spacing: output voxel size (mm), ``(D, H, W)``.
    """
    spacing = _as_triple(spacing, "spacing")
    target_spacing = _as_triple(target_spacing, "target_spacing")
    return tuple(int(np.floor((n - 1) * s / t + 1e-6)) + 1 for n, s, t in zip(shape, spacing, target_spacing))


def resample(array: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float], *, order: int) -> np.ndarray:
    """Resample a ``(D, H, W)`` array to a new voxel size.

    Output voxel ``i`` (per axis) samples the input at index ``i * target_spacing / spacing``
    (see :func:`resampled_shape` for the grid; :func:`resampled_affine` for its affine).

    Args:
        array: ``(D, H, W)`` image (float) or label map (integer).
        spacing: input voxel size (mm), ``(D, H, W)``.
        target_spacing: output voxel size (mm), ``(D, H, W)``.
        order: spline order: 1 (trilinear) for images, 0 (nearest neighbour) for labels.

    Returns:
        The resampled array (float32 for ``order >= 1``, the input dtype for ``order=0``).
    """
    if array.ndim != 3:
        raise DataError(f"resample expects a (D, H, W) array, got shape {array.shape}")
    if order not in (0, 1, 3):
        raise ConfigError(f"order must be 0 (labels), 1 or 3 (images), got {order}")
    spacing = _as_triple(spacing, "spacing")
    target_spacing = _as_triple(target_spacing, "target_spacing")
    out_dtype = array.dtype if order == 0 else np.float32
    if np.allclose(spacing, target_spacing, rtol=1e-6, atol=0):
        return array.astype(out_dtype, copy=True)
    out_shape = resampled_shape(array.shape, spacing, target_spacing)
    zoom = np.array(target_spacing) / np.array(spacing)
    source = array if order == 0 else array.astype(np.float32, copy=False)
    return ndimage.affine_transform(
        source, zoom, offset=0.0, output_shape=out_shape, order=order, mode="nearest", output=out_dtype
    )


def resampled_affine(affine: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float]) -> np.ndarray:
    """The affine of :func:`resample`'s output (same origin, scaled voxel axes).

    Args:
        affine: nibabel affine of the input array (:mod:`medlsdm.data.io`).
        spacing: input voxel size (mm), ``(D, H, W)``.
        target_spacing: output voxel size (mm), ``(D, H, W)``.
    """
    zoom_dhw = np.array(_as_triple(target_spacing, "target_spacing")) / np.array(_as_triple(spacing, "spacing"))
    new = np.array(affine, dtype=np.float64)
    new[:3, :3] = new[:3, :3] * zoom_dhw[::-1]  # columns are x = W, y = H, z = D
    return new


def _to_unit_range(array: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        logger.warning("normalisation range is empty (%s, %s): returning a constant -1 image", lo, hi)
        return np.full(array.shape, -1.0, dtype=np.float32)
    clipped = np.clip(array.astype(np.float32, copy=False), lo, hi)
    out = (clipped - lo) * np.float32(2.0 / (hi - lo)) - np.float32(1.0)
    return np.clip(out, -1.0, 1.0, out=out).astype(np.float32, copy=False)


def normalize_ct(array: np.ndarray, window: Sequence[float] = (-1000, 1000)) -> np.ndarray:
    """Map a CT volume in Hounsfield units to [-1, 1] through a fixed window.

    Args:
        array: CT intensities in HU.
        window: ``(low, high)`` HU; values outside are clipped, ``low`` → -1, ``high`` → 1.
    """
    lo, hi = float(window[0]), float(window[1])
    if hi <= lo:
        raise ConfigError(f"window must be (low, high) with low < high, got {tuple(window)}")
    return _to_unit_range(array, lo, hi)


def normalize_mr(array: np.ndarray, percentiles: Sequence[float] = (0.5, 99.5)) -> np.ndarray:
    """Map an MR volume to [-1, 1] by clipping at intensity percentiles of the whole volume.

    Args:
        array: MR intensities (arbitrary units).
        percentiles: ``(low, high)`` percentiles (0–100) of all voxels; the low percentile
            → -1, the high one → 1, values outside are clipped. A constant volume gives -1.
    """
    p_lo, p_hi = float(percentiles[0]), float(percentiles[1])
    if not 0 <= p_lo < p_hi <= 100:
        raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {tuple(percentiles)}")
    lo, hi = np.percentile(array, [p_lo, p_hi])
    return _to_unit_range(array, float(lo), float(hi))


def normalize(array: np.ndarray, normalisation: dict) -> np.ndarray:
    """Apply a normalisation described by a dict (as written in ``manifest.json``).

    Args:
        array: raw intensities.
        normalisation: ``{"method": "ct_window", "window": [lo, hi]}`` or
            ``{"method": "mr_percentile", "percentiles": [lo, hi]}``.
    """
    method = normalisation.get("method")
    if method == "ct_window":
        return normalize_ct(array, normalisation["window"])
    if method == "mr_percentile":
        return normalize_mr(array, normalisation["percentiles"])
    raise ConfigError(f"unknown normalisation method {method!r}")


def crop_or_pad_offset(in_shape: Sequence[int], shape: Sequence[int | None]) -> tuple[int, ...]:
    """Index in the input of output voxel 0 for a centred crop/pad (negative when padding).

    Args:
        in_shape: input shape of the axes concerned.
        shape: target shape; ``None`` keeps an axis as it is.
    """
    if len(in_shape) != len(shape):
        raise ConfigError(f"shape {tuple(shape)} does not match the input axes {tuple(in_shape)}")
    offsets = []
    for n, t in zip(in_shape, shape):
        t = n if t is None else int(t)
        offsets.append((n - t) // 2 if n >= t else -((t - n) // 2))
    return tuple(offsets)


def crop_or_pad(array: np.ndarray, shape: Sequence[int | None], pad_value: float = 0) -> np.ndarray:
    """Centred crop and/or pad of the last ``len(shape)`` axes to ``shape``.

    Output voxel ``i`` is input voxel ``i + offset`` with ``offset`` from
    :func:`crop_or_pad_offset` (use :func:`shift_affine` with it to update the affine). Cropping
    then padding back (or padding then cropping back) restores every kept voxel in place.

    Args:
        array: array whose trailing axes are cropped/padded (e.g. ``(D, H, W)`` or ``(C, D, H, W)``).
        shape: target size of the trailing axes; ``None`` keeps an axis.
        pad_value: value of the padded voxels (-1 for normalised images, 0 for labels).
    """
    k = len(shape)
    lead = array.ndim - k
    if lead < 0:
        raise ConfigError(f"shape {tuple(shape)} has more axes than the array {array.shape}")
    in_shape = array.shape[lead:]
    offsets = crop_or_pad_offset(in_shape, shape)
    out_shape = tuple(n if t is None else int(t) for n, t in zip(in_shape, shape))
    out = np.full(array.shape[:lead] + out_shape, pad_value, dtype=array.dtype)
    src, dst = [slice(None)] * lead, [slice(None)] * lead
    for n, t, o in zip(in_shape, out_shape, offsets):
        start_in, start_out = max(o, 0), max(-o, 0)
        length = min(n - start_in, t - start_out)
        src.append(slice(start_in, start_in + length))
        dst.append(slice(start_out, start_out + length))
    out[tuple(dst)] = array[tuple(src)]
    return out


def shift_affine(affine: np.ndarray, offset_dhw: Sequence[float]) -> np.ndarray:
    """Affine of a sub-grid whose voxel 0 is voxel ``offset_dhw`` of the original grid.

    Args:
        affine: nibabel affine of the original array.
        offset_dhw: ``(d, h, w)`` index in the original array of the new voxel 0 (negative
            when the new grid starts before the original one, e.g. after padding).
    """
    new = np.array(affine, dtype=np.float64)
    d, h, w = (float(v) for v in offset_dhw)
    new[:3, 3] = new[:3, :3] @ np.array([w, h, d]) + new[:3, 3]
    return new


def depth_block_starts(size: int, depth: int, stride: int | None = None) -> list[int]:
    """First slice of each depth block of ``depth`` slices covering a volume of ``size`` slices.

    Blocks start at 0, ``stride``, ``2 * stride`` …; when they do not reach the end, one more
    block is aligned with the last slice so the whole depth is covered.

    Args:
        size: number of slices (``D``) of the volume.
        depth: slices per block; at most ``size``.
        stride: step between block starts (default ``depth``: non-overlapping blocks).
    """
    if depth < 1 or depth > size:
        raise ConfigError(f"block depth {depth} must be between 1 and the volume depth {size}")
    stride = depth if stride is None else int(stride)
    if stride < 1:
        raise ConfigError(f"stride must be >= 1, got {stride}")
    starts = list(range(0, size - depth + 1, stride))
    if starts[-1] != size - depth:
        starts.append(size - depth)
    return starts


@dataclass
class CaseBlock:
    """One preprocessed block of a case.

    Attributes:
        image: ``(1, D, H, W)`` float32 in [-1, 1].
        label: ``(D, H, W)`` int64 class indices.
        affine: nibabel affine of the block (:mod:`medlsdm.data.io`).
        start: first slice of the block in the resampled, in-plane cropped volume.
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    start: int


def select_block_starts(size: int, depth: int, n_blocks: int = 1) -> list[int]:
    """Starts of ``n_blocks`` depth blocks: the centred one for 1, evenly spread otherwise.

    Args:
        size: slices of the volume (at least ``depth``).
        depth: slices per block.
        n_blocks: number of blocks wanted; fewer are returned when the volume is too short
            to give distinct blocks.
    """
    if n_blocks < 1:
        raise ConfigError(f"n_blocks must be >= 1, got {n_blocks}")
    if depth > size:
        raise ConfigError(f"block depth {depth} is larger than the volume depth {size}")
    if n_blocks == 1:
        return [(size - depth) // 2]
    starts = np.rint(np.linspace(0, size - depth, n_blocks)).astype(int)
    return sorted(set(int(s) for s in starts))


def _checked_inputs(image, label, classes, block_shape, label_path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shared start of :func:`preprocess_case` and :func:`preprocess_case_paper`: checks, remapped labels."""
    if image.shape != label.shape:
        where = f"{label_path}: " if label_path is not None else ""
        raise DataError(f"{where}label shape {label.shape} differs from image shape {image.shape}")
    block_shape = tuple(int(v) for v in block_shape)
    if len(block_shape) != 3 or min(block_shape) < 1:
        raise ConfigError(f"block_shape must be three positive integers (D, H, W), got {block_shape}")
    return block_shape, remap_labels(label, classes, label_path)


def preprocess_case(
    image: np.ndarray,
    label: np.ndarray,
    affine: np.ndarray,
    *,
    classes: ClassTable,
    normalisation: dict,
    spacing: Sequence[float],
    block_shape: Sequence[int],
    n_blocks: int = 1,
    label_path: str | os.PathLike | None = None,
) -> list[CaseBlock]:
    """Preprocess one case already read by :func:`medlsdm.data.io.read_nifti`.

    Steps: remap labels → resample (linear image, nearest label) to ``spacing`` → normalise
    to [-1, 1] → centred crop/pad in-plane to ``(H, W)`` and pad depth up to ``D`` → take
    ``n_blocks`` depth blocks of ``D`` slices (the centred one by default). Affines follow
    every step.

    Args:
        image: ``(D, H, W)`` raw intensities.
        label: ``(D, H, W)`` integer label map with the dataset's values.
        affine: nibabel affine shared by image and label.
        classes: class table used to remap the labels.
        normalisation: dict for :func:`normalize` (``ct_window`` or ``mr_percentile``).
        spacing: target voxel size (mm), ``(D, H, W)``.
        block_shape: output block ``(D, H, W)``.
        n_blocks: depth blocks per case (:func:`select_block_starts`).
        label_path: named in label errors.

    Returns:
        The case's :class:`CaseBlock` list.
    """

    block_shape, label = _checked_inputs(image, label, classes, block_shape, label_path)
    if classes.num_classes <= 256:
        label = label.astype(np.uint8)  # 8x less memory while resampling; int64 again per block
    source_spacing = spacing_dhw(affine)
    image = resample(image, source_spacing, spacing, order=1)
    label = resample(label, source_spacing, spacing, order=0)
    affine = resampled_affine(affine, source_spacing, spacing)
    image = normalize(image, normalisation)

    depth = max(block_shape[0], image.shape[0])
    target = (depth, block_shape[1], block_shape[2])
    offset = crop_or_pad_offset(image.shape, target)
    image = crop_or_pad(image, target, pad_value=-1.0)
    label = crop_or_pad(label, target, pad_value=0)
    affine = shift_affine(affine, offset)

    blocks = []
    for start in select_block_starts(depth, block_shape[0], n_blocks):
        stop = start + block_shape[0]
        blocks.append(
            CaseBlock(
                image=np.ascontiguousarray(image[None, start:stop]),
                label=label[start:stop].astype(np.int64),
                affine=shift_affine(affine, (start, 0, 0)),
                start=start,
            )
        )
    return blocks


# ------------------------------------------------------------------ the paper's data handling

#: ``prepare_dataset(preprocessing=…)``: ``"resample"`` (:func:`preprocess_case`, ours) or
#: ``"paper"`` (:func:`preprocess_case_paper`, Med-LSDM's).
PREPROCESSING = ("resample", "paper")


def minmax_to_unit(array: np.ndarray) -> np.ndarray:
    """Map an array's own minimum to -1 and maximum to 1 (MONAI ``ScaleIntensity(-1, 1)``).

    A constant array gives -1 everywhere.
    """
    lo, hi = float(array.min()), float(array.max())
    return _to_unit_range(array, lo, hi)


def paper_block_starts(size: int, depth: int, rng: np.random.Generator) -> list[int]:
    """Random depth-block starts as the original drew them: about ``size / 4`` plus the last block.

    ``size // 4`` distinct starts are drawn uniformly from ``0 … size - depth`` (all of them when
    there are fewer), and the last block (start ``size - depth``) is always added.

    Args:
        size: slices of the volume (at least ``depth``).
        depth: slices per block.
        rng: the random generator.

    Returns:
        Sorted distinct starts.
    """
    if depth < 1 or depth > size:
        raise ConfigError(f"block depth {depth} must be between 1 and the volume depth {size}")
    n_starts = size - depth + 1
    drawn = rng.choice(n_starts, size=min(max(size // 4, 1), n_starts), replace=False)
    return sorted({int(s) for s in drawn} | {size - depth})


def preprocess_case_paper(
    image: np.ndarray,
    label: np.ndarray,
    affine: np.ndarray,
    *,
    classes: ClassTable,
    block_shape: Sequence[int],
    rng: np.random.Generator,
    label_path: str | os.PathLike | None = None,
) -> list[CaseBlock]:
    """Med-LSDM's data handling for one case: native spacing, random depth blocks, min–max per block.

    Steps: remap labels → centred crop/pad in-plane to ``(H, W)`` at the native spacing (padding
    with the volume's minimum), depth padded up to ``D`` → depth blocks at
    :func:`paper_block_starts` → blocks whose label map is all background are skipped → each
    block's image min–max scaled to [-1, 1] (:func:`minmax_to_unit`). Affines follow every step.

    Args:
        image: ``(D, H, W)`` raw intensities.
        label: ``(D, H, W)`` integer label map with the dataset's values.
        affine: nibabel affine shared by image and label.
        classes: class table used to remap the labels.
        block_shape: output block ``(D, H, W)``.
        rng: draws the block starts.
        label_path: named in label errors.

    Returns:
        The case's non-empty :class:`CaseBlock` list (empty when every block is background).
    """
    block_shape, label = _checked_inputs(image, label, classes, block_shape, label_path)
    target = (max(block_shape[0], image.shape[0]), block_shape[1], block_shape[2])
    offset = crop_or_pad_offset(image.shape, target)
    image = crop_or_pad(image.astype(np.float32, copy=False), target, pad_value=float(image.min()))
    label = crop_or_pad(label, target, pad_value=0)
    affine = shift_affine(affine, offset)
    blocks = []
    for start in paper_block_starts(target[0], block_shape[0], rng):
        stop = start + block_shape[0]
        block_label = label[start:stop].astype(np.int64)
        if not block_label.any():
            continue
        blocks.append(
            CaseBlock(
                image=minmax_to_unit(image[None, start:stop]),
                label=block_label,
                affine=shift_affine(affine, (start, 0, 0)),
                start=start,
            )
        )
    if not blocks:
        logger.warning(
            "%s: every depth block is background; the case gives no block",
            label_path if label_path is not None else "a case",
        )
    return blocks
