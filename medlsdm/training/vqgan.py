"""VQ-GAN training (notebook 02): random crops of the run's case store, the
VQ-GAN step (generator, then discriminators from ``disc_start``), ``RUN/vqgan/model``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..atomic import jsonable, recover_folder, save_pretrained_atomic, write_json
from ..data.prepare import load_manifest
from ..data.splits import load_split
from ..data.store import CaseStore
from ..errors import ConfigError, DataError
from ..evaluation.reconstruction import evaluate_reconstruction
from ..models.blocks import one_hot
from ..models.vqgan import VQGAN
from ..pipelines.loading import check_model_folder
from ..rundir import RunDir
from ..settings import VQGANSettings, defaults, with_defaults
from .checkpoint import file_digest, fingerprint, json_digest, store_digest
from .cores import torch_threads
from .datasets import RandomCropDataset
from .losses import VQGANLoss
from .lr_schedule import lr_scheduler
from .stage_params import stage_trainer
from .trainer import Trainer

log = logging.getLogger(__name__)


@contextlib.contextmanager
def frozen(*modules: nn.Module | None):
    """Temporarily set ``requires_grad=False`` on the modules' parameters."""
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def make_vqgan_step(loss_fn, label_dropout: float = 0.0) -> Callable[[Trainer, Any], dict[str, float]]:
    """The step function of VQ-GAN training with the losses of ``loss_fn`` (a
    :class:`~medlsdm.training.losses.VQGANLoss`); the trainer's models are ``"vqgan"`` and, when
    adversarial losses are on, ``"disc2d"``/``"disc3d"`` with optimisers ``"generator"`` and
    ``"discriminator"``. ``label_dropout``: see :func:`drop_labels`."""

    def step(trainer: Trainer, batch) -> dict[str, float]:
        return vqgan_step(trainer, batch, loss_fn, label_dropout)

    return step


def drop_labels(labels: torch.Tensor, num_classes: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """One-hot label maps ``(B, K, *spatial)`` with the whole map of each sample replaced by
    zeros (no class anywhere) with probability ``p``.

    Label dropout for the SPADE decoder: a decoder that always sees the label map can paint
    the labels and ignore its latent; one that sometimes does not must carry the image in the
    latent. At sampling time the decoder still gets the real label map.
    """

    onehot = one_hot(labels, num_classes).float()
    keep = (torch.rand(labels.shape[0], generator=generator) >= p).to(onehot)
    return onehot * keep.view(-1, *([1] * (onehot.ndim - 1)))


def vqgan_step(trainer: Trainer, batch, loss_fn, label_dropout: float = 0.0) -> dict[str, float]:
    """One micro-batch of VQ-GAN training: generator update, then (from ``disc_start`` on)
    discriminator update.

    The generator's adversarial terms use the *plain* discriminators with frozen parameters
    (so no gradient reaches them and, under several processes, no gradient sync is
    triggered); the discriminator step uses the prepared ones on the detached reconstruction.
    """
    x, labels = batch
    vq = trainer.models["vqgan"]
    config = trainer.unwrap("vqgan").config
    spade = config.decoder_type == "spade"
    if spade and label_dropout > 0:
        labels = drop_labels(labels, config.num_classes, label_dropout, trainer.generator).to(x)
    out = vq(x, labels=labels if spade else None)
    plain = {n: trainer.unwrap(n) if n in trainer.models else None for n in ("disc2d", "disc3d")}
    with frozen(*plain.values()):
        loss_g, logs = loss_fn.generator_loss(
            x,
            out.reconstruction,
            out.commitment_loss,
            trainer.step,
            disc2d=plain["disc2d"],
            disc3d=plain["disc3d"],
            generator=trainer.generator,
        )
    trainer.backward(loss_g)
    norm = trainer.optimizer_step("generator")
    if norm is not None:
        logs["grad_norm_g"] = norm
    logs["usage"] = float(out.usage)
    logs["perplexity"] = float(out.perplexity)
    if loss_fn.has_discriminators and trainer.step >= loss_fn.disc_start:
        loss_d, dlogs = loss_fn.discriminator_loss(
            x,
            out.reconstruction,
            trainer.step,
            disc2d=trainer.models.get("disc2d"),
            disc3d=trainer.models.get("disc3d"),
            generator=trainer.generator,
        )
        trainer.backward(loss_d)
        trainer.optimizer_step("discriminator")
        logs.update(dlogs)
    return logs


#: :class:`~medlsdm.settings.VQGANSettings` as a dict: what ``train_vqgan()`` trains (the quick profile's
#: settings). The published ones (constant lr 3e-4, betas (0.5, 0.9), 256×256×32 blocks …) are
#: ``PROFILES["paper"]["02"]``.
VQGAN_DEFAULTS: dict[str, Any] = defaults(VQGANSettings)

#: Settings of :data:`VQGAN_DEFAULTS` that leave the weights as they are (or, ``perceptual_weights``,
#: enter the fingerprint by their content): a checkpoint's fingerprint holds the others.
VQGAN_BOOKKEEPING = (
    "steps",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "val_every",
    "val_cases",
    "resume",
    "on_change",
    "progress",
    "num_threads",
    "num_workers",
    "require_perceptual",
    "gradient_checkpointing",
    "perceptual_weights",
)


def _case_store(path: Path):

    return CaseStore(path)


def train_vqgan(
    run_dir: str | os.PathLike,
    *,
    store: Mapping | None = None,
    split: Mapping[str, Sequence[str]] | None = None,
    num_classes: int | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Train the VQ-GAN of a run on random crops of its training cases.

    Reads ``RUN/data/cases.h5`` and ``RUN/data/split.json`` (written by notebook 01) unless
    ``store``/``split`` are given; writes ``RUN/vqgan/model`` (``save_pretrained``),
    ``RUN/vqgan/checkpoints/``, ``RUN/vqgan/log.csv`` and ``RUN/vqgan/train_params.json``.
    Run it in a notebook, or in a script under ``accelerate launch`` for several processes.

    Args:
        run_dir: the run directory.
        store: a case store to use instead of ``RUN/data/cases.h5``.
        split: ``{"train": [...], "val": [...]}`` instead of ``RUN/data/split.json``.
        num_classes: label classes for the SPADE decoder (default: from the manifest, or the
            largest label + 1 of the training cases).
        params: any key of :data:`VQGAN_DEFAULTS` (unknown keys raise ``ConfigError``):
            ``crop_shape`` (each side divisible by 4), ``batch_size`` (per process),
            ``steps`` (optimiser steps), ``lr``, ``lr_schedule`` (``"constant"|"cosine"``),
            ``warmup_steps``, ``channels``, ``num_embeddings``,
            ``decoder_type`` (``"normal"|"spade"``), ``label_dropout`` (SPADE only: fraction of
            samples decoded without their label map, :func:`drop_labels`), ``disc_start`` (adversarial losses from this
            step on), ``gan_weight_2d``/``gan_weight_3d`` (both 0: no discriminators at all),
            ``perceptual_weights`` (local VGG16
            file; ``None``: off), ``mixed_precision``, ``gradient_checkpointing``,
            ``checkpoint_every``, ``val_every`` / ``val_cases`` (validation on that many
            val cases), ``resume``, ``on_change`` (a checkpoint made with other settings or
            inputs: ``"refuse"`` raises ``ConfigError``, ``"retrain"`` starts afresh),
            ``num_threads`` (CPU threads while training) …

    Returns:
        The trainer summary (``steps``, ``train_seconds``, ``steps_per_second``, last
        losses, last validation) plus ``model_dir``.
    """

    p = with_defaults("train_vqgan", VQGANSettings, params)
    if p["require_perceptual"] and p["perceptual_weight"] and p["perceptual_weights"] is None:
        raise ConfigError(
            "train_vqgan: this profile trains with the perceptual loss (require_perceptual=True) but "
            "perceptual_weights is None; give a local VGG16 weights file (perceptual_weights=...)"
        )
    run = RunDir(run_dir)
    if store is None:
        store = _case_store(run.store_path)
    if split is None:
        split = load_split(run.split_path)
    train_ids = list(split.get("train", []))
    val_ids = list(split.get("val", []))[: int(p["val_cases"])]
    factor = 2 ** (len(p["channels"]) - 1)
    crop = tuple(int(s) for s in p["crop_shape"]) if p["crop_shape"] is not None else None
    if crop is not None and any(s % factor for s in crop):
        raise ConfigError(f"crop_shape {crop} must be divisible by {factor} (the VQ-GAN's downsampling)")
    if p["decoder_type"] == "spade" and num_classes is None:
        num_classes = _num_classes(run, store, train_ids)
    dataset = RandomCropDataset(store, train_ids, crop, seed=p["seed"])
    spatial_dims = len(crop) if crop is not None else dataset._case(train_ids[0])[0].ndim - 1

    torch.manual_seed(p["seed"])  # identical initial weights on every process
    model = VQGAN(
        spatial_dims=spatial_dims,
        channels=tuple(p["channels"]),
        num_res_blocks=p["num_res_blocks"],
        embedding_dim=p["embedding_dim"],
        num_embeddings=p["num_embeddings"],
        norm_num_groups=p["norm_num_groups"],
        decoder_type=p["decoder_type"],
        num_classes=num_classes or 0,
        spade_hidden_channels=p["spade_hidden_channels"],
        commitment_cost=p["commitment_cost"],
        ema_decay=p["ema_decay"],
        restart_after=p["restart_after"],
    )
    if p["gradient_checkpointing"]:
        model.enable_gradient_checkpointing()
    loss_fn = VQGANLoss(
        spatial_dims=spatial_dims,
        l1_weight=p["l1_weight"],
        perceptual_weight=p["perceptual_weight"],
        perceptual_weights=p["perceptual_weights"],
        gan_weight_2d=p["gan_weight_2d"],
        gan_weight_3d=p["gan_weight_3d"],
        feat_weight=p["feat_weight"],
        disc_start=p["disc_start"],
        disc_channels=p["disc_channels"],
        disc_layers=p["disc_layers"],
    )
    if not loss_fn.has_discriminators:
        log.info("adversarial losses off: gan_weight_2d = gan_weight_3d = 0")
    elif p["disc_start"] >= p["steps"]:
        log.info("adversarial losses start at step %s, after this run's %s steps", p["disc_start"], p["steps"])
    models: dict[str, nn.Module] = {"vqgan": model}
    optimizers: dict[str, torch.optim.Optimizer] = {
        "generator": torch.optim.Adam(model.parameters(), lr=p["lr"], betas=tuple(p["betas"]))
    }
    schedulers = {"generator": lr_scheduler(optimizers["generator"], p["lr_schedule"], p["steps"], p["warmup_steps"])}
    discs = {"disc2d": loss_fn.disc2d, "disc3d": loss_fn.disc3d}
    discs = {n: d for n, d in discs.items() if d is not None}
    if discs:
        models.update(discs)
        optimizers["discriminator"] = torch.optim.Adam(
            [q for d in discs.values() for q in d.parameters()], lr=p["disc_lr"], betas=tuple(p["betas"])
        )

    def val_fn(trainer: Trainer) -> dict[str, float]:
        if not val_ids:
            return {}
        res = evaluate_reconstruction(trainer.unwrap("vqgan"), store, val_ids, device=trainer.device, progress=False)
        return {k: res[k] for k in ("psnr", "ssim", "baseline_psnr", "psnr_gain", "usage", "perplexity")}

    vgg = p["perceptual_weights"] if p["perceptual_weight"] and p["perceptual_weights"] is not None else None
    made_by = fingerprint(
        {**p, "num_classes": num_classes},
        VQGAN_BOOKKEEPING,
        manifest=file_digest(run.manifest_path),
        cases=store_digest(store, train_ids),
        split=json_digest(split),
        perceptual_weights=vgg and file_digest(vgg),
    )
    out_dir = run.vqgan
    trainer = stage_trainer(
        p,
        out_dir=out_dir,
        fingerprint=made_by,
        models=models,
        optimizers=optimizers,
        schedulers=schedulers,
        step_fn=make_vqgan_step(loss_fn, p["label_dropout"]),
        dataset=dataset,
        num_workers=p["num_workers"],
        val_fn=val_fn if val_ids else None,
        val_every=p["val_every"],
    )
    loss_fn.to(trainer.device)  # the perceptual network (the discriminators are prepared already)
    with torch_threads(p["num_threads"]):
        summary = trainer.fit()
    model_dir = run.vqgan_model
    if trainer.is_main_process:  # the parameters beside the model they made, never before
        save_pretrained_atomic(trainer.unwrap("vqgan"), model_dir)
        write_json(
            out_dir / "train_params.json",
            {**jsonable(p), "num_classes": num_classes, "steps": summary["steps"], "fingerprint": made_by},
        )
    trainer.accelerator.wait_for_everyone()
    summary["model_dir"] = str(model_dir)
    trainer.accelerator.end_training()
    return summary


def _num_classes(run, store, train_ids: Sequence[str]) -> int:
    if run.manifest_path.is_file():
        classes = load_manifest(run.data).classes
        if classes:
            return len(classes)
    return int(max(int(np.asarray(store[c][1]).max()) for c in train_ids)) + 1


def load_vqgan(run_dir: str | os.PathLike, device: str | torch.device = "cpu"):
    """The trained VQ-GAN of a run (``RUN/vqgan/model``), in eval mode."""

    folder = RunDir(run_dir).vqgan_model
    recover_folder(folder)
    if not (folder / "config.json").is_file():
        raise DataError(f"{folder}: no trained VQ-GAN here; run notebook 02_vqgan_training first")
    check_model_folder(folder, "VQGAN")  # nothing in it may run code
    return VQGAN.from_pretrained(folder, local_files_only=True).to(device).eval()
