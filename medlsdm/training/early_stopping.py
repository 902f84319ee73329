"""The in-memory loop of the segmentation networks (:func:`~medlsdm.training.segnet.train_segnet`,
:func:`~medlsdm.training.judge.train_judge`), with model selection on validation.

Unlike :class:`~medlsdm.training.trainer.Trainer` (long, resumable runs that write checkpoints and
logs into a run folder), these networks train in minutes, in memory, as measuring instruments:
:func:`fit_early_stopping` runs a caller's optimiser step, measures a validation score every
``eval_every`` steps and after the last, keeps the weights of the best one, stops after
``patience`` evaluations without a better one, and ends every fit the same way: the best weights
restored, the model in eval mode, one log line, and what it chose returned as a :class:`FitResult`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from torch import nn
from tqdm.auto import tqdm

from .cores import follow_free_cores

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """A network trained by :func:`fit_early_stopping` and what the loop chose.

    Attributes:
        model: the trained network in eval mode, with the weights of ``best_step`` when it was
            validated, of its last step otherwise.
        max_steps: the steps it was allowed.
        stopped_step: the steps it ran (``max_steps`` unless early stopping ended it).
        loss_history: the training loss of each step run.
        val_history: ``[(step, score), ...]`` of each validation, steps counted from 1 (empty without validation).
        best_step: the step of the best validation score (``None`` without validation).
        best_score: that score (``None`` without validation).
        seconds: the time the loop took, validation included.
    """

    model: nn.Module
    max_steps: int
    stopped_step: int
    loss_history: list[float] = field(default_factory=list)
    val_history: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    best_score: float | None = None
    seconds: float = 0.0


def fit_early_stopping(
    model: nn.Module,
    train_step: Callable[[int], float],
    *,
    max_steps: int,
    validate: Callable[[nn.Module], float] | None = None,
    eval_every: int = 0,
    patience: int | None = None,
    progress: bool = True,
    desc: str = "train",
) -> FitResult:
    """Train ``model`` for up to ``max_steps`` steps, keeping the weights of its best validation.

    Args:
        model: the network (put in train mode here, left in eval mode).
        train_step: ``train_step(step) -> loss`` runs optimiser step ``step`` (from 0): draws its
            batch, computes the loss and updates the weights.
        max_steps: steps to run at most.
        validate: ``validate(model) -> score`` (higher is better, the model left in train mode),
            measured every ``eval_every`` steps and after the last; ``None``: no validation, the
            last weights are kept.
        eval_every: steps between validations (0: only after the last step).
        patience: stop once ``patience · eval_every`` steps have passed since the best score
            without a better one (``None``: never stop early).
        progress: show a ``tqdm`` progress bar named ``desc``.
        desc: the name of the bar and of the log line that reports the fit.
    """
    steps = int(max_steps)
    model.train()
    history: list[float] = []
    val_history: list[tuple[int, float]] = []
    best: tuple[float, int, dict] | None = None
    done = 0
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        history.append(float(train_step(step)))
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{history[-1]:.4f}")
            follow_free_cores()  # a lane beside this one may have ended (medlsdm run --jobs 2)
        done = step + 1
        if validate is not None and ((eval_every and done % int(eval_every) == 0) or done == steps):
            score = validate(model)
            val_history.append((done, score))
            if best is None or score > best[0]:
                best = (score, done, {k: v.detach().clone() for k, v in model.state_dict().items()})
            elif patience is not None and done - best[1] >= int(patience) * int(eval_every):
                break
    bar.close()
    if best is not None:
        model.load_state_dict(best[2])
    model.eval()
    fit = FitResult(
        model=model,
        max_steps=steps,
        stopped_step=done,
        loss_history=history,
        val_history=val_history,
        best_step=None if best is None else best[1],
        best_score=None if best is None else best[0],
        seconds=time.perf_counter() - t0,
    )
    log.info(
        "%s: %d of %d steps in %.1f s, final loss %.4f%s",
        desc,
        done,
        steps,
        fit.seconds,
        history[-1] if history else math.nan,
        "" if best is None else f", best validation {fit.best_score:.4f} at step {fit.best_step}",
    )
    return fit
