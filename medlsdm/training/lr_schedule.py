"""The learning-rate schedule of the VQ-GAN and diffusion trainers."""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, steps: int, warmup_steps: int = 0):
    """A ``LambdaLR``: linear warm-up over ``warmup_steps``, then ``"constant"`` or ``"cosine"``
    (half a cosine from the base rate down to 1 % of it at ``steps``).

    Not diffusers' ``get_cosine_schedule_with_warmup``: that one starts the warm-up at lr 0
    (its first step does not train) and decays to 0 (its last steps do not train); the
    VQ-GAN's quick profile was calibrated with this schedule.
    """
    if schedule not in ("constant", "cosine"):
        raise ConfigError(f"lr_schedule must be 'constant' or 'cosine', got {schedule!r}")
    warmup_steps = max(int(warmup_steps), 0)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        t = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
