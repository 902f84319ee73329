"""Run profiles: every notebook's parameters for ``smoke``, ``quick`` and ``paper``.

- ``smoke``: seconds per notebook; what the tests run.
- ``quick``: the README demo; all notebooks end to end on 2 CPU cores, each meeting its
  quality bar. Each notebook's ``parameters`` cell holds these values, so a notebook opened
  and run top to bottom runs ``quick`` too (``tests/test_profiles.py`` checks it: change both).
- ``paper``: the published Med-LSDM settings (256×256×32 blocks, channels 16→32→64) for GPUs.

Shapes and spacings are in array order ``(D, H, W)`` = (z, y, x) of the canonical
(RAS) volume; spacings are in millimetres.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ConfigError

NOTEBOOKS = {
    "01": "01_preprocessing",
    "02": "02_vqgan_training",
    "03": "03_diffusion_training",
    "04": "04_synthesis",
    "05": "05_evaluation",
    "06": "06_cardiac_2d_ldm",
    "07": "07_whole_volume_and_editing",
}

#: The key each notebook writes its results under in ``metrics.json``.
METRICS_KEYS = {
    "01": "01_preprocessing",
    "02": "02_vqgan",
    "03": "03_diffusion",
    "04": "04_synthesis",
    "05": "05_evaluation",
    "06": "06_cardiac_2d",
    "07": "07_whole_volume",
}

#: The notebooks whose outputs in the run directory each notebook reads (06 is standalone).
INPUTS = {
    "01": (),
    "02": ("01",),
    "03": ("01", "02"),
    "04": ("01", "03"),
    "05": ("01", "03"),
    "06": (),
    "07": ("01", "03"),
}

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "01": dict(dataset="torso-ct", n_cases=9, block_shape=[16, 32, 32], spacing=[12.0, 11.0, 11.0]),
        # every code path in seconds: both decoders, label dropout, adversarial losses from step 6
        "02": dict(
            decoder_type="spade",
            label_dropout=0.5,
            compare_decoder=True,
            steps=12,
            crop_shape=[16, 32, 32],
            batch_size=2,
            lr=1e-3,
            channels=[8, 16, 32],
            embedding_dim=8,
            num_embeddings=64,
            gan_weight_2d=1.0,
            gan_weight_3d=1.0,
            disc_start=6,
            disc_channels=8,
        ),
        "03": dict(steps=6, batch_size=2, channels=[8, 16], attention_levels=[False, True], sample_every=3),
        "04": dict(
            steps=3,
            compare=[["ddim", 3], ["unipc", 2]],
            compare_maps=1,
            guidance_scales=[0.0, 1.0],
            n_test=2,
            n_samples=2,
            n_oracle=4,
        ),
        # two seeds (an sd needs two), two of everything else, a narrow judge validated every 2 steps
        "05": dict(
            steps=3,
            n_test=2,
            judge_seeds=2,
            n_train_maps=2,
            n_small=2,
            n_new=2,
            lesion_augmentation=True,
            judge_options={"max_steps": 4, "eval_every": 2, "features": [4, 8, 8]},
        ),
        "06": dict(
            n_subjects=4,
            size=32,
            edge_sigma=1.0,
            vqvae_steps=4,
            vqvae_channels=[8, 16, 16],
            vqvae_batch_size=4,
            num_embeddings=32,
            ldm_steps=4,
            ldm_channels=[16, 32],
            ldm_attention_levels=[False, True],
            ldm_num_heads=2,
            ldm_batch_size=4,
            sample_steps=2,
            segnet_steps=4,
        ),
        "07": dict(
            steps=2,
            n_samples=2,
            n_oracle=4,
            n_edit=2,
            n_lesion_cases=2,
            n_lesion_oracle=2,
            segnet_steps=3,
            segnet_channels=[4, 8],
        ),
    },
    "quick": {
        # 60 phantom cases: 36 train, 12 validation, 12 test (enough test cases for a confidence interval)
        "01": dict(dataset="torso-ct", n_cases=60, block_shape=[32, 64, 64], spacing=[6.0, 5.5, 5.5]),
        # The SPADE decoder (Med-LSDM's: it also reads the label map): with it, synthetic volumes help a segmentation
        # network, with the normal one they do not (benchmarks/results/augmentation_spade*.md, augmentation.md). Its
        # steps cost 1.4x (vqgan_decoders.md), so 1000 of them (the normal decoder had 1500; held-out SSIM 0.853-0.882
        # at 1000 against 0.808-0.831, SOLUTIONS 02.1). Both PatchGANs (hinge + feature matching, 16 channels wide)
        # from step 333: L1 alone erases the texture (benchmarks/results/autoencoder_realism.md)
        "02": dict(
            decoder_type="spade",
            label_dropout=0.0,
            compare_decoder=False,
            steps=1000,
            crop_shape=[16, 32, 32],
            batch_size=2,
            lr=1e-3,
            channels=[16, 32, 64],
            embedding_dim=8,
            num_embeddings=512,
            gan_weight_2d=0.1,
            gan_weight_3d=0.1,
            disc_start=333,
            disc_channels=16,
        ),
        # Appearance swaps (3 copies of each training case with another case's class means, medlsdm.training.augment):
        # the model can no longer read a case's appearance off its label map (benchmarks/results/factor_spread.md).
        # 1000 steps (was 1500) pay for the SPADE decoder's: with it the diffusion model adds nothing measurable to
        # the augmentation (the no-diffusion control of benchmarks/results/augmentation_spade*.md)
        "03": dict(
            steps=1000,
            batch_size=4,
            lr=1e-3,
            channels=[32, 64, 128],
            attention_levels=[False, True, True],
            conditioning="concat",
            prediction_type="v_prediction",
            ema_decay=0.99,
            appearance_swaps=3,
            sample_every=400,
        ),
        # DDPM-1000, the reference sampler, is slow: the scheduler table uses one map and two samples per scheduler
        # (its cost in a demo: benchmarks/results/sampling.md, "History of the quick settings")
        "04": dict(
            steps=50,
            n_test=6,
            n_samples=4,
            n_oracle=8,
            compare=[["ddpm", 1000], ["ddim", 50], ["dpm++", 25], ["unipc", 10]],
            compare_maps=1,
            compare_samples=2,
        ),
        # 2 judge seeds × 5 augmentation arms (the real-all arm is the judge itself); the judge's quick recipe is
        # medlsdm.training.judge.JUDGE_DEFAULTS (judge_options adds to it), chosen in benchmarks/results/judge.md
        "05": dict(steps=50, n_test=None, judge_seeds=2, judge_options={}, n_train_maps=4, n_small=4, n_new=12),
        # its parts' times in a demo and the held-out SSIM of each conditioning: benchmarks/results/cardiac.md
        "06": dict(
            n_subjects=40,
            size=64,
            vqvae_steps=300,
            ldm_steps=400,
            ldm_channels=[32, 64],
            ldm_attention_levels=[False, True],
            guidance_scale=2.0,
        ),
        # a scan 3 blocks deep (576 mm), DDIM-10 windowed and in one pass, 4 samples each; a
        # small segmentation network (8-16-32, 16×32×32 crops, 100 steps ≈ 30 s) as the
        # lesion detector
        "07": dict(
            n_blocks=3,
            steps=10,
            n_samples=4,
            n_oracle=8,
            n_edit=4,
            lesion_radius_mm=15.0,
            n_lesion_cases=4,
            n_lesion_oracle=4,
            segnet_steps=100,
            segnet_channels=[8, 16, 32],
            segnet_crop=[16, 32, 32],
        ),
    },
    "paper": {
        "01": dict(dataset="torso-ct", n_cases=100, block_shape=[32, 256, 256], spacing=[6.0, 1.4, 1.4]),
        # Med-LSDM: 16→32→64 channels, 8-dim codes, SPADE decoder, whole 32×256×256 blocks,
        # batch 2, lr 3e-4, 2048 codes, PatchGANs from step 50 000 (its vq_gan_3d.yaml)
        "02": dict(
            decoder_type="spade",
            compare_decoder=False,
            steps=100_000,
            crop_shape=[32, 256, 256],
            batch_size=2,
            lr=3e-4,
            channels=[16, 32, 64],
            embedding_dim=8,
            num_embeddings=2048,
            gan_weight_2d=1.0,
            gan_weight_3d=1.0,
            disc_start=50_000,
            disc_channels=64,
            lr_schedule="constant",
        ),
        # Med-LSDM latent UNet scale; 1000-step cosine DDPM, EMA 0.9999
        "03": dict(
            steps=200_000,
            batch_size=8,
            lr=1e-4,
            channels=[128, 256, 512],
            attention_levels=[False, True, True],
            ema_decay=0.9999,
            appearance_swaps=0,
            sample_every=10_000,
        ),
        "04": dict(steps=50, n_test=20),
        "05": dict(
            steps=50, n_test=None, judge_options={"max_steps": 3000, "crop_shape": [32, 128, 128], "eval_every": 250}
        ),
        # the cardiac LDM paper: 256×256 slices, latent 32×32×3 (8× per side), codebook 16 384,
        # UNet 256/384/512/768 with 8 heads, 1000-step DDPM; M&Ms has 150 labelled training
        # subjects (use -p dataset=mnms -p data_root=… for the real data)
        "06": dict(
            n_subjects=150,
            size=256,
            fov_mm=320.0,
            edge_sigma=2.0,
            vqvae_steps=100_000,
            vqvae_channels=[64, 128, 256, 256],
            vqvae_batch_size=16,
            num_embeddings=16384,
            embedding_dim=3,
            ldm_steps=200_000,
            ldm_channels=[256, 384, 512, 768],
            ldm_attention_levels=[False, True, True, True],
            ldm_num_heads=8,
            ldm_batch_size=16,
            ldm_lr=1e-4,
            ldm_ema_decay=0.9999,
            sample_steps=50,
            segnet_steps=3000,
        ),
        "07": dict(
            n_blocks=3,
            steps=50,
            n_samples=4,
            n_oracle=16,
            n_edit=20,
            n_lesion_cases=20,
            n_lesion_oracle=4,
            segnet_steps=3000,
            segnet_channels=[8, 16, 32, 64],
            segnet_crop=[32, 128, 128],
        ),
    },
}


def profile_names() -> list[str]:
    return list(PROFILES)


def notebook_parameters(profile: str, notebook: str) -> dict[str, Any]:
    """Parameters of ``notebook`` (``"01"`` or ``"01_preprocessing"``) under ``profile``."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    key = notebook[:2]
    if key not in NOTEBOOKS:
        raise ConfigError(f"unknown notebook {notebook!r}; choose one of {', '.join(NOTEBOOKS)}")
    return copy.deepcopy(PROFILES[profile].get(key, {}))


# ----------------------------------------------------------------- per-dataset paper profiles

#: Paper settings that notebooks 02 and 03 have no parameter of their own for: the paper
#: profiles pass them as the notebooks' ``training_options`` (extra ``train_vqgan`` /
#: ``train_diffusion`` settings).
PAPER_TRAINING: dict[str, dict[str, Any]] = {
    "02": dict(
        betas=[0.5, 0.9],
        spade_hidden_channels=128,
        commitment_cost=0.25,
        l1_weight=4.0,
        perceptual_weight=4.0,
        require_perceptual=True,
        feat_weight=4.0,
    ),
    "03": dict(gradient_accumulation_steps=2, num_heads=8),
}


def _paper_profile(
    dataset: str, dataset_options: dict, disc_start: int, label_encoder_channels: int
) -> dict[str, dict[str, Any]]:
    """Med-LSDM's published settings for one dataset (every value and its source:
    ``data_cards/paper_settings.md``, checked by ``tests/test_paper_settings.py``);
    ``label_encoder_channels`` is the paper table's "#channels" of the dataset."""
    return {
        "01": dict(
            dataset=dataset,
            dataset_options=dataset_options,
            n_cases=None,
            preprocessing="paper",
            block_shape=[32, 256, 256],
            spacing=[6.0, 1.4, 1.4],
        ),
        "02": dict(
            decoder_type="spade",
            compare_decoder=False,
            steps=100_000,
            crop_shape=[32, 256, 256],
            batch_size=2,
            lr=1.9e-5,
            lr_schedule="constant",
            channels=[16, 32, 64],
            embedding_dim=8,
            num_embeddings=16384,
            gan_weight_2d=1.0,
            gan_weight_3d=1.0,
            disc_start=disc_start,
            disc_channels=64,
            mixed_precision="fp16",
            training_options=copy.deepcopy(PAPER_TRAINING["02"]),
        ),
        "03": dict(
            steps=700_000,
            batch_size=2,
            lr=1e-5,
            channels=[64, 128, 256, 512],
            attention_levels=[True, True, True, True],
            conditioning="spade",
            prediction_type="epsilon",
            num_train_timesteps=500,
            cond_drop_prob=0.1,
            ema_decay=0.995,
            appearance_swaps=0,
            sample_every=10_000,
            training_options=dict(copy.deepcopy(PAPER_TRAINING["03"]), label_encoder_channels=label_encoder_channels),
        ),
        "04": dict(steps=500, n_test=20),
        "05": dict(
            steps=500, n_test=None, judge_options={"max_steps": 3000, "crop_shape": [32, 128, 128], "eval_every": 250}
        ),
    }


def paper_training_parameters(profile: str, notebook: str) -> dict[str, Any]:
    """A paper profile's notebook parameters with its ``training_options`` spelled out (the whole published setting)."""
    params = notebook_parameters(profile, notebook)
    options = params.pop("training_options", {})
    return {**params, **options}


PROFILES.update(
    {
        # disc_start: the original's 10 000 / 1 000 count the steps of both optimisers (two per iteration)
        # label_encoder_channels: the paper table's "#channels" (AutoPET was run with 37, 64 and 128)
        "paper-autopet": _paper_profile("autopet", {"labels": "anatomy"}, disc_start=5_000, label_encoder_channels=64),
        "paper-synthrad2023": _paper_profile(
            "synthrad2023",
            {"image": "mr", "regions": ["pelvis"], "labels": "anatomy"},
            disc_start=500,
            label_encoder_channels=32,
        ),
        "paper-duke": _paper_profile("duke_breast", {"class_table": "paper"}, disc_start=500, label_encoder_channels=8),
        # M&Ms serves the 2-D cardiac LDM (notebook 06) in the paper, not the 3-D model
        "paper-mnms": {
            "06": dict(
                PROFILES["paper"]["06"],
                dataset="mnms",
                views=["SA", "LA"],
                n_subjects=360,
                vqvae_batch_size=36,
                ldm_batch_size=36,
                ldm_lr=8e-6,
            )
        },
    }
)
