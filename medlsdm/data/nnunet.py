"""The nnU-Net raw dataset format, read (adapter ``nnunet``) and written (synthetic datasets out).

nnU-Net v2 raw layout (also the Medical Segmentation Decathlon's, whose ``dataset.json`` is
the v1 form)::

    <root>/dataset.json          channel_names (v1: modality), labels, numTraining, file_ending
    <root>/imagesTr/<case>_0000.nii.gz   channel 0 of case <case> (v1/MSD: <case>.nii.gz, 4-D
                                          when several channels)
    <root>/labelsTr/<case>.nii.gz        its label map (values as in ``labels``)
    <root>/imagesTs/ …                    test images without labels (not read)

Naming rules (nnU-Net v2 ``dataset_format.md``): a case identifier, then ``_XXXX`` with the
4-digit channel index, then ``file_ending``; the label file is the identifier alone. Labels
are consecutive integers with background 0.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np

from ..atomic import read_json, write_json
from ..errors import ConfigError, DataError
from .classes import ClassTable, class_table_from_json, read_class_table
from .datasets import MODALITIES, Case, DatasetAdapter, check_root, is_visible, safe_id
from .io import NIFTI_SUFFIXES, read_nifti, write_nifti

logger = logging.getLogger(__name__)

DATASET_JSON = "dataset.json"
CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def modality_of_channel(channel_name: str) -> str:
    """``"CT"`` for a channel named CT (any case), ``"MR"`` for any other name (T1, T2, ADC, MRI …)."""
    return "CT" if str(channel_name).strip().upper() == "CT" else "MR"


def read_dataset_json(root: Path) -> dict:
    """``root/dataset.json`` of an nnU-Net v2 or MSD dataset, checked for the keys medlsdm needs.

    Raises:
        DataError: missing file, invalid JSON, or no ``labels`` / ``channel_names`` (``modality``).
    """
    path = root / DATASET_JSON
    if not path.is_file():
        raise DataError(f"{path}: not found; an nnU-Net raw dataset has a dataset.json next to imagesTr/ and labelsTr/")
    meta = read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), dict):
        raise DataError(f"{path}: no 'labels' object (nnU-Net v2: {{\"background\": 0, …}})")
    channels = meta.get("channel_names", meta.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise DataError(f"{path}: no 'channel_names' (nnU-Net v2) or 'modality' (MSD / v1) object")
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in NIFTI_SUFFIXES:
        raise DataError(f"{path}: file_ending {ending!r} is not supported; medlsdm reads {' or '.join(NIFTI_SUFFIXES)}")
    return meta


class NNUNetRaw(DatasetAdapter):
    """An nnU-Net v2 (or Medical Segmentation Decathlon) raw dataset: ``imagesTr/`` + ``labelsTr/``.

    Modality and class table come from ``dataset.json`` when :meth:`find_cases` reads it:
    the channel named ``CT`` is a CT, any other an MR; ``labels`` is the class table.
    ``imagesTs/`` and other files are ignored.

    Args:
        channel: which image channel to use (``_0000`` is 0).
        modality: override the modality derived from the channel name (``"CT"`` or ``"MR"``).
        classes_file: a class table file that overrides ``labels`` (:func:`read_class_table`).
        window, percentiles: as in :class:`~medlsdm.data.datasets.DatasetAdapter`.
    """

    name = "nnunet"
    layout = "<root>/dataset.json + <root>/imagesTr/<case>_0000.nii.gz + <root>/labelsTr/<case>.nii.gz"

    def __init__(
        self, *, channel: int = 0, modality: str | None = None, classes_file: str | os.PathLike | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
            raise ConfigError(f"dataset 'nnunet': option channel must be an integer >= 0, got {channel!r}")
        if modality is not None and str(modality).upper() not in MODALITIES:
            raise ConfigError(f"dataset 'nnunet': option modality must be 'CT' or 'MR', got {modality!r}")
        self.channel = channel
        self.forced_modality = None if modality is None else str(modality).upper()
        self.modality = self.forced_modality or "CT"
        self.classes_file = classes_file
        if classes_file is not None:
            self.classes = read_class_table(classes_file)

    def _set_metadata(self, root: Path, meta: dict) -> bool:
        """Modality and classes from ``dataset.json``; returns whether it is the v1/MSD form."""
        v1 = "channel_names" not in meta
        channels = meta["channel_names"] if not v1 else meta["modality"]
        channel_name = channels.get(str(self.channel))
        if channel_name is None:
            raise ConfigError(
                f"{root / DATASET_JSON}: option channel={self.channel} is not among its channels {channels}"
            )
        self.modality = self.forced_modality or modality_of_channel(channel_name)
        if self.classes_file is None:
            try:
                self.classes = class_table_from_json(meta, str(root / DATASET_JSON))
            except ConfigError as exc:
                raise DataError(str(exc)) from None
        self.frame = self.channel if v1 and len(channels) > 1 else None  # MSD: channels in a 4-D file
        return v1

    def find_cases(self, root: str | os.PathLike) -> list[Case]:
        root = check_root(root, self.layout)
        meta = read_dataset_json(root)
        v1 = self._set_metadata(root, meta)
        ending = meta.get("file_ending", ".nii.gz")
        folders = {sub: root / sub for sub in ("imagesTr", "labelsTr")}
        for folder in folders.values():
            if not folder.is_dir():
                raise DataError(f"{folder}: folder not found (expected layout: {self.layout})")

        def files(folder: Path) -> dict[str, Path]:
            return {
                p.name[: -len(ending)]: p
                for p in sorted(folder.iterdir())
                if is_visible(p) and p.is_file() and p.name.endswith(ending)
            }

        labels, image_of, image_cases = files(folders["labelsTr"]), {}, set()
        for key, path in files(folders["imagesTr"]).items():
            match = None if v1 else CHANNEL_RE.match(key)
            if not v1 and match is None:
                raise DataError(f"{path}: an nnU-Net v2 image name ends in _XXXX (the 4-digit channel) before {ending}")
            case, channel = (key, self.channel) if v1 else (match["case"], int(match["channel"]))
            image_cases.add(case)
            if channel == self.channel:
                image_of[case] = path
        wanted = "" if v1 else f"_{self.channel:04d}"
        problems = [f"{labels[k]} has no image {k}{wanted}{ending}" for k in sorted(set(labels) - set(image_of))]
        problems += [
            f"images of case {k} in {folders['imagesTr']} have no label {k}{ending}"
            for k in sorted(image_cases - set(labels))
        ]
        if problems:
            raise DataError(f"{root}: unpaired nnU-Net files:\n  " + "\n  ".join(problems))
        if not labels:
            raise DataError(f"{root}: no {ending} files in labelsTr/ (expected layout: {self.layout})")
        if meta.get("numTraining") not in (None, len(labels)):
            logger.warning(
                "%s: numTraining is %s but labelsTr/ holds %d cases",
                root / DATASET_JSON,
                meta["numTraining"],
                len(labels),
            )
        return [Case(safe_id(k), safe_id(k), image_of[k], labels[k], frame=self.frame) for k in sorted(labels)]

    def read_label(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        """The 3-D label map (MSD keeps several channels in a 4-D image, never in the label)."""
        return read_nifti(case.label, kind="label")


def nnunet_case_name(prefix: str, index: int) -> str:
    """``<prefix>_<nnn>`` (at least three digits): a valid nnU-Net case identifier."""
    return f"{safe_id(prefix)}_{int(index):03d}"


class NNUNetWriter:
    """Write cases one at a time into an nnU-Net v2 raw dataset; :meth:`close` writes ``dataset.json``.

    Every file is written atomically (:func:`medlsdm.data.io.write_nifti`); ``dataset.json``
    is written last, so a folder with a ``dataset.json`` is complete.

    Args:
        out_dir: the dataset folder (e.g. ``nnUNet_raw/Dataset501_MedLSDM``); its
            ``imagesTr/`` and ``labelsTr/`` must not hold files already.
        classes: the class table; label arrays hold its contiguous indices ``0 … K-1``.
        channel_name: the single channel's name (``"CT"`` selects nnU-Net's CT normalisation;
            any other name, e.g. ``"MRI"``, its per-image z-score).
        prefix: case identifiers are ``<prefix>_000``, ``<prefix>_001`` …
        name: the dataset name written into ``dataset.json``.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        classes: ClassTable,
        channel_name: str,
        prefix: str = "case",
        name: str = "medlsdm synthetic",
    ):
        self.out_dir = Path(out_dir)
        self.images, self.labels = self.out_dir / "imagesTr", self.out_dir / "labelsTr"
        for folder in (self.images, self.labels):
            if folder.is_dir() and any(is_visible(p) for p in folder.iterdir()):
                raise ConfigError(f"{folder}: already holds files; write the nnU-Net dataset into a new folder")
        if not safe_id(prefix):
            raise ConfigError(f"prefix {prefix!r} gives an empty case identifier")
        self.classes, self.channel_name, self.prefix, self.name = classes, str(channel_name), prefix, name
        self.count = 0

    def add(self, image: np.ndarray, label: np.ndarray, affine: np.ndarray) -> str:
        """Write one case (``(D, H, W)`` or ``(1, D, H, W)`` image, ``(D, H, W)`` class indices); returns its id.

        Raises:
            DataError: shapes differ or label indices outside the class table.
        """
        image, label = np.asarray(image), np.asarray(label)
        spatial = image.shape[1:] if image.ndim == 4 else image.shape
        if tuple(spatial) != tuple(label.shape):
            raise DataError(f"case {self.count}: image shape {tuple(spatial)} differs from label shape {label.shape}")
        if label.size and (label.min() < 0 or label.max() >= self.classes.num_classes):
            raise DataError(
                f"case {self.count}: label indices {int(label.min())}…{int(label.max())} outside "
                f"0…{self.classes.num_classes - 1} ({list(self.classes.names)})"
            )
        case = nnunet_case_name(self.prefix, self.count)
        write_nifti(self.images / f"{case}_0000.nii.gz", image, affine, kind="image")
        write_nifti(self.labels / f"{case}.nii.gz", label.astype(np.int64), affine, kind="label")
        self.count += 1
        return case

    def close(self) -> Path:
        """Write ``dataset.json`` (``channel_names``, ``labels`` name → index, ``numTraining``, ``file_ending``)."""
        if self.count == 0:
            raise DataError(f"{self.out_dir}: no cases were written")
        meta = {
            "channel_names": {"0": self.channel_name},
            "labels": {name: index for index, name in enumerate(self.classes.names)},
            "numTraining": self.count,
            "file_ending": ".nii.gz",
            "name": self.name,
            "description": "written by medlsdm (images in [-1, 1]; labels are medlsdm class indices)",
        }
        path = self.out_dir / DATASET_JSON
        write_json(path, meta)
        logger.info("wrote nnU-Net dataset %s (%d cases)", self.out_dir, self.count)
        return path


def write_nnunet_dataset(
    out_dir: str | os.PathLike,
    cases: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    classes: ClassTable,
    channel_name: str,
    prefix: str = "case",
) -> list[str]:
    """Write ``(image, label, affine)`` triples as an nnU-Net v2 raw dataset (:class:`NNUNetWriter`).

    Args:
        out_dir: the dataset folder.
        cases: ``(image, label, affine)`` per case (images ``(D, H, W)`` or ``(1, D, H, W)``).
        classes: the class table of the label indices.
        channel_name: ``"CT"`` or an MR name (``"MRI"``, ``"T1"`` …).
        prefix: case identifier prefix.

    Returns:
        The case identifiers written.
    """
    writer = NNUNetWriter(out_dir, classes=classes, channel_name=channel_name, prefix=prefix)
    ids = [writer.add(image, label, affine) for image, label, affine in cases]
    writer.close()
    return ids
