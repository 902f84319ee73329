"""Load trained models of a run directory (or a ``save_pretrained`` folder)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..errors import DataError
from ..rundir import RunDir

log = logging.getLogger(__name__)


def load_pipeline(run_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """The trained :class:`MedLSDMPipeline` of a run (``RUN/pipeline``)."""
    return load_pipeline_dir(RunDir(run_dir).pipeline, device)


def load_pipeline_dir(folder: str | os.PathLike, device: str | torch.device = "cpu"):
    """A saved :class:`MedLSDMPipeline` folder (``save_pretrained``), progress bars off."""
    from .pipeline_medlsdm import MedLSDMPipeline

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise DataError(f"{folder}: no trained pipeline here (model_index.json missing); run notebook 03_diffusion_training first")
    pipe = MedLSDMPipeline.from_pretrained(folder).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
