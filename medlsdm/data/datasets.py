"""Cases of a dataset and the adapter interface: how a dataset folder becomes cases,
and the checks every case passes before any work starts (:func:`validate_cases`).
The adapters of the supported datasets are in :mod:`medlsdm.data.adapters`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from . import classes as tables
from .classes import ClassTable
from .io import is_nifti, read_nifti, spacing_dhw, strip_nifti_suffix
from .labels import unique_ints

logger = logging.getLogger(__name__)


MODALITIES = ("CT", "MR")


@dataclass(frozen=True)
class Case:
    """One image/label pair.

    Attributes:
        case_id: unique id inside the dataset (used as output file name).
        patient_id: the patient it belongs to (splits never separate a patient's cases).
        image: image file.
        label: label file.
        frame: time frame to read from 4-D files (M&Ms ED/ES), ``None`` for 3-D files.
    """

    case_id: str
    patient_id: str
    image: Path
    label: Path
    frame: int | None = None


def safe_id(text: str) -> str:
    """A file-name-safe id: characters other than letters, digits, ``.``, ``-``, ``_`` → ``_``."""
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9._-]", "_", text)).strip("_")


def is_visible(path: Path) -> bool:
    return not path.name.startswith(".")


def check_root(root: str | os.PathLike, layout: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (expected layout: {layout})")
    return root


class DatasetAdapter:
    """Base class: a dataset's folder layout, class table and modality.

    Subclasses set ``name``, ``modality``, ``classes``, ``layout`` and implement
    :meth:`find_cases`; ``empty_labels_ok`` where a label map may hold background only (a
    lesion mask of a lesion-free study).

    Args:
        window: CT intensity window in HU (CT datasets).
        percentiles: MR clipping percentiles (MR datasets).
    """

    name: str = ""
    modality: str = "CT"
    classes: ClassTable = tables.TORSO_CT
    layout: str = ""
    is_phantom: bool = False
    empty_labels_ok: bool = False

    def __init__(self, *, window: Sequence[float] = (-1000.0, 1000.0), percentiles: Sequence[float] = (0.5, 99.5)):
        self.window = tuple(float(v) for v in window)
        self.percentiles = tuple(float(v) for v in percentiles)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, modality={self.modality!r}, classes={self.classes.num_classes})"
        )

    @property
    def normalisation(self) -> dict:
        """How intensities are mapped to [-1, 1] (as written in ``manifest.json``)."""
        if self.modality == "CT":
            return {"method": "ct_window", "window": list(self.window), "range": [-1.0, 1.0]}
        return {"method": "mr_percentile", "percentiles": list(self.percentiles), "range": [-1.0, 1.0]}

    def find_cases(self, root: str | os.PathLike) -> list[Case]:
        """All cases under ``root``, sorted by case id.

        Raises:
            DataError: missing or empty folder, or image without label (and vice versa).
        """
        raise NotImplementedError

    def read_image(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        """``(D, H, W)`` float32 image and its affine (:func:`medlsdm.data.io.read_nifti`)."""
        return read_nifti(case.image, kind="image", frame=case.frame)

    def read_label(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        """``(D, H, W)`` int64 label map with the dataset's values, and its affine."""
        return read_nifti(case.label, kind="label", frame=case.frame)


def nifti_files(folder: Path) -> dict[str, Path]:
    """``{id: path}`` of the NIfTI files in a folder (hidden files ignored, others warned)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not is_visible(path) or path.is_dir():
            continue
        if not is_nifti(path):
            logger.warning("%s: not a NIfTI file (.nii / .nii.gz), ignored", path)
            continue
        key = strip_nifti_suffix(path.name)
        if key in files:
            raise DataError(f"{folder}: both {files[key].name} and {path.name} exist; keep one")
        files[key] = path
    return files


def pair_folders(root: Path, images: str = "images", labels: str = "labels") -> list[tuple[str, Path, Path]]:
    """Pair ``root/images/<id>.nii[.gz]`` with ``root/labels/<id>.nii[.gz]`` by file name.

    Args:
        root: dataset folder.
        images: image sub-folder name.
        labels: label sub-folder name.

    Returns:
        Sorted ``(id, image, label)`` triples.
    """
    found = {}
    for sub in (images, labels):
        folder = root / sub
        if not folder.is_dir():
            raise DataError(
                f"{folder}: folder not found (expected {root}/{images}/ and {root}/{labels}/ with NIfTI files)"
            )
        found[sub] = nifti_files(folder)
    image_files, label_files = found[images], found[labels]
    if not image_files and not label_files:
        raise DataError(f"{root}: no NIfTI files in {images}/ and {labels}/")
    unpaired = [str(image_files[k]) + " has no label" for k in sorted(set(image_files) - set(label_files))]
    unpaired += [str(label_files[k]) + " has no image" for k in sorted(set(label_files) - set(image_files))]
    if unpaired:
        raise DataError(
            f"{root}: unpaired files (image and label must share the file name):\n  " + "\n  ".join(unpaired)
        )
    return [(k, image_files[k], label_files[k]) for k in sorted(image_files)]


class FolderAdapter(DatasetAdapter):
    """``images/`` + ``labels/`` folders paired by file name; one patient per case."""

    layout = "<root>/images/<id>.nii.gz and <root>/labels/<id>.nii.gz"

    def find_cases(self, root: str | os.PathLike) -> list[Case]:
        root = check_root(root, self.layout)
        return [Case(key, key, image, label) for key, image, label in pair_folders(root)]


def _check_case(case: Case, adapter: DatasetAdapter) -> dict:
    image, image_affine = adapter.read_image(case)
    label, label_affine = adapter.read_label(case)
    if image.shape != label.shape:
        raise DataError(
            f"{case.label}: label shape {label.shape} (D, H, W) differs from image shape {image.shape} of {case.image}"
        )
    if not np.allclose(image_affine, label_affine, rtol=1e-4, atol=1e-3):
        raise DataError(
            f"{case.label}: label affine differs from the affine of {case.image}:\n"
            f"{np.round(label_affine, 4)}\nvs\n{np.round(image_affine, 4)}"
        )
    values = [int(v) for v in unique_ints(label)]
    unknown = [v for v in values if v not in adapter.classes.mapping()]
    if unknown:
        raise DataError(
            f"{case.label}: label values {unknown[:10]} are not in the {adapter.name} class table "
            f"(values {list(adapter.classes.source_values)} for {list(adapter.classes.names)})"
        )
    background = adapter.classes.source_values[0]
    if values == [background] and not adapter.empty_labels_ok:
        raise DataError(
            f"{case.label}: the label map is all background (value {background}), no labelled "
            "structure to condition on; fix the file or remove the case"
        )
    return {"shape": list(image.shape), "spacing": list(spacing_dhw(image_affine)), "label_values": values}


def validate_cases(cases: Sequence[Case], adapter: DatasetAdapter, *, max_errors: int = 20) -> dict[str, dict]:
    """Check every case before any work starts; report all problems at once.

    Checks: both files readable NIfTI, 3-D (or the selected frame of a 4-D file), no NaN/Inf
    in the image, integer labels, equal shapes and affines (``allclose``), label values in
    the adapter's class table, not all background (unless ``adapter.empty_labels_ok``), at
    most :data:`~medlsdm.data.io.MAX_VOLUME_BYTES` per array.

    Args:
        cases: cases from ``adapter.find_cases``.
        adapter: the dataset adapter (reads the files, knows the classes).
        max_errors: how many problems the error message lists in full.

    Returns:
        ``{case_id: {"shape", "spacing", "label_values"}}`` of the source volumes (D, H, W).

    Raises:
        DataError: listing every bad case, each line naming the file and the problem.
    """
    if not cases:
        raise DataError("no cases to validate")
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise DataError(f"duplicate case ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    info, errors = {}, []
    for case in tqdm(cases, desc="validate", leave=False):
        try:
            info[case.case_id] = _check_case(case, adapter)
        except DataError as exc:
            errors.append(str(exc))
    if errors:
        shown = errors[:max_errors]
        more = f"\n  … and {len(errors) - max_errors} more" if len(errors) > max_errors else ""
        raise DataError(f"{len(errors)} of {len(cases)} cases failed validation:\n  " + "\n  ".join(shown) + more)
    logger.info("validated %d cases of %s", len(cases), adapter.name)
    return info


def subdirs(folder: Path) -> list[Path]:
    """The visible sub-folders of ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and is_visible(p))


def pair_in(folder: Path, image_name: str, label_name: str) -> tuple[Path, Path]:
    """``folder/image_name`` and ``folder/label_name``; a ``DataError`` naming what is missing."""
    image, label = folder / image_name, folder / label_name
    if image.is_file() and label.is_file():
        return image, label
    missing = [str(p) for p in (image, label) if not p.is_file()]
    raise DataError(f"{folder}: unpaired case, missing {', '.join(missing)}")


def check_choice(dataset: str, option: str, value, choices) -> str:
    """``value`` if it is one of ``choices``, else a ``ConfigError`` naming the dataset's option."""
    if value not in choices:
        raise ConfigError(f"dataset {dataset!r}: option {option} must be one of {list(choices)}, got {value!r}")
    return value
