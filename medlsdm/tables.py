"""Numbers and Markdown tables for notebooks, reports, logs and the command line."""

from __future__ import annotations

import math
from typing import Any, Sequence


def format_number(value: Any, digits: int = 4, missing: str = "–") -> str:
    """``value`` with ``digits`` significant digits (floats), as is (ints, bools, text);
    ``missing`` for ``None``, ``"n/a"`` for NaN. Tensors and numpy scalars are read with ``.item()``."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if value is None:
        return missing
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (cells are converted with ``str``)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)
