"""Helpers for the tests that read notebooks: what papermill left in an executed notebook,
the parameters a notebook runs with, and whether a parameters cell equals a profile.

The parameters cell is read with :func:`medlsdm.runner.notebook_parameter_names` (papermill's
own parser, the one ``medlsdm run`` uses), never with a second parser.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from medlsdm.profiles import notebook_parameters
from medlsdm.runner import find_notebooks, notebook_parameter_names

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _code_cells(nb: dict) -> list[tuple[int, dict]]:
    return [(i, c) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]


def error_outputs(path: Path, tail: int = 15) -> list[str]:
    """One readable entry per error output of an executed notebook: the cell (execution count
    and first source line), the exception and the last ``tail`` lines of its traceback."""
    nb = json.loads(Path(path).read_text())
    found = []
    for _, cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            if out["output_type"] != "error":
                continue
            source = "".join(cell["source"]).strip().splitlines() or [""]
            trace = ANSI.sub("", "\n".join(out.get("traceback", []))).splitlines()[-tail:]
            found.append(
                f"{Path(path).name}, In [{cell.get('execution_count')}] `{source[0][:80]}`: "
                f"{out['ename']}: {out['evalue']}\n    " + "\n    ".join(trace)
            )
    return found


def unexecuted_cells(path: Path) -> list[int]:
    """Indices of the code cells papermill did not run (those after a failure)."""
    nb = json.loads(Path(path).read_text())
    return [i for i, c in _code_cells(nb) if c.get("execution_count") is None and "".join(c["source"]).strip()]


def cell_defaults(path: Path) -> dict[str, Any]:
    """The parameters cell's values as Python objects (a default that is no literal stays
    its source text wrapped in :class:`NotALiteral`)."""
    out = {}
    for name, text in notebook_parameter_names(Path(path)).items():
        try:
            out[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[name] = NotALiteral(text)
    return out


class NotALiteral(str):
    """A parameters-cell default that ``ast.literal_eval`` cannot read."""


def effective_parameters(profile: str, key: str) -> dict[str, Any]:
    """What notebook ``key`` runs with under ``profile``: its parameters cell, overridden by
    the profile (as :func:`medlsdm.runner.run_notebooks` does)."""
    path = find_notebooks(only=[key])[0]
    return {**cell_defaults(path), **notebook_parameters(profile, key), "profile": profile}


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type (so ``300.0`` or ``True`` does not pass for ``300`` or ``1``)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def parameters_cell_mismatches(path: Path, expected: dict[str, Any]) -> list[str]:
    """Every key of ``expected`` that the notebook's parameters cell lacks or sets to another
    value, as a readable line; ``[]`` when the cell agrees."""
    defaults = cell_defaults(path)
    problems = []
    for name, value in expected.items():
        if name not in defaults:
            problems.append(f"{name}: the profile sets {value!r}; the parameters cell does not declare it")
        elif isinstance(defaults[name], NotALiteral):
            problems.append(f"{name}: the parameters cell's default {str(defaults[name])!r} is not a literal")
        elif not _same(defaults[name], value):
            problems.append(f"{name}: the parameters cell says {defaults[name]!r}, the profile {value!r}")
    return problems
