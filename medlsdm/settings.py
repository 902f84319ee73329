"""Each stage's settings, typed and in one place: the VQ-GAN (notebook 02), the latent diffusion
model (notebook 03) and the evaluation (notebook 05).

A field's default is the ``quick`` profile's value (the README demo), its name the model
config's or trainer's own, and every other source reads it from here: the trainers'
``VQGAN_DEFAULTS`` / ``DIFFUSION_DEFAULTS`` (:func:`defaults`), ``evaluate_run``, the CLI,
and the profiles (:mod:`medlsdm.profiles`), which are partial overrides checked against these
fields. Each notebook's parameters cell repeats its stage's values literally, for a learner to
read, under the same names (``tests/test_profiles.py`` holds them equal). Why a quick value is
what it is: ``benchmarks/results/*.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .errors import ConfigError


@dataclasses.dataclass(frozen=True)
class VQGANSettings:
    """:func:`~medlsdm.training.vqgan.train_vqgan`: Med-LSDM's architecture and loss weights; the
    optimisation that kept texture and thin bone on CPU (``benchmarks/results/autoencoder_realism.md``)."""

    # data
    crop_shape: tuple[int, ...] | None = (16, 32, 32)  # random training crops (D, H, W); None: whole blocks
    batch_size: int = 2
    seed: int = 0
    num_workers: int = 0
    # model (Med-LSDM: channels 16→32→64, 4× per axis, 8-dim codes)
    channels: tuple[int, ...] = (16, 32, 64)
    num_res_blocks: int = 1
    embedding_dim: int = 8
    num_embeddings: int = 512
    norm_num_groups: int = 8
    decoder_type: str = "spade"  # "normal" (reads only its latent) or "spade" (also reads the label map)
    label_dropout: float = 0.0  # spade only: fraction of samples decoded without their label map
    spade_hidden_channels: int = 16
    restart_after: int = 20  # passes before an unused code restarts (0: never)
    commitment_cost: float = 0.25
    ema_decay: float = 0.99
    # losses
    l1_weight: float = 4.0
    perceptual_weight: float = 4.0
    perceptual_weights: str | None = None  # local VGG16 weights file; None: no perceptual loss
    require_perceptual: bool = False  # True (the paper profiles): no VGG16 file is an error
    gan_weight_2d: float = 0.1  # slice PatchGAN (both 0: no discriminators)
    gan_weight_3d: float = 0.1  # volume PatchGAN
    feat_weight: float = 4.0
    disc_start: int = 333
    disc_channels: int = 16
    disc_layers: int = 3
    # optimisation
    steps: int = 1000
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 20
    disc_lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.999)
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    # bookkeeping
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 25
    val_every: int | None = None
    val_cases: int = 4
    resume: bool = True
    on_change: str = "refuse"  # a checkpoint made with other settings or inputs: "refuse" or "retrain"
    progress: bool = True
    # torch CPU threads while training (None: torch's own); 1 is much faster than 2 beside another job
    num_threads: int | None = None


@dataclasses.dataclass(frozen=True)
class DiffusionSettings:
    """:func:`~medlsdm.training.diffusion.train_diffusion`. ``sample_every`` is off here; notebook 03
    samples every 400 steps to show progress."""

    # model
    channels: tuple[int, ...] = (32, 64, 128)
    attention_levels: tuple[bool, ...] = (False, True, True)
    num_res_blocks: int = 1
    norm_num_groups: int = 8
    num_heads: int = 4
    conditioning: str = "concat"  # "concat" (label map stacked with the latent) or "spade" (Med-LSDM)
    dropout: float = 0.0
    label_encoder_channels: int | None = None  # width of the label encoder before SPADE (SegConv3D); None: none
    # diffusion
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    cond_drop_prob: float = 0.1
    ema_decay: float = 0.99
    latent_norm: str = "channel"  # "channel": each latent channel to mean 0, std 1; "global": one 1 / std
    snr_gamma: float | None = None  # min-SNR-γ loss weights (Hang et al. 2023); None: plain MSE
    appearance_swaps: int = 3  # copies of each training case with another case's class means
    lowres_weight: float = 0.0  # weight of the 4× average-pooled prediction's squared error (0: off)
    # optimisation
    steps: int = 1000
    batch_size: int = 4
    lr: float = 1e-3
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    seed: int = 0
    # bookkeeping
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 25
    resume: bool = True
    progress: bool = True
    sample_every: int | None = None
    sample_steps: int = 25
    on_change: str = "refuse"  # a checkpoint made with other settings or inputs: "refuse" or "retrain"


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """:func:`~medlsdm.evaluation.run.evaluate_run`, as notebook 05 evaluates."""

    scheduler: str = "ddim"
    steps: int = 50
    guidance_scale: float = 1.0
    seed: int = 0
    n_test: int | None = None  # test label maps (None: all)
    judge_seeds: int = 2
    judge_options: Mapping[str, Any] = dataclasses.field(
        default_factory=dict
    )  # train_judge's, beyond its JUDGE_DEFAULTS
    n_train_maps: int | None = 4
    augment: bool = True
    n_small: int = 4
    n_new: int = 12
    lesion_augmentation: bool | None = None  # None: only when the real-all judge finds a test lesion
    lesion_edit_steps: int = 10
    frd: bool = True
    weights: Mapping[str, Any] | None = None  # local feature-network weights {"inception": path, ...}
    progress: bool = True
    negative_control: str = "oracle"


#: Each notebook's stage settings.
STAGES = {"02": VQGANSettings, "03": DiffusionSettings, "05": EvaluationSettings}


def defaults(stage: type) -> dict[str, Any]:
    """The fields of a settings class and their defaults (fresh copies), in field order."""
    return {
        f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(stage)
    }


def with_defaults(caller: str, stage: type, params: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults of the settings class ``stage`` updated with ``params``, in field order; a key it
    lacks raises ``ConfigError`` naming it, ``caller`` and the known keys."""
    known = defaults(stage)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"{caller}: unknown parameter(s) {unknown}; known: {sorted(known)}")
    return {**known, **params}
