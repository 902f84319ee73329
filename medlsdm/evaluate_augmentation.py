"""The augmentation experiment of notebook 05: does synthetic data from new anatomies help a judge
trained on few real cases, and how much could perfect synthesis help?

:func:`augmentation_extras` builds the added sets, all on the same new anatomies
(:func:`medlsdm.evaluate.new_anatomy_labels`): their oracle renders, those through the VQ-GAN, and
the pipeline's samples; :func:`augmentation_experiment` trains the judge
(:func:`medlsdm.evaluate.train_judges`) on each arm and compares them on the real test cases.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from . import evaluate as ev
from .errors import DataError
from .evaluate import Cases, read_cases
from .evaluate_report import nan_mean
from .rundir import RunDir


#: The augmentation bar: share of the oracle arm's gain that the synthetic arm must recover.
AUGMENTATION_BAR = 0.5
#: The extra sets of the augmentation experiment, each added to the real-small cases in an arm of its own.
EXTRA_SETS = ("oracle", "oracle_autoencoded", "synthetic")


def new_anatomy_oracle(run: RunDir, ids: Sequence[str]) -> Cases:
    """The oracle renders of new anatomies :func:`medlsdm.evaluate.new_anatomy_labels` wrote, with their label maps."""
    folder = run.eval_samples / "new_anatomies"
    return read_cases([folder / "oracle" / f"{c}.nii.gz" for c in ids], [folder / f"{c}.nii.gz" for c in ids], ids)


def augmentation_extras(run: RunDir, pipe, new_synthetic: Cases) -> dict[str, Cases]:
    """The extra training sets of :func:`augmentation_experiment`, all on the same new anatomies:
    ``oracle`` (each anatomy rendered with its own appearance: what a perfect generator could give),
    ``oracle_autoencoded`` (those renders through the pipeline's VQ-GAN: the autoencoder's ceiling)
    and ``synthetic`` (the pipeline's samples)."""
    from .evaluation.reconstruction import reconstruct

    oracle = new_anatomy_oracle(run, new_synthetic.ids)
    coded = reconstruct(pipe.vqgan, oracle.images, oracle.labels).images
    return {"oracle": oracle, "oracle_autoencoded": Cases(oracle.ids, list(coded), oracle.labels, oracle.affines),
            "synthetic": new_synthetic}


def augmentation_experiment(train: Cases, val: Cases, test: Cases, extras: Mapping[str, Cases], class_names: Sequence[str],
                            real_all: Mapping[str, Any], *, n_small: int = 4, seeds: Sequence[int] = (0, 1),
                            options: Mapping[str, Any] | None = None, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Does synthetic data from *new* anatomies help a judge trained on few real cases, and how
    much could it?

    Arms, each with the same judge recipe, steps, seeds and early stopping on validation:
    ``real_small`` (the first ``n_small`` training cases), ``real_small_<extra>`` for each set of
    ``extras`` (:func:`augmentation_extras`: oracle renders, oracle renders through the
    autoencoder, synthetic volumes of the same new anatomies; the judge's ``mix`` share of every
    batch comes from the extra set) and ``real_all`` (``real_all``: the judge of
    :func:`medlsdm.evaluate.segmentation_experiment` on the real test cases). Per test case the organ Dice averaged
    over seeds; each gain is the paired difference to ``real_small``, its CI resampling the test
    cases and each arm's judge seeds together
    (:func:`~medlsdm.metrics.statistics.hierarchical_bootstrap_ci`). ``fraction_of_oracle_gain``:
    the synthetic arm's mean gain over the oracle arm's. ``bar_holds``: at least
    :data:`AUGMENTATION_BAR` of the oracle arm's gain recovered, the synthetic gain's CI above 0.
    """
    from .metrics.statistics import hierarchical_bootstrap_ci, mean_sd
    from .training.judge import JUDGE_DEFAULTS

    small = Cases(train.ids[:n_small], train.images[:n_small], train.labels[:n_small], train.affines[:n_small])
    if len(small) < 1 or not extras or min(len(c) for c in extras.values()) < 1:
        raise DataError(f"augmentation: needs training cases and extra volumes, got {len(small)} and "
                        f"{ {k: len(c) for k, c in extras.items()} }")
    k = len(class_names)
    dice = {"real_small": ev.dice_over_seeds(ev.train_judges(small, val, k, seeds=seeds, options=options or {},
                                                       progress=progress), test, class_names)}
    for name, cases in extras.items():
        models = ev.train_judges(small, val, k, seeds=seeds, options=options or {}, progress=progress, extra=cases)
        dice[f"real_small_{name}"] = ev.dice_over_seeds(models, test, class_names)
    dice["real_all"] = dict(real_all)
    base = np.asarray(dice["real_small"]["organ"])
    gains = {name: {"gain": float(np.mean(np.asarray(d["organ"]) - base)),
                    "gain_ci": list(hierarchical_bootstrap_ci(d["organ_by_seed"], dice["real_small"]["organ_by_seed"],
                                                              seed=seed)),
                    "per_case": (np.asarray(d["organ"]) - base).tolist()}
             for name, d in dice.items() if name != "real_small"}
    arms = {name: {"mean": nan_mean(d["organ"]), "lesion": nan_mean(d["lesion"]),
                   "sd_seeds": mean_sd(d["organ_per_seed"])[1] if len(d["organ_per_seed"]) > 1 else math.nan,
                   "per_case": d["organ"], **gains.get(name, {})} for name, d in dice.items()}
    out = {"arms": arms, "n_small": len(small), "n_extra": {name: len(c) for name, c in extras.items()},
           "mix": float({**JUDGE_DEFAULTS, **(options or {})}["mix"])}
    syn, orc = gains.get("real_small_synthetic"), gains.get("real_small_oracle")
    if syn is not None:
        out.update(gain=syn["gain"], gain_ci=syn["gain_ci"], gain_per_case=syn["per_case"])
    if orc is not None:
        out.update(oracle_gain=orc["gain"], oracle_gain_ci=orc["gain_ci"])
    if syn is not None and orc is not None:
        out["fraction_of_oracle_gain"] = syn["gain"] / orc["gain"] if orc["gain"] > 0 else math.nan
        out["bar_holds"] = bool(out["fraction_of_oracle_gain"] >= AUGMENTATION_BAR and syn["gain_ci"][0] > 0)
        out["bar"] = (f">= {AUGMENTATION_BAR:.0%} of the oracle arm's gain recovered and the CI of the synthetic "
                      "arm's gain above 0")
    return out
