"""Execute the ordered notebooks with papermill, one run directory as the hand-off.

``run_notebooks("quick", "runs/demo")`` executes ``notebooks/01_…`` to ``06_…`` (those that
exist) in order; each gets the profile's parameters, the user's overrides and ``run_dir``,
and its executed copy is kept in ``RUN/executed/``.
"""
from __future__ import annotations

import ast
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError, NotebookError
from .profiles import NOTEBOOKS, notebook_parameters
from .rundir import RunDir

log = logging.getLogger(__name__)

#: The notebooks shipped with the repository (override with ``notebooks_dir``).
DEFAULT_NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def find_notebooks(notebooks_dir: str | os.PathLike | None = None, only: Iterable[str] | None = None) -> list[Path]:
    """The ordered notebooks to run: all that exist, or those whose number is in ``only``."""
    folder = Path(notebooks_dir) if notebooks_dir else DEFAULT_NOTEBOOKS_DIR
    if not folder.is_dir():
        raise ConfigError(f"{folder}: notebooks folder not found")
    wanted = None
    if only is not None:
        wanted = [key.strip()[:2] for key in only if key.strip()]
        unknown = [key for key in wanted if key not in NOTEBOOKS]
        if unknown:
            raise ConfigError(f"--only {','.join(unknown)}: unknown notebook; choose from {', '.join(NOTEBOOKS)}")
    found = []
    for key, stem in NOTEBOOKS.items():
        path = folder / f"{stem}.ipynb"
        if wanted is not None and key not in wanted:
            continue
        if path.exists():
            found.append(path)
        elif wanted is not None:
            raise ConfigError(f"{path}: notebook {key} is not in this checkout")
    if not found:
        raise ConfigError(f"{folder}: no notebooks to run")
    return found


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are Python literals when they parse, else strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-p {item!r}: expected key=value")
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        out[key.strip()] = value
    return out


def notebook_parameter_names(path: Path) -> dict[str, Any]:
    """The names (and defaults, as source text) of a notebook's ``parameters`` cell."""
    import papermill

    logging.getLogger("papermill").setLevel(logging.WARNING)  # our own progress line per notebook is enough
    params = papermill.inspect_notebook(str(path))
    if not params:
        raise ConfigError(f"{path}: has no cell tagged 'parameters'")
    return {name: info["default"] for name, info in params.items()}


def check_overrides(paths: list[Path], overrides: dict[str, Any]) -> None:
    """Refuse overrides that no notebook to run declares, listing the valid names."""
    valid: set[str] = set()
    for path in paths:
        valid.update(notebook_parameter_names(path))
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)}; valid parameters of "
            f"{', '.join(p.stem for p in paths)}: {', '.join(sorted(valid))}"
        )


def run_notebook(path: Path, run: RunDir, parameters: dict[str, Any], *, kernel_name: str | None = None,
                 output: Path | None = None, label: str | None = None) -> Path:
    """Execute one notebook with papermill; return the executed copy's path.

    Args:
        output: where the executed copy goes (default ``RUN/executed/<name>``).
        label: how errors name the run (default the notebook's file name).

    Raises:
        NotebookError: naming the notebook, the failing cell and the error.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output = output or run.executed / path.name
    names = notebook_parameter_names(path)
    params = {k: v for k, v in parameters.items() if k in names}
    try:
        papermill.execute_notebook(
            str(path), str(output), parameters=params, kernel_name=kernel_name,
            cwd=str(path.parent), progress_bar=False, log_output=False,
        )
    except PapermillExecutionError as exc:
        raise NotebookError(
            f"{label or path.name} failed in cell {exc.cell_index} (execution count {exc.exec_count}): "
            f"{exc.ename}: {exc.evalue}\n  executed notebook with the traceback: {output}"
        ) from None
    return output


def run_notebooks(
    profile: str,
    run_dir: str | os.PathLike,
    *,
    only: Iterable[str] | None = None,
    overrides: dict[str, Any] | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    kernel_name: str | None = None,
) -> list[Path]:
    """Run the ordered notebooks under ``profile`` into ``run_dir``; return the executed paths."""
    overrides = dict(overrides or {})
    paths = find_notebooks(notebooks_dir, only)
    check_overrides(paths, overrides)
    run = RunDir(run_dir)
    executed = []
    for i, path in enumerate(paths, 1):
        params = {**notebook_parameters(profile, path.stem), "profile": profile, **overrides, "run_dir": str(run.root)}
        log.info("[%d/%d] %s …", i, len(paths), path.stem)
        start = time.perf_counter()
        executed.append(run_notebook(path, run, params, kernel_name=kernel_name))
        log.info("[%d/%d] %s done in %.1f s", i, len(paths), path.stem, time.perf_counter() - start)
    return executed
