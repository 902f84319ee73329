"""Train the cardiac VQ-VAE and one latent diffusion model per conditioning mode; sample them."""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..atomic import read_json
from ..errors import ConfigError, DataError
from ..pipelines.loading import load_pipeline_dir
from ..pipelines.synthesis import use_scheduler
from ..training.diffusion import train_diffusion
from ..training.vqgan import train_vqgan
from .conditioning import condition_inputs, mode_slug
from .store import SliceStore

log = logging.getLogger(__name__)


#: :func:`medlsdm.training.vqgan.train_vqgan` settings that make the 2-D VQ-GAN a VQ-VAE on whole
#: slices: no discriminators, no perceptual loss, 3 latent channels (the paper's 32×32×3).
VQVAE_DEFAULTS: dict[str, Any] = dict(
    crop_shape=None,
    gan_weight_2d=0.0,
    gan_weight_3d=0.0,
    perceptual_weight=0.0,
    perceptual_weights=None,
    decoder_type="normal",
    embedding_dim=3,
    channels=(16, 32, 64),
    num_embeddings=256,
    batch_size=16,
)


def train_vqvae(
    cardiac_dir: str | os.PathLike, store: SliceStore, split: Mapping[str, Sequence[str]], **params: Any
) -> dict[str, Any]:
    """Train the 2-D VQ-VAE on whole training slices into ``cardiac_dir/vqgan/model``.

    :func:`medlsdm.training.vqgan.train_vqgan` with :data:`VQVAE_DEFAULTS` (``params`` override them).
    The decoder is the normal one (no SPADE): the autoencoder knows nothing of the label map,
    so every conditioning mode gets its semantic information only through the diffusion
    model's condition.
    """

    return train_vqgan(cardiac_dir, store=store, split=split, **{**VQVAE_DEFAULTS, **params})


def mode_dir(cardiac_dir: str | os.PathLike, mode: str) -> Path:
    """Where the diffusion model of a mode lives: ``cardiac_dir/ldm/<mode_slug>/``."""
    return Path(cardiac_dir) / "ldm" / mode_slug(mode)


def train_mode(
    cardiac_dir: str | os.PathLike, store: SliceStore, split: Mapping[str, Sequence[str]], mode: str, **params: Any
) -> dict[str, Any]:
    """Train the latent diffusion model of one conditioning mode.

    :func:`medlsdm.training.diffusion.train_diffusion` on the slices, with the edge map as
    the one extra condition channel, both as the mode sees them (:func:`condition_inputs`);
    writes ``mode_dir/`` (checkpoints, ``log.csv``) and the pipeline ``mode_dir/pipeline``, with
    the mode in its config (``pipe.config.conditioning_mode``).
    ``params``: any key of :data:`medlsdm.training.diffusion.DIFFUSION_DEFAULTS`; appearance
    swaps are off (the edge channel is computed from the image, whose intensities they change).
    """

    folder = mode_dir(cardiac_dir, mode)
    summary = train_diffusion(
        cardiac_dir,
        store=store,
        split=split,
        extra_condition=store.edges,
        condition_fn=partial(condition_inputs, mode=mode),
        out_dir=folder,
        pipeline_dir=folder / "pipeline",
        pipeline_config={"conditioning_mode": mode},
        **{"appearance_swaps": 0, **params},
    )
    return summary


def load_mode_pipeline(cardiac_dir: str | os.PathLike, mode: str, device="cpu"):
    """The trained :class:`~medlsdm.pipelines.pipeline_medlsdm.MedLSDMPipeline` of a mode.

    Pipelines saved before the mode went into their config get it from the ``mode.json``
    beside them (or, without one, from their folder); :class:`~medlsdm.errors.DataError`
    when the folder holds another mode's model.
    """

    folder = mode_dir(cardiac_dir, mode)
    pipe = load_pipeline_dir(folder / "pipeline", device)
    saved = pipe.config.conditioning_mode
    if saved is None and (folder / "mode.json").is_file():
        saved = read_json(folder / "mode.json").get("mode")
    if saved not in (None, mode):
        raise DataError(f"{folder}: holds the model of the conditioning mode {saved!r}, not {mode!r}")
    pipe.register_to_config(conditioning_mode=mode)
    return pipe


def synthesize(
    pipe,
    labels: np.ndarray,
    edges: np.ndarray,
    mode: str | None = None,
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    seed: int = 0,
    batch_size: int = 32,
    scheduler: str = "ddim",
) -> np.ndarray:
    """Synthetic slices ``(N, 1, H, W)`` in [-1, 1] from label maps ``(N, H, W)`` and edge maps
    ``(N, 1, H, W)``, through the pipeline of ``mode`` (which sees them as :func:`condition_inputs`).

    The slices are sampled ``batch_size`` at a time from one generator (so a slice's noise
    depends on its position in the set, not only on ``seed``): the 3-D
    :func:`medlsdm.pipelines.synthesis.synthesize_files` seeds each output on its own and
    works on label-map files.

    Args:
        mode: the conditioning mode; default the pipeline's own (``pipe.config.conditioning_mode``).
        scheduler: any name of :data:`medlsdm.pipelines.synthesis.SCHEDULERS` (``"ddim"``:
            deterministic; ``"ddpm"``: the training scheduler), same schedule as trained.
        seed: seed of the initial noise (one generator for all batches, in order).
    """

    mode = pipe.config.conditioning_mode if mode is None else mode
    if mode is None:
        raise ConfigError("this pipeline records no conditioning mode (pipe.config.conditioning_mode): give mode")
    use_scheduler(pipe, scheduler)
    labels, edges = condition_inputs(np.asarray(labels), np.asarray(edges, np.float32), mode)
    generator = torch.Generator().manual_seed(int(seed))
    out = []
    for i in range(0, len(labels), batch_size):
        res = pipe(
            torch.as_tensor(labels[i : i + batch_size]),
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            extra_condition=edges[i : i + batch_size],
        )
        out.append(res.images)
    return np.concatenate(out).astype(np.float32)
