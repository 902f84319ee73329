"""The settings of a stage trainer (:func:`~medlsdm.training.vqgan.train_vqgan`,
:func:`~medlsdm.training.diffusion.train_diffusion`) read into the
:class:`~medlsdm.training.trainer.Trainer` that runs it.

Both stages' settings (:mod:`medlsdm.settings`) use the same names for what the loop needs (``steps``,
``batch_size``, ``checkpoint_every`` …); :func:`stage_trainer` passes those, and the stage passes what is its own
(models, step function,
validation, extra state).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from .trainer import Trainer

#: The Trainer's keywords that a stage's settings give under the same name (``max_steps`` is ``steps``).
LOOP_SETTINGS = (
    "batch_size",
    "gradient_accumulation_steps",
    "max_grad_norm",
    "mixed_precision",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "seed",
    "resume",
    "progress",
    "on_change",
)


def stage_trainer(
    p: Mapping[str, Any], *, out_dir: str | os.PathLike, fingerprint: Mapping[str, Any], **parts: Any
) -> Trainer:
    """The :class:`Trainer` of a stage with settings ``p`` (``steps`` and :data:`LOOP_SETTINGS`),
    writing into ``out_dir`` with the checkpoints' ``fingerprint``; ``parts`` are the stage's own
    keywords (``models``, ``optimizers``, ``step_fn``, ``dataset``, ``val_fn`` …)."""
    return Trainer(
        out_dir=out_dir, max_steps=p["steps"], fingerprint=fingerprint, **{k: p[k] for k in LOOP_SETTINGS}, **parts
    )
