"""Parameter sweeps: rerun one notebook for every combination of parameter values.

``sweep("04", {"guidance_scale": [0, 1, 2, 4], "steps": [10, 25]}, "runs/demo")`` runs
``04_synthesis`` with papermill once per combination (cartesian product), on the outputs the
earlier notebooks left in the run directory, and writes::

    RUN/sweeps/04_synthesis/guidance_scale=0_steps=10.ipynb   every executed notebook
    RUN/sweeps/04_synthesis.csv    one row per combination: the swept values + every scalar
                                   metric of the notebook's metrics.json key (``a.b`` for nested)
    RUN/sweeps/04_synthesis.png    each numeric metric against the first swept parameter,
                                   one line per value of the others

The sweep holds the run directory's writer lock (:meth:`~medlsdm.rundir.RunDir.writing`). The
notebook's key of ``metrics.json`` is saved before the first run and restored afterwards under
the metrics lock (:meth:`~medlsdm.rundir.RunDir.metrics_restored`; also after an error or
SIGTERM, and after a SIGKILL by the next writer of the run directory), so the run's own numbers
stay those of its normal run. Other files the notebook writes (figures, samples) are those of
the last combination; ``medlsdm run --only NN`` restores them. When a combination fails, the
table and plot of the combinations done so far are still written.

Bad names or values are refused before anything runs: names must be in the notebook's
``parameters`` cell; a value must have the type of the default written there (an int is
accepted for a float; ``None`` defaults accept anything).
"""

from __future__ import annotations

import ast
import contextlib
import csv
import itertools
import logging
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from matplotlib.figure import Figure
from tqdm.auto import tqdm

from .atomic import atomic_path
from .errors import ConfigError, NotebookError
from .profiles import INPUTS, METRICS_KEYS, notebook_parameters
from .rundir import RunDir
from .runner import check_overrides, check_value, find_notebooks, notebook_parameter_names, run_notebook

log = logging.getLogger(__name__)

_OPEN, _CLOSE = "([{", ")]}"


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split ``text`` at ``sep`` outside brackets and quotes: ``"[8,8],[6,6]"`` → 2 parts."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote and text[i - 1] != "\\":
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            if depth < 0:
                raise ConfigError(f"{text!r}: unbalanced {ch!r}")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth or quote:
        raise ConfigError(f"{text!r}: unbalanced brackets or quotes")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _literal(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_sweep(items: Iterable[str]) -> dict[str, list[Any]]:
    """Parse ``key=v1,v2,…`` strings into ``{key: [v1, v2, …]}`` (values as Python literals).

    A comma splits values at the top level only: ``spacing=[8,8,8],[6,6,6]`` is two values.
    Values that are not Python literals stay strings (``dataset=torso-ct,breast-mr``).
    """
    out: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ConfigError(f"-p {item!r}: expected key=value[,value…]")
        if key in out:
            raise ConfigError(f"-p {key}: given twice; list all its values in one -p {key}=v1,v2")
        values = [_literal(v) for v in split_top_level(raw)]
        if any(v == "" for v in values):
            raise ConfigError(f"-p {item!r}: empty value")
        out[key] = values
    if not out:
        raise ConfigError("nothing to sweep: give at least one -p key=v1,v2")
    return out


def check_sweep_values(path: Path, grid: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    """Check names and value types against ``path``'s parameters cell; return the grid
    with ints given for float defaults converted to float and tuples to lists.

    Raises:
        ConfigError: unknown name (listing the valid ones), ``run_dir``, or a value whose
            type or range differs from the default's (:func:`medlsdm.runner.check_value`).
    """
    check_overrides([path], dict(grid))
    if "run_dir" in grid:
        raise ConfigError("run_dir cannot be swept: the sweep runs inside --run-dir")
    if "profile" in grid:
        raise ConfigError("profile cannot be swept (the notebook only records it); choose it with --profile")
    defaults = notebook_parameter_names(path)
    checked: dict[str, list[Any]] = {}
    for name, values in grid.items():
        out = [check_value(path, name, value, defaults[name]) for value in values]  # as `medlsdm run -p` does
        if len({repr(v) for v in out}) != len(out):
            raise ConfigError(f"-p {name}: a value is repeated")
        checked[name] = out
    return checked


def check_prerequisites(path: Path, run: RunDir) -> None:
    """Refuse to sweep ``path`` unless the notebooks it reads from (:data:`~medlsdm.profiles.INPUTS`)
    have written their results to ``metrics.json``."""
    metrics = run.read_metrics()
    for earlier in INPUTS.get(path.name[:2], ()):
        if METRICS_KEYS[earlier] not in metrics:
            raise ConfigError(
                f"{run.metrics_path}: has no {METRICS_KEYS[earlier]!r} results; run notebook {earlier} "
                f"first (medlsdm run --run-dir {run.root} --only {earlier}, or all notebooks before "
                f"{path.name[:2]}) so that {path.stem} finds its inputs"
            )


def flatten_scalars(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar entries (numbers, bools, strings, None) of a nested dict, keys joined by ``.``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_scalars(value, f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


def table_row(combo: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row: the swept values, then the flattened scalar metrics (a metric named like
    a swept parameter becomes ``metrics.<name>``)."""
    row = dict(combo)
    for name, value in flatten_scalars(metrics).items():
        row[f"metrics.{name}" if name in combo else name] = value
    return row


def _slug(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        text = "-".join(_slug(v) for v in value)
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "empty"


def combination_name(combo: Mapping[str, Any]) -> str:
    """File stem of one combination: ``guidance_scale=2.0_steps=10``."""
    return "_".join(f"{k}={_slug(v)}" for k, v in combo.items())


def _cell(value: Any) -> Any:
    """A CSV cell: lists as compact JSON-like text, the rest as is."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return value


@contextlib.contextmanager
def _terminate_raises():
    """SIGTERM (``kill``, a batch system's time limit) raises :class:`SystemExit` in the main
    thread for the block, so that ``finally`` blocks run and ``metrics.json`` is restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class SweepResult:
    """What a sweep wrote: the table, the plot, and one executed notebook per row."""

    notebook: str
    table: Path
    plot: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    executed: list[Path] = field(default_factory=list)


def write_table(rows: list[dict[str, Any]], path: Path) -> None:
    """Write the rows as CSV: columns in order of first appearance."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in row.items()})


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_sweep(rows: list[dict[str, Any]], params: list[str], path: Path, title: str = "") -> None:
    """One panel per numeric metric against ``params[0]``, one line per value of the rest.

    With more than one row, metrics that are the same in every row and the notebook's echo
    of a swept value (``metrics.<param>``) get no panel: they have nothing to show.
    """

    metrics = []
    for row in rows:
        metrics += [k for k, v in row.items() if k not in params and _is_number(v) and k not in metrics]
    if len(rows) > 1:
        metrics = [
            m for m in metrics if m.removeprefix("metrics.") not in params and len({repr(r.get(m)) for r in rows}) > 1
        ]
    x_name, others = params[0], params[1:]
    x_values = list(dict.fromkeys(repr(r[x_name]) for r in rows))
    numeric_x = all(_is_number(r[x_name]) for r in rows)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        label = ", ".join(f"{p}={_cell(row[p])}" for p in others) or None
        groups.setdefault(label, []).append(row)
    ncols = min(3, max(1, len(metrics)))
    nrows = max(1, -(-len(metrics) // ncols))
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics):
        for label, members in groups.items():
            pts = [(r[x_name], r[metric]) for r in members if _is_number(r.get(metric))]
            if numeric_x:
                pts.sort(key=lambda p: p[0])
                xs = [p[0] for p in pts]
            else:
                xs = [x_values.index(repr(p[0])) for p in pts]
            ax.plot(xs, [p[1] for p in pts], marker="o", label=label)
        if numeric_x and len(x_values) <= 12:
            ax.set_xticks(sorted({r[x_name] for r in rows}))
        if not numeric_x:
            ax.set_xticks(range(len(x_values)), [_cell(_literal(v)) for v in x_values], rotation=20, fontsize=8)
        ax.set_xlabel(x_name)
        ax.set_title(metric, fontsize=9)
        if len(groups) > 1:
            ax.legend(fontsize=7)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    if not metrics:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no numeric metrics", ha="center", va="center")
        axes[0].set_axis_off()
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def sweep(
    notebook: str,
    grid: Mapping[str, Iterable[Any]],
    run_dir: str | os.PathLike,
    *,
    profile: str = "quick",
    notebooks_dir: str | os.PathLike | None = None,
    kernel_name: str | None = None,
) -> SweepResult:
    """Rerun ``notebook`` (e.g. ``"04"``) for every combination of ``grid``; see the module doc.

    Raises:
        ConfigError: unknown notebook, name or value type, or an earlier notebook not run yet
            (all before anything runs).
        NotebookError: a combination failed (its executed notebook is kept; metrics.json is
            restored).
    """

    paths = find_notebooks(notebooks_dir, [notebook])
    if len(paths) != 1:
        raise ConfigError(f"--only {notebook}: a sweep reruns exactly one notebook")
    path = paths[0]
    grid = check_sweep_values(path, {k: list(v) for k, v in grid.items()})
    if any(not v for v in grid.values()):
        raise ConfigError("every swept parameter needs at least one value")
    base = notebook_parameters(profile, path.stem)
    run = RunDir(run_dir)
    check_prerequisites(path, run)
    key = METRICS_KEYS.get(path.name[:2], path.stem)

    names = list(grid)
    combos = [dict(zip(names, values)) for values in itertools.product(*grid.values())]
    out_dir = run.sweeps / path.stem
    result = SweepResult(path.stem, run.sweeps / f"{path.stem}.csv", run.sweeps / f"{path.stem}.png")
    log.info("sweep %s: %d combinations of %s", path.stem, len(combos), ", ".join(names))
    with run.writing("medlsdm sweep"), _terminate_raises(), run.metrics_restored(key):
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            for combo in tqdm(combos, desc=f"sweep {path.stem}"):
                params = {**base, "profile": profile, **combo, "run_dir": str(run.root)}
                output = out_dir / f"{combination_name(combo)}.ipynb"
                start = time.perf_counter()
                run_notebook(
                    path,
                    run,
                    params,
                    kernel_name=kernel_name,
                    output=output,
                    label=f"{path.name} with {combination_name(combo)}",
                )
                metrics = run.read_metrics().get(key)
                if not isinstance(metrics, Mapping):
                    raise NotebookError(f"{output}: ran, but wrote no {key!r} key to {run.metrics_path}")
                result.rows.append(table_row(combo, metrics))
                result.executed.append(output)
                log.info("%s done in %.1f s", output.name, time.perf_counter() - start)
        finally:
            if result.rows:
                write_table(result.rows, result.table)
                plot_sweep(result.rows, names, result.plot, title=f"{path.stem}: sweep of {', '.join(names)}")
    log.info("sweep table %s, plot %s", result.table, result.plot)
    return result
