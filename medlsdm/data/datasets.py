"""Dataset adapters: where each dataset keeps its files, its classes and its modality.

An adapter turns a dataset folder into a sorted list of :class:`Case` (image + label file,
case and patient id) and reads them as ``(D, H, W)`` arrays (:mod:`medlsdm.data.io`).
:func:`validate_cases` checks every case before any work starts.

=================  =====  ==============================================================
name               mod.   layout under ``root``
=================  =====  ==============================================================
``torso-ct``       CT     phantom: ``images/<id>.nii.gz`` + ``labels/<id>.nii.gz``
``breast-mr``      MR     phantom, same layout
``cardiac-2d``     MR     phantom, same layout
``nifti``          any    ``images/<id>.nii[.gz]`` + ``labels/<id>.nii[.gz]``; modality and
                          classes given by the user
``autopet``        CT     ``<patient>/<study>/CTres.nii.gz`` + ``SEG.nii.gz``
``synthrad2023``   CT     ``Task1|Task2/brain|pelvis/<subject>/ct.nii.gz`` + ``mask.nii.gz``
``duke_breast``    MR     ``images/<Breast_MRI_xxx>.nii.gz`` + ``labels/…``
``mnms``           MR     ``Training/Labeled/<code>/<code>_sa.nii.gz`` + ``<code>_sa_gt.nii.gz``
=================  =====  ==============================================================

Normalisation: CT uses a fixed HU window (default -1000 … 1000 HU), MR clips at intensity
percentiles (default 0.5 … 99.5) of each volume; both map to [-1, 1].
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
from .preprocess import unique_ints

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


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _check_root(root: str | os.PathLike, layout: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found (expected layout: {layout})")
    return root


class DatasetAdapter:
    """Base class: a dataset's folder layout, class table and modality.

    Subclasses set ``name``, ``modality``, ``classes``, ``layout`` and implement
    :meth:`find_cases`.

    Args:
        window: CT intensity window in HU (CT datasets).
        percentiles: MR clipping percentiles (MR datasets).
    """

    name: str = ""
    modality: str = "CT"
    classes: ClassTable = tables.TORSO_CT
    layout: str = ""
    is_phantom: bool = False

    def __init__(
        self, *, window: Sequence[float] = (-1000.0, 1000.0), percentiles: Sequence[float] = (0.5, 99.5)
    ):
        self.window = tuple(float(v) for v in window)
        self.percentiles = tuple(float(v) for v in percentiles)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, modality={self.modality!r}, classes={self.classes.num_classes})"

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


def _nifti_files(folder: Path) -> dict[str, Path]:
    """``{id: path}`` of the NIfTI files in a folder (hidden files ignored, others warned)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not _visible(path) or path.is_dir():
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
            raise DataError(f"{folder}: folder not found (expected {root}/{images}/ and {root}/{labels}/ with NIfTI files)")
        found[sub] = _nifti_files(folder)
    image_files, label_files = found[images], found[labels]
    if not image_files and not label_files:
        raise DataError(f"{root}: no NIfTI files in {images}/ and {labels}/")
    unpaired = [str(image_files[k]) + " has no label" for k in sorted(set(image_files) - set(label_files))]
    unpaired += [str(label_files[k]) + " has no image" for k in sorted(set(label_files) - set(image_files))]
    if unpaired:
        raise DataError(f"{root}: unpaired files (image and label must share the file name):\n  " + "\n  ".join(unpaired))
    return [(k, image_files[k], label_files[k]) for k in sorted(image_files)]


class FolderAdapter(DatasetAdapter):
    """``images/`` + ``labels/`` folders paired by file name; one patient per case."""

    layout = "<root>/images/<id>.nii.gz and <root>/labels/<id>.nii.gz"

    def find_cases(self, root: str | os.PathLike) -> list[Case]:
        root = _check_root(root, self.layout)
        return [Case(key, key, image, label) for key, image, label in pair_folders(root)]


class TorsoCTPhantom(FolderAdapter):
    """Procedural torso CT phantoms (:mod:`medlsdm.data.phantom`)."""

    name, modality, classes, is_phantom = "torso-ct", "CT", tables.TORSO_CT, True


class BreastMRPhantom(FolderAdapter):
    """Procedural breast MR phantoms (:mod:`medlsdm.data.phantom`)."""

    name, modality, classes, is_phantom = "breast-mr", "MR", tables.BREAST_MR, True


class Cardiac2DPhantom(FolderAdapter):
    """Procedural short-axis cardiac MR phantoms (:mod:`medlsdm.data.phantom`)."""

    name, modality, classes, is_phantom = "cardiac-2d", "MR", tables.CARDIAC, True


class NiftiFolder(FolderAdapter):
    """Any dataset in the generic ``images/`` + ``labels/`` layout.

    Args:
        modality: ``"CT"`` (HU window) or ``"MR"`` (percentile clip).
        classes: the class table; or give ``num_classes`` for values ``0 … K-1`` named
            ``background, class_1, …``.
        num_classes: see ``classes``.
        window, percentiles: as in :class:`DatasetAdapter`.
    """

    name = "nifti"

    def __init__(
        self,
        *,
        modality: str | None = None,
        classes: ClassTable | None = None,
        num_classes: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if modality is None or str(modality).upper() not in MODALITIES:
            raise ConfigError(f"dataset 'nifti' needs modality='CT' or 'MR', got {modality!r}")
        self.modality = str(modality).upper()
        if classes is None and num_classes is None:
            raise ConfigError("dataset 'nifti' needs classes=ClassTable(...) or num_classes=K")
        if classes is None:
            if int(num_classes) < 2:
                raise ConfigError(f"num_classes must be >= 2 (background + 1), got {num_classes}")
            names = ("background",) + tuple(f"class_{i}" for i in range(1, int(num_classes)))
            classes = ClassTable(names, tuple(range(int(num_classes))))
        self.classes = classes


class DukeBreast(FolderAdapter):
    """Duke Breast Cancer MRI converted to NIfTI (``images/Breast_MRI_xxx.nii.gz`` + ``labels/``)."""

    name, modality, classes = "duke_breast", "MR", tables.DUKE_BREAST
    layout = "<root>/images/Breast_MRI_xxx.nii.gz and <root>/labels/Breast_MRI_xxx.nii.gz"


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))


def _pair_in(folder: Path, image_name: str, label_name: str) -> tuple[Path, Path]:
    image, label = folder / image_name, folder / label_name
    if image.is_file() and label.is_file():
        return image, label
    missing = [str(p) for p in (image, label) if not p.is_file()]
    raise DataError(f"{folder}: unpaired case, missing {', '.join(missing)}")


class AutoPET(DatasetAdapter):
    """AutoPET FDG-PET/CT: the CT resampled to PET resolution and the lesion mask.

    Several studies of one patient become several cases with the same ``patient_id``
    (the first folder level, ``PETCT_xxx``).
    """

    name, modality, classes = "autopet", "CT", tables.AUTOPET
    layout = "<root>/<PETCT_xxx>/<study>/CTres.nii.gz + SEG.nii.gz"

    def find_cases(self, root: str | os.PathLike) -> list[Case]:
        root = _check_root(root, self.layout)
        cases = []
        for patient in _subdirs(root):
            for study in _subdirs(patient):
                image, label = _pair_in(study, "CTres.nii.gz", "SEG.nii.gz")
                cases.append(Case(safe_id(f"{patient.name}_{study.name}"), patient.name, image, label))
        if not cases:
            raise DataError(f"{root}: no studies found (expected layout: {self.layout})")
        return sorted(cases, key=lambda c: c.case_id)


class SynthRAD2023(DatasetAdapter):
    """SynthRAD2023 CT volumes with their body masks (classes: background, body).

    Args:
        tasks: task folders to include.
        regions: anatomical regions to include.
    """

    name, modality, classes = "synthrad2023", "CT", tables.SYNTHRAD2023
    layout = "<root>/<Task1|Task2>/<brain|pelvis>/<subject>/ct.nii.gz + mask.nii.gz"

    def __init__(
        self, *, tasks: Sequence[str] = ("Task1", "Task2"), regions: Sequence[str] = ("brain", "pelvis"), **kwargs
    ):
        super().__init__(**kwargs)
        self.tasks, self.regions = tuple(tasks), tuple(regions)

    def find_cases(self, root: str | os.PathLike) -> list[Case]:
        root = _check_root(root, self.layout)
        cases = []
        for task in self.tasks:
            for region in self.regions:
                folder = root / task / region
                if not folder.is_dir():
                    continue
                for subject in _subdirs(folder):
                    image, label = _pair_in(subject, "ct.nii.gz", "mask.nii.gz")
                    cases.append(Case(safe_id(subject.name), safe_id(subject.name), image, label))
        if not cases:
            raise DataError(f"{root}: no subjects found (expected layout: {self.layout})")
        ids = [c.case_id for c in cases]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise DataError(f"{root}: subject ids found in more than one task/region folder: {duplicates}")
        return sorted(cases, key=lambda c: c.case_id)


class MnMs(DatasetAdapter):
    """M&Ms cardiac cine MR: the two labelled frames (ED and ES) of each subject.

    Image and ground truth are 4-D ``(x, y, z, t)``; only the frames where the ground truth
    is non-empty are labelled. Each becomes a case ``<code>_ED`` / ``<code>_ES``: the frame
    with the larger left-ventricle (label 1) volume is end-diastole. Finding the frames
    reads every ground-truth file once.

    Args:
        subsets: sub-folders of ``root`` holding subject folders.
    """

    name, modality, classes = "mnms", "MR", tables.MNMS
    layout = "<root>/Training/Labeled/<code>/<code>_sa.nii.gz + <code>_sa_gt.nii.gz"

    def __init__(self, *, subsets: Sequence[str] = ("Training/Labeled",), **kwargs):
        super().__init__(**kwargs)
        self.subsets = tuple(subsets)

    @staticmethod
    def labelled_frames(gt_path: Path) -> dict[str, int]:
        """``{"ED": t, "ES": t}`` from the non-empty frames of a 4-D ground truth file."""
        import nibabel as nib

        from .io import _READ_ERRORS

        try:
            data = np.asanyarray(nib.load(str(gt_path)).dataobj)
        except _READ_ERRORS as exc:
            raise DataError(f"{gt_path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
        if data.ndim != 4:
            raise DataError(f"{gt_path}: expected a 4-D (x, y, z, t) ground truth, got shape {data.shape}")
        labelled = [t for t in range(data.shape[3]) if np.any(data[..., t])]
        if len(labelled) != 2:
            raise DataError(f"{gt_path}: expected 2 labelled frames (ED and ES), found {len(labelled)}: {labelled}")
        lv = [int((data[..., t] == 1).sum()) for t in labelled]
        ed, es = (labelled[0], labelled[1]) if lv[0] >= lv[1] else (labelled[1], labelled[0])
        return {"ED": ed, "ES": es}

    def find_cases(self, root: str | os.PathLike) -> list[Case]:
        root = _check_root(root, self.layout)
        subjects = []
        for subset in self.subsets:
            folder = root / subset
            if folder.is_dir():
                subjects += _subdirs(folder)
        if not subjects:
            raise DataError(f"{root}: no subject folders found (expected layout: {self.layout})")
        cases = []
        for subject in tqdm(subjects, desc="mnms frames", leave=False):
            code = subject.name
            image, label = _pair_in(subject, f"{code}_sa.nii.gz", f"{code}_sa_gt.nii.gz")
            for phase, frame in self.labelled_frames(label).items():
                cases.append(Case(f"{code}_{phase}", code, image, label, frame=frame))
        return sorted(cases, key=lambda c: c.case_id)


ADAPTERS: dict[str, type[DatasetAdapter]] = {
    cls.name: cls
    for cls in (TorsoCTPhantom, BreastMRPhantom, Cardiac2DPhantom, NiftiFolder, AutoPET, SynthRAD2023, DukeBreast, MnMs)
}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def adapter_names() -> list[str]:
    return list(ADAPTERS)


def get_adapter(name: str, **kwargs) -> DatasetAdapter:
    """The adapter of a dataset by name (``-`` and ``_`` are interchangeable).

    Args:
        name: one of :func:`adapter_names`.
        kwargs: adapter options, e.g. ``modality``/``classes``/``num_classes`` for
            ``"nifti"``, ``window`` (CT) or ``percentiles`` (MR) for any adapter.

    Raises:
        ConfigError: unknown name or option.
    """
    by_key = {_key(k): cls for k, cls in ADAPTERS.items()}
    cls = by_key.get(_key(str(name)))
    if cls is None:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(ADAPTERS)}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"dataset {cls.name!r}: invalid option(s) {sorted(kwargs)} ({exc})") from None


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
    return {"shape": list(image.shape), "spacing": list(spacing_dhw(image_affine)), "label_values": values}


def validate_cases(cases: Sequence[Case], adapter: DatasetAdapter, *, max_errors: int = 20) -> dict[str, dict]:
    """Check every case before any work starts; report all problems at once.

    Checks: both files readable NIfTI, 3-D (or the selected frame of a 4-D file), no NaN/Inf
    in the image, integer labels, equal shapes and affines (``allclose``), label values in
    the adapter's class table.

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
        raise DataError(
            f"{len(errors)} of {len(cases)} cases failed validation:\n  " + "\n  ".join(shown) + more
        )
    logger.info("validated %d cases of %s", len(cases), adapter.name)
    return info
