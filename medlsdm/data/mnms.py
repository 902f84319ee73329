"""The M&Ms cardiac MR adapter: M&Ms-1 (4-D short-axis cines with ED/ES ground truth) and M&Ms-2
(per-phase 3-D short- and long-axis files listed in ``dataset_information.csv``)."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from . import classes as tables
from .datasets import Case, DatasetAdapter, check_choice, check_root, pair_in, subdirs
from .io import READ_ERRORS

logger = logging.getLogger(__name__)


class MnMs(DatasetAdapter):
    """M&Ms (version 1) and M&Ms-2 cardiac MR; the version is recognised from the folder.

    - M&Ms-1 (``<root>/Training/Labeled/<code>/<code>_sa.nii.gz`` + ``_sa_gt``): 4-D cine
      short-axis files; the two labelled frames become cases ``<code>_ED`` / ``<code>_ES``
      (the frame with the larger left ventricle, label 1, is end-diastole). Finding the frames
      reads every ground-truth file once.
    - M&Ms-2 (``<root>/dataset_information.csv`` + ``<root>/dataset/<id>/<id>_{SA,LA}_{ED,ES}[_gt].nii.gz``):
      one 3-D file per view and phase; cases ``<id>_<view>_<phase>``. Every subject of the
      CSV must have its folder.

    Args:
        subsets: sub-folders of ``root`` holding subject folders (default ``Training/Labeled``
            for M&Ms-1, ``dataset`` for M&Ms-2).
        views: M&Ms-2 views, ``"SA"`` and/or ``"LA"`` (M&Ms-1 has short axis only).
        percentiles: as in :class:`~medlsdm.data.datasets.DatasetAdapter`.
    """

    name, modality, classes = "mnms", "MR", tables.MNMS
    layout = (
        "M&Ms-1: <root>/Training/Labeled/<code>/<code>_sa.nii.gz + <code>_sa_gt.nii.gz; M&Ms-2: "
        "<root>/dataset_information.csv + <root>/dataset/<id>/<id>_SA_ED.nii.gz + <id>_SA_ED_gt.nii.gz …"
    )
    CSV = "dataset_information.csv"

    def __init__(self, *, subsets: Sequence[str] | None = None, views: Sequence[str] = ("SA",), **kwargs):
        super().__init__(**kwargs)
        self.subsets = None if subsets is None else tuple(subsets)
        self.views = tuple(check_choice(self.name, "views", str(v).upper(), ("SA", "LA")) for v in views)

    @staticmethod
    def labelled_frames(gt_path: Path) -> dict[str, int]:
        """``{"ED": t, "ES": t}`` from the non-empty frames of a 4-D ground truth file."""

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

    def _subjects(self, root: Path, default: tuple[str, ...]) -> list[Path]:
        subjects = []
        for subset in self.subsets or default:
            if (root / subset).is_dir():
                subjects += subdirs(root / subset)
        if not subjects:
            raise DataError(f"{root}: no subject folders found (expected layout: {self.layout})")
        return subjects

    def find_cases(self, root: str | os.PathLike) -> list[Case]:
        root = check_root(root, self.layout)
        if (root / self.CSV).is_file():
            return self._find_mnms2(root)
        if self.views != ("SA",):
            raise ConfigError(
                f"dataset 'mnms': option views={list(self.views)} needs M&Ms-2 "
                f"({root / self.CSV} not found); M&Ms-1 has short axis only"
            )
        cases = []
        for subject in tqdm(self._subjects(root, ("Training/Labeled",)), desc="mnms frames", leave=False):
            code = subject.name
            image, label = pair_in(subject, f"{code}_sa.nii.gz", f"{code}_sa_gt.nii.gz")
            for phase, frame in self.labelled_frames(label).items():
                cases.append(Case(f"{code}_{phase}", code, image, label, frame=frame))
        return sorted(cases, key=lambda c: c.case_id)

    def _csv_subjects(self, path: Path) -> set[str]:

        try:
            with open(path, newline="", encoding="utf-8-sig") as stream:
                rows = list(csv.DictReader(stream))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: unreadable CSV ({exc})") from None
        if not rows or "SUBJECT_CODE" not in rows[0]:
            raise DataError(f"{path}: expected a SUBJECT_CODE column, found {list(rows[0]) if rows else 'no rows'}")
        return {_subject_key(row["SUBJECT_CODE"]) for row in rows}

    def _find_mnms2(self, root: Path) -> list[Case]:
        listed = self._csv_subjects(root / self.CSV)
        subjects = {_subject_key(s.name): s for s in self._subjects(root, ("dataset",))}
        missing = sorted(listed - set(subjects))
        if missing:
            raise DataError(f"{root / self.CSV}: {len(missing)} subject(s) without a folder: {missing[:10]}")
        for key in sorted(set(subjects) - listed):
            logger.warning("%s: not in %s, skipped", subjects[key], self.CSV)
        cases = []
        for key in sorted(listed, key=lambda k: (len(k), k)):
            folder = subjects[key]
            for view in self.views:
                for phase in ("ED", "ES"):
                    stem = f"{folder.name}_{view}_{phase}"
                    image, label = pair_in(folder, f"{stem}.nii.gz", f"{stem}_gt.nii.gz")
                    cases.append(Case(stem, folder.name, image, label))
        return sorted(cases, key=lambda c: c.case_id)


def _subject_key(code: str) -> str:
    """M&Ms-2 subject codes compare as numbers when numeric (``"001"`` and ``"1"`` are one subject)."""
    code = str(code).strip()
    return str(int(code)) if code.isdigit() else code
