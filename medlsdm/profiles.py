"""Run profiles: every notebook's parameters for ``smoke``, ``quick`` and ``paper``.

- ``smoke``: seconds per notebook; what the tests run.
- ``quick``: the README demo; all notebooks end to end on 2 CPU cores, each meeting its
  quality bar.
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
}

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {
        "01": dict(dataset="torso-ct", n_cases=6, block_shape=[16, 32, 32], spacing=[12.0, 11.0, 11.0]),
        "02": dict(steps=10, crop_shape=[16, 32, 32], batch_size=2, channels=[8, 16, 16], num_embeddings=64),
        "03": dict(steps=6, batch_size=2, channels=[8, 16], attention_levels=[False, True], sample_every=3),
        "04": dict(steps=3, compare=[["ddim", 3], ["unipc", 2]], guidance_scales=[0.0, 1.0, 2.0], n_test=2),
    },
    "quick": {
        "01": dict(dataset="torso-ct", n_cases=30, block_shape=[32, 64, 64], spacing=[6.0, 5.5, 5.5]),
    },
    "paper": {
        "01": dict(dataset="torso-ct", n_cases=100, block_shape=[32, 256, 256], spacing=[6.0, 1.4, 1.4]),
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
