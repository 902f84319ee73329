"""Class tables: the label classes of every dataset medlsdm knows, in one place.

A :class:`ClassTable` maps the label values found in a dataset's files
(``source_values``) to contiguous class indices ``0 … K-1`` (index 0 is always
background). Inside the package, labels are always these contiguous indices (int64).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class ClassTable:
    """Names and file label values of a dataset's classes.

    Args:
        names: class name for each contiguous index; ``names[0]`` is the background.
        source_values: label value used in the dataset's files for each class, in the
            same order as ``names``.
    """

    names: tuple[str, ...]
    source_values: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.source_values):
            raise ConfigError("names and source_values must have the same length")
        if len(set(self.source_values)) != len(self.source_values):
            raise ConfigError("source_values must be unique")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def mapping(self) -> dict[int, int]:
        """File label value → contiguous class index."""
        return {v: i for i, v in enumerate(self.source_values)}

    def index(self, name: str) -> int:
        return self.names.index(name)


def _contiguous(*names: str) -> ClassTable:
    return ClassTable(tuple(names), tuple(range(len(names))))


TORSO_CT = _contiguous(
    "background", "soft_tissue", "fat", "lung", "liver", "kidney", "bone", "aorta", "lesion"
)
BREAST_MR = _contiguous("background", "breast", "fibroglandular", "vessel")
CARDIAC = _contiguous("background", "lv_blood_pool", "myocardium", "rv")
AUTOPET = _contiguous("background", "lesion")
SYNTHRAD2023 = _contiguous("background", "body")
DUKE_BREAST = BREAST_MR
MNMS = CARDIAC
