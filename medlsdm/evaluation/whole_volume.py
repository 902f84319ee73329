"""Whole volumes and edits of real volumes, judged against the phantom oracle (notebook 07).

A model trained on blocks of ``D`` slices synthesises a whole scan in overlapping depth
windows (:meth:`MedLSDMPipeline.__call__` with ``window``). Whether that leaves seams is a
question about distributions: a seam is a place where the sample is further from what the
label map allows than elsewhere. The phantom answers it, because it can render a scan of the
same body several blocks deep (:func:`medlsdm.data.phantom.oracle.deep_scan`, the anatomy over a longer field of view
along z) and re-render it with fresh hidden factors (the oracle). Per slice, the distance of
a sample from the oracle mean (:func:`slice_errors`), in excess of what the oracle's own
re-renders score at that slice (:func:`excess_errors`), is compared between slices next to
window borders and slices at window centres (:func:`seam_slices`, :func:`seam_gap`), with a
bootstrap confidence interval. The bar takes one-pass synthesis of the same label map (no
windows) as the baseline, because the model may simply be worse at the anatomy where the
borders lie: the windowed gap less the one-pass gap is what the windows add.

Edits of real volumes are measured in :mod:`medlsdm.evaluation.edits`.

Arrays follow the package convention: volumes ``(1, D, H, W)`` float32 in [-1, 1] (stacks
``(N, 1, D, H, W)``), label maps ``(D, H, W)`` int64.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..metrics.statistics import bootstrap_ci
from ..pipelines.plan import latent_windows
from ..pipelines.synthesis import block_window
from ..pipelines.windows import window_starts
from .oracle import factor_estimates

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ the windows
def resolve_windows(pipe, window: int | None, overlap: int | None) -> tuple[int, int]:
    """The depth windows the pipeline will use, in label-map slices.

    Args:
        pipe: the :class:`MedLSDMPipeline`.
        window: label slices per window; ``None``: the pipeline's training block depth.
        overlap: label slices shared by neighbours; ``None``: the pipeline's default.

    Raises:
        ConfigError: ``window`` is ``None`` and the pipeline does not record its block, or the
            values do not fit the pipeline (see :meth:`MedLSDMPipeline.__call__`).
    """

    window = block_window(pipe) if window is None else int(window)
    if window is None:
        raise ConfigError("the pipeline does not record its training block_shape: give window")
    f = pipe.vqgan.downsample_factor
    size, shared = latent_windows(
        window, overlap, f, f * pipe.unet.downsampling
    )  # checks them, fills the default overlap
    return size * f, shared * f


def sample_volumes(
    pipe,
    label: np.ndarray,
    n_samples: int,
    *,
    steps: int,
    seed: int = 0,
    window: int | None = None,
    overlap: int | None = None,
) -> tuple[np.ndarray, float]:
    """``n_samples`` volumes of one label map, sample ``k`` with seed ``seed + k``, and the
    seconds per volume.

    Args:
        pipe: the pipeline; label: ``(D, H, W)``.
        steps: scheduler steps.
        window, overlap: depth windows (label slices); ``window=None`` synthesises in one pass.

    Returns:
        ``((n_samples, 1, D, H, W), seconds per volume)``.
    """

    start = time.perf_counter()
    out = [
        pipe(
            label,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(seed + k),
            window=window,
            overlap=overlap,
        ).images[0]
        for k in range(int(n_samples))
    ]
    return np.stack([np.asarray(o) for o in out]), (time.perf_counter() - start) / max(int(n_samples), 1)


# ------------------------------------------------------------------------ per-slice statistics
def slice_statistics(
    volumes: np.ndarray, label: np.ndarray, class_names: Sequence[str], dataset: str | None = None
) -> dict[str, np.ndarray]:
    """Statistics of every axial slice of each volume: inside the body and the factor estimators.

    ``body_mean`` / ``body_std``: mean and std of the slice inside the body (``label > 0``);
    the factor estimators of :func:`medlsdm.evaluation.oracle.factor_estimates` (e.g.
    ``aorta_mean``, ``liver_mean``, ``noise``) applied to the slice alone. NaN where the slice
    has no body or not the class.

    Args:
        volumes: ``(N, 1, D, H, W)`` or ``(N, D, H, W)``.
        label: their shared ``(D, H, W)`` label map.
        class_names, dataset: for the factor estimators.

    Returns:
        ``{statistic: (N, D) array}``.
    """
    label = np.asarray(label)
    x = np.asarray(volumes, np.float32).reshape(-1, *label.shape)
    body = label > 0
    n, depth = x.shape[0], label.shape[0]
    out = {"body_mean": np.full((n, depth), np.nan), "body_std": np.full((n, depth), np.nan)}
    for z in range(depth):
        if body[z].any():
            values = x[:, z][:, body[z]]
            out["body_mean"][:, z], out["body_std"][:, z] = values.mean(1), values.std(1)
        factors = factor_estimates([v[z : z + 1] for v in x], [label[z : z + 1]] * n, class_names, dataset)
        for name, values in factors.items():
            out.setdefault(name, np.full((n, depth), np.nan))[:, z] = values
    return out


def slice_errors(volumes: np.ndarray, reference: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Mean ``|volume − reference|`` inside the body, per axial slice.

    Args:
        volumes: ``(N, 1, D, H, W)`` or ``(N, D, H, W)``.
        reference: ``(1, D, H, W)`` or ``(D, H, W)``, e.g. the oracle mean.
        label: ``(D, H, W)``; the body is ``label > 0``.

    Returns:
        ``(N, D)``; NaN for slices without body.
    """
    label = np.asarray(label)
    x = np.asarray(volumes, np.float32).reshape(-1, *label.shape)
    ref = np.asarray(reference, np.float32).reshape(label.shape)
    body = label > 0
    diff = np.abs(x - ref) * body
    count = body.sum(axis=(1, 2)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, diff.sum(axis=(2, 3)) / count, np.nan)


def oracle_errors(oracle: np.ndarray, label: np.ndarray) -> np.ndarray:
    """:func:`slice_errors` of each oracle re-render against the mean of the *other* re-renders
    (what a perfect sampler scores; leave-one-out, so it is not compared with itself).

    Args:
        oracle: ``(R, 1, D, H, W)``, ``R >= 2``.
        label: ``(D, H, W)``.

    Returns:
        ``(R, D)``.
    """
    oracle = np.asarray(oracle, np.float32)
    r = oracle.shape[0]
    if r < 2:
        raise DataError(f"oracle_errors: needs at least 2 re-renders, got {r}")
    total = oracle.sum(0)
    return np.concatenate([slice_errors(oracle[k : k + 1], (total - oracle[k]) / (r - 1), label) for k in range(r)])


def excess_errors(errors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-slice errors less what a perfect sampler scores at the same slice.

    Slices differ in how much the label map leaves open (a slice through the aorta and the
    kidneys varies with the contrast phase, one through the pelvis hardly at all), so raw
    per-slice errors rise and fall with the anatomy, and a window border that happens to lie in
    a variable stretch looks like a seam. Subtracting the reference's mean error at each slice
    (:func:`oracle_errors` of the oracle re-renders, ideally reconstructed through the VQ-GAN
    so that both sides see the autoencoder) removes that, leaving what the sampler adds.

    Args:
        errors: ``(N, D)`` from :func:`slice_errors`.
        reference: ``(R, D)`` from :func:`oracle_errors`.

    Returns:
        ``(N, D)``; NaN where either is NaN.
    """
    reference = np.asarray(reference, np.float64)
    with warnings.catch_warnings():  # slices without body: NaN in every row
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(errors, np.float64) - np.nanmean(reference, axis=0)[None]


def seam_slices(depth: int, window: int, overlap: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Slices next to the borders of the pipeline's depth windows, and slices at their centres.

    The windows are those :meth:`MedLSDMPipeline.__call__` denoises (on the latent grid,
    :func:`medlsdm.pipelines.windows.window_starts`), in label-map slices. A border is the
    first slice of every window but the first and the end of every window but the last; the
    ``factor`` slices around it (one latent slice, half on each side) are *border* slices. The
    ``factor`` slices around each window's middle are *centre* slices, unless they are also
    border slices (the last window is moved back to end at the volume's end, so its middle may
    fall on a neighbour's border).

    Args:
        depth: label-map slices of the volume.
        window, overlap: the pipeline's ``window`` and ``overlap`` (label-map slices).
        factor: the VQ-GAN's downsampling (label slices per latent slice).

    Returns:
        ``(border, centre)``: sorted slice indices.

    Raises:
        ConfigError: no centre slices are left (windows too short for their overlap) or the
            volume fits in one window.
    """
    f = int(factor)
    starts = [s * f for s in window_starts(depth // f, window // f, overlap // f)]
    if len(starts) < 2:
        raise ConfigError(f"a volume of {depth} slices fits in one window of {window}: no window borders")
    borders = sorted({s for s in starts if s > 0} | {s + window for s in starts if s + window < depth})
    z = np.arange(depth) + 0.5
    near_border = np.min(np.abs(z[:, None] - np.asarray(borders)[None]), axis=1) <= f / 2
    middles = np.asarray([s + window / 2 for s in starts])
    near_middle = np.min(np.abs(z[:, None] - middles[None]), axis=1) <= f / 2
    centre = near_middle & ~near_border
    if not centre.any():
        raise ConfigError(
            f"windows of {window} slices overlapping by {overlap} leave no window centre away from "
            "the borders; use a longer window or a shorter overlap"
        )
    return np.flatnonzero(near_border), np.flatnonzero(centre)


def seam_gap(
    errors: np.ndarray,
    border: Sequence[int],
    centre: Sequence[int],
    *,
    baseline: np.ndarray | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Mean per-slice error at border slices minus at centre slices, with a bootstrap CI; with
    ``baseline``, that gap less the same gap of the baseline (a difference in differences).

    Slices differ in difficulty (their anatomy), and a sampler may be better on some anatomy
    than on other, so the plain gap mixes seams with where the borders happen to lie. The
    baseline, one-pass samples of the same label map (no windows, so no seams), scores the
    same slices: what is left of the gap after subtracting its gap is what the windows add.

    Each bootstrap resample draws the volumes (rows of ``errors``; the baseline's rows are drawn
    with the same indices when it has as many rows, paired by seed, else on their own) and,
    independently, the border and the centre slices with replacement, the same slices for both
    (percentile interval; slices without body in some volume are left out). The bar of notebook
    07: the borders are no further from the oracle than the centres, i.e. the CI reaches 0 or
    below (``passes``).

    Args:
        errors: ``(N, D)`` per-slice errors of ``N`` volumes (:func:`slice_errors` or
            :func:`excess_errors`).
        border, centre: slice indices (:func:`seam_slices`).
        baseline: ``(M, D)`` errors of the baseline volumes, or ``None``.
        n_boot, level, seed: the bootstrap.

    Returns:
        ``{"gap", "ci": [low, high], "border", "centre", "passes", "n_volumes", "n_border", "n_centre"}``
        (``border``/``centre``: the mean errors there, less the baseline's with one).
    """
    errors = np.atleast_2d(np.asarray(errors, np.float64))
    base = None if baseline is None else np.atleast_2d(np.asarray(baseline, np.float64))
    ok = np.isfinite(errors).all(0) & (True if base is None else np.isfinite(base).all(0))
    b, c = [i for i in border if ok[i]], [i for i in centre if ok[i]]
    if not b or not c:
        raise DataError(f"seam_gap: no border ({len(b)}) or no centre ({len(c)}) slice with body in every volume")
    b, c = np.asarray(b), np.asarray(c)
    paired = base is not None and base.shape[0] == errors.shape[0]

    def gap(rows, base_rows, bi, ci):
        g = errors[rows][:, b[bi]].mean() - errors[rows][:, c[ci]].mean()
        if base is not None:
            g -= base[base_rows][:, b[bi]].mean() - base[base_rows][:, c[ci]].mean()
        return g

    n, m = errors.shape[0], 0 if base is None else base.shape[0]
    every = (np.arange(n), np.arange(m), np.arange(len(b)), np.arange(len(c)))
    rng = np.random.default_rng(seed)
    gaps = np.empty(int(n_boot))
    for k in range(int(n_boot)):
        rows = rng.integers(0, n, n)
        base_rows = rows if paired else rng.integers(0, max(m, 1), m)
        gaps[k] = gap(rows, base_rows, rng.integers(0, len(b), len(b)), rng.integers(0, len(c), len(c)))
    low, high = np.quantile(gaps, [(1 - level) / 2, (1 + level) / 2])
    shift = (0.0, 0.0) if base is None else (base[:, b].mean(), base[:, c].mean())
    return {
        "gap": float(gap(*every)),
        "ci": [float(low), float(high)],
        "border": float(errors[:, b].mean() - shift[0]),
        "centre": float(errors[:, c].mean() - shift[1]),
        "passes": bool(low <= 0),
        "n_volumes": int(n),
        "n_border": len(b),
        "n_centre": len(c),
    }


def oracle_band(
    stats: Mapping[str, np.ndarray], *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, np.ndarray]]:
    """Per slice, the oracle's mean, its bootstrap CI (over re-renders) and its range.

    Args:
        stats: :func:`slice_statistics` of the oracle re-renders (``(R, D)`` each).
        n_boot, level, seed: :func:`medlsdm.metrics.statistics.bootstrap_ci`.

    Returns:
        ``{statistic: {"mean", "low", "high", "min", "max"}}``, each ``(D,)`` (NaN where a
        slice has fewer than 2 finite values).
    """
    out = {}
    for name, values in stats.items():
        values = np.asarray(values, np.float64)
        band = {k: np.full(values.shape[1], np.nan) for k in ("mean", "low", "high", "min", "max")}
        for z in range(values.shape[1]):
            v = values[:, z][np.isfinite(values[:, z])]
            if v.size >= 2:
                band["mean"][z], band["min"][z], band["max"][z] = v.mean(), v.min(), v.max()
                band["low"][z], band["high"][z] = bootstrap_ci(v, n_boot=n_boot, level=level, seed=seed)
        out[name] = band
    return out


def plot_seam_check(
    stats: Mapping[str, Mapping[str, np.ndarray]],
    band: Mapping[str, Mapping[str, np.ndarray]],
    border: Sequence[int],
    centre: Sequence[int],
    *,
    statistics: Sequence[str] | None = None,
    spacing: float | None = None,
):
    """Per-slice statistics along depth: samples against the oracle band, window borders marked.

    Args:
        stats: ``{"windowed": slice_statistics(...), "one pass": ...}``: ``(N, D)`` per statistic.
        band: :func:`oracle_band` of the oracle re-renders.
        border, centre: :func:`seam_slices` (shaded red and green).
        statistics: which rows to draw (default every statistic of ``band``).
        spacing: slice spacing (mm) for the depth axis (default: slice index).

    Returns:
        The matplotlib figure.
    """

    names = list(statistics or band)
    depth = len(next(iter(band.values()))["mean"])
    z = np.arange(depth) * (spacing or 1.0)
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 1.9 * len(names)), sharex=True, squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes[:, 0], names):
        b = band[name]
        ax.fill_between(z, b["min"], b["max"], color="0.85", label="oracle range")
        ax.fill_between(z, b["low"], b["high"], color="0.55", label="oracle mean, 95% CI")
        for k, (label, s) in enumerate(stats.items()):
            with warnings.catch_warnings():  # slices without the class: NaN, not drawn
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(s[name], axis=0)
            ax.plot(z, mean, color=colours[k % len(colours)], lw=1.2, label=label)
        for i in border:
            ax.axvspan(z[i] - 0.5 * (spacing or 1.0), z[i] + 0.5 * (spacing or 1.0), color="tab:red", alpha=0.08, lw=0)
        for i in centre:
            ax.axvspan(
                z[i] - 0.5 * (spacing or 1.0), z[i] + 0.5 * (spacing or 1.0), color="tab:green", alpha=0.08, lw=0
            )
        ax.set_ylabel(name, fontsize=8)
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper right")
    axes[-1, 0].set_xlabel("depth (mm)" if spacing else "slice")
    axes[0, 0].set_title(
        "per slice: samples against the oracle (red: window borders, green: window centres)", fontsize=9
    )
    fig.tight_layout()
    return fig
