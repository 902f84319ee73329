"""The run directory: the only hand-off between notebooks.

This class is the one place that knows the layout (below; the README's "Run directory and profiles" section
summarises it for users)::

    RUN/
      raw/           generated phantom source data (the run's own copy)
      data/          preprocessed cases (NIfTI + HDF5 cache cases.h5), manifest.json, split.json
      vqgan/         model/ (the VQ-GAN, ``save_pretrained``), checkpoints/, log.csv
      diffusion/     checkpoints/, log.csv, samples-<step>.npz of the latent diffusion training
      pipeline/      the MedLSDMPipeline (``save_pretrained`` folder)
      samples/       synthetic volumes (NIfTI); samples/eval/<setting>/ for notebook 05
      cardiac/       the 2-D cardiac model of notebook 06 (its own data/, vqgan/, ldm/)
      figures/       PNG figures written by the notebooks
      executed/      executed notebooks
      sweeps/        parameter sweeps (CSV + plot per notebook)
      report/        the static HTML report
      metrics.json   one key per notebook

Properties only name folders and files: reading a run creates nothing. Writers create what
they write (:func:`~medlsdm.atomic.atomic_path` makes the parent folder). Writers of a whole run
(``medlsdm run``, ``sweep``, ``evaluate``) hold :meth:`RunDir.writing`, one at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from .atomic import atomic_path, read_json, write_json
from .errors import DataError, MedLSDMError

log = logging.getLogger(__name__)

#: Files of a data folder (``RUN/data``), written by :func:`medlsdm.data.prepare.prepare_dataset`.
MANIFEST, SPLIT, STORE = "manifest.json", "split.json", "cases.h5"


class RunDir:
    """Paths and shared files of one run directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def _sub(self, name: str) -> Path:
        return self.root / name

    @property
    def data(self) -> Path:
        return self._sub("data")

    @property
    def raw(self) -> Path:
        """Where generated phantom source data lives (the run's own copy)."""
        return self._sub("raw")

    @property
    def vqgan(self) -> Path:
        return self._sub("vqgan")

    @property
    def vqgan_model(self) -> Path:
        """The trained VQ-GAN's ``save_pretrained`` folder."""
        return self.vqgan / "model"

    @property
    def diffusion(self) -> Path:
        return self._sub("diffusion")

    @property
    def pipeline(self) -> Path:
        return self._sub("pipeline")

    @property
    def samples(self) -> Path:
        return self._sub("samples")

    @property
    def eval_samples(self) -> Path:
        """Synthetic volumes of notebook 05, one folder per sampling setting."""
        return self._sub("samples/eval")

    @property
    def cardiac(self) -> Path:
        return self._sub("cardiac")

    @property
    def figures(self) -> Path:
        return self._sub("figures")

    @property
    def executed(self) -> Path:
        return self._sub("executed")

    @property
    def sweeps(self) -> Path:
        return self._sub("sweeps")

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def manifest_path(self) -> Path:
        return self.data / MANIFEST

    @property
    def split_path(self) -> Path:
        return self.data / SPLIT

    @property
    def store_path(self) -> Path:
        return self.data / STORE

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    def data_root(self) -> Path | None:
        """The dataset folder the run's data was prepared from: the manifest's ``data_root``, a relative
        one (a pack's ``../raw/<name>``) resolved from ``data/``; None without a manifest or a root
        (own data in a pack)."""
        root = read_json(self.manifest_path).get("data_root") if self.manifest_path.is_file() else None
        return (self.data / root).resolve() if root else None  # an absolute root stays itself

    def require(self) -> "RunDir":
        """This run directory, or a :class:`DataError` naming it when it does not exist."""
        if not self.root.is_dir():
            raise DataError(
                f"{self.root}: run directory not found; check --run-dir, or create it with "
                f"`medlsdm run --run-dir {self.root}`"
            )
        return self

    def read_metrics(self) -> dict[str, Any]:
        """The run's ``metrics.json`` (empty when no notebook has written yet)."""
        if not self.metrics_path.exists():
            return {}
        return read_json(self.metrics_path)

    def update_metrics(self, key: str, values: dict[str, Any]) -> dict[str, Any]:
        """Replace ``metrics[key]`` with ``values`` and write the file atomically, holding a
        lock (notebooks running side by side, ``medlsdm run --jobs 2``, update it too)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with _locked(self.root / ".metrics.lock"):
            metrics = self.read_metrics()
            metrics[key] = values
            write_json(self.metrics_path, metrics)
        return metrics

    @contextlib.contextmanager
    def writing(self, command: str):
        """Hold the run directory for one writer (``command`` names it in the refusal).

        A second writer, in another process, gets a :class:`MedLSDMError` saying which process
        holds it; a lock left by a process that died is taken over (the lock is POSIX ``flock``
        on ``RUN/.writer.lock``, released by the system when its holder exits). Nested calls in
        one process share the lock. Taking it first puts back ``metrics.json`` values that a
        killed :meth:`metrics_restored` block left changed.
        """
        if self.root in _HELD:
            yield self
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with _writer_lock(self.root / ".writer.lock", f"PID {os.getpid()} ({command})", self.root):
            _HELD.add(self.root)
            try:
                self._restore_metrics()
                yield self
            finally:
                _HELD.discard(self.root)

    @contextlib.contextmanager
    def metrics_restored(self, key: str):
        """Give ``metrics[key]`` back its value of now when the block ends (a sweep's runs
        overwrite it). The value waits in ``RUN/.metrics-restore.json``: a block killed before
        its end is undone by the next :meth:`writing`."""
        with _locked(self.root / ".metrics.lock"):
            saved = read_json(self._restore_path) if self._restore_path.is_file() else {}
            if key not in saved:  # else an outer block keeps it already
                metrics = self.read_metrics()
                saved[key] = [metrics[key]] if key in metrics else []  # [] : no value to restore
                write_json(self._restore_path, saved)
        try:
            yield self
        finally:
            self._restore_metrics([key])

    @property
    def _restore_path(self) -> Path:
        return self.root / ".metrics-restore.json"

    def _restore_metrics(self, keys: list[str] | None = None) -> None:
        """Put the values saved by :meth:`metrics_restored` for ``keys`` (default: all) back."""
        if not self._restore_path.is_file():
            return
        with _locked(self.root / ".metrics.lock"):
            saved = read_json(self._restore_path)
            metrics = self.read_metrics()
            for key in [k for k in saved if keys is None or k in keys]:
                value = saved.pop(key)
                if value:
                    metrics[key] = value[0]
                else:
                    metrics.pop(key, None)
                log.info("%s: restored %r in metrics.json", self.root, key)
            if metrics:
                write_json(self.metrics_path, metrics)
            else:
                self.metrics_path.unlink(missing_ok=True)
            if saved:
                write_json(self._restore_path, saved)
            else:
                self._restore_path.unlink()

    def save_figure(self, fig, name: str) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` (atomic) and return its path."""
        path = self.figures / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
        return path


#: Run directories whose writer lock this process holds.
_HELD: set[Path] = set()


@contextlib.contextmanager
def _writer_lock(path: Path, owner: str, root: Path):
    """Hold a non-blocking ``flock`` on ``path`` (which records ``owner``) or raise naming the holder."""
    try:
        import fcntl  # noqa: PLC0415  (POSIX only)
    except ImportError:  # Windows: no check
        yield
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise MedLSDMError(
                f"{root}: run directory in use by {holder}; wait for it to end, or use another --run-dir"
            ) from None
        handle.truncate(0)
        handle.write(owner + "\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on ``path`` for the block (POSIX ``flock``; elsewhere none)."""
    try:
        import fcntl  # noqa: PLC0415  (POSIX only)
    except ImportError:  # Windows: one notebook at a time
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
