"""Label maps: the integer values present, remapping dataset values to class indices, one-hot.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import DataError
from .classes import ClassTable

logger = logging.getLogger(__name__)


def unique_ints(label: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (bincount when the range is small)."""
    if label.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(label.min()), int(label.max())
    if hi - lo < 1 << 16:
        counts = np.bincount((label - lo).ravel().astype(np.int64), minlength=hi - lo + 1)
        return np.flatnonzero(counts) + lo
    return np.unique(label)


def remap_labels(
    label: np.ndarray, table: ClassTable, path: str | os.PathLike | None = None
) -> np.ndarray:
    """Map a dataset's label values to contiguous class indices ``0 … K-1``.

    Args:
        label: integer label map with the dataset's values (``table.source_values``).
        table: the dataset's :class:`~medlsdm.data.classes.ClassTable`.
        path: file the label map came from (named in the error message).

    Returns:
        int64 array of class indices, same shape.

    Raises:
        DataError: when the map holds values that are not in the table (names the file
            and the offending values).
    """
    values = unique_ints(label)
    mapping = table.mapping()
    unknown = [int(v) for v in values if int(v) not in mapping]
    if unknown:
        where = f"{path}: " if path is not None else ""
        raise DataError(
            f"{where}label values {unknown[:10]} are not in the class table "
            f"(expected values {list(table.source_values)} for classes {list(table.names)})"
        )
    if list(table.source_values) == list(range(table.num_classes)):
        return label.astype(np.int64, copy=True)
    lo = min(int(values.min()), min(table.source_values))
    hi = max(int(values.max()), max(table.source_values))
    lut = np.zeros(hi - lo + 1, dtype=np.int64)
    for value, index in mapping.items():
        lut[value - lo] = index
    return lut[label - lo]


def one_hot(label, num_classes: int, *, dim: int | None = None):
    """One-hot encode class indices (numpy or torch) as float32.

    Args:
        label: integer class indices, e.g. ``(D, H, W)`` → ``(C, D, H, W)`` or (torch or
            numpy) batched ``(B, D, H, W)`` → ``(B, C, D, H, W)``.
        num_classes: ``C``.
        dim: where the class axis goes. Default: 0 for inputs with up to 3 axes, 1 for 4 or
            more (batched 3-D). Pass ``dim=1`` for batched 2-D maps ``(B, H, W)``.

    Returns:
        Same library as the input (torch keeps the device), float32.
    """
    if dim is None:
        dim = 0 if label.ndim <= 3 else 1
    if not -(label.ndim + 1) <= dim <= label.ndim:
        raise ValueError(f"dim {dim} out of range for a {label.ndim}-D label map")
    dim = dim % (label.ndim + 1)
    if isinstance(label, np.ndarray):
        if label.size and (label.min() < 0 or label.max() >= num_classes):
            raise ValueError(f"class indices must lie in [0, {num_classes - 1}], got [{label.min()}, {label.max()}]")
        classes = np.arange(num_classes).reshape((num_classes,) + (1,) * label.ndim)
        out = (label[None] == classes).astype(np.float32)
        return np.ascontiguousarray(np.moveaxis(out, 0, dim)) if dim != 0 else out
    import torch

    if not isinstance(label, torch.Tensor):
        raise TypeError(f"one_hot expects a numpy array or torch tensor, got {type(label).__name__}")
    label = label.long()
    if label.numel() and (int(label.min()) < 0 or int(label.max()) >= num_classes):
        raise ValueError(
            f"class indices must lie in [0, {num_classes - 1}], got [{int(label.min())}, {int(label.max())}]"
        )
    index = label.unsqueeze(dim)
    shape = list(index.shape)
    shape[dim] = num_classes
    out = torch.zeros(shape, dtype=torch.float32, device=label.device)
    return out.scatter_(dim, index, 1.0)
