"""Execute the ordered notebooks with papermill, one run directory as the hand-off.

``run_notebooks("quick", "runs/demo")`` executes ``notebooks/01_…`` to ``07_…`` (those that
exist) in order; each gets the profile's parameters, the user's overrides and ``run_dir``,
and its executed copy is kept in ``RUN/executed/``.

With ``jobs=2`` independent notebooks run side by side, following :data:`PLAN`: its stages
run one after another; within a stage each lane runs its notebooks in order, the lanes side
by side, and every kernel starts with ``cpu_count // lanes`` torch threads; when a lane ends,
the training loops of the other take its cores (:mod:`medlsdm.training.cores`). On small CPUs
two notebooks side by side beat one at a time with all threads where a model does not keep
two threads busy (a quick diffusion UNet step: 0.36 s on one thread, 0.21-0.25 s on two; 2
AMD EPYC cores). Numbers can differ in the last bits from a sequential run (threads change
the order of floating-point sums), and a training that changes its thread count mid-run (02
beside 06) from one run to the next: notebook 02's SSIM was 0.775, 0.744, 0.784 and 0.759 in four
fresh-clone demos of the same settings (adversarial training amplifies the rounding).

``-p`` overrides are checked before any kernel starts (:func:`check_parameters`, also used by
the sweep): names, types and ranges against each notebook's ``parameters`` cell. While a
notebook runs, a line is logged as each of its code cells starts, prefixed with the notebook's
number (readable with ``jobs=2``). Ctrl-C stops every kernel and ends with one line.
"""

from __future__ import annotations

import ast
import functools
import logging
import math
import os
import signal
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterable

import papermill
import zmq
from jupyter_client.manager import AsyncKernelManager
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError
from traitlets import CaselessStrEnum

from .errors import ConfigError, NotebookError
from .profiles import NOTEBOOKS, notebook_parameters
from .rundir import RunDir
from .training.cores import LANES_ENV

log = logging.getLogger(__name__)

#: ``jobs=2``: stages one after another, each a tuple of lanes run side by side, each lane a
#: tuple of notebooks run in order. Every notebook's inputs (:data:`medlsdm.profiles.INPUTS`)
#: come from an earlier stage or earlier in its lane (``tests/test_runner.py`` checks it).
#: Lanes on the quick profile (fresh-clone make demo, 2 cores): 01+02 beside the standalone 06,
#: the VQ-GAN taking both threads once 06 ends (:mod:`medlsdm.training.cores`); then 03 alone
#: with both threads (the others need its model); then 05 beside 04+07 (times:
#: ``benchmarks/results/demo_times.json``). 01+02 alone, then 03 beside 06, took 45 s longer in
#: fresh-clone demos of the same code (20:36 against 19:51): the diffusion UNet loses more on one
#: thread beside 06 (501 s against 383 s) than the VQ-GAN gains on two from the start (337 s against 407 s).
PLAN: tuple[tuple[tuple[str, ...], ...], ...] = ((("01", "02"), ("06",)), (("03",),), (("05",), ("04", "07")))

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


def _expected(value: Any, ref: Any) -> str | None:
    """What ``value`` should be to match a parameter whose default is ``ref``; ``None`` when it
    does. Same type (an int is accepted for a float; list items are checked too), finite, and
    not negative where the default is not."""
    if ref is None:
        return None
    kind = type(ref).__name__
    if isinstance(ref, bool) or isinstance(value, bool):
        return None if isinstance(ref, bool) and isinstance(value, bool) else kind
    if isinstance(ref, (int, float)):
        if not isinstance(value, (int, float)) or (isinstance(ref, int) and isinstance(value, float)):
            return kind
        if not math.isfinite(value):
            return f"a finite {kind}"
        return f"{kind} >= 0" if ref >= 0 > value else None
    if isinstance(ref, (list, tuple)) and isinstance(value, (list, tuple)):
        if len(value) == len(ref):
            pairs = zip(value, ref)
        else:  # a list of any length: each item like the default's first, when they are all alike
            pairs = ((v, ref[0]) for v in value) if len({type(r) for r in ref}) == 1 else ()
        inner = next((e for e in (_expected(v, r) for v, r in pairs) if e), None)
        return f"{kind} of {inner}" if inner else None
    return None if isinstance(value, type(ref)) else kind


def check_value(path: Path, name: str, value: Any, default: str, profile_value: Any = None) -> Any:
    """Check one ``-p`` value against the default written in ``path``'s parameters cell
    (source text; against ``profile_value`` where that default is ``None``).

    Returns:
        The value, an int given for a float default as a float, a tuple as a list.

    Raises:
        ConfigError: naming the parameter, the notebook and what it expects.
    """
    try:
        ref = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return value  # not a literal in the notebook: nothing to compare
    value = list(value) if isinstance(value, tuple) else value
    shown = f"default {default}"
    if ref is None and value is not None and profile_value is not None:
        ref, shown = profile_value, f"the profile's value {profile_value!r}"
    expected = _expected(value, ref)
    if expected:
        raise ConfigError(f"-p {name}={value!r}: {path.name} expects {expected} ({shown}), got {type(value).__name__}")
    return float(value) if isinstance(ref, float) and isinstance(value, int) else value


def check_parameters(paths: list[Path], overrides: dict[str, Any], profile: str) -> dict[str, Any]:
    """Check ``-p`` overrides before any kernel starts: known names (:func:`check_overrides`),
    not ``run_dir``/``profile`` (set by ``--run-dir``/``--profile``), and each value against the
    default of every notebook declaring it (:func:`check_value`). Returns the checked values."""
    check_overrides(paths, overrides)
    for name, flag in (("run_dir", "--run-dir"), ("profile", "--profile")):
        if name in overrides:
            raise ConfigError(
                f"-p {name}={overrides[name]!r}: {name} is not a notebook parameter to override; give it with {flag}"
            )
    checked = dict(overrides)
    for path in paths:
        defaults = notebook_parameter_names(path)
        profile_values = notebook_parameters(profile, path.stem)
        for name in overrides.keys() & defaults.keys():
            checked[name] = check_value(path, name, overrides[name], defaults[name], profile_values.get(name))
    return checked


def _first_line(source: str, width: int = 70) -> str:
    lines = [line.strip() for line in source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    text = lines[0] if lines else ""
    return text if len(text) <= width else text[: width - 1] + "…"


@functools.cache
def _progress_engine() -> str:
    """Register (once) a papermill engine that logs a line as each code cell starts,
    ``<progress> cell 3/12: <its first line>``; return its name."""

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, progress="", **kwargs):
            code = [i for i, cell in enumerate(nb_man.nb.cells) if cell.cell_type == "code"]
            cell_start = nb_man.cell_start

            def announce(cell, cell_index=None, **kw):
                if cell_index in code:
                    log.info(
                        "%s cell %d/%d: %s", progress, code.index(cell_index) + 1, len(code), _first_line(cell.source)
                    )
                return cell_start(cell, cell_index, **kw)

            nb_man.cell_start = announce
            kwargs.setdefault("kernel_manager_class", _encrypted_kernel_manager())
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register("medlsdm-progress", ProgressEngine)
    return "medlsdm-progress"


@functools.cache
def _encrypted_kernel_manager() -> type:
    """nbclient's kernel manager with CurveZMQ transport encryption where the kernel supports it
    (ipykernel >= 7.3 warns at every start, "Kernel is running over TCP without encryption", if not)."""

    class EncryptedKernelManager(AsyncKernelManager):
        transport_encryption = CaselessStrEnum(
            ["disabled", "auto", "required"], config=True, default_value="auto" if zmq.has("curve") else "disabled"
        )

    return EncryptedKernelManager


def run_notebook(
    path: Path,
    run: RunDir,
    parameters: dict[str, Any],
    *,
    kernel_name: str | None = None,
    output: Path | None = None,
    label: str | None = None,
    progress: str | None = None,
) -> Path:
    """Execute one notebook with papermill; return the executed copy's path.

    Args:
        output: where the executed copy goes (default ``RUN/executed/<name>``).
        label: how errors name the run (default the notebook's file name).
        progress: prefix of the line logged as each code cell starts (default the notebook's number).

    The kernel is killed as soon as the notebook ends, fails or is interrupted (no graceful
    shutdown to wait for, no kernel traceback on Ctrl-C).

    Raises:
        NotebookError: naming the notebook, the failing cell and the error.
    """

    output = output or run.executed / path.name
    output.parent.mkdir(parents=True, exist_ok=True)
    names = notebook_parameter_names(path)
    params = {k: v for k, v in parameters.items() if k in names}
    try:
        papermill.execute_notebook(
            str(path),
            str(output),
            parameters=params,
            kernel_name=kernel_name,
            cwd=str(path.parent),
            progress_bar=False,
            log_output=False,
            engine_name=_progress_engine(),
            progress=progress or path.name[:2],
            shutdown_kernel="immediate",
        )
    except PapermillExecutionError as exc:
        raise NotebookError(
            f"{label or path.name} failed in cell {exc.cell_index} (execution count {exc.exec_count}): "
            f"{exc.ename}: {exc.evalue}\n  executed notebook with the traceback: {output}"
        ) from None
    return output


def _run_lane(
    lane: list[tuple[Path, dict[str, Any], str]],
    run_root: str,
    kernel_name: str | None,
    threads: int | None,
    token: str | None = None,
) -> list[Path]:
    """Run the notebooks of one lane in order, each ``(path, parameters, progress tag)``; with
    ``threads`` (in a worker process) their kernels inherit ``OMP_NUM_THREADS=threads``, and
    Ctrl-C stops the lane quietly (the main process reports it). ``token``: this lane's file in
    the folder of running lanes, removed when the lane ends so that the other lane's training
    takes the freed cores (:mod:`medlsdm.training.cores`)."""
    if threads is not None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if token is not None:
        os.environ[LANES_ENV] = os.path.dirname(token)
    run, executed = RunDir(run_root), []
    try:
        for path, params, tag in lane:
            log.info("%s %s …", tag, path.stem)
            start = time.perf_counter()
            executed.append(run_notebook(path, run, params, kernel_name=kernel_name, progress=f"{tag} {path.name[:2]}"))
            note = f" ({threads} torch thread{'s' * (threads > 1)})" if threads else ""
            log.info("%s %s done in %.1f s%s", tag, path.stem, time.perf_counter() - start, note)
    finally:
        if token is not None:
            Path(token).unlink(missing_ok=True)
        if threads is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # an idle worker: no traceback on Ctrl-C
    return executed


def _ignore_sigint() -> None:
    """Initialiser of the worker processes: Ctrl-C reaches them only while they run a lane."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def plan_stages(keys: list[str], jobs: int) -> list[list[list[str]]]:
    """The stages (lists of lanes of notebook keys) that run ``keys``: one notebook per stage,
    in order, for ``jobs=1``; :data:`PLAN` restricted to ``keys`` for ``jobs=2``."""
    if jobs == 1:
        return [[[key]] for key in keys]
    if jobs != 2:
        raise ConfigError(f"jobs={jobs}: choose 1 (one notebook at a time) or 2 (the lanes of medlsdm.runner.PLAN)")
    stages = [[[k for k in lane if k in keys] for lane in stage] for stage in PLAN]
    return [[lane for lane in stage if lane] for stage in stages if any(stage)]


def run_notebooks(
    profile: str,
    run_dir: str | os.PathLike,
    *,
    only: Iterable[str] | None = None,
    overrides: dict[str, Any] | None = None,
    notebooks_dir: str | os.PathLike | None = None,
    kernel_name: str | None = None,
    jobs: int = 1,
    from_pack: str | os.PathLike | None = None,
) -> list[Path]:
    """Run the ordered notebooks under ``profile`` into ``run_dir``; return the executed paths.

    Args:
        jobs: 1 runs one notebook at a time; 2 runs independent notebooks side by side
            (:data:`PLAN`), each kernel with its share of the CPU threads.
        from_pack: a pack (``medlsdm pack``) to start from: verified and unpacked into ``run_dir``
            (new or empty, or unpacked from the same pack before) before any kernel starts; ``only``
            defaults to 04, 05, 07 and may not name 01-03 (:func:`medlsdm.pack.check_from_pack`).
    """

    overrides = dict(overrides or {})
    # here, not at the top: pack loads torch and diffusers (about 3.5 s), which only --from-pack needs
    from .pack import FROM_PACK_DEFAULT, check_from_pack, unpack_run  # noqa: PLC0415

    only = FROM_PACK_DEFAULT if from_pack is not None and only is None else only
    paths = find_notebooks(notebooks_dir, only)
    if from_pack is not None:
        check_from_pack([p.stem[:2] for p in paths], from_pack)
    overrides = check_parameters(paths, overrides, profile)
    run = unpack_run(from_pack, run_dir) if from_pack is not None else RunDir(run_dir)
    work = {
        p.stem[:2]: (
            p,
            {**notebook_parameters(profile, p.stem), "profile": profile, **overrides, "run_dir": str(run.root)},
            f"[{i}/{len(paths)}]",
        )
        for i, p in enumerate(paths, 1)
    }
    executed: dict[str, Path] = {}
    with run.writing("medlsdm run"):  # one writer per run directory
        for stage in plan_stages(list(work), int(jobs)):
            lanes = [[work[k] for k in lane] for lane in stage]
            if jobs == 1:
                results = [_run_lane(lanes[0], str(run.root), kernel_name, None)]
            else:
                threads = max(1, (os.cpu_count() or 1) // len(lanes))
                with (
                    ProcessPoolExecutor(
                        len(lanes), mp_context=get_context("spawn"), initializer=_ignore_sigint
                    ) as pool,
                    tempfile.TemporaryDirectory(prefix="medlsdm-lanes-") as running,
                ):
                    tokens = [os.path.join(running, f"lane-{i}") for i in range(len(lanes))]
                    for token in tokens:
                        Path(token).touch()
                    futures = [
                        pool.submit(_run_lane, lane, str(run.root), kernel_name, threads, token)
                        for lane, token in zip(lanes, tokens)
                    ]
                    results = [f.result() for f in futures]
            for lane, out in zip(stage, results):
                executed.update(zip(lane, out))
    return [executed[k] for k in work]
