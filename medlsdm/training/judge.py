"""The judge: the segmentation network that scores synthetic data, from a recipe a reviewer knows.

Notebook 05 asks two questions of a segmentation network: does it find the organs where a
synthetic volume's label map says they are, and does training on synthetic volumes help it on
real ones? The answers are only as good as the network. :func:`train_judge` trains one of two
recipes (:data:`RECIPES`), chosen side by side on the validation split at equal seconds
(``benchmarks/results/judge.md``):

``"basicunet"``, the standard one, from a kept library:

- **network**: MONAI's :class:`~monai.networks.nets.BasicUNet` (the 3-D U-Net of the MONAI
  tutorials; instance norm, LeakyReLU, four poolings), ``features`` wide;
- **loss**: MONAI's :class:`~monai.losses.DiceCELoss` (soft Dice over the foreground classes plus
  cross-entropy, nnU-Net's loss; the Dice pooled over the batch, nnU-Net's "batch Dice", so a crop
  without a lesion does not punish every lesion voxel predicted elsewhere), AdamW with the
  polynomial learning-rate decay of nnU-Net;
- **augmentation**: the transforms nnU-Net applies, from MONAI (:func:`augmentation`): scaling and
  rotation, Gaussian noise, Gaussian blur, brightness, contrast, gamma; no mirroring (a flipped
  torso puts the liver on the wrong side);
- **crops**: a third of them centred on a voxel of a foreground class drawn uniformly from those
  present (nnU-Net's foreground oversampling: the kidneys and lesions are under 1 % of the voxels).

``"segnet"``, this package's small U-Net (:class:`~medlsdm.models.segnet.SegNet`, channels
8-16-32-64) with its own recipe (class-balanced cross-entropy + pooled soft Dice,
:func:`~medlsdm.training.segnet.dice_ce_loss`; Adam at a constant rate; uniform crops, no
augmentation): in the benchmark it scored higher at 250 steps (the demo's budget) in a third of the
time, and no lower at 1000 steps.

Both: ``crop_shape`` crops, early stopping (the validation Dice every ``eval_every`` steps, the
best weights kept, training stopped after ``patience`` evaluations without a better one or at
``max_steps``), float32 (with bfloat16 autocast a BasicUNet step took a third of the time on whole
blocks, but training collapsed: validation Dice 0.53 → 0.00 between steps 150 and 200).

**Mixing** (the augmentation experiment): with ``extra`` cases (synthetic volumes, oracle
renders) every batch draws :func:`batch_split` of its crops from them and the rest from the real
cases, so each arm sees its real cases equally often whatever the number of extra cases.

Every random choice depends on ``seed`` only: initial weights, then per sample ``i`` of the run
the case, the crop and whether it is centred on a class (``numpy.random.default_rng([seed, i])``),
and the augmentation's own random state (seeded once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from monai import transforms as T
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet
from torch import nn

from ..data.store import as_cases
from ..errors import ConfigError, DataError
from ..models.segnet import SegNet
from .early_stopping import FitResult, fit_early_stopping
from .segnet import class_balance_weights, dice_ce_loss, validation_dice

#: The two recipes: what differs between them (:func:`train_judge` documents each key).
RECIPES: dict[str, dict[str, Any]] = {
    "basicunet": dict(
        features=(16, 32, 64, 128, 256, 16),
        lr=3e-3,
        class_balance=0.0,
        augment=True,
        foreground=1 / 3,
        channels_last=False,
        lr_decay="poly",
    ),
    "segnet": dict(
        features=(8, 16, 32, 64),
        lr=5e-3,
        class_balance=0.5,
        augment=False,
        foreground=0.0,
        channels_last=True,
        lr_decay="constant",
    ),
}
#: Learning-rate schedules (``lr_decay``): the factor on ``lr`` at step ``s`` of ``max_steps``;
#: ``"poly"`` is nnU-Net's polynomial decay.
LR_DECAYS = {"constant": lambda s, steps: 1.0, "poly": lambda s, steps: (1 - s / steps) ** 0.9}
#: What the network is called in ``metrics.json`` and the notebook.
NETWORK_NAMES = {
    "basicunet": "MONAI BasicUNet + DiceCELoss (nnU-Net recipe)",
    "segnet": "medlsdm SegNet + class-balanced CE + Dice",
}
#: The quick profile's judge (``benchmarks/results/judge.md``: at 250 steps SegNet scores higher than
#: BasicUNet in a third of the time; 200 steps is what the demo's 20 minutes leave each of notebook
#: 05's ten networks). A recipe's own values (``None`` here) apply unless given.
JUDGE_DEFAULTS: dict[str, Any] = dict(
    network="segnet",
    crop_shape=(16, 32, 32),
    batch_size=2,
    max_steps=200,
    eval_every=100,
    patience=2,
    mix=0.5,
    features=None,
    lr=None,
    class_balance=None,
    augment=None,
    foreground=None,
    channels_last=None,
    lr_decay=None,
)


@dataclass
class JudgeFit(FitResult):
    """A trained judge: what early stopping chose (:class:`~medlsdm.training.early_stopping.FitResult`)
    and ``network_name``, the recipe's name in ``metrics.json`` and the notebook (:data:`NETWORK_NAMES`)."""

    network_name: str = ""


class Judge(nn.Module):
    """MONAI's ``BasicUNet`` with what the evaluation helpers ask of a segmentation network:
    ``downsample_factor`` (inputs are padded to a multiple of it) and ``features`` (the
    bottleneck, global-average-pooled, for KID and the feature Fréchet distance)."""

    downsample_factor = 16

    def __init__(self, num_classes: int, features: Sequence[int] = RECIPES["basicunet"]["features"]):

        super().__init__()
        self.unet = BasicUNet(
            spatial_dims=3, in_channels=1, out_channels=int(num_classes), features=tuple(int(f) for f in features)
        )
        self.num_classes = int(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        u = self.unet
        h = u.down_4(u.down_3(u.down_2(u.down_1(u.conv_0(x)))))
        return h.mean(dim=tuple(range(2, h.ndim)))


def augmentation(seed: int):
    """nnU-Net's augmentations as MONAI dictionary transforms on ``{"image", "label"}`` (label as a
    float channel, resampled nearest), seeded: scaling ±15 % and rotation about the depth axis
    (p 0.2), Gaussian noise (sd 0.05 of the [-1, 1] range, p 0.15), Gaussian blur (sigma 0.5-1
    voxel, p 0.1), brightness ×(0.75-1.25) (p 0.15), contrast about the mean (p 0.15), gamma
    0.7-1.5 (p 0.15)."""

    aug = T.Compose(
        [
            T.RandAffined(
                keys=["image", "label"],
                prob=0.2,
                scale_range=(0.15, 0.15, 0.15),
                rotate_range=(0.26, 0.0, 0.0),
                mode=("bilinear", "nearest"),
                padding_mode="border",
            ),
            T.RandGaussianNoised(keys=["image"], prob=0.15, std=0.05),
            T.RandGaussianSmoothd(keys=["image"], prob=0.1, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
            T.RandScaleIntensityd(keys=["image"], prob=0.15, factors=0.25),
            T.RandScaleIntensityFixedMeand(keys=["image"], prob=0.15, factors=0.25),
            T.RandAdjustContrastd(keys=["image"], prob=0.15, gamma=(0.7, 1.5)),
        ]
    )
    aug.set_random_state(seed=int(seed))
    return aug


def batch_split(batch_size: int, mix: float) -> int:
    """How many crops of a batch come from the extra cases: ``round(batch_size · mix)``, at least
    one and at most ``batch_size − 1`` for ``0 < mix < 1`` (both sources in every batch)."""
    if not 0.0 <= float(mix) <= 1.0:
        raise ConfigError(f"mix must lie in [0, 1], got {mix}")
    n = int(round(int(batch_size) * float(mix)))
    if 0.0 < mix < 1.0:
        n = min(max(n, 1), int(batch_size) - 1)
    return n


class _Crops:
    """Random crops of a set of cases, a share of them centred on a foreground class present."""

    def __init__(self, images, labels, crop: tuple[int, ...], foreground: float):
        self.images, self.labels, self.crop, self.foreground = images, labels, crop, float(foreground)
        small = [i for i, lb in enumerate(labels) if any(c > s for c, s in zip(crop, lb.shape))]
        if small:
            raise DataError(f"case(s) {small[:5]} smaller than crop_shape {crop}")
        # voxel indices per foreground class, only when crops are centred on classes
        self.voxels = [
            {int(c): np.flatnonzero(lb == c) for c in np.unique(lb) if c > 0} if self.foreground > 0 else {}
            for lb in labels
        ]

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        k = int(rng.integers(len(self.images)))
        label, shape = self.labels[k], self.labels[k].shape
        classes = sorted(self.voxels[k])
        if rng.random() < self.foreground and classes:  # the draw is made whatever the share (seeded crops stay put)
            flat = self.voxels[k][classes[int(rng.integers(len(classes)))]]
            centre = np.unravel_index(int(flat[int(rng.integers(len(flat)))]), shape)
            start = [int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip(centre, self.crop, shape)]
        else:
            start = [int(rng.integers(0, n - s + 1)) for s, n in zip(self.crop, shape)]
        window = tuple(slice(a, a + s) for a, s in zip(start, self.crop))
        return self.images[k][(slice(None), *window)], label[window]


def judge_network(network: str, num_classes: int, features: Sequence[int]) -> nn.Module:
    """The untrained network of a recipe (:data:`RECIPES`) with ``features`` widths."""

    if network == "basicunet":
        return Judge(num_classes, features)
    return SegNet(spatial_dims=3, in_channels=1, num_classes=num_classes, channels=tuple(int(f) for f in features))


def train_judge(
    images,
    labels,
    *,
    num_classes: int,
    val_images,
    val_labels,
    extra_images=None,
    extra_labels=None,
    seed: int = 0,
    progress: bool = True,
    **options,
) -> JudgeFit:
    """Train a judge (:data:`RECIPES`) on random crops of labelled cases, with early stopping on validation.

    Args:
        images, labels: the real training cases (``(1, D, H, W)`` images in [-1, 1], ``(D, H, W)`` labels).
        num_classes: classes including background.
        val_images, val_labels: validation cases for early stopping (never the test cases).
        extra_images, extra_labels: extra training cases (synthetic or oracle volumes); a share
            ``mix`` of every batch is drawn from them (:func:`batch_split`).
        seed: seed of weights, crops and augmentation.
        options: any of :data:`JUDGE_DEFAULTS`: ``network`` (a key of :data:`RECIPES`), ``crop_shape``,
            ``batch_size``, ``max_steps``, ``eval_every``, ``patience``, ``mix``, and the recipe's own
            ``features`` (widths), ``lr``, ``class_balance`` (power of the class weights of the loss,
            :func:`~medlsdm.training.segnet.class_balance_weights`; 0: none, nnU-Net's choice),
            ``augment`` (:func:`augmentation`), ``foreground`` (share of crops centred on a class) and
            ``channels_last`` (network and batches in ``torch.channels_last_3d``: on one CPU thread a
            SegNet step takes 0.72× the time, a BasicUNet step 1.14×, ``benchmarks/results/judge_step.md``)
            and ``lr_decay`` (a key of :data:`LR_DECAYS`).

    Returns:
        A :class:`JudgeFit`: ``model`` (:class:`Judge` or :class:`~medlsdm.models.segnet.SegNet`,
        with its best validation weights, in eval mode), ``network_name``, ``val_history``
        (``[(step, Dice), ...]``), ``best_step``, ``best_score``, ``stopped_step``, ``max_steps``,
        ``loss_history`` and ``seconds``.
    """

    unknown = sorted(set(options) - set(JUDGE_DEFAULTS))
    if unknown:
        raise ConfigError(f"train_judge: unknown option(s) {unknown}; valid: {sorted(JUDGE_DEFAULTS)}")
    network = options.get("network", JUDGE_DEFAULTS["network"])
    if network not in RECIPES:
        raise ConfigError(f"train_judge: network {network!r}; choose one of {sorted(RECIPES)}")
    opt = {**JUDGE_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    opt.update({k: v if options.get(k) is None else options[k] for k, v in RECIPES[network].items()})
    steps, batch, every = int(opt["max_steps"]), int(opt["batch_size"]), int(opt["eval_every"])
    if steps < 1 or batch < 1 or every < 1 or int(opt["patience"]) < 1 or not float(opt["lr"]) > 0:
        raise ConfigError(
            f"train_judge: max_steps, batch_size, eval_every and patience must be >= 1 and lr > 0, got {opt}"
        )
    if opt["lr_decay"] not in LR_DECAYS:
        raise ConfigError(f"train_judge: lr_decay {opt['lr_decay']!r}; choose one of {sorted(LR_DECAYS)}")
    torch.manual_seed(int(seed))
    layout = torch.channels_last_3d if opt["channels_last"] else torch.contiguous_format
    model = judge_network(network, num_classes, opt["features"]).to(memory_format=layout)
    crop = tuple(int(c) for c in opt["crop_shape"])
    if len(crop) != 3 or any(c % model.downsample_factor for c in crop):
        raise ConfigError(f"crop_shape {crop}: three sizes, each a multiple of {model.downsample_factor}")
    images, labels = as_cases(images, labels)
    val_images, val_labels = as_cases(val_images, val_labels)
    sources = [_Crops(images, labels, crop, opt["foreground"])]
    n_extra = 0
    if extra_images is not None:
        extra_images, extra_labels = as_cases(extra_images, extra_labels)
        sources.append(_Crops(extra_images, extra_labels, crop, opt["foreground"]))
        n_extra = batch_split(batch, opt["mix"])
    for lb in list(labels) + list(extra_labels if extra_images is not None else []):
        if int(lb.max()) >= num_classes or int(lb.min()) < 0:
            raise DataError(f"labels must lie in [0, {num_classes - 1}], found {int(lb.min())}..{int(lb.max())}")

    weights = class_balance_weights(labels, num_classes, float(opt["class_balance"])) if opt["class_balance"] else None
    if network == "basicunet":
        dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True, weight=weights)
        loss_fn = lambda logits, y: dice_ce(logits, y[:, None])  # noqa: E731
        optimiser = torch.optim.AdamW(model.parameters(), lr=float(opt["lr"]), weight_decay=3e-5)
    else:
        loss_fn = lambda logits, y: dice_ce_loss(logits, y, class_weights=weights)  # noqa: E731
        optimiser = torch.optim.Adam(model.parameters(), lr=float(opt["lr"]))
    decay = LR_DECAYS[opt["lr_decay"]]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: decay(s, steps))
    aug = augmentation(seed) if opt["augment"] else None
    plan = [0] * (batch - n_extra) + [1] * n_extra  # which source fills each place of a batch

    def train_step(step: int) -> float:
        xs, ys = [], []
        for j in range(batch):
            rng = np.random.default_rng([int(seed), step * batch + j])
            x, y = (torch.from_numpy(np.ascontiguousarray(a)) for a in sources[plan[j]].draw(rng))
            if aug is not None:
                d = aug({"image": x, "label": y[None].float()})
                x, y = torch.as_tensor(d["image"]), torch.as_tensor(d["label"])[0].round()
            xs.append(x.float())
            ys.append(y.long())
        loss = loss_fn(model(torch.stack(xs).contiguous(memory_format=layout)), torch.stack(ys))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        return float(loss.detach())

    def validation(model) -> float:
        return validation_dice(model, val_images, val_labels, num_classes)

    fit = fit_early_stopping(
        model,
        train_step,
        max_steps=steps,
        validate=validation,
        eval_every=every,
        patience=int(opt["patience"]),
        progress=progress,
        desc="train judge",
    )
    return JudgeFit(**vars(fit), network_name=NETWORK_NAMES[network])
