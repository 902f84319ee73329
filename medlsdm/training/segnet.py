"""Train and apply the downstream segmentation network (:class:`~medlsdm.models.segnet.SegNet`).

Used by the evaluation notebook in two ways: a network trained on real cases segments
synthetic ones (are the organs where the label map says?), and a network trained on
synthetic cases segments real ones (is synthetic data useful for training?). Both report
:func:`evaluate_dice` on real held-out cases.

Arrays follow the package convention: images ``(1, D, H, W)`` float32 in [-1, 1] (or
``(1, H, W)`` for 2-D), labels ``(D, H, W)`` int64 class indices. Sequences of cases may have
different shapes for :func:`predict` / :func:`evaluate_dice`; training crops ``crop_shape``
blocks from them.

Calibration. The defaults of :func:`train_segnet` were set in an earlier version on the *test*
cases of a torso phantom; they are kept as defaults, but no number of notebook 05 depends on them
(their history: ``benchmarks/results/judge.md``, "History of the quick settings").

Training is the in-memory loop of :mod:`medlsdm.training.early_stopping` (shared with the judge)
rather than :class:`medlsdm.training.trainer.Trainer`: the trainer is made for long, resumable runs
that write checkpoints and logs into a run folder, while this network trains in minutes, in memory,
as a measuring instrument.

Example::

    images, labels, _ = stack_cases(store, split["train"])
    model = train_segnet(images, labels, num_classes=9, steps=250, seed=0).model
    scores = evaluate_dice(model, *stack_cases(store, split["test"])[:2], num_classes=9)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.store import as_cases
from ..errors import ConfigError, DataError
from ..evaluation.segmentation import evaluate_dice
from ..models.segnet import SegNet
from .datasets import random_window
from .early_stopping import FitResult, fit_early_stopping


def dice_ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    dice_weight: float = 1.0,
    class_weights: torch.Tensor | None = None,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Cross-entropy (optionally class-weighted) + soft Dice loss.

    The soft Dice is computed per foreground class over the whole batch (voxels of all
    samples pooled), ``1 − (2 Σ p·g + s) / (Σ p + Σ g + s)``, and averaged over the
    foreground classes (background, class 0, is left out as in the evaluation).

    Args:
        logits: ``(B, K, *spatial)``.
        target: ``(B, *spatial)`` int64 class indices.
        dice_weight: weight of the Dice term (the cross-entropy has weight 1).
        class_weights: ``(K,)`` weights of the cross-entropy per class (see
            :func:`class_balance_weights`).
        smooth: smoothing ``s`` (a class absent from target and prediction scores loss 0).
    """
    if class_weights is not None:
        class_weights = class_weights.to(logits.device, logits.dtype)
    ce = F.cross_entropy(logits, target, weight=class_weights)
    if dice_weight == 0:
        return ce
    k = logits.shape[1]
    probs = logits.softmax(1)
    onehot = F.one_hot(target, k).movedim(-1, 1).to(probs.dtype)
    dims = (0, *range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    return ce + dice_weight * (1 - dice[1:]).mean()


def class_balance_weights(labels: Sequence[np.ndarray], num_classes: int, power: float = 0.5) -> torch.Tensor:
    """Cross-entropy class weights ``w_c ∝ (f_c + 1e-4)^-power`` from the voxel frequencies
    ``f_c`` of the label maps, scaled so that the mean weight per voxel ``Σ f_c w_c`` is 1.

    ``power = 0`` gives equal weights; ``0.5`` (the default of :func:`train_segnet`) lifts a
    class 100× rarer than another to a 10× larger weight, so small organs (aorta, lesions)
    are learned within the first few hundred steps instead of last.
    """
    counts = np.zeros(num_classes, dtype=np.float64)
    for lb in labels:
        counts += np.bincount(np.asarray(lb).ravel(), minlength=num_classes)[:num_classes]
    freq = counts / counts.sum()
    w = (freq + 1e-4) ** -float(power)
    return torch.tensor(w / (w * freq).sum(), dtype=torch.float32)


def _crop_and_flip(
    image: np.ndarray,
    label: np.ndarray,
    crop: tuple[int, ...] | None,
    flip_axes: Sequence[int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    if crop is not None:
        window = random_window(rng, label.shape, crop)
        image, label = image[(slice(None), *window)], label[window]
    for axis in flip_axes:
        if rng.random() < 0.5:
            image, label = np.flip(image, axis + 1), np.flip(label, axis)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def validation_dice(model, images, labels, num_classes: int) -> float:
    """Mean foreground Dice on validation cases (-1 when undefined), the model left in train mode."""

    score = evaluate_dice(model, images, labels, num_classes)["mean"]
    model.train()
    return score if np.isfinite(score) else -1.0


def train_segnet(
    images,
    labels,
    *,
    num_classes: int | None = None,
    steps: int = 250,
    batch_size: int = 2,
    lr: float = 5e-3,
    seed: int = 0,
    crop_shape: Sequence[int] | None = None,
    augment: bool = False,
    flip_axes: Sequence[int] | None = None,
    channels: Sequence[int] = (8, 16, 32, 64),
    num_res_blocks: int = 1,
    norm_num_groups: int = 8,
    dice_weight: float = 1.0,
    class_balance: float = 0.5,
    val_images=None,
    val_labels=None,
    eval_every: int = 0,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> FitResult:
    """Train a :class:`SegNet` on random crops of labelled cases (Dice + cross-entropy, Adam).

    Every random choice depends only on ``seed``: the initial weights, and for each sample
    ``i`` of the run (``i = step · batch_size + j``) the case, the crop position and the flips
    (drawn from ``numpy.random.default_rng([seed, i])``); the same seed gives the same model
    on the same machine. The learning rate is constant: in the few hundred steps a CPU run
    affords the network is still far from converged, and a cosine decay (to ``lr / 20``)
    lowered the torso-phantom test Dice (``benchmarks/results/judge.md``, "History of the quick settings").

    Args:
        images: ``(N, 1, *spatial)`` array or a sequence of ``(1, *spatial)`` arrays in [-1, 1].
        labels: ``(N, *spatial)`` or a sequence of ``(*spatial)`` integer class maps.
        num_classes: number of classes including background (default: largest label + 1).
        steps: optimiser steps.
        batch_size: crops per step (keep it >= 2 on CPU: with one sample PyTorch runs small
            3-D convolutions on a much slower code path).
        lr: peak learning rate of Adam.
        seed: seed of weights, crops and flips.
        crop_shape: crop size per spatial axis, each divisible by ``2 ** (len(channels) - 1)``;
            ``None``: whole cases (they must all have the same, divisible, shape).
        augment: random flips (probability ½ each) along ``flip_axes``. Off by default: a
            left–right flip puts the liver on the patient's left, which real (and phantom)
            anatomy never does, and on the torso phantom it slowed learning
            (``benchmarks/results/judge.md``, "History of the quick settings").
        flip_axes: spatial axes to flip (0 = D …); default: the last one (W, left–right).
        channels: U-Net channels per level.
        num_res_blocks: residual blocks per level.
        norm_num_groups: GroupNorm groups.
        dice_weight: weight of the soft Dice term (see :func:`dice_ce_loss`).
        class_balance: power of the cross-entropy class weights computed from the training
            labels (:func:`class_balance_weights`; 0: unweighted).
        val_images, val_labels: validation cases (as ``images``, ``labels``) for model
            selection: every ``eval_every`` steps and after the last, the mean foreground Dice
            on them (:func:`medlsdm.evaluation.segmentation.evaluate_dice`) is measured and the
            weights of the best evaluation are kept (early stopping on validation; never give
            test cases here).
        eval_every: steps between validation evaluations (0: only after the last step).
        progress: show a ``tqdm`` progress bar.
        device: where to train.

    Returns:
        A :class:`~medlsdm.training.early_stopping.FitResult`: ``model`` (the trained network in
        eval mode, with the weights of the best validation when validation cases are given),
        ``loss_history`` (loss per step), ``seconds``, ``stopped_step`` (= ``steps``: no early
        stopping here) and, with validation cases, ``val_history`` (``[(step, mean Dice), ...]``,
        steps counted from 1), ``best_step`` and ``best_score``.
    """
    images, labels = as_cases(images, labels)
    if int(steps) < 1 or int(batch_size) < 1 or not lr > 0:
        raise ConfigError(f"steps and batch_size must be >= 1 and lr > 0, got {steps}, {batch_size}, {lr}")
    spatial_dims = images[0].ndim - 1
    if any(im.ndim - 1 != spatial_dims for im in images):
        raise DataError("all images must have the same number of spatial dimensions")
    max_label = max(int(lb.max()) for lb in labels)
    if num_classes is None:
        num_classes = max_label + 1
    if max_label >= num_classes or min(int(lb.min()) for lb in labels) < 0:
        raise DataError(f"labels must lie in [0, {num_classes - 1}], found values up to {max_label}")
    factor = 2 ** (len(channels) - 1)
    crop = None if crop_shape is None else tuple(int(c) for c in crop_shape)
    if crop is None:
        shapes = {lb.shape for lb in labels}
        if len(shapes) != 1:
            raise ConfigError(f"cases have different shapes {sorted(shapes)}; give crop_shape")
        size = next(iter(shapes))
    else:
        if len(crop) != spatial_dims:
            raise ConfigError(f"crop_shape {crop} needs {spatial_dims} sizes")
        small = [i for i, lb in enumerate(labels) if any(c > s for c, s in zip(crop, lb.shape))]
        if small:
            raise DataError(f"case(s) {small[:5]} smaller than crop_shape {crop}")
        size = crop
    if any(s % factor for s in size):
        raise ConfigError(f"training size {size} must be divisible by {factor} (2 ** (len(channels) - 1))")
    axes = tuple(flip_axes) if flip_axes is not None else (spatial_dims - 1,)
    axes = axes if augment else ()

    validate = val_images is not None
    if validate != (val_labels is not None):
        raise ConfigError("train_segnet: give both val_images and val_labels, or neither")

    torch.manual_seed(seed)
    model = SegNet(
        spatial_dims=spatial_dims,
        in_channels=1,
        num_classes=int(num_classes),
        channels=tuple(int(c) for c in channels),
        num_res_blocks=int(num_res_blocks),
        norm_num_groups=int(norm_num_groups),
    ).to(device)
    weights = class_balance_weights(labels, int(num_classes), class_balance) if class_balance else None
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def train_step(step: int) -> float:
        xs, ys = [], []
        for j in range(int(batch_size)):
            rng = np.random.default_rng([int(seed), step * int(batch_size) + j])
            k = int(rng.integers(len(images)))
            x, y = _crop_and_flip(images[k], labels[k], crop, axes, rng)
            xs.append(torch.from_numpy(x))
            ys.append(torch.from_numpy(y))
        x, y = torch.stack(xs).to(device), torch.stack(ys).to(device)
        loss = dice_ce_loss(model(x), y, dice_weight=dice_weight, class_weights=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def validation(model) -> float:
        return validation_dice(model, val_images, val_labels, int(num_classes))

    return fit_early_stopping(
        model,
        train_step,
        max_steps=int(steps),
        validate=validation if validate else None,
        eval_every=int(eval_every),
        progress=progress,
        desc="train segnet",
    )
