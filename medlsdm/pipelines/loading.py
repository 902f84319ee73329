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
    """The trained :class:`MedLSDMPipeline` of a run (``RUN/pipeline``).

    A pipeline saved without its training ``block_shape`` gets the one of the run's data
    manifest, when there is one.
    """
    from ..atomic import read_json

    run = RunDir(run_dir)
    pipe = load_pipeline_dir(run.pipeline, device)
    if pipe.config.block_shape is None and run.manifest_path.is_file():
        block_shape = read_json(run.manifest_path).get("block_shape")
        if block_shape is not None:
            pipe.register_to_config(block_shape=[int(v) for v in block_shape])
    return pipe


def load_pipeline_dir(folder: str | os.PathLike, device: str | torch.device = "cpu"):
    """A saved :class:`MedLSDMPipeline` folder (``save_pretrained``), progress bars off."""
    from .pipeline_medlsdm import MedLSDMPipeline

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise DataError(f"{folder}: no trained pipeline here (model_index.json missing); run notebook 03_diffusion_training first")
    pipe = MedLSDMPipeline.from_pretrained(folder).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
