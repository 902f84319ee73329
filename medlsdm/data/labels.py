"""Label maps: the integer values present, and remapping dataset values to class indices.

One-hot encoding for the networks is :func:`medlsdm.models.blocks.one_hot`.
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


def remap_labels(label: np.ndarray, table: ClassTable, path: str | os.PathLike | None = None) -> np.ndarray:
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
