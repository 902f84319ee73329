"""Figures and viewers for the notebooks.

Static figures are matplotlib; the orthogonal-slice viewer is an ipywidgets 8 widget that
falls back to a static figure when ``interactive=False`` (papermill, CI); the 3-D viewer
(ipyniivue, ships its JavaScript, works offline) is shown only when ``interactive=True``.
Volumes are ``(D, H, W)`` arrays (z, y, x of the RAS-canonical volume); ``spacing`` is in
the same order, in mm, and sets the aspect ratio of coronal and sagittal slices. A 2-D
slice ``(H, W)`` is a one-slice volume (shown like an axial slice), and a stack of ``N``
slices ``(N, H, W)`` is browsed like a volume with ``views=("axial",)``.
"""
from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np

VIEWS = ("axial", "coronal", "sagittal")


def label_colors(num_classes: int) -> np.ndarray:
    """RGBA colour per class index; background (0) is transparent."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    colors = np.array([cmap(i % 10) for i in range(max(num_classes, 1) - 1)]).reshape(-1, 4)
    return np.concatenate([[[0.0, 0.0, 0.0, 0.0]], colors], axis=0)


def take_slice(volume: np.ndarray, view: str, index: int | None = None) -> np.ndarray:
    """A 2-D slice of a (D, H, W) volume, oriented for display (anterior/superior up)."""
    axis = VIEWS.index(view)
    index = volume.shape[axis] // 2 if index is None else int(index)
    plane = np.take(volume, index, axis=axis)
    # axial: rows = y (posterior→anterior) so flip to put anterior up; coronal/sagittal: rows = z
    return plane[::-1]


def _aspect(view: str, spacing: Sequence[float] | None) -> float:
    if spacing is None:
        return 1.0
    d, h, w = spacing
    return {"axial": h / w, "coronal": d / w, "sagittal": d / h}[view]


def draw_slice(ax, image2d, label2d=None, *, num_classes=None, alpha=0.4, vmin=-1.0, vmax=1.0, aspect=1.0):
    """Draw a grey image with an optional coloured label overlay on ``ax``."""
    ax.imshow(image2d, cmap="gray", vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
    if label2d is not None:
        k = int(num_classes or label2d.max() + 1)
        rgba = label_colors(k)[np.clip(label2d.astype(int), 0, k - 1)]
        rgba[..., 3] *= alpha
        ax.imshow(rgba, aspect=aspect, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_orthogonal(
    volumes: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    spacing: Sequence[float] | None = None,
    num_classes: int | None = None,
    indices: Sequence[int | None] = (None, None, None),
    window: tuple[float, float] | Mapping[str, tuple[float, float]] = (-1.0, 1.0),
    overlay: bool = True,
    title: str | None = None,
    views: Sequence[str] = VIEWS,
):
    """One row per named ``(image, label)`` pair, one column per view; returns the figure.

    Each row may have its own shape (e.g. raw and preprocessed); ``indices`` (one per view)
    default to the centre of each volume. ``window`` is one grey-value window or one per
    row name (rows not named get -1 … 1).
    """
    import matplotlib.pyplot as plt

    rows = list(volumes.items())
    spacings = spacing if isinstance(spacing, Mapping) else {name: spacing for name, _ in rows}
    windows = window if isinstance(window, Mapping) else {name: window for name, _ in rows}
    fig, axes = plt.subplots(len(rows), len(views), figsize=(10 / 3 * len(views), 3.3 * len(rows)), squeeze=False)
    for r, (name, (image, label)) in enumerate(rows):
        for c, view in enumerate(views):
            lab = take_slice(label, view, indices[c]) if (label is not None and overlay) else None
            vmin, vmax = windows.get(name, (-1.0, 1.0))
            draw_slice(axes[r, c], take_slice(image, view, indices[c]), lab, num_classes=num_classes,
                       vmin=vmin, vmax=vmax, aspect=_aspect(view, spacings[name]))
            axes[r, c].set_title(f"{name} — {view}" if len(views) > 1 else name, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_class_histograms(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], class_names: Sequence[str], *, bins=80, value_range=(-1.0, 1.0), xlabel="intensity (normalised)"):
    """Intensity histogram of each class, pooled over the given cases."""
    import matplotlib.pyplot as plt

    colors = label_colors(len(class_names))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for k, name in enumerate(class_names):
        values = np.concatenate([img.reshape(-1)[lab.reshape(-1) == k] for img, lab in zip(images, labels)])
        if values.size == 0:
            continue
        color = colors[k] if k else (0.3, 0.3, 0.3, 1.0)
        ax.hist(values, bins=bins, range=value_range, histtype="step", density=True, color=color, label=name, linewidth=1.4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_yscale("log")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    return fig


def plot_class_fractions(class_voxels: np.ndarray, class_names: Sequence[str]):
    """Bar chart of the fraction of voxels per class (``class_voxels``: cases × classes counts)."""
    import matplotlib.pyplot as plt

    counts = np.asarray(class_voxels, dtype=float)
    fractions = counts / counts.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(8, 3))
    colors = label_colors(len(class_names))
    colors[0] = (0.3, 0.3, 0.3, 1.0)
    ax.bar(class_names, fractions.mean(axis=0), yerr=fractions.std(axis=0), color=colors, capsize=3)
    ax.set_yscale("log")
    ax.set_ylabel("voxel fraction (mean ± sd over cases)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def plot_split(split: Mapping[str, Sequence[str]], patient_of: Mapping[str, str]):
    """Cases and patients per split, as a bar chart."""
    import matplotlib.pyplot as plt

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


def _render_png(volumes, indices, spacing, num_classes, overlay, window, views) -> bytes:
    import matplotlib.pyplot as plt

    fig = plot_orthogonal(volumes, spacing=spacing, num_classes=num_classes, indices=indices, overlay=overlay,
                          window=window, views=views)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def slice_viewer(
    volumes: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    spacing: Sequence[float] | None = None,
    num_classes: int | None = None,
    window: tuple[float, float] | Mapping[str, tuple[float, float]] = (-1.0, 1.0),
    interactive: bool = True,
    views: Sequence[str] = VIEWS,
):
    """Orthogonal-slice viewer: rows = volumes side by side (same shape), a slider per view.

    With ``interactive=True`` returns an ipywidgets 8 ``VBox`` (one slice slider per view
    and a label-overlay toggle; the image is re-rendered on each change). With
    ``interactive=False`` (headless runs) returns a static matplotlib figure instead.
    ``views=("axial",)`` browses a stack of 2-D slices ``(N, H, W)`` with one slider;
    ``window`` may give each row its own grey-value window (see :func:`plot_orthogonal`).
    """
    if not interactive:
        return plot_orthogonal(volumes, spacing=spacing, num_classes=num_classes, window=window, views=views)
    import ipywidgets as w

    shape = next(iter(volumes.values()))[0].shape
    sliders = [
        w.IntSlider(value=shape[VIEWS.index(view)] // 2, min=0, max=shape[VIEWS.index(view)] - 1,
                    description=view, continuous_update=False)
        for view in views
    ]
    toggle = w.Checkbox(value=True, description="label overlay")
    image = w.Image(format="png")

    def update(_=None):
        image.value = _render_png(volumes, [s.value for s in sliders], spacing, num_classes, toggle.value, window, views)

    for control in (*sliders, toggle):
        control.observe(update, names="value")
    update()
    box = w.VBox([w.HBox(sliders), toggle, image])
    box.add_class("medlsdm-slice-viewer")
    return box


def volume_viewer_3d(image_path, label_path=None):
    """A 3-D ipyniivue viewer of a NIfTI image with an optional label overlay (interactive only)."""
    from ipyniivue import NiiVue

    nv = NiiVue()
    volumes = [{"path": str(image_path), "colormap": "gray"}]
    if label_path is not None:
        volumes.append({"path": str(label_path), "colormap": "actc", "opacity": 0.5})
    nv.load_volumes(volumes)
    return nv


def show(obj) -> None:
    """Display a viewer: a matplotlib figure inline, or a widget through IPython."""
    from matplotlib.figure import Figure

    if isinstance(obj, Figure):
        import matplotlib.pyplot as plt

        plt.show()
    else:
        from IPython.display import display

        display(obj)


def plot_training_log(csv_path, keys: Sequence[str], *, title: str | None = None, log_y: bool = True,
                      ylabel: str | None = None):
    """Curves of the given columns of a training ``log.csv`` against the step.

    ``csv_path`` may also be ``{name: log.csv}`` to compare runs: one curve per run and
    column, labelled with the run's name (and the column's, when there are several).
    """
    import csv

    import matplotlib.pyplot as plt

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


def _as_3d(array) -> np.ndarray:
    """``(D, H, W)`` of a volume with leading axes of size 1 (``(1, D, H, W)``) or of a 2-D
    slice (``(H, W)`` or ``(1, H, W)``: a one-slice volume)."""
    array = np.asarray(array)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    return array[None] if array.ndim == 2 else array


def plot_slice_grid(
    rows: Mapping[str, Sequence[np.ndarray]],
    *,
    col_titles: Sequence[str] | None = None,
    labels: Sequence[np.ndarray | None] | None = None,
    view: str = "axial",
    num_classes: int | None = None,
    cmap: str = "gray",
    vmin: float = -1.0,
    vmax: float = 1.0,
    spacing: Sequence[float] | None = None,
    overlays: Mapping[str, Sequence[np.ndarray]] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
):
    """A grid of central slices: one row per name, one column per volume ``(D, H, W)`` or
    2-D slice ``(H, W)`` (a one-slice volume; a leading axis of size 1 is dropped).

    ``labels`` (one per column) are drawn as an overlay on the first row only;
    ``overlays`` gives rows their own label maps (row name → one per column);
    ``ranges`` gives rows their own grey-value window (row name → ``(vmin, vmax)``, e.g.
    ``(0, 1)`` for edge maps; other rows get ``vmin`` … ``vmax``).
    """
    import matplotlib.pyplot as plt

    names = list(rows)
    ncols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(names), ncols, figsize=(2.3 * ncols, 2.3 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        lo, hi = (ranges or {}).get(name, (vmin, vmax))
        for c in range(ncols):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(rows[name]):
                continue
            vol = _as_3d(rows[name][c])
            lab = labels[c] if (labels is not None and r == 0) else None
            if overlays is not None and name in overlays:
                lab = overlays[name][c]
            if cmap == "gray":
                draw_slice(ax, take_slice(vol, view), None if lab is None else take_slice(_as_3d(lab), view),
                           num_classes=num_classes, vmin=lo, vmax=hi, aspect=_aspect(view, spacing))
            else:
                ax.imshow(take_slice(vol, view), cmap=cmap, vmin=lo, vmax=hi, aspect=_aspect(view, spacing))
            if r == 0 and col_titles is not None:
                ax.set_title(col_titles[c], fontsize=9)
            if c == 0:
                ax.text(-0.05, 0.5, name, transform=ax.transAxes, rotation=90, ha="right", va="center", fontsize=9)
    fig.tight_layout()
    return fig


def itk_viewer(image: np.ndarray, label: np.ndarray | None = None):
    """An itkwidgets 3-D viewer (optional extra ``medlsdm[itk]``; interactive sessions only:
    its 1.0 alphas fetch the viewer from the web)."""
    from itkwidgets import view

    return view(image=image, label_image=label)


def plot_grouped_bars(groups: Mapping[str, Mapping[str, float]], *, ylabel: str, title: str | None = None,
                      ylim: tuple[float, float] | None = None):
    """Bars per category, one colour per group: ``{group: {category: value}}`` (NaN: no bar)."""
    import matplotlib.pyplot as plt

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


def plot_nearest_neighbours(check: Mapping[str, Sequence[float]]):
    """The privacy check of :func:`medlsdm.metrics.privacy.nearest_neighbour_check`: each set's
    distances to its nearest training volume, and the threshold below which a synthetic
    volume is flagged."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.6))
    for row, (name, key) in enumerate([("real unseen", "held_out_nn_distance"), ("synthetic", "synthetic_nn_distance")]):
        values = np.asarray(check[key])
        ax.scatter(values, np.full(len(values), row) + np.linspace(-0.15, 0.15, len(values)), label=name, alpha=0.8)
    ax.axvline(check["threshold"], color="k", ls="--", lw=1, label="threshold")
    ax.set_yticks([0, 1], ["real unseen", "synthetic"])
    ax.set_xlabel(f"distance to nearest training volume ({check['metric']})")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_factor_histograms(estimates: Mapping[str, Mapping[str, Sequence[float]]], factors: Sequence[str], *,
                           sets: Sequence[str] = ("oracle", "synthetic"), bins: int = 12):
    """One panel per factor estimator: the distribution of its values in each set (e.g. the
    oracle re-renders and the synthetic samples of the same label maps), overlaid."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(factors), figsize=(3.0 * len(factors), 2.6), squeeze=False)
    for ax, factor in zip(axes[0], factors):
        values = [np.asarray(estimates[s][factor], float) for s in sets]
        lo = min(float(np.nanmin(v)) for v in values)
        hi = max(float(np.nanmax(v)) for v in values)
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-3, bins + 1)
        for name, v in zip(sets, values):
            ax.hist(v[np.isfinite(v)], bins=edges, alpha=0.55, label=name)
        ax.set_title(factor, fontsize=9)
        ax.set_xlabel("intensity (normalised)", fontsize=8)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_within_map_spread(estimates: Mapping[str, Mapping[str, Sequence[float]]], per_map: Mapping[str, int],
                           factors: Sequence[str], *, sets: Sequence[str] = ("oracle", "synthetic")):
    """One panel per factor: each label map's values (x: the map) of every set side by side, so
    one sees whether a map's samples spread as far as its oracle re-renders or sit on one value.

    Args:
        estimates: ``{set: {factor: values}}``, the values of map ``m`` at ``m·n … (m+1)·n − 1``.
        per_map: ``{set: n}`` values per map of each set.
        factors: the panels.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(factors), figsize=(3.2 * len(factors), 2.8), squeeze=False)
    offsets = np.linspace(-0.18, 0.18, len(sets))
    for ax, factor in zip(axes[0], factors):
        for offset, name, color in zip(offsets, sets, ("tab:blue", "tab:orange", "tab:green")):
            v = np.asarray(estimates[name][factor], float)
            maps = np.arange(v.size) // per_map[name]
            ax.plot(maps + offset, v, "o", ms=3.5, alpha=0.75, color=color, label=name)
        ax.set_title(factor, fontsize=9)
        ax.set_xlabel("label map", fontsize=8)
        ax.set_xticks(np.arange(int(maps.max()) + 1))
    axes[0, 0].set_ylabel("factor estimate (normalised)", fontsize=8)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig
