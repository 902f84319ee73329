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
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from . import classes as tables
from .classes import ClassTable
from .datasets import MODALITIES, Case, DatasetAdapter, FolderAdapter, check_root, is_visible, safe_id

logger = logging.getLogger(__name__)


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
    return sorted(p for p in folder.iterdir() if p.is_dir() and is_visible(p))


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
        root = check_root(root, self.layout)
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
        root = check_root(root, self.layout)
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

        from .io import READ_ERRORS

        try:
            data = np.asanyarray(nib.load(str(gt_path)).dataobj)
        except READ_ERRORS as exc:
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
        root = check_root(root, self.layout)
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
