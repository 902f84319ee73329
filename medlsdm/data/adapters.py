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
``nnunet``         any    nnU-Net v2 / MSD raw: ``dataset.json`` + ``imagesTr/<case>_0000``
                          + ``labelsTr/<case>`` (:mod:`medlsdm.data.nnunet`)
``autopet``        CT     ``PETCT_xxx/<study>/CTres.nii.gz`` (or ``CT``) + anatomical labels
                          from a user folder, or ``SEG.nii.gz`` (lesions)
``synthrad2023``   MR/CT  ``Task1|Task2/brain|pelvis/<subject>/mr|cbct|ct.nii.gz`` + labels
                          from a user folder, or ``mask.nii.gz`` (body)
``duke_breast``    MR     DICOM series + ``.seg.nrrd`` segmentations (:mod:`medlsdm.data.duke`)
``mnms``           MR     M&Ms-1 ``Training/Labeled/<code>/<code>_sa[_gt].nii.gz`` (4-D) or
                          M&Ms-2 ``dataset/<id>/<id>_{SA,LA}_{ED,ES}[_gt].nii.gz``
=================  =====  ==============================================================

Normalisation: CT uses a fixed HU window (default -1000 … 1000 HU), MR clips at intensity
percentiles (default 0.5 … 99.5) of each volume; both map to [-1, 1].
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DataError
from . import classes as tables
from .classes import ClassTable, read_class_table
from .datasets import (
    MODALITIES,
    Case,
    DatasetAdapter,
    FolderAdapter,
    check_choice,
    check_root,
    nifti_files,
    pair_in,
    safe_id,
    subdirs,
)
from .duke import DukeBreast
from .io import read_nifti
from .mnms import MnMs
from .nnunet import NNUNetRaw

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
        classes: the class table; or give ``classes_file`` (:func:`~medlsdm.data.classes.read_class_table`),
            or ``num_classes`` for values ``0 … K-1`` named ``background, class_1, …``.
        classes_file: see ``classes``.
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
        classes_file: str | os.PathLike | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if modality is None or str(modality).upper() not in MODALITIES:
            raise ConfigError(f"dataset 'nifti' needs option modality='CT' or 'MR' (--modality), got {modality!r}")
        self.modality = str(modality).upper()
        given = [
            k
            for k, v in (("classes", classes), ("num_classes", num_classes), ("classes_file", classes_file))
            if v is not None
        ]
        if len(given) != 1:
            raise ConfigError(
                "dataset 'nifti' needs exactly one of the options classes=ClassTable(...), "
                f"num_classes=K (--num-classes) or classes_file (--classes-file); got {given or 'none'}"
            )
        if classes_file is not None:
            classes = read_class_table(classes_file)
        if classes is None:
            if int(num_classes) < 2:
                raise ConfigError(f"num_classes must be >= 2 (background + 1), got {num_classes}")
            names = ("background",) + tuple(f"class_{i}" for i in range(1, int(num_classes)))
            classes = ClassTable(names, tuple(range(int(num_classes))))
        self.classes = classes


def anatomy_classes(dataset: str, labels_dir, classes_file) -> ClassTable:
    """The class table of user-made anatomical labels (options ``labels_dir`` and ``classes_file``)."""
    for option, value in (("labels_dir", labels_dir), ("classes_file", classes_file)):
        if value is None:
            raise ConfigError(
                f"dataset {dataset!r} with labels='anatomy' needs option {option} (--{option.replace('_', '-')}): "
                "a folder of anatomical label maps <case_id>.nii.gz (e.g. TotalSegmentator or MOOSE output) and "
                "its class table (an nnU-Net dataset.json or '<value> <name>' lines)"
            )
    if not Path(labels_dir).expanduser().is_dir():
        raise ConfigError(f"dataset {dataset!r}: option labels_dir {labels_dir} is not a folder")
    return read_class_table(classes_file)


def user_label_files(
    labels_dir: str | os.PathLike, case_ids: Sequence[str], suffixes: Sequence[str] = ("",)
) -> list[Path]:
    """The label map of each case in a user's folder: ``<case_id><suffix>.nii[.gz]``.

    Args:
        labels_dir: the folder.
        case_ids: the cases, in order.
        suffixes: accepted endings of the name before ``.nii[.gz]`` (e.g. ``"_ct_label"``).

    Raises:
        DataError: cases without a label file (all listed), naming the folder.
    """
    folder = Path(labels_dir).expanduser()
    files = nifti_files(folder)
    found, missing = [], []
    for case_id in case_ids:
        match = next((files[case_id + s] for s in suffixes if case_id + s in files), None)
        (found if match is not None else missing).append(match if match is not None else case_id)
    if missing:
        names = " or ".join(f"<id>{s}.nii.gz" for s in suffixes)
        raise DataError(f"{folder}: no label map ({names}) for {len(missing)} case(s): {missing[:10]}")
    extra = len(files) - len(found)
    if extra:
        logger.info("%s: %d label files belong to no case found (ignored)", folder, extra)
    return found


class AutoPET(DatasetAdapter):
    """AutoPET FDG-PET/CT (the NIfTI release): the CT with an anatomical label map, or the lesion mask.

    Several studies of one patient become several cases with the same ``patient_id`` (the
    ``PETCT_xxx`` folder); top-level folders not named ``PETCT_*`` are skipped.

    Args:
        labels: ``"anatomy"`` (the paper's task: a whole-body anatomical map from
            ``labels_dir``, named ``<PETCT_xxx>_<study>.nii.gz``, classes from ``classes_file``)
            or ``"lesion"`` (the release's ``SEG.nii.gz``: background, lesion).
        labels_dir: folder of anatomical label maps (``labels="anatomy"``).
        classes_file: their class table (:func:`~medlsdm.data.classes.read_class_table`).
        merge_lesion: add the lesion mask as one more class ``lesion`` over the anatomy.
        image: ``"CTres"`` (CT on the PET grid, where ``SEG`` lives) or ``"CT"`` (original grid).
        window: CT window in HU.
    """

    name, modality, classes = "autopet", "CT", tables.AUTOPET
    layout = (
        "<root>/PETCT_xxx/<study>/CTres.nii.gz (or CT.nii.gz) + SEG.nii.gz [+ <labels_dir>/PETCT_xxx_<study>.nii.gz]"
    )

    def __init__(
        self,
        *,
        labels: str = "anatomy",
        labels_dir: str | os.PathLike | None = None,
        classes_file: str | os.PathLike | None = None,
        merge_lesion: bool = False,
        image: str = "CTres",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.labels = check_choice(self.name, "labels", labels, ("anatomy", "lesion"))
        self.image = check_choice(self.name, "image", image, ("CTres", "CT"))
        self.labels_dir, self.merge_lesion = labels_dir, bool(merge_lesion)
        if labels == "lesion":
            given = [
                k
                for k, v in (("labels_dir", labels_dir), ("classes_file", classes_file), ("merge_lesion", merge_lesion))
                if v
            ]
            if given:
                raise ConfigError(f"dataset 'autopet': option(s) {given} apply to labels='anatomy', not 'lesion'")
            self.empty_labels_ok = True  # the release's negative controls: studies without a lesion
            return
        table = anatomy_classes(self.name, labels_dir, classes_file)
        if self.merge_lesion:
            if image != "CTres":
                raise ConfigError(
                    "dataset 'autopet': option merge_lesion needs image='CTres' (SEG.nii.gz is on its grid)"
                )
            if "lesion" in table.names:
                raise ConfigError(f"{classes_file}: already has a class 'lesion'; do not set option merge_lesion")
            table = ClassTable(table.names + ("lesion",), table.source_values + (max(table.source_values) + 1,))
        self.classes = table

    def find_cases(self, root: str | os.PathLike) -> list[Case]:
        root = check_root(root, self.layout)
        studies = []
        for patient in subdirs(root):
            if not patient.name.startswith("PETCT_"):
                logger.info("%s: not a PETCT_* patient folder, skipped", patient)
                continue
            for study in subdirs(patient):
                needs_seg = self.labels == "lesion" or self.merge_lesion
                files = (
                    pair_in(study, f"{self.image}.nii.gz", "SEG.nii.gz")
                    if needs_seg
                    else (study / f"{self.image}.nii.gz",)
                )
                if not files[0].is_file():
                    raise DataError(f"{study}: missing {files[0]}")
                studies.append((safe_id(f"{patient.name}_{study.name}"), patient.name, files[0], files[-1]))
        if not studies:
            raise DataError(f"{root}: no studies found (expected layout: {self.layout})")
        studies.sort()
        if self.labels == "anatomy":
            labels = user_label_files(self.labels_dir, [s[0] for s in studies])
            studies = [(cid, pid, image, label) for (cid, pid, image, _), label in zip(studies, labels)]
        return [Case(*study) for study in studies]

    def read_label(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        """The label map; with ``merge_lesion`` the lesion voxels of ``SEG.nii.gz`` take the lesion value."""
        label, affine = read_nifti(case.label, kind="label")
        if not self.merge_lesion:
            return label, affine
        seg = case.image.parent / "SEG.nii.gz"
        lesion, lesion_affine = read_nifti(seg, kind="label")
        if lesion.shape != label.shape or not np.allclose(lesion_affine, affine, rtol=1e-4, atol=1e-3):
            raise DataError(
                f"{seg}: lesion mask grid {lesion.shape} differs from the anatomical labels {case.label} "
                f"{label.shape}; make the anatomical labels on the CTres grid"
            )
        label[lesion > 0] = self.classes.source_values[-1]
        return label, affine


class SynthRAD2023(DatasetAdapter):
    """SynthRAD2023: the MR (Task 1), CBCT (Task 2) or CT of each subject, with anatomical labels or the body mask.

    Subject folders are those named like ``1PA001`` / ``2BC042``; ``overview/`` and any other
    folder are skipped.

    Args:
        image: ``"mr"`` (the paper's; Task 1), ``"cbct"`` (Task 2) or ``"ct"`` (both tasks).
        tasks: task folders (default: those that have ``image``).
        regions: ``"brain"`` and/or ``"pelvis"``.
        labels: ``"anatomy"`` (the paper's: label maps from ``labels_dir`` named
            ``<subject>.nii.gz`` or ``<subject>_ct_label.nii.gz``, e.g. TotalSegmentator run on
            the CT; classes from ``classes_file``) or ``"body"`` (``mask.nii.gz``: background, body).
        labels_dir, classes_file: see ``labels``.
        window, percentiles: as in :class:`~medlsdm.data.datasets.DatasetAdapter`.
    """

    name, modality, classes = "synthrad2023", "MR", tables.SYNTHRAD2023
    layout = "<root>/<Task1|Task2>/<brain|pelvis>/<subject>/{mr|cbct|ct}.nii.gz + mask.nii.gz"
    IMAGES = {"mr": ("MR", ("Task1",)), "cbct": ("CT", ("Task2",)), "ct": ("CT", ("Task1", "Task2"))}
    SUBJECT = re.compile(r"^[12][BP][A-Z]\d{3}$")

    def __init__(
        self,
        *,
        image: str = "mr",
        tasks: Sequence[str] | None = None,
        regions: Sequence[str] = ("brain", "pelvis"),
        labels: str = "anatomy",
        labels_dir: str | os.PathLike | None = None,
        classes_file: str | os.PathLike | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image = check_choice(self.name, "image", image, tuple(self.IMAGES))
        self.modality, allowed = self.IMAGES[image]
        self.tasks = tuple(tasks) if tasks is not None else allowed
        wrong = [t for t in self.tasks if t not in allowed]
        if wrong:
            raise ConfigError(
                f"dataset 'synthrad2023': option tasks {wrong} have no {image!r} image (tasks with it: {list(allowed)})"
            )
        self.regions = tuple(check_choice(self.name, "regions", r, ("brain", "pelvis")) for r in regions)
        self.labels = check_choice(self.name, "labels", labels, ("anatomy", "body"))
        self.labels_dir = labels_dir
        if self.labels == "anatomy":
            self.classes = anatomy_classes(self.name, labels_dir, classes_file)
        elif labels_dir is not None or classes_file is not None:
            raise ConfigError(
                "dataset 'synthrad2023': options labels_dir/classes_file apply to labels='anatomy', not 'body'"
            )

    def find_cases(self, root: str | os.PathLike) -> list[Case]:
        root = check_root(root, self.layout)
        found = []
        for task in self.tasks:
            for region in self.regions:
                folder = root / task / region
                if not folder.is_dir():
                    logger.info("%s: not found, skipped", folder)
                    continue
                for subject in subdirs(folder):
                    if not self.SUBJECT.match(subject.name):
                        logger.info("%s: not a subject folder (e.g. 1PA001), skipped", subject)
                        continue
                    image, mask = pair_in(subject, f"{self.image}.nii.gz", "mask.nii.gz")
                    found.append((subject.name, image, mask))
        if not found:
            raise DataError(f"{root}: no subjects found (expected layout: {self.layout})")
        ids = [f[0] for f in found]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise DataError(f"{root}: subject ids found in more than one task/region folder: {duplicates}")
        found.sort()
        labels = [f[2] for f in found]
        if self.labels == "anatomy":
            labels = user_label_files(self.labels_dir, [f[0] for f in found], suffixes=("", "_ct_label"))
        return [Case(sid, sid, image, label) for (sid, image, _), label in zip(found, labels)]


ADAPTERS: dict[str, type[DatasetAdapter]] = {
    cls.name: cls
    for cls in (
        TorsoCTPhantom,
        BreastMRPhantom,
        Cardiac2DPhantom,
        NiftiFolder,
        NNUNetRaw,
        AutoPET,
        SynthRAD2023,
        DukeBreast,
        MnMs,
    )
}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def adapter_names() -> list[str]:
    return list(ADAPTERS)


def adapter_options(cls: type[DatasetAdapter]) -> list[str]:
    """The keyword options an adapter class takes (its own and its base classes')."""

    options: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        options += [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in options]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return options


def get_adapter(name: str, **kwargs) -> DatasetAdapter:
    """The adapter of a dataset by name (``-`` and ``_`` are interchangeable).

    Args:
        name: one of :func:`adapter_names`.
        kwargs: adapter options (:func:`adapter_options`), e.g. ``modality``/``classes``/
            ``num_classes`` for ``"nifti"``, ``window`` (CT) or ``percentiles`` (MR) for any adapter.

    Raises:
        ConfigError: unknown name, an option the adapter does not take, or a bad option value
            (each naming the option).
    """
    by_key = {_key(k): cls for k, cls in ADAPTERS.items()}
    cls = by_key.get(_key(str(name)))
    if cls is None:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(ADAPTERS)}")
    known = adapter_options(cls)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ConfigError(f"dataset {cls.name!r}: invalid option(s) {unknown}; it takes {', '.join(known)}")
    return cls(**kwargs)
