"""The settings of a stage trainer (:func:`~medlsdm.training.vqgan.train_vqgan`,
:func:`~medlsdm.training.diffusion.train_diffusion`): checked against the stage's defaults, and
read into the :class:`~medlsdm.training.trainer.Trainer` that runs it.

Both stages keep their settings in one dict of defaults (``VQGAN_DEFAULTS``, ``DIFFUSION_DEFAULTS``)
with the same names for what the loop needs (``steps``, ``batch_size``, ``checkpoint_every`` …);
:func:`stage_trainer` passes those, and the stage passes what is its own (models, step function,
validation, extra state).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from ..errors import ConfigError
from .trainer import Trainer

#: The Trainer's keywords that a stage's settings give under the same name (``max_steps`` is ``steps``).
LOOP_SETTINGS = ("batch_size", "gradient_accumulation_steps", "max_grad_norm", "mixed_precision", "checkpoint_every",
                 "keep_checkpoints", "log_every", "seed", "resume", "progress", "on_change")


def with_defaults(caller: str, defaults: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``params``; a key of ``params`` that ``defaults`` lacks raises
    ``ConfigError`` naming it, ``caller`` and the known keys."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ConfigError(f"{caller}: unknown parameter(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **params}


def stage_trainer(p: Mapping[str, Any], *, out_dir: str | os.PathLike, fingerprint: Mapping[str, Any],
                  **parts: Any) -> Trainer:
    """The :class:`Trainer` of a stage with settings ``p`` (``steps`` and :data:`LOOP_SETTINGS`),
    writing into ``out_dir`` with the checkpoints' ``fingerprint``; ``parts`` are the stage's own
    keywords (``models``, ``optimizers``, ``step_fn``, ``dataset``, ``val_fn`` …)."""
    return Trainer(out_dir=out_dir, max_steps=p["steps"], fingerprint=fingerprint,
                   **{k: p[k] for k in LOOP_SETTINGS}, **parts)
