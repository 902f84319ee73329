"""VQ-GAN reconstruction quality on held-out cases, beside the baseline of the same compression."""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import DataError
from ..metrics.conditional import paint_labels
from ..metrics.image import gaussian_kernel, paired_metrics, psnr, ssim
from ..metrics.texture import TARGETS, texture_ratios, where
from ..models.blocks import pad_to_multiple
from ..models.vqgan import VectorQuantizerEMA

log = logging.getLogger(__name__)


def naive_baseline(x: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """The compression baseline: average-pool ``factor``× per axis, then (bi/tri)linear upsample.

    Keeps as many numbers as the VQ-GAN latent of a 4× model has positions, so a learned
    autoencoder must beat it to be worth its training.

    Args:
        x: ``(B, C, *spatial)`` with 2 or 3 spatial axes divisible by ``factor``.
        factor: pooling factor per axis.
    """
    dims = x.ndim - 2
    if dims not in (2, 3):
        raise DataError(f"naive_baseline: expected (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)}")
    if any(s % factor for s in x.shape[2:]):
        raise DataError(f"naive_baseline: spatial size {tuple(x.shape[2:])} is not divisible by {factor}")
    pool = F.avg_pool3d if dims == 3 else F.avg_pool2d
    mode = "trilinear" if dims == 3 else "bilinear"
    small = pool(x.float(), factor)
    return F.interpolate(small, size=x.shape[2:], mode=mode, align_corners=False)


class Reconstruction(NamedTuple):
    """What :func:`reconstruct` returns."""

    images: np.ndarray  #: ``(N, C, *spatial)`` float32 in [-1, 1]
    indices: np.ndarray  #: ``(N, *latent spatial)`` int64 codebook indices


@torch.no_grad()
def reconstruct(
    model, images, labels=None, *, batch_size: int = 1, device: str | torch.device | None = None
) -> Reconstruction:
    """VQ-GAN reconstructions of 2-D slices or 3-D volumes: encode → nearest codes → decode.

    Sizes not divisible by the model's downsampling factor are edge-padded for the model and
    cropped back. The model runs in eval mode (its mode is restored); the codebook is not
    updated.

    Args:
        model: a :class:`~medlsdm.models.VQGAN`.
        images: ``(N, C, *spatial)`` in [-1, 1] (array or tensor), or a sequence of
            ``(C, *spatial)`` arrays; stacked ``batch_size`` at a time (a batch must be one shape).
        labels: the label maps ``(N, *spatial)`` (or a sequence), for a SPADE decoder only.
        device: where to run the model (default: the model's device).
    """
    param = next(model.parameters())
    device = torch.device(device) if device is not None else param.device
    factor = model.downsample_factor
    spade = model.config.decoder_type == "spade"
    was_training = model.training
    model.eval()
    recons, indices = [], []
    try:
        for i in range(0, len(images), batch_size):
            x = torch.stack([torch.as_tensor(np.asarray(v, np.float32)) for v in images[i : i + batch_size]])
            xp, crop = pad_to_multiple(x.to(device, param.dtype), factor)
            lab = None
            if spade and labels is not None:
                lab = torch.stack([torch.as_tensor(np.asarray(v, np.int64)) for v in labels[i : i + batch_size]])
                lab = pad_to_multiple(lab[:, None].float().to(device), factor)[0][:, 0].long()
            zq, idx, _ = model.quantize(model.encode(xp).latents, update=False)
            recons.append(
                model.decode(zq, force_not_quantize=True, labels=lab)
                .sample[tuple(crop)]
                .clamp(-1, 1)
                .float()
                .cpu()
                .numpy()
            )
            indices.append(idx.cpu().numpy().astype(np.int64))
    finally:
        model.train(was_training)
    return Reconstruction(np.concatenate(recons), np.concatenate(indices))


@torch.no_grad()
def evaluate_reconstruction(
    model,
    store,
    case_ids: Iterable[str],
    data_range: float = 2.0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Reconstruct whole cases with the VQ-GAN and compare with the naive baseline.

    Volumes whose sizes are not divisible by the model's downsampling factor are padded
    (edge values) for the model and cropped back before scoring.

    Args:
        model: a :class:`~medlsdm.models.VQGAN` (:func:`reconstruct`).
        store: mapping ``case_id -> (image (1, D, H, W) float32 in [-1, 1], label (D, H, W) int64, affine)``,
            e.g. :class:`medlsdm.data.store.CaseStore`.
        case_ids: the cases to score (held-out ones).
        data_range: intensity range of the images.
        device: where to run the model (default: the model's device).
        progress: show a progress bar.

    Returns:
        ``{"psnr", "ssim", "baseline_psnr", "baseline_ssim", "psnr_gain", "usage",
        "perplexity", "n_cases", "per_case": {case_id: {...}}}`` (means over cases; usage
        and perplexity over all the cases' latent codes). SSIM is NaN (with a warning) for
        cases with a side shorter than its 11-voxel window.
    """

    case_ids = list(case_ids)
    if not case_ids:
        raise DataError("evaluate_reconstruction: no case ids given")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    factor = model.downsample_factor
    per_case: dict[str, dict[str, float]] = {}
    all_indices = []
    for cid in tqdm(case_ids, desc="reconstruct", disable=not progress, leave=False):
        image, label, _ = store[cid]
        x = torch.as_tensor(np.asarray(image), dtype=torch.float32)[None]
        recon = reconstruct(model, x, np.asarray(label)[None], device=device)
        xp, crop = pad_to_multiple(x.to(device), factor)
        base = naive_baseline(xp, factor)[tuple(crop)]
        all_indices.append(torch.as_tensor(recon.indices).reshape(-1))
        xn, rn, bn = x[0, 0], torch.as_tensor(recon.images[0, 0]), base[0, 0].cpu()
        small = min(xn.shape) < gaussian_kernel().numel()
        if small and not per_case:
            log.warning("cases of shape %s are smaller than the SSIM window: ssim is NaN", tuple(xn.shape))
        per_case[cid] = {
            "psnr": psnr(rn, xn, data_range=data_range),
            "ssim": math.nan if small else ssim(rn, xn, data_range=data_range),
            "baseline_psnr": psnr(bn, xn, data_range=data_range),
            "baseline_ssim": math.nan if small else ssim(bn, xn, data_range=data_range),
        }
    stats = VectorQuantizerEMA.code_stats(torch.cat(all_indices), model.config.num_embeddings)
    mean = {k: float(np.mean([c[k] for c in per_case.values()])) for k in next(iter(per_case.values()))}
    mean["psnr_gain"] = mean["psnr"] - mean["baseline_psnr"]
    return {
        **mean,
        "usage": float(stats["usage"]),
        "perplexity": float(stats["perplexity"]),
        "n_cases": len(case_ids),
        "per_case": per_case,
    }


@torch.no_grad()
def latent_ablation(model, images, labels, *, masks=None, seed: int = 0, data_range: float = 2.0) -> dict[str, Any]:
    """Does the decoder use its latent? PSNR of each case decoded from three latents.

    - ``own``: the case's own codes (the reconstruction);
    - ``other``: the codes of another case (the next one, cyclically), with this case's label map;
    - ``random``: codebook entries drawn uniformly at every latent position.

    A decoder that paints the label map and ignores its latent scores the same in all three
    (the old SPADE setting on a phantom whose image its labels fix: 32.85 / 32.76 / 32.77 dB);
    one that needs its latent loses several dB with another case's codes.

    Args:
        model: a :class:`~medlsdm.models.VQGAN`.
        images: ``(N, 1, *spatial)`` in [-1, 1], N >= 2, one shape.
        labels: ``(N, *spatial)`` class indices (given to a SPADE decoder in every variant).
        masks: ``(N, *spatial)`` where PSNR is taken (e.g. the body, ``labels > 0``); default all.
        seed: seed of the random codes.

    Returns:
        ``{"own", "other", "random"}`` mean PSNR (dB), ``"per_case"`` lists,
        ``"own_minus_other"``, and ``"example"``: the first case decoded each way
        (``{variant: (D, H, W) array}``, for a figure).
    """
    images = torch.as_tensor(np.asarray(images, np.float32))
    labels = torch.as_tensor(np.asarray(labels, np.int64))
    if len(images) < 2:
        raise DataError("latent_ablation: needs at least two cases (one to borrow codes from)")
    masks = np.ones(images[:, 0].shape, bool) if masks is None else np.asarray(masks, bool)
    spade = model.config.decoder_type == "spade"
    was_training = model.training
    model.eval()
    try:
        codes = [model.quantize(model.encode(x[None]).latents, update=False)[0] for x in images]
        gen = torch.Generator().manual_seed(seed)
        book = model.quantizer.codebook  # (K, C)
        variants = {"own": codes, "other": codes[1:] + codes[:1], "random": []}
        for z in codes:
            idx = torch.randint(0, len(book), (z.shape[0], *z.shape[2:]), generator=gen)
            variants["random"].append(book[idx].movedim(-1, 1).to(z))
        per_case = {name: [] for name in variants}
        example = {}
        for name, zs in variants.items():
            for i, z in enumerate(zs):
                lab = labels[i : i + 1] if spade else None
                recon = model.decode(z, force_not_quantize=True, labels=lab).sample[0, 0].clamp(-1, 1)
                per_case[name].append(psnr(recon, images[i, 0], data_range=data_range, mask=masks[i]))
                if i == 0:
                    example[name] = recon.numpy()
    finally:
        model.train(was_training)
    out: dict[str, Any] = {name: float(np.mean(v)) for name, v in per_case.items()}
    out["own_minus_other"] = out["own"] - out["other"]
    out["per_case"] = per_case
    out["example"] = example
    return out


def painting_baselines(images, labels, class_means, *, factor: int = 4) -> dict[str, np.ndarray]:
    """Training-free reconstructions that use the same side information as the VQ-GAN.

    - ``average-pool``: :func:`naive_baseline` (the same number of values as the latent grid);
    - ``painting``: every voxel set to its class's mean training intensity (the label map only);
    - ``painting + pooled residual``: the painting plus the ``factor``× average-pooled and
      upsampled residual ``image − painting`` (label map + as many numbers as the latent).

    A decoder that reads the label map must beat the last one to show that its latent
    carries more than a pooled residual.

    Args:
        images: ``(N, 1, *spatial)`` in [-1, 1].
        labels: ``(N, *spatial)`` class indices.
        class_means: mean intensity of each class on the training cases.
        factor: the latent's downsampling per axis.
    """

    x = torch.as_tensor(np.asarray(images, np.float32))
    painted = torch.as_tensor(np.stack([paint_labels(lab, class_means) for lab in np.asarray(labels)]))[:, None].float()
    return {
        "average-pool": naive_baseline(x, factor).numpy(),
        "painting": painted.numpy(),
        "painting + pooled residual": (painted + naive_baseline(x - painted, factor)).numpy(),
    }


def body_masks(labels) -> np.ndarray:
    """The body (every labelled voxel, ``label > 0``) of each label map: where paired metrics
    are taken, so that the air around the patient does not dominate them."""
    return np.asarray(labels) > 0


@torch.no_grad()
def reconstruction_vs_baselines(
    model, images, labels, class_means, *, data_range: float = 2.0, noise_classes: Sequence[int] | None = None
) -> dict[str, dict[str, Any]]:
    """PSNR and SSIM inside the body of the VQ-GAN's reconstructions and of the
    :func:`painting_baselines`, on the same cases, and with ``noise_classes`` their texture.

    Args:
        model: a :class:`~medlsdm.models.VQGAN`.
        images: ``(N, 1, *spatial)`` in [-1, 1]; labels: ``(N, *spatial)``.
        class_means: mean intensity per class on the *training* cases.
        noise_classes: homogeneous class indices (e.g. :func:`~medlsdm.evaluation.oracle.texture_classes`):
            adds ``"noise_ratio"`` and ``"hf_power_ratio"`` to every method,
            :func:`~medlsdm.metrics.texture.texture_ratios` of its outputs over the originals
            (1: the originals' texture; a method that smooths scores far below).

    Returns:
        ``{method: {"psnr", "ssim", "per_case": {"psnr": [...], "ssim": [...]}}}`` with methods
        ``"VQ-GAN"`` and those of :func:`painting_baselines` (SSIM NaN for volumes smaller
        than its window).
    """

    images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int64)
    outputs = {
        "VQ-GAN": reconstruct(model, images, labels).images,
        **painting_baselines(images, labels, class_means, factor=model.downsample_factor),
    }
    masks = list(body_masks(labels))
    metrics = ("psnr", "ssim") if min(labels.shape[1:]) >= gaussian_kernel().numel() else ("psnr",)
    table = {}
    for name, out in outputs.items():
        mean, per_pair = paired_metrics(list(images), list(out), data_range=data_range, metrics=metrics, masks=masks)
        mean.setdefault("ssim", math.nan)  # volumes smaller than the SSIM window
        table[name] = {**mean, "per_case": {k: [p[k] for p in per_pair] for k in metrics}}
        if noise_classes is not None:
            table[name].update(texture_ratios(list(out), list(labels), list(images), list(labels), noise_classes))
    return table


def baseline_sentence(
    table: Mapping[str, Mapping[str, Any]], model: str = "VQ-GAN", baseline: str = "painting + pooled residual"
) -> str:
    """Whether ``model`` beats ``baseline`` on **both** PSNR and SSIM inside the body, and its
    texture against the originals when the table has it, in words chosen from the numbers of
    :func:`reconstruction_vs_baselines`."""

    m, b = table[model], table[baseline]
    wins = {k: m[k] > b[k] for k in ("psnr", "ssim")}  # NaN compares False: no win claimed
    verdict = "beats" if all(wins.values()) else "does not beat"
    digits = {"psnr": 2, "ssim": 3}
    detail = ", ".join(
        f"{k.upper()} {m[k]:.{n}f} {'>' if wins[k] else '≤' if m[k] <= b[k] else 'vs'} {b[k]:.{n}f}"
        for k, n in digits.items()
    )
    text = f"The {model} {verdict} {baseline} inside the body on both PSNR and SSIM ({detail})."
    if "noise_ratio" in m:
        parts = [
            f"{m[k]:.2f}× the originals' {label} ({where(m[k], k)} {TARGETS[k][0]}–{TARGETS[k][1]})"
            for k, label in (("noise_ratio", "noise level"), ("hf_power_ratio", "high-frequency power"))
        ]
        text += f" Its reconstructions have {parts[0]} and {parts[1]}."
    return text
