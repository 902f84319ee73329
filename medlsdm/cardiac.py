"""The 2-D cardiac latent diffusion model: short-axis slices, edge maps, conditioning modes.

The second system of the tutorial (notebook 06): a latent diffusion model that paints a
cardiac MR slice from two conditions, a **Canny edge map** of the slice and a **four-class
one-hot semantic map** (background, LV blood pool, myocardium, RV), in the latent space of a
2-D VQ-VAE (:class:`~medlsdm.models.vqgan.VQGAN` with ``spatial_dims=2`` and no
adversarial loss). Everything model-side is the 3-D code with ``spatial_dims=2``; this module
holds only what is specific to the cardiac data.

1. **Slices** (:func:`prepare_cardiac`): every short-axis slice with foreground of every
   case (the ``cardiac-2d`` phantom, or M&Ms ED/ES frames through the ``mnms`` adapter) →
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

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import h5py
import numpy as np

from .atomic import write_json
from .data.store import H5Store
from .errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: The conditioning modes of the ablation.
MODES = ("edges", "semantic", "edges+semantic")
#: Classes of the cardiac label maps (``medlsdm.data.classes.CARDIAC``).
CLASS_NAMES = ("background", "lv_blood_pool", "myocardium", "rv")
#: Canny defaults for slices in [-1, 1] at about 2 mm pixels: Gaussian σ in pixels and
#: hysteresis thresholds on the Sobel gradient magnitude of the smoothed slice (intensity
#: units per pixel). With σ = 1 the phantom's texture and noise still make short spurious
#: edges; σ = 1.5 with 0.15 / 0.3 keeps the anatomical boundaries (blood pool, myocardium,
#: RV, lungs, body outline) and little else.
EDGE_DEFAULTS = dict(sigma=1.5, low=0.15, high=0.3)


# ======================================================================================
# edges
# ======================================================================================
def canny_edges(image: np.ndarray, sigma: float = EDGE_DEFAULTS["sigma"], low: float | None = EDGE_DEFAULTS["low"],
                high: float | None = EDGE_DEFAULTS["high"], *, use_quantiles: bool = False) -> np.ndarray:
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
    from skimage.feature import canny

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


# ======================================================================================
# slices
# ======================================================================================
class CardiacSlice(NamedTuple):
    """One preprocessed short-axis slice (the store's item, also a ``(image, label, affine)``
    tuple like :class:`medlsdm.data.store.CaseStore` items, so the 3-D training code reads it).

    Attributes:
        image: ``(1, H, W)`` float32 in [-1, 1].
        label: ``(H, W)`` int64 class indices (:data:`CLASS_NAMES`).
        affine: 4×4 nibabel affine of the slice as a one-slice volume (:mod:`medlsdm.data.io`).
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray


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


def slice_case(image: np.ndarray, label: np.ndarray, affine: np.ndarray, *, size: int, fov_mm: float,
               percentiles: Sequence[float] = (0.5, 99.5), classes=None,
               label_path: str | os.PathLike | None = None) -> list[tuple[int, CardiacSlice]]:
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
    from .data.classes import CARDIAC
    from .data.io import spacing_dhw
    from .data.preprocess import normalize_mr, remap_labels, resample, resampled_affine, shift_affine

    classes = classes or CARDIAC
    if classes.num_classes != len(CLASS_NAMES):
        raise ConfigError(f"the cardiac model needs the {len(CLASS_NAMES)} classes {CLASS_NAMES}, got {classes.names}")
    if image.shape != label.shape or image.ndim != 3:
        raise DataError(f"{label_path or 'label'}: expected (D, H, W) image and label of one shape, got {image.shape} and {label.shape}")
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
            out.append((d, CardiacSlice(image[d][None].astype(np.float32), label[d].astype(np.int64),
                                        shift_affine(affine, (d, 0, 0)))))
    return out


# ======================================================================================
# HDF5 storage
# ======================================================================================
class SliceStore(H5Store):
    """An HDF5 file of preprocessed slices and their edge maps, read one slice at a time.

    Layout (``N`` slices of ``S × S``; every array is one dataset, chunked per slice, so
    reading slice ``i`` reads (and decompresses) only its own chunk)::

        /images       (N, 1, S, S) float32 in [-1, 1]
        /labels       (N, S, S)    uint8 class indices (CLASS_NAMES)
        /edges        (N, 1, S, S) uint8 in {0, 1} (Canny, computed once when written)
        /affines      (N, 4, 4)    float64 affine of each slice as a one-slice volume
        /slice_ids, /case_ids, /patient_ids   (N,) strings; /slice_index (N,) int32
        attrs: format_version and whatever the writer passes (size, pixel size, edge settings …)

    Writing is atomic: the file is filled under a temporary name and renamed to ``path`` by
    :meth:`close` (a crash never leaves a half-written store). Reading opens the file on
    first access in each process.

    Args:
        path: the ``.h5`` file.
        mode: ``"r"`` to read, ``"w"`` to write a new store (replaces ``path`` on close).
        size: slice side ``S`` (writing only).
        attrs: file attributes to record (writing only; JSON-serialisable values).
        compression: h5py compression filter of the arrays.

    Example::

        with SliceStore(path, "w", size=64, attrs={"edge_sigma": 1.5}) as store:
            store.add("cardiac_000_s03", "cardiac_000", "cardiac_000", 3, slice_, edges)
        store = SliceStore(path)
        image, label, affine = store["cardiac_000_s03"]   # or store[0]
        edges = store.edges("cardiac_000_s03")
    """

    kind = "slice store"
    hint = "run the preprocessing of notebook 06 first"
    required = ("images", "labels", "edges", "affines", "slice_ids")
    ARRAYS = required[:4]

    def __init__(self, path: str | os.PathLike, mode: str = "r", *, size: int | None = None,
                 attrs: Mapping[str, Any] | None = None, compression: str = "gzip"):
        if mode == "w" and (size is None or int(size) < 1):
            raise ConfigError("SliceStore(mode='w') needs the slice size")
        super().__init__(path, mode)
        self._index: dict[str, int] | None = None
        if mode == "w":
            f, s = self._file, int(size)
            for key, value in (attrs or {}).items():
                f.attrs[key] = json.dumps(value)
            shapes = {"images": ((1, s, s), np.float32), "labels": ((s, s), np.uint8),
                      "edges": ((1, s, s), np.uint8), "affines": ((4, 4), np.float64)}
            for name, (shape, dtype) in shapes.items():
                f.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=(1, *shape),
                                 compression=None if name == "affines" else compression,
                                 shuffle=name == "images")
            for name in ("slice_ids", "case_ids", "patient_ids"):
                f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(256,))
            f.create_dataset("slice_index", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(256,))
            self._index = {}

    # ------------------------------------------------------------------ writing
    def add(self, slice_id: str, case_id: str, patient_id: str, slice_index: int, item: CardiacSlice,
            edges: np.ndarray) -> None:
        """Append one slice with its edge map ``(H, W)`` or ``(1, H, W)`` (bool or 0/1)."""
        f, n = self._writable(), len(self._index)
        if slice_id in self._index:
            raise ValueError(f"{slice_id}: already in the store")
        values = {"images": np.asarray(item.image, np.float32), "labels": np.asarray(item.label),
                  "edges": np.asarray(edges).reshape(1, *np.shape(item.label)).astype(np.uint8),
                  "affines": np.asarray(item.affine, np.float64)}
        for name, value in values.items():
            if value.shape != f[name].shape[1:]:
                raise ValueError(f"{slice_id}: {name} has shape {value.shape}, the store holds {f[name].shape[1:]}")
        if values["labels"].min() < 0 or values["labels"].max() >= len(CLASS_NAMES):
            raise ValueError(f"{slice_id}: class indices must lie in 0 … {len(CLASS_NAMES) - 1}")
        for name, value in {**values, "slice_ids": slice_id, "case_ids": case_id, "patient_ids": patient_id,
                            "slice_index": int(slice_index)}.items():
            f[name].resize(n + 1, axis=0)
            f[name][n] = value
        self._index[slice_id] = n

    # ------------------------------------------------------------------ reading
    def _position(self, key: int | str) -> int:
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.ids())}
        if isinstance(key, (int, np.integer)):
            if not -len(self._index) <= key < len(self._index):
                raise IndexError(f"slice {key} out of range ({len(self._index)} slices in {self.path})")
            return int(key) % len(self._index)
        if key not in self._index:
            raise KeyError(f"{key!r} is not in {self.path}")
        return self._index[key]

    def ids(self) -> list[str]:
        """Slice ids in the order they were written."""
        return [s.decode() if isinstance(s, bytes) else str(s) for s in self._h5()["slice_ids"][()]]

    def __len__(self) -> int:
        return int(self._h5()["slice_ids"].shape[0])

    def __contains__(self, key: str) -> bool:
        try:
            self._position(key)
        except (KeyError, IndexError):
            return False
        return True

    def __iter__(self):
        return iter(self.ids())

    def __getitem__(self, key: int | str) -> CardiacSlice:
        """One slice (by id or position): ``CardiacSlice(image (1, S, S), label (S, S) int64, affine)``."""
        i, f = self._position(key), self._h5()
        return CardiacSlice(f["images"][i], f["labels"][i].astype(np.int64), f["affines"][i])

    def edges(self, key: int | str) -> np.ndarray:
        """The stored edge map of a slice, ``(1, S, S)`` float32 in {0, 1}."""
        return self._h5()["edges"][self._position(key)].astype(np.float32)

    def column(self, name: str) -> list:
        """A per-slice metadata column: ``"case_ids"``, ``"patient_ids"`` or ``"slice_index"``."""
        values = self._h5()[name][()]
        return [v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v for v in values]

    @property
    def attrs(self) -> dict[str, Any]:
        """The attributes recorded by the writer."""
        return {k: (json.loads(v) if isinstance(v, str) else v.item() if hasattr(v, "item") else v)
                for k, v in self._h5().attrs.items()}

    def stack(self, keys: Sequence[int | str]) -> dict[str, np.ndarray]:
        """``{"images" (N, 1, S, S), "labels" (N, S, S), "edges" (N, 1, S, S)}`` of the given slices."""
        items = [self[k] for k in keys]
        return {"images": np.stack([s.image for s in items]), "labels": np.stack([s.label for s in items]),
                "edges": np.stack([self.edges(k) for k in keys])}


# ======================================================================================
# preprocessing a dataset
# ======================================================================================
def prepare_cardiac(out_dir: str | os.PathLike, *, dataset: str = "cardiac-2d", data_root: str | os.PathLike | None = None,
                    n_subjects: int | None = None, size: int = 64, fov_mm: float = 128.0,
                    edge_sigma: float = EDGE_DEFAULTS["sigma"], edge_low: float = EDGE_DEFAULTS["low"],
                    edge_high: float = EDGE_DEFAULTS["high"], percentiles: Sequence[float] = (0.5, 99.5),
                    fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Preprocess a cardiac dataset into ``out_dir/data/``: slices, edge maps, split, manifest.

    With ``dataset="cardiac-2d"`` and no ``data_root``, ``n_subjects`` phantom cases are
    generated first into ``out_dir/raw/`` (seeded by ``seed``). With ``dataset="mnms"``,
    ``data_root`` is the M&Ms folder (``Training/Labeled/<code>/…``); each subject gives its
    ED and ES frames; ``n_subjects`` keeps the first subjects (sorted codes; ``None``: all).
    Every case is validated (:func:`medlsdm.data.datasets.validate_cases`) before any work.

    Writes ``data/slices.h5`` (:class:`SliceStore`), ``data/split.json`` (slice ids, split by
    patient) and ``data/manifest.json`` (classes, pixel size, edge settings, cases).

    Args:
        out_dir: the cardiac folder of the run (``RUN/cardiac``).
        dataset: ``"cardiac-2d"`` (phantom) or ``"mnms"``.
        data_root: dataset folder (required for ``"mnms"``).
        n_subjects: subjects to use (phantom: to generate).
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
    import time

    from tqdm.auto import tqdm

    from .data.datasets import get_adapter, validate_cases
    from .data.phantom import make_phantom
    from .data.splits import make_split, save_split

    start = time.perf_counter()
    out_dir = Path(out_dir)
    if dataset not in ("cardiac-2d", "mnms"):
        raise ConfigError(f"dataset must be 'cardiac-2d' (phantom) or 'mnms', got {dataset!r}")
    if int(size) < 16 or int(size) % 8:
        raise ConfigError(f"size must be a multiple of 8 and >= 16, got {size}")
    if n_subjects is not None and int(n_subjects) < 3:
        raise ConfigError(f"n_subjects must be >= 3 (train, val and test patients), got {n_subjects}")
    adapter = get_adapter(dataset, percentiles=tuple(percentiles))
    if data_root is None:
        if dataset != "cardiac-2d":
            raise ConfigError(f"dataset {dataset!r} needs data_root (the folder with {adapter.layout})")
        data_root = out_dir / "raw"
        make_phantom("cardiac-2d", data_root, int(n_subjects or 20), seed=seed)
    cases = adapter.find_cases(data_root)
    if n_subjects is not None:
        keep = sorted({c.patient_id for c in cases})[: int(n_subjects)]
        cases = [c for c in cases if c.patient_id in keep]
    validate_cases(cases, adapter)

    edge = dict(sigma=float(edge_sigma), low=float(edge_low), high=float(edge_high))
    attrs = {"dataset": dataset, "size": int(size), "fov_mm": float(fov_mm), "pixel_mm": float(fov_mm) / int(size),
             "edges": edge, "classes": list(CLASS_NAMES), "percentiles": list(percentiles)}
    data = out_dir / "data"
    records, case_rows = [], []
    with SliceStore(data / "slices.h5", "w", size=int(size), attrs=attrs) as store:
        for case in tqdm(cases, desc="slices", disable=not progress, leave=False):
            image, affine = adapter.read_image(case)
            label, _ = adapter.read_label(case)
            slices = slice_case(image, label, affine, size=int(size), fov_mm=fov_mm, percentiles=percentiles,
                                classes=adapter.classes, label_path=case.label)
            for index, item in slices:
                slice_id = f"{case.case_id}_s{index:02d}"
                store.add(slice_id, case.case_id, case.patient_id, index, item, canny_edges(item.image, **edge))
                records.append((slice_id, case.patient_id))
            case_rows.append({"case_id": case.case_id, "patient_id": case.patient_id, "n_slices": len(slices)})
    if not records:
        raise DataError(f"{data_root}: no slice with foreground in any of the {len(cases)} cases")
    split = make_split(records, fractions=fractions, seed=seed)
    save_split(data / "split.json", split)
    manifest = {**attrs, "spacing": [attrs["pixel_mm"]] * 2, "slices": "slices.h5", "n_slices": len(records),
                "cases": case_rows}
    write_json(data / "manifest.json", manifest)
    patients = {p for _, p in records}
    summary = {"dataset": dataset, "n_subjects": len(patients), "n_cases": len(cases), "n_slices": len(records),
               **{f"n_{k}": len(v) for k, v in split.items()}, "size": int(size), "pixel_mm": attrs["pixel_mm"],
               "edges": edge, "seconds": round(time.perf_counter() - start, 2)}
    log.info("cardiac slices: %s", summary)
    return summary


# ======================================================================================
# conditioning modes
# ======================================================================================
def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown conditioning mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def check_modes(modes: Sequence[str]) -> list[str]:
    """The modes as a list; :class:`~medlsdm.errors.ConfigError` for an unknown or repeated
    one (call it before any work starts)."""
    modes = [_check_mode(m) for m in modes]
    if not modes or len(set(modes)) != len(modes):
        raise ConfigError(f"modes must list distinct modes out of {', '.join(MODES)}, got {modes}")
    return modes


def mode_slug(mode: str) -> str:
    """File-name form of a mode: ``"edges+semantic"`` → ``"edges_semantic"``."""
    return _check_mode(mode).replace("+", "_")


def condition_inputs(labels, edges, mode: str):
    """The ``(labels, edges)`` a model of ``mode`` sees (numpy or torch, any batch shape).

    ``"edges"``: the label map is all background (a constant one-hot map, no semantic
    information); ``"semantic"``: the edge map is all zeros; ``"edges+semantic"``: both.
    """
    _check_mode(mode)
    if mode == "edges":
        labels = labels * 0
    if mode == "semantic":
        edges = edges * 0
    return labels, edges


def make_condition(labels, edges, mode: str, num_classes: int = len(CLASS_NAMES)):
    """The UNet condition ``(B, num_classes + 2, H, W)`` of a mode: one-hot, edge, null channel.

    Args:
        labels: ``(B, H, W)`` class indices.
        edges: ``(B, 1, H, W)`` edge maps in {0, 1}.
        mode: one of :data:`MODES`.
    """
    import torch

    from .models.unet import semantic_condition

    labels, edges = condition_inputs(torch.as_tensor(labels).long(), torch.as_tensor(edges, dtype=torch.float32), mode)
    return semantic_condition(labels, num_classes, edges)


class ModeView:
    """A :class:`SliceStore` as the model of one conditioning mode sees it.

    ``view[key]`` is the slice with its label map as in :func:`condition_inputs`;
    ``view.edge_maps[key]`` its edge map (or zeros). This is what
    :func:`medlsdm.diffusion.train_diffusion` is given as ``store`` and ``extra_condition``.
    """

    def __init__(self, store: SliceStore, mode: str):
        self.store, self.mode = store, _check_mode(mode)
        self.edge_maps = _Lookup(self._edges)

    def __getitem__(self, key) -> CardiacSlice:
        item = self.store[key]
        return item if self.mode != "edges" else item._replace(label=np.zeros_like(item.label))

    def _edges(self, key) -> np.ndarray:
        edges = self.store.edges(key)
        return edges if self.mode != "semantic" else np.zeros_like(edges)


class _Lookup:
    def __init__(self, fn):
        self._fn = fn

    def __getitem__(self, key):
        return self._fn(key)


# ======================================================================================
# training
# ======================================================================================
#: :func:`medlsdm.training.train_vqgan` settings that make the 2-D VQ-GAN a VQ-VAE on whole
#: slices: no discriminators, no perceptual loss, 3 latent channels (the paper's 32×32×3).
VQVAE_DEFAULTS: dict[str, Any] = dict(
    crop_shape=None, gan_weight_2d=0.0, gan_weight_3d=0.0, perceptual_weight=0.0, perceptual_weights=None,
    decoder="normal", embedding_dim=3, channels=(16, 32, 64), num_embeddings=256, batch_size=16,
)


def train_vqvae(cardiac_dir: str | os.PathLike, store: SliceStore, split: Mapping[str, Sequence[str]],
                **params: Any) -> dict[str, Any]:
    """Train the 2-D VQ-VAE on whole training slices into ``cardiac_dir/vqgan/model``.

    :func:`medlsdm.training.train_vqgan` with :data:`VQVAE_DEFAULTS` (``params`` override them).
    The decoder is the normal one (no SPADE): the autoencoder knows nothing of the label map,
    so every conditioning mode gets its semantic information only through the diffusion
    model's condition.
    """
    from .training import train_vqgan

    return train_vqgan(cardiac_dir, store=store, split=split, **{**VQVAE_DEFAULTS, **params})


def mode_dir(cardiac_dir: str | os.PathLike, mode: str) -> Path:
    """Where the diffusion model of a mode lives: ``cardiac_dir/ldm/<mode_slug>/``."""
    return Path(cardiac_dir) / "ldm" / mode_slug(mode)


def train_mode(cardiac_dir: str | os.PathLike, store: SliceStore, split: Mapping[str, Sequence[str]], mode: str,
               **params: Any) -> dict[str, Any]:
    """Train the latent diffusion model of one conditioning mode.

    :func:`medlsdm.diffusion.train_diffusion` on the slices as the mode sees them
    (:class:`ModeView`), with the edge map as the one extra condition channel; writes
    ``mode_dir/`` (checkpoints, ``log.csv``) and the pipeline ``mode_dir/pipeline``.
    ``params``: any key of :data:`medlsdm.diffusion.DIFFUSION_DEFAULTS`.
    """
    from .diffusion import train_diffusion

    view = ModeView(store, mode)
    folder = mode_dir(cardiac_dir, mode)
    summary = train_diffusion(cardiac_dir, store=view, split=split, extra_condition=view.edge_maps,
                              out_dir=folder, pipeline_dir=folder / "pipeline", **params)
    write_json(folder / "mode.json", {"mode": mode})
    return summary


def load_mode_pipeline(cardiac_dir: str | os.PathLike, mode: str, device="cpu"):
    """The trained :class:`~medlsdm.pipeline.MedLSDMPipeline` of a mode."""
    from .diffusion import load_pipeline_dir

    return load_pipeline_dir(mode_dir(cardiac_dir, mode) / "pipeline", device)


# ======================================================================================
# synthesis and evaluation
# ======================================================================================
def synthesize(pipe, labels: np.ndarray, edges: np.ndarray, mode: str, *, num_inference_steps: int = 50,
               guidance_scale: float = 1.0, seed: int = 0, batch_size: int = 32, scheduler: str = "ddim") -> np.ndarray:
    """Synthetic slices ``(N, 1, H, W)`` in [-1, 1] from label maps ``(N, H, W)`` and edge maps
    ``(N, 1, H, W)``, through the pipeline of ``mode`` (which sees them as :func:`condition_inputs`).

    Args:
        scheduler: ``"ddim"`` (deterministic, from the pipeline's DDPM configuration) or
            ``"ddpm"`` (the training scheduler, as saved).
        seed: seed of the initial noise (one generator for all batches, in order).
    """
    import torch
    from diffusers import DDIMScheduler

    if scheduler not in ("ddim", "ddpm"):
        raise ConfigError(f"scheduler must be 'ddim' or 'ddpm', got {scheduler!r}")
    if scheduler == "ddim":
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    labels, edges = condition_inputs(np.asarray(labels), np.asarray(edges, np.float32), mode)
    generator = torch.Generator().manual_seed(int(seed))
    out = []
    for i in range(0, len(labels), batch_size):
        res = pipe(torch.as_tensor(labels[i:i + batch_size]), num_inference_steps=num_inference_steps,
                   guidance_scale=guidance_scale, generator=generator, extra_condition=edges[i:i + batch_size])
        out.append(res.images)
    return np.concatenate(out).astype(np.float32)


def reconstruct(vqgan, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """VQ-VAE reconstructions ``(N, 1, H, W)`` of slices (encode → nearest codes → decode):
    the best any latent diffusion sample in this latent space can be."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = torch.as_tensor(np.asarray(images[i:i + batch_size], np.float32)).to(vqgan.device, vqgan.dtype)
            zq, _, _ = vqgan.quantize(vqgan.encode(x), update=False)
            out.append(vqgan.decode(zq, force_not_quantize=True).clamp(-1, 1).float().cpu().numpy())
    return np.concatenate(out)


def _features(fn, images: np.ndarray, device, batch_size: int = 32) -> np.ndarray:
    """``fn`` (a feature network on ``device``) over ``(N, C, H, W)`` images in batches, as float64 numpy."""
    import torch

    with torch.no_grad():
        x = torch.as_tensor(np.asarray(images, np.float32))
        return torch.cat([fn(x[i:i + batch_size].to(device)).double().cpu() for i in range(0, len(x), batch_size)]).numpy()


def segnet_features_2d(segnet, images: np.ndarray) -> np.ndarray:
    """Bottleneck features ``(N, C)`` (:meth:`~medlsdm.models.segnet.SegNet.features`) of slices ``(N, 1, H, W)``."""
    segnet.eval()
    return _features(segnet.features, images, next(segnet.parameters()).device)


def inception_features_2d(inception, images: np.ndarray) -> np.ndarray:
    """InceptionV3 pool3 features ``(N, 2048)`` of slices ``(N, 1, H, W)`` in [-1, 1] (mapped to
    [0, 1] and repeated to RGB, as FID does for grey images)."""
    return _features(lambda x: inception((x.clamp(-1, 1) + 1).div(2).repeat(1, 3, 1, 1)), images,
                     next(inception.parameters()).device, batch_size=16)


def evaluate_samples(real: np.ndarray, fake: np.ndarray, *, labels: np.ndarray | None = None, segnet=None,
                     inception=None) -> dict[str, Any]:
    """Compare synthetic slices with the real slices their conditions came from.

    Paired, per slice then averaged: SSIM (:func:`medlsdm.metrics.ssim`, Gaussian window,
    ``data_range=2`` for [-1, 1]) and NMSE ``‖fake − real‖² / ‖real‖²``
    (:func:`medlsdm.metrics.nmse`). As sets: ``fd_seg``, the Fréchet distance of the two sets
    in the segmentation network's bottleneck feature space, and ``dice``, the mean Dice of
    the network's segmentation of the synthetic slices against ``labels`` (with ``segnet``);
    ``fid`` with InceptionV3 features (with ``inception``; otherwise ``None``).

    Args:
        real, fake: ``(N, 1, H, W)`` in [-1, 1], paired by index.
        labels: ``(N, H, W)`` label maps of the real slices (for ``dice``).
        segnet: a trained 2-D :class:`~medlsdm.models.segnet.SegNet`.
        inception: :func:`medlsdm.models.inception.load_inception` result.
    """
    from .metrics import frechet_distance_from_features, nmse, ssim

    real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    if real.shape != fake.shape or real.ndim != 4:
        raise DataError(f"evaluate_samples: expected paired (N, 1, H, W) sets, got {real.shape} and {fake.shape}")
    out: dict[str, Any] = {
        "ssim": float(np.mean([ssim(f, r, data_range=2.0) for f, r in zip(fake, real)])),
        "nmse": float(np.mean([nmse(f, r) for f, r in zip(fake, real)])),
        "n": len(real),
    }
    if segnet is not None:
        out["fd_seg"] = frechet_distance_from_features(segnet_features_2d(segnet, real), segnet_features_2d(segnet, fake))
        if labels is not None:
            from .segmentation import evaluate_dice

            out["dice"] = evaluate_dice(segnet, fake, labels, num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES)["mean"]
    out["fid"] = None
    if inception is not None:
        out["fid"] = frechet_distance_from_features(inception_features_2d(inception, real), inception_features_2d(inception, fake))
    return out


def ablation_table(results: Mapping[str, Mapping[str, Any]], keys: Sequence[str] = ("ssim", "nmse", "fd_seg", "dice")) -> str:
    """A Markdown table: one row per mode (or reference), one column per metric."""
    from .tables import markdown_table

    arrows = {"ssim": "↑", "nmse": "↓", "fd_seg": "↓", "dice": "↑", "fid": "↓"}
    rows = [[name] + [f"{row[k]:.4g}" if isinstance(row.get(k), (int, float)) else "–" for k in keys]
            for name, row in results.items()]
    return markdown_table(["condition"] + [f"{k} {arrows.get(k, '')}" for k in keys], rows)


def plot_slices(rows: Mapping[str, Sequence[np.ndarray]], *, col_titles: Sequence[str] | None = None,
                labels: Sequence[np.ndarray] | None = None, ranges: Mapping[str, tuple[float, float]] | None = None):
    """A grid of 2-D slices: one row per name, one column per slice (``(H, W)`` or ``(1, H, W)``).

    ``labels`` (one per column) are drawn as an overlay on rows whose name contains "label";
    ``ranges`` gives a row its grey-value window (default -1 … 1; e.g. ``(0, 1)`` for edges).
    """
    import matplotlib.pyplot as plt

    from .viz import draw_slice

    names = list(rows)
    ncols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(names), ncols, figsize=(1.9 * ncols, 1.9 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        vmin, vmax = (ranges or {}).get(name, (-1.0, 1.0))
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(rows[name]):
                ax.axis("off")
                continue
            lab = labels[c] if labels is not None and "label" in name else None
            draw_slice(ax, np.asarray(rows[name][c]).squeeze(), lab, num_classes=len(CLASS_NAMES), vmin=vmin, vmax=vmax)
            if r == 0 and col_titles is not None:
                ax.set_title(col_titles[c], fontsize=8)
            if c == 0:
                ax.text(-0.05, 0.5, name, transform=ax.transAxes, rotation=90, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def plot_losses(cardiac_dir: str | os.PathLike, modes: Sequence[str] = MODES):
    """The denoising loss of each mode's training (``log.csv``) against the step."""
    import csv

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for mode in modes:
        with open(mode_dir(cardiac_dir, mode) / "log.csv", newline="") as f:
            points = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f) if r.get("loss")]
        ax.plot(*zip(*points), marker="." if len(points) < 30 else None, label=mode)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("denoising loss (MSE)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def slice_browser(rows: Mapping[str, Sequence[np.ndarray]], *, labels: Sequence[np.ndarray] | None = None,
                  ranges: Mapping[str, tuple[float, float]] | None = None, interactive: bool = True, n_static: int = 6):
    """Browse paired slices (one row per name) with a slider (ipywidgets 8); without
    ``interactive`` (headless runs) a static :func:`plot_slices` figure of the first ``n_static``."""
    import io

    import matplotlib.pyplot as plt

    if not interactive:
        return plot_slices({k: list(v[:n_static]) for k, v in rows.items()},
                           labels=None if labels is None else list(labels[:n_static]), ranges=ranges)
    import ipywidgets as w

    n = len(next(iter(rows.values())))
    slider = w.IntSlider(value=0, min=0, max=n - 1, description="slice", continuous_update=False)
    image = w.Image(format="png")

    def update(_=None):
        i = slider.value
        fig = plot_slices({k: [v[i]] for k, v in rows.items()}, labels=None if labels is None else [labels[i]], ranges=ranges)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        image.value = buf.getvalue()

    slider.observe(update, names="value")
    update()
    return w.VBox([slider, image])
