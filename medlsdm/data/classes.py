"""Class tables: the label classes of every dataset medlsdm knows, in one place.

A :class:`ClassTable` maps the label values found in a dataset's files
(``source_values``) to contiguous class indices ``0 … K-1`` (index 0 is always
background). Inside the package, labels are always these contiguous indices (int64).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

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


TORSO_CT = _contiguous("background", "soft_tissue", "fat", "lung", "liver", "kidney", "bone", "aorta", "lesion")
BREAST_MR = _contiguous("background", "breast", "fibroglandular", "vessel")
CARDIAC = _contiguous("background", "lv_blood_pool", "myocardium", "rv")
AUTOPET = _contiguous("background", "lesion")
SYNTHRAD2023 = _contiguous("background", "body")
DUKE_BREAST = BREAST_MR
MNMS = CARDIAC
DUKE_BREAST_PAPER = _contiguous("background", "breast", "vessel")


def class_table_from_values(values: dict[int, str], source: str = "class table") -> ClassTable:
    """A class table from ``{file label value: name}``, sorted by value; value 0 is background.

    Args:
        values: label value → class name; a missing 0 is added as ``"background"``.
        source: named in error messages (e.g. the file the table came from).

    Raises:
        ConfigError: negative values, duplicate names, or no class besides background.
    """
    table = {int(v): str(n) for v, n in values.items()}
    if any(v < 0 for v in table):
        raise ConfigError(f"{source}: label values must be >= 0, got {sorted(v for v in table if v < 0)}")
    table.setdefault(0, "background")
    names = [table[v] for v in sorted(table)]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: class names must be unique, got {names}")
    if len(names) < 2:
        raise ConfigError(f"{source}: needs at least one class besides background")
    return ClassTable(tuple(names), tuple(sorted(table)))


def _int_value(value, name, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise ConfigError(
            f"{source}: label {name!r} has value {value!r}; expected one non-negative integer "
            "(region-based nnU-Net labels, given as lists, are not supported)"
        )
    return int(value)


def class_table_from_json(obj, source: str = "class table") -> ClassTable:
    """A class table from a parsed JSON file.

    Accepted shapes: an nnU-Net v2 ``dataset.json`` (``"labels": {name: value}``), a Medical
    Segmentation Decathlon / nnU-Net v1 ``dataset.json`` (``"labels": {"value": name}``), or
    such a ``labels`` dict alone (e.g. TotalSegmentator's ``{"1": "spleen", …}``).

    Args:
        obj: the parsed JSON.
        source: named in error messages.
    """
    labels = obj.get("labels", obj) if isinstance(obj, dict) else None
    if not isinstance(labels, dict) or not labels:
        raise ConfigError(f"{source}: expected a JSON object of labels ({{name: value}} or {{value: name}})")
    keys_are_values = all(str(k).strip().isdigit() for k in labels)
    if keys_are_values:
        return class_table_from_values({_int_value(k, v, source): v for k, v in labels.items()}, source)
    return class_table_from_values({_int_value(v, k, source): k for k, v in labels.items()}, source)


def read_class_table(path) -> ClassTable:
    """Read a class table file.

    Formats (by suffix):

    - ``.json``: see :func:`class_table_from_json` (nnU-Net / MSD ``dataset.json``, or a
      labels dict such as a TotalSegmentator class map).
    - any other (``.txt``, ``.csv``, ``.tsv``): one class per line, ``<value> <name>``
      (separated by spaces, a tab, a comma or a colon); empty lines and ``#`` comments are
      skipped; a header line whose first field is not a number is skipped.

    Args:
        path: the file.

    Raises:
        ConfigError: missing or unreadable file, or a table that is not valid (naming the file).
    """

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{path}: class table file not found (option classes_file)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the class table ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            return class_table_from_json(json.loads(text), str(path))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    values: dict[int, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = [f for f in re.split(r"[\s,:;]+", line, maxsplit=1) if f]
        if not fields[0].isdigit():
            if not values and number == 1:
                continue  # a header line
            raise ConfigError(f"{path}:{number}: expected '<value> <name>', got {line!r}")
        if len(fields) < 2:
            raise ConfigError(f"{path}:{number}: value {fields[0]} has no class name")
        if int(fields[0]) in values:
            raise ConfigError(f"{path}:{number}: value {fields[0]} appears twice")
        values[int(fields[0])] = fields[1].strip().strip("'\"")
    return class_table_from_values(values, str(path))
