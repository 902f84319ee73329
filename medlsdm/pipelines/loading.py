"""Load trained models of a run directory (or a ``save_pretrained`` folder), safely.

A model folder can come from anyone (a shared run, a download), and diffusers' loaders can be
told by the folder itself to import code: a ``model_index.json`` naming a module beside a
``.py`` file, a pickled weights file. So before diffusers sees a folder, :func:`check_pipeline_folder`
and :func:`check_model_folder` refuse, with a :class:`~medlsdm.errors.DataError` naming the file:

- any file that can run code when loaded (:data:`UNSAFE_SUFFIXES`; weights must be safetensors);
- a ``model_index.json`` naming anything but :class:`MedLSDMPipeline` with the components of
  :data:`ALLOWED_COMPONENTS` (our VQ-GAN, our UNet, a scheduler of
  :data:`~medlsdm.pipelines.synthesis.SCHEDULERS`), or a component config whose ``_class_name``
  is not the one named there.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path

import torch

from ..atomic import read_json, recover_folder
from ..errors import DataError
from ..models.unet import SemanticUNet
from ..models.vqgan import VQGAN
from ..rundir import RunDir
from .pipeline_medlsdm import MedLSDMPipeline
from .synthesis import SCHEDULERS

log = logging.getLogger(__name__)

#: Files that can run code when loaded; refused anywhere in a model folder.
UNSAFE_SUFFIXES = (".py", ".pyc", ".so", ".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt")
#: ``model_index.json`` keys diffusers writes besides the pipeline's own arguments.
_META_KEYS = ("_class_name", "_diffusers_version", "_name_or_path")


def allowed_components() -> dict[str, set[tuple[str, str]]]:
    """What a pipeline's ``model_index.json`` may name: component → allowed ``(library, class)``."""

    return {
        "vqgan": {(VQGAN.__module__, VQGAN.__name__)},
        "unet": {(SemanticUNet.__module__, SemanticUNet.__name__)},
        "scheduler": {("diffusers", name) for name in SCHEDULERS.values()},
    }


def refuse_code_files(folder: str | os.PathLike) -> None:
    """Raise :class:`DataError` naming the first file or folder under ``folder`` (symbolic
    links followed) whose name ends in one of :data:`UNSAFE_SUFFIXES`."""
    seen = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        for name in sorted(dirs + files):
            if name.lower().endswith(UNSAFE_SUFFIXES):
                path = Path(root) / name
                raise DataError(
                    f"{path}: a {path.suffix} file in a model folder can run code when loaded; "
                    "medlsdm loads safetensors weights only: remove it (or use a folder medlsdm saved)"
                )


def _component_config(folder: Path, name: str, class_name: str) -> None:
    """The component folder's config must exist and name ``class_name`` (and no remote code)."""
    path = folder / name / ("scheduler_config.json" if name == "scheduler" else "config.json")
    if not path.is_file():
        raise DataError(f"{path}: missing; {folder} is not a complete saved pipeline")
    config = read_json(path)
    found = config.get("_class_name") if isinstance(config, dict) else None
    if found != class_name:
        raise DataError(f"{path}: _class_name is {found!r}, expected {class_name!r} (as model_index.json says)")
    if "auto_map" in config:
        raise DataError(f"{path}: names remote code (auto_map); medlsdm loads its own classes only")


def check_model_folder(folder: str | os.PathLike, class_name: str) -> None:
    """Refuse a single-model ``save_pretrained`` folder that could run code or holds another class."""
    folder = Path(folder)
    refuse_code_files(folder)
    _component_config(folder.parent, folder.name, class_name)


def _is_component_spec(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(v is None or isinstance(v, str) for v in value)


def check_pipeline_folder(folder: str | os.PathLike) -> None:
    """Refuse a pipeline folder that could make diffusers run code (see the module doc)."""

    folder = Path(folder)
    refuse_code_files(folder)
    index_path = folder / "model_index.json"
    index = read_json(index_path)
    if not isinstance(index, dict) or index.get("_class_name") != MedLSDMPipeline.__name__:
        found = index.get("_class_name") if isinstance(index, dict) else index
        raise DataError(f"{index_path}: _class_name is {found!r}; only {MedLSDMPipeline.__name__} folders are loaded")
    allowed = allowed_components()
    arguments = set(inspect.signature(MedLSDMPipeline.__init__).parameters) - {"self"}
    for key, value in index.items():
        if key in _META_KEYS or (key in arguments and key not in allowed and not _is_component_spec(value)):
            continue  # diffusers' bookkeeping or a pipeline setting (spacing, block_shape …)
        if key not in allowed:
            raise DataError(
                f"{index_path}: unexpected entry {key!r}: {value!r}; a pipeline folder names only {', '.join(allowed)}"
            )
        if not _is_component_spec(value) or tuple(value) not in allowed[key]:
            names = ", ".join(sorted(f"{lib}.{cls}" for lib, cls in allowed[key]))
            raise DataError(f"{index_path}: component {key!r} is {value!r}; allowed: {names}")
        _component_config(folder, key, value[1])
    missing = sorted(set(allowed) - set(index))
    if missing:
        raise DataError(f"{index_path}: component(s) {', '.join(missing)} missing")


def load_pipeline(run_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """The trained :class:`MedLSDMPipeline` of a run (``RUN/pipeline``).

    A pipeline saved without its training ``block_shape`` gets the one of the run's data
    manifest, when there is one.
    """
    run = RunDir(run_dir)
    pipe = load_pipeline_dir(run.pipeline, device)
    if pipe.config.block_shape is None and run.manifest_path.is_file():
        block_shape = read_json(run.manifest_path).get("block_shape")
        if block_shape is not None:
            pipe.register_to_config(block_shape=[int(v) for v in block_shape])
    return pipe


def load_pipeline_dir(folder: str | os.PathLike, device: str | torch.device = "cpu"):
    """A saved :class:`MedLSDMPipeline` folder (``save_pretrained``), checked first
    (:func:`check_pipeline_folder`), progress bars off."""

    folder = Path(folder)
    recover_folder(folder)
    if not (folder / "model_index.json").is_file():
        raise DataError(
            f"{folder}: no trained pipeline here (model_index.json missing); run notebook 03_diffusion_training first"
        )
    check_pipeline_folder(folder)
    pipe = MedLSDMPipeline.from_pretrained(folder, local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
