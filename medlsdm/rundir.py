"""The run directory: the only hand-off between notebooks.

This class is the one place that knows the layout (see ``DESIGN.md``)::

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

Folder properties create the folder; file properties (``*_path``) only name the file.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from .atomic import atomic_path, read_json, write_json

#: Files of a data folder (``RUN/data``), written by :func:`medlsdm.data.prepare.prepare_dataset`.
MANIFEST, SPLIT, STORE = "manifest.json", "split.json", "cases.h5"


class RunDir:
    """Paths and shared files of one run directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def _sub(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

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

    def save_figure(self, fig, name: str) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` (atomic) and return its path."""
        path = self.figures / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
        return path


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on ``path`` for the block (POSIX ``flock``; elsewhere none)."""
    try:
        import fcntl
    except ImportError:  # Windows: one notebook at a time
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
