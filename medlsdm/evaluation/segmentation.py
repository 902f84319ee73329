"""Apply a trained segmentation network: predictions and Dice against label maps."""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import torch

from ..data.store import as_cases
from ..errors import ConfigError
from ..metrics.overlap import dice_per_class, mean_dice
from ..models.blocks import pad_to_multiple
from ..models.segnet import SegNet

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(
    model: SegNet, images, *, device: str | torch.device | None = None, batch_size: int = 4
) -> list[np.ndarray]:
    """Class maps of whole cases (edge-padded to a size the network accepts and cropped back).

    Consecutive cases of the same shape go through the network ``batch_size`` at a time: on
    CPU a batch of one runs small 3-D convolutions on a slow code path (a 32×64×64 case takes
    about 4× longer alone than in a batch of four).

    Args:
        model: a trained :class:`SegNet`.
        images: ``(N, 1, *spatial)`` array or a sequence of ``(1, *spatial)`` arrays.
        device: where to run (default: the model's device).
        batch_size: cases per forward pass.

    Returns:
        One ``(*spatial)`` int64 array per case.
    """
    images, _ = as_cases(images)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        i = 0
        while i < len(images):
            j = i + 1
            while j < len(images) and j - i < int(batch_size) and images[j].shape == images[i].shape:
                j += 1
            x, crop = pad_to_multiple(torch.from_numpy(np.stack(images[i:j])).to(device), model.downsample_factor)
            out += list(model(x)[crop].argmax(1).cpu().numpy().astype(np.int64))
            i = j
    finally:
        model.train(was_training)
    return out


def evaluate_dice(
    model: SegNet, images, labels, num_classes: int, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Dice of the network's predictions per foreground class, averaged over cases.

    Per case, :func:`medlsdm.metrics.overlap.dice_per_class` (background excluded; a class absent
    from both prediction and truth is NaN). Per class, the mean over the cases where it is
    not NaN; the overall ``mean`` is the mean of the per-class means (classes that are NaN
    everywhere are left out and listed in ``absent``).

    Returns:
        ``{"per_class": {name: dice}, "mean": float, "per_case": [{name: dice}, ...],
        "absent": [names], "n_cases": N}`` (names are ``class_names[c]`` or ``str(c)``).
    """
    images, labels = as_cases(images, labels)
    return score_predictions(predict(model, images), labels, num_classes, class_names)


def score_predictions(
    preds: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_dice` of predictions already made (one class map per case)."""
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ConfigError(f"{len(names)} class names for {num_classes} classes")
    per_case = []
    for pred, lab in zip(preds, labels):
        scores = dice_per_class(pred, lab, num_classes)
        per_case.append({names[c]: v for c, v in scores.items()})
    per_class: dict[str, float] = {}
    absent = []
    for c in range(1, num_classes):
        values = [pc[names[c]] for pc in per_case if not math.isnan(pc[names[c]])]
        if values:
            per_class[names[c]] = float(np.mean(values))
        else:
            per_class[names[c]] = math.nan
            absent.append(names[c])
    return {
        "per_class": per_class,
        "mean": mean_dice(per_class),
        "per_case": per_case,
        "absent": absent,
        "n_cases": len(per_case),
    }


#: Substrings of class names reported apart from the organ mean (small, rare targets whose
#: Dice is noisy and, on the quick phantom, near 0: averaged in, they pull every mean down).
LESION_NAMES = ("lesion", "tumor", "tumour")


def lesion_classes(class_names: Sequence[str]) -> list[str]:
    """The foreground classes reported on their own (names containing one of :data:`LESION_NAMES`)."""
    return [c for c in list(class_names)[1:] if any(s in c.lower() for s in LESION_NAMES)]


def case_scores(dice: dict[str, Any], class_names: Sequence[str]) -> dict[str, list[float]]:
    """Per case, the organ mean and the lesion Dice of an :func:`evaluate_dice` result.

    ``organ``: the mean Dice of the foreground classes other than :func:`lesion_classes` that
    are present in the case (prediction or truth); ``lesion``: the mean over the lesion
    classes present (NaN when the case has none and none is predicted).

    Returns:
        ``{"organ": [...], "lesion": [...]}``, one value per case.
    """
    lesions = set(lesion_classes(class_names))
    out: dict[str, list[float]] = {"organ": [], "lesion": []}
    for case in dice["per_case"]:
        organs = {k: v for k, v in case.items() if k != class_names[0] and k not in lesions}
        out["organ"].append(mean_dice(organs))
        values = [case[k] for k in lesions if k in case and not math.isnan(case[k])]
        out["lesion"].append(float(np.mean(values)) if values else math.nan)
    return out


def average_over_seeds(per_seed: Sequence[Sequence[float]]) -> list[float]:
    """Per case, the mean over seeds of ``per_seed[seed][case]`` (NaN-aware: NaN only where every seed is NaN)."""
    a = np.asarray(per_seed, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1:
        raise ConfigError(f"average_over_seeds: needs (seeds, cases) values, got shape {a.shape}")
    ok = np.isfinite(a).any(axis=0)
    out = np.full(a.shape[1], math.nan)
    out[ok] = np.nanmean(a[:, ok], axis=0)
    return out.tolist()
