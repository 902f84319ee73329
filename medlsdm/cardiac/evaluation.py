"""Evaluate synthetic cardiac slices against the real slices their conditions came from.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import DataError
from .conditioning import MODES
from .store import CLASS_NAMES
from .training import mode_dir

log = logging.getLogger(__name__)


def _features(fn, images: np.ndarray, device, batch_size: int = 32) -> np.ndarray:
    """``fn`` (a feature network on ``device``) over ``(N, C, H, W)`` images in batches, as float64 numpy."""
    import torch

    with torch.no_grad():
        x = torch.as_tensor(np.asarray(images, np.float32))
        return torch.cat([fn(x[i:i + batch_size].to(device)).double().cpu() for i in range(0, len(x), batch_size)]).numpy()


def segnet_features_2d(segnet, images: np.ndarray) -> np.ndarray:
    """Bottleneck features ``(N, C)`` (:meth:`~medlsdm.models.segnet.SegNet.features`) of slices ``(N, 1, H, W)``."""
    segnet.eval()
    return _features(segnet.features, images, next(segnet.parameters()).device)


def inception_features_2d(inception, images: np.ndarray) -> np.ndarray:
    """InceptionV3 pool3 features ``(N, 2048)`` of slices ``(N, 1, H, W)`` in [-1, 1] (mapped to
    [0, 1] and repeated to RGB, as FID does for grey images)."""
    return _features(lambda x: inception((x.clamp(-1, 1) + 1).div(2).repeat(1, 3, 1, 1)), images,
                     next(inception.parameters()).device, batch_size=16)


def evaluate_samples(real: np.ndarray, fake: np.ndarray, *, labels: np.ndarray | None = None, segnet=None,
                     inception=None) -> dict[str, Any]:
    """Compare synthetic slices with the real slices their conditions came from.

    Paired, per slice then averaged: SSIM (:func:`medlsdm.metrics.image.ssim`, Gaussian window,
    ``data_range=2`` for [-1, 1]) and NMSE ``‖fake − real‖² / ‖real‖²``
    (:func:`medlsdm.metrics.image.nmse`). As sets: ``fd_seg``, the Fréchet distance of the two sets
    in the segmentation network's bottleneck feature space, and ``dice``, the mean Dice of
    the network's segmentation of the synthetic slices against ``labels`` (with ``segnet``);
    ``fid`` with InceptionV3 features (with ``inception``; otherwise ``None``).

    Args:
        real, fake: ``(N, 1, H, W)`` in [-1, 1], paired by index.
        labels: ``(N, H, W)`` label maps of the real slices (for ``dice``).
        segnet: a trained 2-D :class:`~medlsdm.models.segnet.SegNet`.
        inception: :func:`medlsdm.models.feature_nets.inception.load_inception` result.
    """
    from ..metrics.distribution import frechet_distance_from_features
    from ..metrics.image import nmse, ssim

    real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
    if real.shape != fake.shape or real.ndim != 4:
        raise DataError(f"evaluate_samples: expected paired (N, 1, H, W) sets, got {real.shape} and {fake.shape}")
    out: dict[str, Any] = {
        "ssim": float(np.mean([ssim(f, r, data_range=2.0) for f, r in zip(fake, real)])),
        "nmse": float(np.mean([nmse(f, r) for f, r in zip(fake, real)])),
        "n": len(real),
    }
    if segnet is not None:
        out["fd_seg"] = frechet_distance_from_features(segnet_features_2d(segnet, real), segnet_features_2d(segnet, fake))
        if labels is not None:
            from ..evaluation.segmentation import evaluate_dice

            out["dice"] = evaluate_dice(segnet, fake, labels, num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES)["mean"]
    out["fid"] = None
    if inception is not None:
        out["fid"] = frechet_distance_from_features(inception_features_2d(inception, real), inception_features_2d(inception, fake))
    return out


def ablation_table(results: Mapping[str, Mapping[str, Any]], keys: Sequence[str] = ("ssim", "nmse", "fd_seg", "dice")) -> str:
    """A Markdown table: one row per mode (or reference), one column per metric."""
    from ..tables import format_number, markdown_table

    arrows = {"ssim": "↑", "nmse": "↓", "fd_seg": "↓", "dice": "↑", "fid": "↓"}
    rows = [[name] + [format_number(row.get(k)) for k in keys]
            for name, row in results.items()]
    return markdown_table(["condition"] + [f"{k} {arrows.get(k, '')}" for k in keys], rows)


def plot_slices(rows: Mapping[str, Sequence[np.ndarray]], *, col_titles: Sequence[str] | None = None,
                labels: Sequence[np.ndarray] | None = None, ranges: Mapping[str, tuple[float, float]] | None = None):
    """A grid of 2-D slices: one row per name, one column per slice (``(H, W)`` or ``(1, H, W)``).

    ``labels`` (one per column) are drawn as an overlay on rows whose name contains "label";
    ``ranges`` gives a row its grey-value window (default -1 … 1; e.g. ``(0, 1)`` for edges).
    """
    import matplotlib.pyplot as plt

    from ..viz import draw_slice

    names = list(rows)
    ncols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(names), ncols, figsize=(1.9 * ncols, 1.9 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        vmin, vmax = (ranges or {}).get(name, (-1.0, 1.0))
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(rows[name]):
                ax.axis("off")
                continue
            lab = labels[c] if labels is not None and "label" in name else None
            draw_slice(ax, np.asarray(rows[name][c]).squeeze(), lab, num_classes=len(CLASS_NAMES), vmin=vmin, vmax=vmax)
            if r == 0 and col_titles is not None:
                ax.set_title(col_titles[c], fontsize=8)
            if c == 0:
                ax.text(-0.05, 0.5, name, transform=ax.transAxes, rotation=90, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def plot_losses(cardiac_dir: str | os.PathLike, modes: Sequence[str] = MODES):
    """The denoising loss of each mode's training (``log.csv``) against the step."""
    import csv

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for mode in modes:
        with open(mode_dir(cardiac_dir, mode) / "log.csv", newline="") as f:
            points = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f) if r.get("loss")]
        ax.plot(*zip(*points), marker="." if len(points) < 30 else None, label=mode)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("denoising loss (MSE)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def slice_browser(rows: Mapping[str, Sequence[np.ndarray]], *, labels: Sequence[np.ndarray] | None = None,
                  ranges: Mapping[str, tuple[float, float]] | None = None, interactive: bool = True, n_static: int = 6):
    """Browse paired slices (one row per name) with a slider (ipywidgets 8); without
    ``interactive`` (headless runs) a static :func:`plot_slices` figure of the first ``n_static``."""
    import io

    import matplotlib.pyplot as plt

    if not interactive:
        return plot_slices({k: list(v[:n_static]) for k, v in rows.items()},
                           labels=None if labels is None else list(labels[:n_static]), ranges=ranges)
    import ipywidgets as w

    n = len(next(iter(rows.values())))
    slider = w.IntSlider(value=0, min=0, max=n - 1, description="slice", continuous_update=False)
    image = w.Image(format="png")

    def update(_=None):
        i = slider.value
        fig = plot_slices({k: [v[i]] for k, v in rows.items()}, labels=None if labels is None else [labels[i]], ranges=ranges)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        image.value = buf.getvalue()

    slider.observe(update, names="value")
    update()
    return w.VBox([slider, image])
