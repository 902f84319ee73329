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
def predict(model: SegNet, images, *, device: str | torch.device | None = None) -> list[np.ndarray]:
    """Class maps of whole cases (one forward pass per case; edge-padded to a size the
    network accepts and cropped back).

    Args:
        model: a trained :class:`SegNet`.
        images: ``(N, 1, *spatial)`` array or a sequence of ``(1, *spatial)`` arrays.
        device: where to run (default: the model's device).

    Returns:
        One ``(*spatial)`` int64 array per case.
    """
    images, _ = as_cases(images)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for im in images:
            x, crop = pad_to_multiple(torch.from_numpy(im)[None].to(device), model.downsample_factor)
            out.append(model(x)[crop].argmax(1)[0].cpu().numpy().astype(np.int64))
    finally:
        model.train(was_training)
    return out


def evaluate_dice(model: SegNet, images, labels, num_classes: int,
                  class_names: Sequence[str] | None = None) -> dict[str, Any]:
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
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ConfigError(f"{len(names)} class names for {num_classes} classes")
    preds = predict(model, images)
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
    return {"per_class": per_class, "mean": mean_dice(per_class), "per_case": per_case,
            "absent": absent, "n_cases": len(per_case)}
