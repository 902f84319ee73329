"""Charts of the notebooks: distributions, bars per class, training curves, per-factor panels.

Bars and curves of classes take :func:`medlsdm.viz.slices.class_colors` (the label overlay's
colours, the background grey), so a class has one colour in every figure; a chart with one
panel per item wraps at :data:`~medlsdm.viz.slices.MAX_COLUMNS` panels a row.
"""

from __future__ import annotations

import csv
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from .slices import class_colors, wrap_columns


def panel_grid(n: int, width: float, height: float):
    """A figure of ``n`` panels, at most six a row; returns ``(figure, the n axes)`` (spare
    cells hidden)."""

    blocks, per = wrap_columns(n)
    fig, axes = plt.subplots(blocks, per, figsize=(width * per, height * blocks), squeeze=False, layout="constrained")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, list(axes.ravel()[:n])


def plot_class_histograms(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    class_names: Sequence[str],
    *,
    bins=80,
    value_range=(-1.0, 1.0),
    xlabel="intensity (normalised)",
    hu: tuple[float, float] | None = None,
):
    """Intensity histogram of each class, pooled over the given cases; with ``hu`` (the window
    that maps to [-1, 1], :func:`~medlsdm.viz.slices.hu_window`) a second x scale in HU on top."""

    colors = class_colors(len(class_names))
    fig, ax = plt.subplots(figsize=(8, 3.5), layout="constrained")
    if hu is not None:
        lo, half = hu[0], (hu[1] - hu[0]) / 2
        top = ax.secondary_xaxis("top", functions=(lambda v: lo + (v + 1) * half, lambda u: (u - lo) / half - 1))
        top.set_xlabel("HU", fontsize=8)
    for k, name in enumerate(class_names):
        values = np.concatenate([img.reshape(-1)[lab.reshape(-1) == k] for img, lab in zip(images, labels)])
        if values.size == 0:
            continue
        ax.hist(
            values,
            bins=bins,
            range=value_range,
            histtype="step",
            density=True,
            color=colors[k],
            label=name,
            linewidth=1.4,
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_yscale("log")
    ax.legend(fontsize=8, ncol=3)
    return fig


def plot_class_fractions(class_voxels: np.ndarray, class_names: Sequence[str]):
    """Bar chart of the fraction of voxels per class (``class_voxels``: cases × classes counts)."""

    counts = np.asarray(class_voxels, dtype=float)
    fractions = counts / counts.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(8, 3))
    colors = class_colors(len(class_names))
    ax.bar(class_names, fractions.mean(axis=0), yerr=fractions.std(axis=0), color=colors, capsize=3)
    ax.set_yscale("log")
    ax.set_ylabel("voxel fraction (mean ± sd over cases)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def plot_class_values(values: Mapping[str, float], class_names: Sequence[str], *, ylabel: str, fmt: str = "%.3f"):
    """One bar per class in its class colour (``values``: ``{class name: value}``), each
    labelled with its value, so a class at 0 still reads as measured."""

    names = list(values)
    colors = class_colors(len(class_names))[[list(class_names).index(n) for n in names]]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(names)), 3.2), layout="constrained")
    bars = ax.bar(names, [values[n] for n in names], color=colors, edgecolor="0.2", linewidth=0.5)
    ax.bar_label(bars, fmt=fmt, fontsize=7, padding=1)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", rotation=30)
    ax.margins(y=0.12)
    return fig


def plot_split(split: Mapping[str, Sequence[str]], patient_of: Mapping[str, str]):
    """Cases and patients per split, as a bar chart."""

    names = list(split)
    n_cases = [len(split[s]) for s in names]
    n_patients = [len({patient_of[c] for c in split[s]}) for s in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(x - 0.2, n_cases, 0.4, label="cases")
    ax.bar(x + 0.2, n_patients, 0.4, label="patients")
    ax.set_xticks(x, names)
    ax.set_ylabel("count")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_training_log(
    csv_path, keys: Sequence[str], *, title: str | None = None, log_y: bool = True, ylabel: str | None = None
):
    """Curves of the given columns of a training ``log.csv`` against the step.

    ``csv_path`` may also be ``{name: log.csv}`` to compare runs: one curve per run and
    column, labelled with the run's name (and the column's, when there are several).
    """

    logs = csv_path if isinstance(csv_path, Mapping) else {None: csv_path}
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, path in logs.items():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for key in keys:
            points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
            label = key if name is None else name if len(keys) == 1 else f"{name}: {key}"
            if points:
                ax.plot(*zip(*points), marker="." if len(points) < 30 else None, label=label)
    ax.set_xlabel("optimiser step")
    if ylabel:
        ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_grouped_bars(
    groups: Mapping[str, Mapping[str, float]],
    *,
    ylabel: str,
    title: str | None = None,
    ylim: tuple[float, float] | None = None,
):
    """Bars per category, one colour per group: ``{group: {category: value}}`` (NaN: no bar)."""

    categories = list(next(iter(groups.values())))
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(categories)), 3.2))
    x = np.arange(len(categories))
    for i, (group, values) in enumerate(groups.items()):
        ax.bar(x + (i - (len(groups) - 1) / 2) * width, [values.get(c, np.nan) for c in categories], width, label=group)
    ax.set_xticks(x, categories, rotation=30)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, ncols=min(4, len(groups)))
    fig.tight_layout()
    return fig


def plot_factor_histograms(
    estimates: Mapping[str, Mapping[str, Sequence[float]]],
    factors: Sequence[str],
    *,
    sets: Sequence[str] = ("oracle", "synthetic"),
    bins: int = 12,
):
    """One panel per factor estimator: the distribution of its values in each set (e.g. the
    oracle re-renders and the synthetic samples of the same label maps), overlaid."""
    fig, axes = panel_grid(len(factors), 3.0, 2.6)
    for ax, factor in zip(axes, factors):
        values = [np.asarray(estimates[s][factor], float) for s in sets]
        lo = min(float(np.nanmin(v)) for v in values)
        hi = max(float(np.nanmax(v)) for v in values)
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-3, bins + 1)
        for name, v in zip(sets, values):
            ax.hist(v[np.isfinite(v)], bins=edges, alpha=0.55, label=name)
        ax.set_title(factor, fontsize=9)
        ax.set_xlabel("intensity (normalised)", fontsize=8)
    axes[0].legend(fontsize=8)
    return fig


def plot_within_map_spread(
    estimates: Mapping[str, Mapping[str, Sequence[float]]],
    per_map: Mapping[str, int],
    factors: Sequence[str],
    *,
    sets: Sequence[str] = ("oracle", "synthetic"),
):
    """One panel per factor: each label map's values (x: the map) of every set side by side, so
    one sees whether a map's samples spread as far as its oracle re-renders or sit on one value.

    Args:
        estimates: ``{set: {factor: values}}``, the values of map ``m`` at ``m·n … (m+1)·n − 1``.
        per_map: ``{set: n}`` values per map of each set.
        factors: the panels.
    """
    fig, axes = panel_grid(len(factors), 3.2, 2.8)
    offsets = np.linspace(-0.18, 0.18, len(sets))
    for ax, factor in zip(axes, factors):
        for offset, name, color in zip(offsets, sets, ("tab:blue", "tab:orange", "tab:green")):
            v = np.asarray(estimates[name][factor], float)
            maps = np.arange(v.size) // per_map[name]
            ax.plot(maps + offset, v, "o", ms=3.5, alpha=0.75, color=color, label=name)
        ax.set_title(factor, fontsize=9)
        ax.set_xlabel("label map", fontsize=8)
        ax.set_xticks(np.arange(int(maps.max()) + 1))
    axes[0].set_ylabel("factor estimate (normalised)", fontsize=8)
    axes[0].legend(fontsize=8)
    return fig
