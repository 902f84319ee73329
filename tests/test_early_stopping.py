"""medlsdm.training.early_stopping: the loop of the segmentation networks keeps the best validation's weights."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from medlsdm.training.early_stopping import fit_early_stopping


def _counter():
    """A model whose one weight is the number of steps done, and its step function."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()

    def step(i: int) -> float:
        with torch.no_grad():
            model.weight += 1
        return 10.0 - i

    return model, step


@pytest.mark.parametrize("patience, stopped", [(None, 10), (2, 8), (1, 6)])
def test_the_best_step_is_kept_and_patience_stops_the_run(patience, stopped, caplog):
    model, step = _counter()
    scores = iter([0.2, 0.6, 0.5, 0.4, 0.3])  # validations at steps 2, 4, 6, 8, 10
    with caplog.at_level(logging.INFO, logger="medlsdm.training.early_stopping"):
        fit = fit_early_stopping(
            model,
            step,
            max_steps=10,
            validate=lambda m: next(scores),
            eval_every=2,
            patience=patience,
            progress=False,
            desc="probe",
        )
    assert f"probe: {stopped} of 10 steps in" in caplog.text and "best validation 0.6000 at step 4" in caplog.text
    assert (fit.best_step, fit.best_score, fit.stopped_step, fit.max_steps) == (4, 0.6, stopped, 10)
    assert fit.best_step <= fit.stopped_step <= fit.max_steps
    assert [s for s, _ in fit.val_history] == list(range(2, stopped + 1, 2))
    assert fit.loss_history == [10.0 - i for i in range(stopped)]
    assert model.weight.item() == 4.0 and fit.model is model and not model.training  # the best step's weights


def test_without_validation_the_last_weights_are_kept(caplog):
    model, step = _counter()
    with caplog.at_level(logging.INFO, logger="medlsdm.training.early_stopping"):
        fit = fit_early_stopping(model, step, max_steps=5, progress=False)
    assert (fit.best_step, fit.best_score, fit.stopped_step, fit.val_history) == (None, None, 5, [])
    assert "final loss 6.0000" in caplog.text and "best validation" not in caplog.text
    assert model.weight.item() == 5.0


def test_eval_every_zero_validates_after_the_last_step_only():
    model, step = _counter()
    fit = fit_early_stopping(model, step, max_steps=3, validate=lambda m: 0.5, progress=False)
    assert fit.val_history == [(3, 0.5)] and fit.best_step == 3
