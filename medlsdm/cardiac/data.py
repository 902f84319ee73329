"""The 2-D cardiac latent diffusion model: short-axis slices, edge maps, conditioning modes.

The second system of the tutorial (notebook 06): a latent diffusion model that paints a
cardiac MR slice from two conditions, a **Canny edge map** of the slice and a **four-class
one-hot semantic map** (background, LV blood pool, myocardium, RV), in the latent space of a
2-D VQ-VAE (:class:`~medlsdm.models.vqgan.VQGAN` with ``spatial_dims=2`` and no
adversarial loss). Everything model-side is the 3-D code with ``spatial_dims=2``; this module
holds only what is specific to the cardiac data.

1. **Slices** (:func:`prepare_cardiac`): every slice with foreground of every case (the
   ``cardiac-2d`` phantom, or M&Ms ED/ES frames through the ``mnms`` adapter: short axis,
   and with M&Ms-2 long axis or both) →
   MR percentile normalisation of the volume to [-1, 1] → in-plane resampling to a fixed
   pixel size ``fov_mm / size`` → a ``size × size`` window centred on the heart (the
   centroid of the case's label map), padded with -1 → labels remapped to the 4 classes.
   The slice axis is the volume axis with the largest spacing (8-10 mm between short-axis
   slices against 1-2 mm in plane).
2. **Edges** (:func:`canny_edges`), computed once from the preprocessed slice and stored.
3. **Storage** (:class:`SliceStore`): one HDF5 file, one dataset per array, chunked per
   slice, read lazily; written atomically. Patient-level split with
   :func:`medlsdm.data.splits.make_split` (the ED and ES frames of an M&Ms subject stay
   together).
4. **Conditioning modes** (:data:`MODES`): ``"edges"``, ``"semantic"`` and
   ``"edges+semantic"`` share one model layout, a :class:`~medlsdm.models.unet.SemanticUNet`
   with ``num_classes=4`` and ``extra_condition_channels=1`` (condition channels: 4 one-hot,
   1 edge, 1 null). A mode hides what it does not use: ``"edges"`` sees a constant label map
   (all background), ``"semantic"`` an all-zero edge map (:func:`condition_inputs`).
5. **Evaluation** on held-out slices (:func:`evaluate_samples`): paired SSIM and NMSE of each
   synthetic slice against the real slice its conditions came from, and the Fréchet distance
   of the two sets in a segmentation network's feature space (and FID with local InceptionV3
   weights).

Arrays: a slice is ``(1, H, W)`` float32 in [-1, 1] (image), ``(H, W)`` int64 (label),
``(1, H, W)`` float32 in {0, 1} (edges); ``H = W = size``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Sequence

import numpy as np
from skimage.feature import canny
from tqdm.auto import tqdm

from ..atomic import write_json
from ..data.adapters import get_adapter
from ..data.classes import CARDIAC
from ..data.datasets import validate_cases
from ..data.io import spacing_dhw
from ..data.labels import remap_labels
from ..data.phantom import make_phantom
from ..data.preprocess import normalize_mr, resample, resampled_affine, shift_affine
from ..data.splits import make_split, save_split
from ..errors import ConfigError, DataError
from ..rundir import RunDir
from .store import CLASS_NAMES, CardiacSlice, SliceStore

log = logging.getLogger(__name__)


#: Canny defaults for slices in [-1, 1] at about 2 mm pixels: Gaussian σ in pixels and
#: hysteresis thresholds on the Sobel gradient magnitude of the smoothed slice (intensity
#: units per pixel). With σ = 1 the phantom's texture and noise still make short spurious
#: edges; σ = 1.5 with 0.15 / 0.3 keeps the anatomical boundaries (blood pool, myocardium,
#: RV, lungs, body outline) and little else.
EDGE_DEFAULTS = dict(sigma=1.5, low=0.15, high=0.3)


def canny_edges(
    image: np.ndarray,
    sigma: float = EDGE_DEFAULTS["sigma"],
    low: float | None = EDGE_DEFAULTS["low"],
    high: float | None = EDGE_DEFAULTS["high"],
    *,
    use_quantiles: bool = False,
) -> np.ndarray:
    """Canny edge map of a 2-D image: ``skimage.feature.canny`` with documented settings.

    Canny's steps: (1) Gaussian smoothing with ``sigma`` pixels, which removes the noise
    that would otherwise produce spurious edges (larger σ: fewer, smoother edges);
    (2) Sobel gradient magnitude and direction; (3) non-maximum suppression (edges one pixel
    thin); (4) hysteresis: pixels above ``high`` are edges, pixels above ``low`` are edges
    when connected to one.

    Args:
        image: ``(H, W)`` or ``(1, H, W)`` image (here in [-1, 1], so thresholds are gradients
            in those units per pixel; a step from -1 to 1 has magnitude ≈ 2 before smoothing).
        sigma: Gaussian standard deviation in pixels.
        low, high: hysteresis thresholds (``None``: skimage's defaults, 10 % and 20 % of the
            image dtype's maximum).
        use_quantiles: read ``low``/``high`` as quantiles (0-1) of the gradient magnitude.

    Returns:
        ``(H, W)`` bool edge map.
    """

    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2:
        raise DataError(f"canny_edges: expected a 2-D image (H, W), got shape {image.shape}")
    if not sigma > 0:
        raise ConfigError(f"canny_edges: sigma must be > 0, got {sigma}")
    if low is not None and high is not None and low > high:
        raise ConfigError(f"canny_edges: low threshold {low} is above the high threshold {high}")
    return canny(image, sigma=float(sigma), low_threshold=low, high_threshold=high, use_quantiles=use_quantiles)


def _permute_axes(array: np.ndarray, affine: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Move array axis ``axis`` (of ``(D, H, W)``) to the front; the affine follows."""
    perm = [axis] + [a for a in range(3) if a != axis]
    new = np.array(affine, dtype=np.float64)
    for k, old in enumerate(perm):  # affine column 2 - a belongs to array axis a (x = W … z = D)
        new[:3, 2 - k] = affine[:3, 2 - old]
    return np.ascontiguousarray(array.transpose(perm)), new


def _window(array: np.ndarray, start: Sequence[int], size: int, pad_value) -> np.ndarray:
    """``array[..., h0:h0+size, w0:w0+size]``, padded with ``pad_value`` where it leaves the array."""
    out = np.full(array.shape[:-2] + (size, size), pad_value, dtype=array.dtype)
    src, dst = [Ellipsis], [Ellipsis]
    for n, s in zip(array.shape[-2:], start):
        a, b = max(s, 0), min(s + size, n)
        src.append(slice(a, max(a, b)))
        dst.append(slice(a - s, a - s + max(b - a, 0)))
    out[tuple(dst)] = array[tuple(src)]
    return out


def slice_case(
    image: np.ndarray,
    label: np.ndarray,
    affine: np.ndarray,
    *,
    size: int,
    fov_mm: float,
    percentiles: Sequence[float] = (0.5, 99.5),
    classes=None,
    label_path: str | os.PathLike | None = None,
) -> list[tuple[int, CardiacSlice]]:
    """Preprocess one short-axis volume into ``size × size`` slices.

    Steps: remap labels to the 4 classes → slice axis (largest spacing) first → normalise
    intensities (MR percentiles of the whole volume → [-1, 1]) → resample in plane to pixels
    of ``fov_mm / size`` mm (linear image, nearest label) → a ``size × size`` window centred
    on the centroid of the label map's foreground (padded with -1 / background) → keep the
    slices with foreground.

    Args:
        image: ``(D, H, W)`` raw intensities (:func:`medlsdm.data.io.read_nifti`).
        label: ``(D, H, W)`` label map with the dataset's values.
        affine: their nibabel affine.
        size: output slice size (pixels per side).
        fov_mm: field of view of the output slice in mm (pixel size ``fov_mm / size``).
        percentiles: MR clipping percentiles.
        classes: class table of the dataset (default :data:`medlsdm.data.classes.CARDIAC`).
        label_path: named in label errors.

    Returns:
        ``[(slice index in the volume, CardiacSlice), …]`` for the slices with foreground.
    """

    classes = classes or CARDIAC
    if classes.num_classes != len(CLASS_NAMES):
        raise ConfigError(f"the cardiac model needs the {len(CLASS_NAMES)} classes {CLASS_NAMES}, got {classes.names}")
    if image.shape != label.shape or image.ndim != 3:
        raise DataError(
            f"{label_path or 'label'}: expected (D, H, W) image and label of one shape, got {image.shape} and "
            f"{label.shape}"
        )
    label = remap_labels(label, classes, label_path).astype(np.uint8)
    axis = int(np.argmax(spacing_dhw(affine)))
    image, _ = _permute_axes(image, affine, axis)
    label, affine = _permute_axes(label, affine, axis)
    spacing = spacing_dhw(affine)
    pixel = float(fov_mm) / int(size)
    target = (spacing[0], pixel, pixel)
    image = normalize_mr(resample(image, spacing, target, order=1), percentiles)
    label = resample(label, spacing, target, order=0)
    affine = resampled_affine(affine, spacing, target)
    foreground = np.argwhere(label > 0)
    if len(foreground) == 0:
        log.warning("%s: no foreground in any slice, case skipped", label_path or "case")
        return []
    centre = foreground[:, 1:].mean(0)
    start = [int(round(c - size / 2)) for c in centre]
    image = _window(image, start, size, -1.0)
    label = _window(label, start, size, 0)
    affine = shift_affine(affine, (0, *start))
    out = []
    for d in range(image.shape[0]):
        if label[d].any():
            out.append(
                (
                    d,
                    CardiacSlice(
                        image[d][None].astype(np.float32), label[d].astype(np.int64), shift_affine(affine, (d, 0, 0))
                    ),
                )
            )
    return out


def prepare_cardiac(
    out_dir: str | os.PathLike,
    *,
    dataset: str = "cardiac-2d",
    data_root: str | os.PathLike | None = None,
    n_subjects: int | None = None,
    views: Sequence[str] = ("SA",),
    size: int = 64,
    fov_mm: float = 128.0,
    edge_sigma: float = EDGE_DEFAULTS["sigma"],
    edge_low: float = EDGE_DEFAULTS["low"],
    edge_high: float = EDGE_DEFAULTS["high"],
    percentiles: Sequence[float] = (0.5, 99.5),
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Preprocess a cardiac dataset into ``out_dir/data/``: slices, edge maps, split, manifest.

    With ``dataset="cardiac-2d"`` and no ``data_root``, ``n_subjects`` phantom cases are
    generated first into ``out_dir/raw/`` (seeded by ``seed``). With ``dataset="mnms"``,
    ``data_root`` is the M&Ms folder (M&Ms-1 ``Training/Labeled/<code>/…`` or M&Ms-2 with its
    ``dataset_information.csv``); each subject gives its ED and ES frames of each of the
    ``views`` (M&Ms-2: short axis ``"SA"``, long axis ``"LA"``, or both; a long-axis file is a
    single slice); ``n_subjects`` keeps the first subjects (sorted codes; ``None``: all).
    Every case is validated (:func:`medlsdm.data.datasets.validate_cases`) before any work.

    Writes ``data/slices.h5`` (:class:`SliceStore`), ``data/split.json`` (slice ids, split by
    patient) and ``data/manifest.json`` (classes, pixel size, edge settings, cases).

    Args:
        out_dir: the cardiac folder of the run (``RUN/cardiac``).
        dataset: ``"cardiac-2d"`` (phantom) or ``"mnms"``.
        data_root: dataset folder (required for ``"mnms"``).
        n_subjects: subjects to use (phantom: to generate).
        views: M&Ms views (``["SA"]``, ``["LA"]`` or ``["SA", "LA"]``; long axis needs M&Ms-2);
            the phantom has short axis only.
        size: slice side in pixels (divisible by the VQ-VAE × UNet downsampling).
        fov_mm: field of view of a slice in mm (pixel size ``fov_mm / size``).
        edge_sigma, edge_low, edge_high: :func:`canny_edges` settings.
        percentiles: MR normalisation percentiles.
        fractions: (train, val, test) fractions of the patients.
        seed: phantom and split seed.
        progress: show a progress bar.

    Returns:
        A summary: counts of subjects, cases and slices per split, settings, ``seconds``.
    """

    start = time.perf_counter()
    cardiac = RunDir(out_dir)  # laid out as a run directory: raw/, data/, vqgan/
    if dataset not in ("cardiac-2d", "mnms"):
        raise ConfigError(f"dataset must be 'cardiac-2d' (phantom) or 'mnms', got {dataset!r}")
    if int(size) < 16 or int(size) % 8:
        raise ConfigError(f"size must be a multiple of 8 and >= 16, got {size}")
    if n_subjects is not None and int(n_subjects) < 3:
        raise ConfigError(f"n_subjects must be >= 3 (train, val and test patients), got {n_subjects}")
    views = [str(v).upper() for v in views]
    if dataset != "mnms" and views != ["SA"]:
        raise ConfigError(f"views={views} needs dataset='mnms' (M&Ms-2); the {dataset!r} phantom has short axis only")
    adapter = get_adapter(dataset, percentiles=tuple(percentiles), **({"views": views} if dataset == "mnms" else {}))
    if data_root is None:
        if dataset != "cardiac-2d":
            raise ConfigError(f"dataset {dataset!r} needs data_root (the folder with {adapter.layout})")
        data_root = cardiac.raw
        make_phantom("cardiac-2d", data_root, int(n_subjects or 20), seed=seed)
    cases = adapter.find_cases(data_root)
    if n_subjects is not None:
        keep = sorted({c.patient_id for c in cases})[: int(n_subjects)]
        cases = [c for c in cases if c.patient_id in keep]
    validate_cases(cases, adapter)

    edge = dict(sigma=float(edge_sigma), low=float(edge_low), high=float(edge_high))
    attrs = {
        "dataset": dataset,
        "views": views,
        "size": int(size),
        "fov_mm": float(fov_mm),
        "pixel_mm": float(fov_mm) / int(size),
        "edges": edge,
        "classes": list(CLASS_NAMES),
        "percentiles": list(percentiles),
    }
    data = cardiac.data
    records, case_rows = [], []
    with SliceStore(data / "slices.h5", "w", size=int(size), attrs=attrs) as store:
        for case in tqdm(cases, desc="slices", disable=not progress, leave=False):
            image, affine = adapter.read_image(case)
            label, _ = adapter.read_label(case)
            slices = slice_case(
                image,
                label,
                affine,
                size=int(size),
                fov_mm=fov_mm,
                percentiles=percentiles,
                classes=adapter.classes,
                label_path=case.label,
            )
            for index, item in slices:
                slice_id = f"{case.case_id}_s{index:02d}"
                store.add(slice_id, case.case_id, case.patient_id, index, item, canny_edges(item.image, **edge))
                records.append((slice_id, case.patient_id))
            case_rows.append({"case_id": case.case_id, "patient_id": case.patient_id, "n_slices": len(slices)})
    if not records:
        raise DataError(f"{data_root}: no slice with foreground in any of the {len(cases)} cases")
    split = make_split(records, fractions=fractions, seed=seed)
    save_split(cardiac.split_path, split)
    manifest = {
        **attrs,
        "spacing": [attrs["pixel_mm"]] * 2,
        "slices": "slices.h5",
        "n_slices": len(records),
        "cases": case_rows,
    }
    write_json(cardiac.manifest_path, manifest)
    patients = {p for _, p in records}
    summary = {
        "dataset": dataset,
        "views": views,
        "n_subjects": len(patients),
        "n_cases": len(cases),
        "n_slices": len(records),
        **{f"n_{k}": len(v) for k, v in split.items()},
        "size": int(size),
        "pixel_mm": attrs["pixel_mm"],
        "edges": edge,
        "seconds": round(time.perf_counter() - start, 2),
    }
    log.info("cardiac slices: %s", summary)
    return summary
