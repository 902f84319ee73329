"""The cases of a run's evaluation and the judges trained on them: what notebook 05's steps
(:mod:`medlsdm.evaluation.run`) and its augmentation arms (:mod:`medlsdm.evaluation.augmentation`)
both use, so that neither imports the other.

- :class:`Cases` — the volumes of one set, with :func:`read_cases` (NIfTI pairs) and
  :func:`real_cases` (a run's preprocessed real cases).
- :func:`train_judges` — one judge per seed (:func:`medlsdm.training.judge.train_judge`).
- :func:`dice_over_seeds` — every judge's Dice on a set, per case and per judge, lesions apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.io import read_nifti
from ..errors import DataError
from ..metrics.overlap import lesion_detection
from ..rundir import RunDir
from ..training.judge import train_judge
from .segmentation import average_over_seeds, case_scores, lesion_classes, predict, score_predictions
from .summary import nan_mean


@dataclass
class Cases:
    """Volumes of one set: ``images`` ``(1, D, H, W)`` float32 in [-1, 1], ``labels`` ``(D, H, W)`` int64."""

    ids: list[str]
    images: list[np.ndarray]
    labels: list[np.ndarray]
    affines: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int) -> "Cases":
        """The first ``n`` cases."""
        return Cases(self.ids[:n], self.images[:n], self.labels[:n], self.affines[:n])

    def __add__(self, other: "Cases") -> "Cases":
        return Cases(
            self.ids + other.ids, self.images + other.images, self.labels + other.labels, self.affines + other.affines
        )


def read_cases(image_paths: Sequence[os.PathLike], label_paths: Sequence[os.PathLike], ids: Sequence[str]) -> Cases:
    """Read paired image / label-map NIfTI files; each pair must share its voxel grid."""
    images, labels, affines = [], [], []
    for image_path, label_path in zip(image_paths, label_paths):
        image, affine = read_nifti(image_path, kind="image")
        label, label_affine = read_nifti(label_path, kind="label")
        if image.shape != label.shape or not np.allclose(affine, label_affine, atol=1e-3):
            raise DataError(
                f"{image_path}: not on the grid of its label map {label_path} (shape {image.shape} vs {label.shape})"
            )
        images.append(image[None].astype(np.float32))
        labels.append(label)
        affines.append(affine)
    return Cases(list(ids), images, labels, affines)


def real_cases(run: RunDir, ids: Sequence[str]) -> Cases:
    """The run's preprocessed real cases (``RUN/data/images`` and ``labels``)."""
    return read_cases(
        [run.data / "images" / f"{c}.nii.gz" for c in ids], [run.data / "labels" / f"{c}.nii.gz" for c in ids], ids
    )


def train_judges(
    cases: Cases,
    val: Cases,
    num_classes: int,
    *,
    seeds: Sequence[int],
    options: Mapping[str, Any],
    progress: bool,
    extra: Cases | None = None,
) -> list:
    """One judge per seed (:func:`medlsdm.training.judge.train_judge`: a
    :class:`~medlsdm.training.judge.JudgeFit` each), each stopped early on the validation cases;
    ``extra`` cases fill the judge's ``mix`` share of every batch."""

    more = {} if extra is None else {"extra_images": extra.images, "extra_labels": extra.labels}
    return [
        train_judge(
            cases.images,
            cases.labels,
            num_classes=num_classes,
            seed=int(s),
            val_images=val.images,
            val_labels=val.labels,
            progress=progress,
            **more,
            **dict(options),
        )
        for s in seeds
    ]


def dice_over_seeds(models: Sequence, cases: Cases, class_names: Sequence[str]) -> dict[str, Any]:
    """Dice of every network on ``cases``: per case (mean over the networks) and per network.

    ``organ`` / ``lesion`` (:func:`medlsdm.evaluation.segmentation.case_scores`): one value per
    case, averaged over the networks (seeds); ``organ_per_seed`` / ``lesion_per_seed``: the
    mean over cases for each network; ``organ_by_seed`` / ``lesion_by_seed``: every network's
    value per case; ``per_class``: mean over cases and networks; ``lesions_found`` /
    ``lesions_total``: per network, the true lesions (connected components) its prediction
    touches (:func:`medlsdm.metrics.overlap.lesion_detection`) and their number.
    """

    k = len(class_names)
    lesion_ids = [list(class_names).index(c) for c in lesion_classes(class_names)]
    runs, found = [], []
    for model in models:
        preds = predict(model, cases.images)
        runs.append(score_predictions(preds, cases.labels, k, class_names))
        hits = [lesion_detection(p, lb, c) for p, lb in zip(preds, cases.labels) for c in lesion_ids]
        found.append([sum(h[0] for h in hits), sum(h[1] for h in hits)])
    scores = [case_scores(r, class_names) for r in runs]
    out: dict[str, Any] = {"ids": list(cases.ids)}
    for part in ("organ", "lesion"):
        out[part] = average_over_seeds([s[part] for s in scores])
        out[f"{part}_per_seed"] = [nan_mean(s[part]) for s in scores]
        out[f"{part}_by_seed"] = [list(map(float, s[part])) for s in scores]  # (networks, cases)
    out["per_class"] = {name: nan_mean([r["per_class"][name] for r in runs]) for name in class_names[1:]}
    out["lesions_found"], out["lesions_total"] = [f[0] for f in found], [f[1] for f in found]
    return out
