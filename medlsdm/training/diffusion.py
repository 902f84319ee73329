"""Training the semantic latent diffusion model (notebook 03).

1. :func:`encode_latents`: every training block goes once through the frozen VQ-GAN's
   encoder. We diffuse the *pre-quantisation* latents (continuous, like the LDM paper's
   VQ-regularised models); a sample is snapped to the codebook only when it is decoded
   (:meth:`MedLSDMPipeline.decode_latents`).
2. :func:`latent_normalization`: each latent channel is brought to mean 0 and unit variance
   over the training split, as the noise schedule assumes; the statistics are stored with the
   pipeline, in the VQ-GAN's config (``latents_mean``, ``latents_std``, diffusers' names; or
   one ``scaling_factor`` = 1 / std with ``latent_norm="global"``).
3. :func:`train_diffusion` trains :class:`~medlsdm.models.unet.SemanticUNet` with a
   diffusers ``DDPMScheduler`` (cosine schedule), epsilon or v prediction, condition
   dropout for classifier-free guidance, and an EMA copy of the weights, on the shared
   :class:`~medlsdm.training.trainer.Trainer` (accelerate, resume, atomic checkpoints). The EMA
   weights go into the saved :class:`~medlsdm.pipelines.pipeline_medlsdm.MedLSDMPipeline`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.training_utils import EMAModel

from ..atomic import atomic_path, jsonable, save_pretrained_atomic, write_json
from ..data.prepare import load_manifest
from ..data.splits import load_split
from ..data.store import CaseStore, stack_cases
from ..errors import ConfigError
from ..models.configuration import register_config_values
from ..models.unet import SemanticUNet, area_average, drop_condition, semantic_condition
from ..pipelines.pipeline_medlsdm import MedLSDMPipeline
from ..rundir import RunDir
from ..settings import DiffusionSettings, defaults, with_defaults
from .augment import swap_class_means
from .checkpoint import file_digest, fingerprint, json_digest, module_digest, store_digest
from .datasets import LatentDataset
from .lr_schedule import lr_scheduler
from .stage_params import stage_trainer
from .trainer import Trainer
from .vqgan import load_vqgan

log = logging.getLogger(__name__)


#: :class:`~medlsdm.settings.DiffusionSettings` as a dict: what ``train_diffusion()`` trains (the quick
#: profile's settings but ``sample_every``). The published ones are ``PROFILES["paper"]["03"]``.
DIFFUSION_DEFAULTS: dict[str, Any] = defaults(DiffusionSettings)

#: Settings of :data:`DIFFUSION_DEFAULTS` that leave the weights as they are; a checkpoint's
#: fingerprint holds the others.
DIFFUSION_BOOKKEEPING = (
    "steps",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "resume",
    "on_change",
    "progress",
    "sample_every",
    "sample_steps",
)


def _describe(fn: Callable | None) -> str | None:
    """A stable name of a condition function (a ``functools.partial`` with its keywords)."""
    if fn is None:
        return None
    inner = getattr(fn, "func", fn)
    name = f"{getattr(inner, '__module__', '?')}.{getattr(inner, '__qualname__', type(inner).__name__)}"
    keywords = getattr(fn, "keywords", None)
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in sorted(keywords.items()))})" if keywords else name


@torch.no_grad()
def encode_latents(
    vqgan, store: Mapping, case_ids: Sequence[str], *, batch_size: int = 4, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-quantisation latents ``(N, C, d, h, w)`` and label maps ``(N, D, H, W)`` of cases."""
    latents, labels = [], []
    for i in range(0, len(case_ids), batch_size):
        images, labs, _ = stack_cases(store, case_ids[i : i + batch_size])
        latents.append(vqgan.encode(torch.as_tensor(images).to(device, vqgan.dtype)).latents.float().cpu())
        labels.append(torch.as_tensor(labs))
    return torch.cat(latents), torch.cat(labels)


def latent_normalization(latents: torch.Tensor, mode: str = "channel") -> dict[str, Any]:
    """The VQ-GAN config entries that bring training ``latents`` ``(N, C, *spatial)`` to the
    diffusion model's scale (:meth:`~medlsdm.models.vqgan.VQGAN.to_diffusion`).

    ``"channel"``: every channel to mean 0 and std 1 (``latents_mean``, ``latents_std``). The
    channels of a VQ-GAN latent differ several-fold in spread; with one scale for all, the narrow
    channels' signal is lost to the noise at lower *t* than the wide ones', and the model learns
    them worse (measured: ``benchmarks/results/factor_spread.md``, "History of the quick settings").
    ``"global"``: one ``scaling_factor`` = 1 / std, as diffusers' autoencoders (and every pipeline
    saved before ``"channel"`` existed).
    """
    if mode == "channel":
        dims = [d for d in range(latents.ndim) if d != 1]
        return dict(
            scaling_factor=1.0, latents_mean=latents.mean(dims).tolist(), latents_std=latents.std(dims).tolist()
        )
    if mode == "global":
        return dict(scaling_factor=float(1.0 / latents.std()), latents_mean=None, latents_std=None)
    raise ConfigError(f"latent_norm must be 'channel' or 'global', got {mode!r}")


def make_scheduler(
    num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2", prediction_type: str = "epsilon"
):
    """The training scheduler: diffusers ``DDPMScheduler`` (cosine schedule by default)."""

    if prediction_type not in ("epsilon", "v_prediction"):
        raise ConfigError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        clip_sample=False,
    )


def snr_weights(scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weights of timesteps ``t`` (Hang et al. 2023, "Efficient Diffusion Training
    via Min-SNR Weighting Strategy").

    With SNR(t) = ᾱ_t / (1 − ᾱ_t), the weight makes each timestep's loss equal to
    min(SNR, γ) · ‖x̂₀ − x₀‖²: an ε loss is SNR · ‖x̂₀ − x₀‖², so its weight is
    min(SNR, γ) / SNR; a v loss is (SNR + 1) · ‖x̂₀ − x₀‖², so min(SNR, γ) / (SNR + 1). The
    nearly clean timesteps (SNR > γ) are capped at γ. On the quick profile (v-prediction) it
    made samples worse on the validation split: see the comment of ``PROFILES["quick"]["03"]``.
    """
    alpha = scheduler.alphas_cumprod.to(t.device)[t].double()
    snr = alpha / (1 - alpha)
    denom = snr if scheduler.config.prediction_type == "epsilon" else snr + 1
    return (snr.clamp(max=gamma) / denom).float()


def pooled_error(error: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """Mean square of the ``factor``× average-pooled error ``(B, C, *spatial)``, times ``factor^dims``.

    Pooling keeps the coarse part of the error (an organ's mean, say), one number in
    ``factor^dims`` of the plain MSE; the factor gives white errors the same weight as the plain
    MSE, so a multiscale loss ``MSE + w · pooled_error`` weights the coarse components
    ``1 + w · factor^dims`` times as much as the fine ones.
    """
    pool = F.avg_pool3d if error.ndim == 5 else F.avg_pool2d
    return pool(error, factor).pow(2).mean() * factor ** (error.ndim - 2)


def diffusion_loss(
    unet,
    scheduler,
    latents,
    condition,
    *,
    cond_drop_prob: float,
    generator: torch.Generator,
    snr_gamma: float | None = None,
    lowres_weight: float = 0.0,
):
    """The denoising loss of one batch: MSE between the prediction and its target.

    ``condition``: the UNet's condition ``(B, K + E + 1, *spatial)`` of the batch
    (:func:`~medlsdm.models.unet.semantic_condition`, at any size the UNet accepts, e.g.
    :func:`latent_conditions`). Random timesteps and noise come from ``generator``; the
    condition of a fraction ``cond_drop_prob`` of the samples is replaced by the null condition.
    ``snr_gamma``: weight each sample's loss by :func:`snr_weights` (None: unweighted).
    ``lowres_weight``: add that times :func:`pooled_error` of the prediction error (a multiscale
    loss, cf. Hoogeboom et al. 2023, "simple diffusion").
    """

    n = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator).to(latents.device)
    noisy = scheduler.add_noise(latents, noise, t)
    target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, t)
    cond = drop_condition(condition, cond_drop_prob, generator=generator)
    pred = unet(noisy, t, cond).sample.float()
    lowres = lowres_weight * pooled_error(pred - target.float()) if lowres_weight else 0.0
    if snr_gamma is None:
        return F.mse_loss(pred, target.float()) + lowres
    return ((pred - target.float()).pow(2).flatten(1).mean(1) * snr_weights(scheduler, t, snr_gamma)).mean() + lowres


def latent_conditions(
    labels: torch.Tensor, extra: torch.Tensor | None, num_classes: int, size: Sequence[int], chunk: int = 16
) -> torch.Tensor:
    """:func:`~medlsdm.models.unet.semantic_condition` of label maps ``(N, *spatial)`` (and extra
    channels ``(N, E, *spatial)``) :func:`~medlsdm.models.unet.area_average`-d to the latent's
    ``size``, once before training instead of at every step (a fifth of a quick step: 0.37 -> 0.30 s);
    ``chunk`` maps at a time, so the full-resolution one-hot maps are never all in memory."""

    return torch.cat(
        [
            area_average(
                semantic_condition(labels[i : i + chunk], num_classes, None if extra is None else extra[i : i + chunk]),
                size,
            )
            for i in range(0, len(labels), chunk)
        ]
    )


def _with_appearance_swaps(vqgan, store, train_ids, latents, labels, copies: int, num_classes: int, seed: int):
    """The training latents and label maps followed by those of ``copies`` appearance-swapped
    copies of every training case (:func:`~medlsdm.training.augment.swap_class_means`)."""

    images, labs, _ = stack_cases(store, train_ids)
    swapped, swapped_labels = swap_class_means(images, labs, copies, num_classes=num_classes, seed=seed)
    cases = {f"swap{i}": (x, y, None) for i, (x, y) in enumerate(zip(swapped, swapped_labels))}
    more, more_labels = encode_latents(vqgan, cases, list(cases))
    log.info("appearance swaps: %d copies of each of %d training cases", copies, len(train_ids))
    return torch.cat([latents, more]), torch.cat([labels, more_labels])


def train_diffusion(
    run_dir: str | os.PathLike,
    *,
    store: Mapping | None = None,
    split: Mapping[str, Sequence[str]] | None = None,
    extra_condition: Mapping | Callable[[str], Any] | None = None,
    condition_fn: Callable | None = None,
    out_dir: str | os.PathLike | None = None,
    pipeline_dir: str | os.PathLike | None = None,
    pipeline_config: Mapping[str, Any] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Train the latent diffusion model of a run and save the pipeline to ``RUN/pipeline``.

    Reads the VQ-GAN (``RUN/vqgan/model``), ``RUN/data/cases.h5`` and ``split.json``;
    writes ``RUN/diffusion/`` (checkpoints, ``log.csv``, ``train_params.json``, samples at
    ``sample_every`` steps in ``samples-<step>.npz``) and ``RUN/pipeline`` (EMA weights,
    DDPM scheduler, latent scale, training spacing).

    Args:
        run_dir: the run directory.
        store / split: use these instead of the run's case store and split.
        extra_condition: ``case_id -> (E, *spatial)`` float array of extra condition channels
            at image resolution, a mapping or a function (e.g. the Canny edge maps
            ``SliceStore.edges`` of :mod:`medlsdm.cardiac`); the UNet gets
            ``extra_condition_channels = E`` and sampling needs the same channels
            (``pipe(labels, extra_condition=...)``).
        condition_fn: ``(labels, extra) -> (labels, extra)``: what the model sees of the label
            maps ``(N, *spatial)`` and extra channels ``(N, E, *spatial)`` (or ``None``) of the
            training and monitoring cases, e.g. :func:`medlsdm.cardiac.conditioning.condition_inputs`
            of one conditioning mode. Default: both as they are.
        out_dir / pipeline_dir: instead of ``RUN/diffusion`` and ``RUN/pipeline``.
        pipeline_config: more settings of the saved pipeline (arguments of
            :class:`~medlsdm.pipelines.pipeline_medlsdm.MedLSDMPipeline`, kept in its config),
            e.g. the cardiac ``conditioning_mode``.
        params: any key of :data:`DIFFUSION_DEFAULTS` (unknown keys raise ``ConfigError``);
            ``on_change``: what a resume does with a checkpoint made with other settings or inputs
            (its fingerprint: settings less :data:`DIFFUSION_BOOKKEEPING`, digests of the data
            manifest, the cases, the split and the VQ-GAN): ``"refuse"`` raises ``ConfigError``,
            ``"retrain"`` starts afresh.

    Returns:
        The trainer summary plus ``latent_scale``, ``final_loss`` and ``pipeline_dir``.
    """

    p = with_defaults("train_diffusion", DiffusionSettings, params)
    run = RunDir(run_dir)
    manifest = load_manifest(run.data)
    store = store if store is not None else CaseStore(run.store_path)
    split = split if split is not None else load_split(run.split_path)
    vqgan = load_vqgan(run.root)
    vqgan.requires_grad_(False)
    made_by = fingerprint(
        {**p, "condition_fn": _describe(condition_fn)},
        DIFFUSION_BOOKKEEPING,
        manifest=file_digest(run.manifest_path),
        cases=store_digest(store, split["train"]),
        split=json_digest(split),
        vqgan=module_digest(vqgan),
    )

    if extra_condition is not None and not callable(extra_condition):
        extra_condition = extra_condition.__getitem__

    def conditions(case_ids: Sequence[str], labels: torch.Tensor):
        """The model's ``(labels, extra)`` for cases with these label maps."""
        extra = None
        if extra_condition is not None:
            extra = torch.as_tensor(np.stack([np.asarray(extra_condition(c), np.float32) for c in case_ids]))
        return (labels, extra) if condition_fn is None else condition_fn(labels, extra)

    latents, labels = encode_latents(vqgan, store, list(split["train"]))
    if p["appearance_swaps"]:
        if extra_condition is not None:
            raise ConfigError(
                "train_diffusion: appearance_swaps does not apply to models with extra condition channels"
            )
        latents, labels = _with_appearance_swaps(
            vqgan,
            store,
            list(split["train"]),
            latents,
            labels,
            int(p["appearance_swaps"]),
            len(manifest.classes),
            p["seed"],
        )
    labels, extras = conditions(split["train"] * (1 + int(p["appearance_swaps"])), labels)
    stats = latent_normalization(latents, p["latent_norm"])
    register_config_values(vqgan, **stats)  # saved with the pipeline's VQ-GAN
    latent_scale = stats["scaling_factor"]
    log.info(
        "%d training latents of shape %s, normalised: %s", len(latents), tuple(latents.shape[1:]), p["latent_norm"]
    )
    num_classes = len(manifest.classes)
    if p["label_encoder_channels"] is None:  # the UNet reads the condition only area-averaged: average it once
        dataset = LatentDataset(
            vqgan.to_diffusion(latents),
            latent_conditions(labels, extras, num_classes, latents.shape[2:]),
            seed=p["seed"],
        )

        def batch_condition(cond):
            return cond
    else:  # a label encoder reads the full-resolution condition: build it per batch
        dataset = LatentDataset(vqgan.to_diffusion(latents), labels, seed=p["seed"], extra=extras)

        def batch_condition(lab, extra=None):
            return semantic_condition(lab, num_classes, extra)

    scheduler = make_scheduler(p["num_train_timesteps"], p["beta_schedule"], p["prediction_type"])

    torch.manual_seed(p["seed"])
    unet = SemanticUNet(
        spatial_dims=latents.ndim - 2,
        in_channels=latents.shape[1],
        out_channels=latents.shape[1],
        num_classes=num_classes,
        channels=tuple(p["channels"]),
        attention_levels=tuple(p["attention_levels"]),
        num_res_blocks=p["num_res_blocks"],
        norm_num_groups=p["norm_num_groups"],
        num_heads=p["num_heads"],
        conditioning=p["conditioning"],
        dropout=p["dropout"],
        extra_condition_channels=0 if extras is None else extras.shape[1],
        label_encoder_channels=p["label_encoder_channels"],
    )
    ema = EMAModel(unet.parameters(), decay=p["ema_decay"], model_cls=SemanticUNet, model_config=unet.config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=p["lr"], weight_decay=0.0)
    # a constant rate needs no scheduler (and checkpoints of such runs stay as they were)
    constant = p["lr_schedule"] == "constant" and not p["warmup_steps"]
    schedulers = {} if constant else {"unet": lr_scheduler(optimizer, p["lr_schedule"], p["steps"], p["warmup_steps"])}

    def step_fn(trainer: Trainer, batch) -> dict[str, float]:
        z, *condition = batch
        loss = diffusion_loss(
            trainer.models["unet"],
            scheduler,
            z,
            batch_condition(*condition),
            cond_drop_prob=p["cond_drop_prob"],
            generator=trainer.generator,
            snr_gamma=p["snr_gamma"],
            lowres_weight=p["lowres_weight"],
        )
        trainer.backward(loss)
        trainer.optimizer_step("unet")
        if trainer.accelerator.sync_gradients:
            ema.step(trainer.unwrap("unet").parameters())
        return {"loss": float(loss.detach())}

    def make_pipeline(trainer: Trainer) -> MedLSDMPipeline:
        ema_unet = SemanticUNet.from_config(trainer.unwrap("unet").config)
        ema.copy_to(ema_unet.parameters())
        pipe = MedLSDMPipeline(
            vqgan,
            ema_unet.eval(),
            make_scheduler(p["num_train_timesteps"], p["beta_schedule"], p["prediction_type"]),
            spacing=manifest.spacing,
            block_shape=manifest.block_shape,
            **(pipeline_config or {}),
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    sample_ids = list(split.get("val", []))[:2] or list(split["train"])[:2]

    def sample_fn(trainer: Trainer) -> dict[str, float]:
        """Samples from fixed validation label maps, kept to watch training progress."""

        pipe = make_pipeline(trainer)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        lab, extra = conditions(sample_ids, torch.as_tensor(stack_cases(store, sample_ids)[1]))
        out = pipe(
            lab,
            num_inference_steps=p["sample_steps"],
            generator=torch.Generator().manual_seed(p["seed"]),
            extra_condition=extra,
        )
        with atomic_path(out_dir / f"samples-{trainer.step:07d}.npz") as tmp:
            np.savez_compressed(tmp, images=out.images, labels=out.labels, case_ids=np.array(sample_ids))
        return {}

    out_dir = Path(out_dir) if out_dir is not None else run.diffusion
    pipeline_dir = Path(pipeline_dir) if pipeline_dir is not None else run.pipeline
    trainer = stage_trainer(
        p,
        out_dir=out_dir,
        fingerprint=made_by,
        models={"unet": unet},
        optimizers={"unet": optimizer},
        schedulers=schedulers,
        step_fn=step_fn,
        dataset=dataset,
        extra_state={"ema": ema},
        val_fn=sample_fn if p["sample_every"] else None,
        val_every=p["sample_every"],
        fresh_outputs=("samples-*.npz",),
    )
    summary = trainer.fit()
    if trainer.is_main_process:  # the parameters beside the pipeline they made, never before
        save_pretrained_atomic(make_pipeline(trainer), pipeline_dir)
        write_json(
            out_dir / "train_params.json",
            {**jsonable(p), "latent_scale": latent_scale, "steps": summary["steps"], "fingerprint": made_by},
        )
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    summary.update(latent_scale=latent_scale, final_loss=summary["last"].get("loss"), pipeline_dir=str(pipeline_dir))
    return summary
