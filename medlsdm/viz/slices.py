"""Slices of volumes as figures: grey images in mm with label contours, a class legend and
colour bars in the data's units.

Volumes are ``(D, H, W)`` arrays (z, y, x of the RAS-canonical volume); ``spacing`` is in the
same order, in mm. A slice is drawn over its physical extent, so its axes read in mm and its
aspect is right for anisotropic voxels. Label maps are drawn as a light fill and a contour
per class, so the image stays visible under them. At most :data:`MAX_COLUMNS` panels a row:
wider grids wrap into blocks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

if TYPE_CHECKING:
    from ..data.prepare import Manifest

VIEWS = ("axial", "coronal", "sagittal")
#: the (horizontal, vertical) axis of each view, as drawn by :func:`take_slice`
AXIS_NAMES = {"axial": ("x", "y"), "coronal": ("x", "z"), "sagittal": ("y", "z")}
#: most panels in one row of a figure (a slide holds six legible panels side by side)
MAX_COLUMNS = 6
NORMALISED = "intensity (normalised)"
#: the colour of an edited region's outline (:func:`plot_edit`)
EDIT_COLOR = "magenta"


def label_colors(num_classes: int) -> np.ndarray:
    """RGBA colour per class index; background (0) is transparent."""

    cmap = matplotlib.colormaps["tab10"]
    colors = np.array([cmap(i % 10) for i in range(max(num_classes, 1) - 1)]).reshape(-1, 4)
    return np.concatenate([[[0.0, 0.0, 0.0, 0.0]], colors], axis=0)


def class_colors(num_classes: int) -> np.ndarray:
    """Opaque RGBA colour per class for charts (bars, curves): :func:`label_colors` with the
    background black instead of transparent (tab10's grey is the eighth class's)."""
    colors = label_colors(num_classes)
    colors[0] = (0.0, 0.0, 0.0, 1.0)
    return colors


def hu_window(manifest: Manifest) -> tuple[float, float] | None:
    """The HU window that maps to [-1, 1] when the manifest's images are CT normalised by a
    fixed window (``{"method": "ct_window", "window": [lo, hi]}``), else ``None``."""
    norm = manifest.normalisation or {}
    if norm.get("method") != "ct_window":
        return None
    lo, hi = norm["window"]
    return float(lo), float(hi)


def take_slice(volume: np.ndarray, view: str, index: int | None = None) -> np.ndarray:
    """A 2-D slice of a (D, H, W) volume, oriented for display (anterior/superior up)."""
    axis = VIEWS.index(view)
    index = volume.shape[axis] // 2 if index is None else int(index)
    plane = np.take(volume, index, axis=axis)
    # axial: rows = y (posterior→anterior) so flip to put anterior up; coronal/sagittal: rows = z
    return plane[::-1]


def slice_extent(
    shape2d: Sequence[int], view: str, spacing: Sequence[float] | None
) -> tuple[float, float, float, float]:
    """``(left, right, bottom, top)`` of a :func:`take_slice` slice in mm (in voxels without a
    spacing): a position reads as the distance from the volume's first voxel edge."""
    d, h, w = spacing if spacing is not None else (1.0, 1.0, 1.0)
    sx, sy = {"axial": (w, h), "coronal": (w, d), "sagittal": (h, d)}[view]
    rows, cols = shape2d
    return 0.0, cols * sx, 0.0, rows * sy


def slice_position(index: Sequence[int], view: str, spacing: Sequence[float] | None) -> tuple[float, float]:
    """Where the centre of voxel ``index`` (d, h, w) lies on a :func:`take_slice` slice drawn
    over :func:`slice_extent` (mm, or voxels without a spacing)."""
    d, h, w = spacing if spacing is not None else (1.0, 1.0, 1.0)
    i, j, k = (int(v) for v in index)
    return {
        "axial": ((k + 0.5) * w, (j + 0.5) * h),
        "coronal": ((k + 0.5) * w, (i + 0.5) * d),
        "sagittal": ((j + 0.5) * h, (i + 0.5) * d),
    }[view]


def draw_slice(
    ax,
    image2d,
    label2d=None,
    *,
    num_classes=None,
    alpha=0.12,
    vmin=-1.0,
    vmax=1.0,
    cmap="gray",
    extent=None,
    contours=True,
    linewidth=0.8,
):
    """Draw an image with an optional label overlay on ``ax``; returns the image's artist.

    The overlay is a fill of opacity ``alpha`` and (``contours``) one contour per class in its
    :func:`label_colors` colour. ``extent`` (see :func:`slice_extent`) places the pixels in mm.
    """
    extent = extent or slice_extent(np.shape(image2d), "axial", None)
    image = ax.imshow(image2d, cmap=cmap, vmin=vmin, vmax=vmax, extent=extent, interpolation="nearest")
    if label2d is not None:
        k = int(num_classes or label2d.max() + 1)
        colors = label_colors(k)
        lab = np.clip(np.asarray(label2d).astype(int), 0, k - 1)
        if alpha > 0:
            rgba = colors[lab]
            rgba[..., 3] *= alpha
            ax.imshow(rgba, extent=extent, interpolation="nearest")
        if contours:
            for c in np.unique(lab[lab > 0]):
                ax.contour(
                    (lab == c).astype(float),
                    levels=[0.5],
                    colors=[colors[c][:3]],
                    linewidths=linewidth,
                    extent=extent,
                    origin="upper",
                )
    return image


def outline(ax, mask2d, extent, *, color=EDIT_COLOR, linewidth=1.2, linestyle="-"):
    """The contour of a boolean mask on ``ax`` (nothing when the slice misses the mask)."""
    mask2d = np.asarray(mask2d, bool)
    if mask2d.any():
        ax.contour(
            mask2d.astype(float),
            levels=[0.5],
            colors=[color],
            linewidths=linewidth,
            linestyles=linestyle,
            extent=extent,
            origin="upper",
        )


def mm_axes(ax, view: str, *, xlabel: bool = True, ylabel: bool = True, prefix: str = "") -> None:
    """Small mm tick labels and ``"x (mm)"``-style axis labels; ``prefix`` goes above the y label
    (a row's name)."""
    horizontal, vertical = AXIS_NAMES[view]
    ax.tick_params(labelsize=6, length=2, labelbottom=xlabel, labelleft=ylabel)
    if xlabel:
        ax.set_xlabel(f"{horizontal} (mm)", fontsize=7, labelpad=1)
    if ylabel:
        ax.set_ylabel(f"{prefix}\n{vertical} (mm)" if prefix else f"{vertical} (mm)", fontsize=7, labelpad=1)


def no_axes(ax, ylabel: str = "") -> None:
    """No ticks or frame (pixels without a physical size), an optional row name at the left."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)


def add_colorbar(
    fig, image, axes, label: str, *, hu: tuple[float, float] | None = None, difference: bool = False, rows: int = 1
):
    """A colour bar for ``image`` beside ``axes``, labelled with its unit; with ``hu`` (the window
    that maps to [-1, 1], see :func:`hu_window`) a second scale in HU (ΔHU for a ``difference``);
    ``rows``: how many rows of panels it spans (keeps it slim)."""
    bar = fig.colorbar(image, ax=axes, shrink=0.9, pad=0.02, aspect=20 * rows)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=6)
    if hu is not None:
        lo, hi = hu
        half = (hi - lo) / 2
        if difference:
            forward, inverse = (lambda v: v * half), (lambda u: u / half)
        else:
            forward, inverse = (lambda v: lo + (v + 1) * half), (lambda u: (u - lo) / half - 1)
        scale = bar.ax.secondary_yaxis("left", functions=(forward, inverse))
        scale.set_ylabel("ΔHU" if difference else "HU", fontsize=7)
        scale.tick_params(labelsize=6)
    return bar


def add_class_legend(fig, class_names: Sequence[str], classes: Sequence[int] | None = None):
    """A figure legend of the classes' colours (``classes``: which indices; default all but
    the background), outside the panels at the bottom."""

    colors = label_colors(len(class_names))
    classes = range(1, len(class_names)) if classes is None else sorted(int(c) for c in classes if c > 0)
    handles = [Patch(facecolor=colors[c][:3], edgecolor=colors[c][:3], label=class_names[c]) for c in classes]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), fontsize=7, frameon=False)


def _per_row(value, name, default):
    return value.get(name, default) if isinstance(value, Mapping) else (default if value is None else value)


def plot_orthogonal(
    volumes: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    spacing: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    indices: Sequence[int | None] = (None, None, None),
    window: tuple[float, float] | Mapping[str, tuple[float, float]] = (-1.0, 1.0),
    overlay: bool = True,
    title: str | None = None,
    views: Sequence[str] = VIEWS,
    units: str | Mapping[str, str] = NORMALISED,
    hu: tuple[float, float] | None = None,
    cmap: str | Mapping[str, str] = "gray",
):
    """One row per named ``(image, label)`` pair, one column per view; returns the figure.

    Each row may have its own shape (e.g. raw and preprocessed); ``indices`` (one per view)
    default to the centre of each volume. ``window``, ``spacing``, ``units`` (the colour bar's
    label) and ``cmap`` are one value or one per row name (rows not named get -1 … 1, no
    spacing, normalised intensity, grey). With a spacing the axes read in mm. Consecutive rows
    with the same colours share a colour bar (with an HU scale when ``hu`` is given and the rows
    are normalised); with
    ``class_names`` the label contours get a class legend.
    """

    rows = list(volumes.items())
    num_classes = num_classes or (len(class_names) if class_names else None)
    fig, axes = plt.subplots(
        len(rows),
        len(views),
        figsize=(3.4 * len(views) + 0.8, 3.1 * len(rows) + 0.4),
        squeeze=False,
        layout="constrained",
    )
    present, bars = set(), []  # bars: [key, image, axes] of consecutive rows sharing a colour bar
    for r, (name, (image, label)) in enumerate(rows):
        vmin, vmax = _per_row(window, name, (-1.0, 1.0))
        row_spacing = _per_row(spacing, name, None)
        for c, view in enumerate(views):
            lab = take_slice(label, view, indices[c]) if (label is not None and overlay) else None
            plane = take_slice(image, view, indices[c])
            im = draw_slice(
                axes[r, c],
                plane,
                lab,
                num_classes=num_classes,
                vmin=vmin,
                vmax=vmax,
                cmap=_per_row(cmap, name, "gray"),
                extent=slice_extent(plane.shape, view, row_spacing),
            )
            present |= set() if lab is None else set(np.unique(lab).tolist())
            axes[r, c].set_title(f"{name} — {view}" if len(views) > 1 else name, fontsize=9)
            if row_spacing is not None:
                mm_axes(axes[r, c], view)
            else:
                no_axes(axes[r, c])
        key = (_per_row(cmap, name, "gray"), vmin, vmax, _per_row(units, name, NORMALISED))
        if bars and bars[-1][0] == key:
            bars[-1][2].extend(axes[r, :])
        else:
            bars.append([key, im, list(axes[r, :])])
    for (_, _, _, unit), im, bar_axes in bars:
        add_colorbar(fig, im, bar_axes, unit, hu=hu if unit == NORMALISED else None, rows=len(bar_axes) // len(views))
    if class_names is not None and present:
        add_class_legend(fig, class_names, present)
    if title:
        fig.suptitle(title)
    return fig


def as_3d(array) -> np.ndarray:
    """``(D, H, W)`` of a volume with leading axes of size 1 (``(1, D, H, W)``) or of a 2-D
    slice (``(H, W)`` or ``(1, H, W)``: a one-slice volume)."""
    array = np.asarray(array)
    while array.ndim > 3 and array.shape[0] == 1:
        array = array[0]
    return array[None] if array.ndim == 2 else array


def wrap_columns(n: int, max_columns: int = MAX_COLUMNS) -> tuple[int, int]:
    """``(blocks, columns per block)`` to show ``n`` panels at most ``max_columns`` a row, the
    blocks as even as they can be (12 → 2 × 6, 8 → 2 × 4, 7 → 2 × 4)."""
    blocks = max(1, math.ceil(n / max_columns))
    return blocks, math.ceil(n / blocks)


def plot_slice_grid(
    rows: Mapping[str, Sequence[np.ndarray]],
    *,
    col_titles: Sequence[str] | None = None,
    labels: Sequence[np.ndarray | None] | None = None,
    view: str = "axial",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    cmap: str | Mapping[str, str] = "gray",
    vmin: float = -1.0,
    vmax: float = 1.0,
    spacing: Sequence[float] | None = None,
    overlays: Mapping[str, Sequence[np.ndarray]] | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    units: str | Mapping[str, str] = NORMALISED,
    hu: tuple[float, float] | None = None,
    max_columns: int = MAX_COLUMNS,
):
    """A grid of central slices: one row per name, one column per volume ``(D, H, W)`` or
    2-D slice ``(H, W)`` (a one-slice volume; a leading axis of size 1 is dropped).

    ``col_titles`` go over each column's first panel; ``labels`` (one per column) are drawn as
    contours on every row; ``overlays`` gives rows
    their own label maps (row name → one per column); ``ranges`` gives rows their own value
    window (row name → ``(vmin, vmax)``, e.g. ``(0, 1)`` for edge maps; other rows get
    ``vmin`` … ``vmax``); ``cmap`` and ``units`` (the colour bar's label) are one value or one
    per row name. More than ``max_columns`` columns wrap into blocks of all rows. With a
    ``spacing`` the axes read in mm; consecutive rows with the same colours share one colour bar
    (with an HU scale when ``hu`` is given and the rows are normalised); with ``class_names``
    the contours get a class legend.
    """

    names = list(rows)
    num_classes = num_classes or (len(class_names) if class_names else None)
    ncols = max(len(v) for v in rows.values())
    blocks, per = wrap_columns(ncols, max_columns)
    nrows = blocks * len(names)
    fig, axes = plt.subplots(
        nrows, per, figsize=(2.2 * per + 1.2, 2.2 * nrows + 0.5), squeeze=False, layout="constrained"
    )
    present, bars = set(), []  # bars: [key, image, axes] of consecutive rows sharing a colour bar
    for b in range(blocks):
        for r, name in enumerate(names):
            row = b * len(names) + r
            lo, hi = (ranges or {}).get(name, (vmin, vmax))
            row_cmap, unit = _per_row(cmap, name, "gray"), _per_row(units, name, NORMALISED)
            image = None
            for j in range(per):
                ax, c = axes[row, j], b * per + j
                if c >= len(rows[name]):
                    ax.axis("off")
                    continue
                plane = take_slice(as_3d(rows[name][c]), view)
                lab = labels[c] if labels is not None else None
                if overlays is not None and name in overlays:
                    lab = overlays[name][c]
                lab = None if lab is None else take_slice(as_3d(lab), view)
                image = draw_slice(
                    ax,
                    plane,
                    lab,
                    num_classes=num_classes,
                    vmin=lo,
                    vmax=hi,
                    cmap=row_cmap,
                    extent=slice_extent(plane.shape, view, spacing),
                )
                present |= set() if lab is None else set(np.unique(lab).tolist())
                if col_titles is not None and r == min(i for i, n in enumerate(names) if c < len(rows[n])):
                    ax.set_title(col_titles[c], fontsize=9)
                last = r == len(names) - 1 and c + per >= ncols  # no panel below it
                if spacing is not None:
                    mm_axes(ax, view, xlabel=last, ylabel=j == 0, prefix=name)
                else:
                    no_axes(ax, name if j == 0 else "")
            key = (row_cmap, lo, hi, unit)
            if image is not None and bars and bars[-1][0] == key:
                bars[-1][2].extend(axes[row, :])
            elif image is not None:
                bars.append([key, image, list(axes[row, :])])
    for (_, _, _, unit), image, bar_axes in bars:
        add_colorbar(fig, image, bar_axes, unit, hu=hu if unit == NORMALISED else None, rows=len(bar_axes) // per)
    if class_names is not None and present:
        add_class_legend(fig, class_names, present)
    return fig


def plot_edit(
    before: np.ndarray,
    after: np.ndarray,
    mask: np.ndarray,
    *,
    centre: Sequence[int],
    spacing: Sequence[float] | None = None,
    views: Sequence[str] = VIEWS,
    hu: tuple[float, float] | None = None,
    region: str = "inserted lesion",
    zoom_mm: float | None = None,
    window: tuple[float, float] | None = None,
):
    """An edit of a volume: rows before, after and after − before, one column per view through
    ``centre``; the edited region (``mask``, ``(D, H, W)`` bool) outlined on every panel.

    The difference row has a diverging colour map symmetric about 0, scaled to the largest
    change, so a change too faint to see in the grey rows still shows; with ``hu`` the colour
    bars get HU (ΔHU) scales; ``zoom_mm`` shows only a square of that half-width (mm, voxels
    without a spacing) around ``centre``, for a region too small to see in the whole slice.
    ``window`` (the grey rows' value range) defaults to the 1st-99th percentile of ``before`` and
    ``after`` in a box of half the zoom about ``centre`` (the whole volume without a zoom): the
    tissue the region sits in, as an organ window would show it, so a faint edit shows in the grey
    rows too.
    """

    before, after, mask = as_3d(before), as_3d(after), as_3d(mask).astype(bool)
    diff = after - before
    span = float(np.abs(diff).max()) or 1e-6
    if window is None:
        box = tuple(
            slice(None) if zoom_mm is None else slice(max(0, int(c - zoom_mm / 2 / s)), int(c + zoom_mm / 2 / s) + 1)
            for c, s in zip(centre, spacing if spacing is not None else (1.0, 1.0, 1.0))
        )
        window = tuple(float(v) for v in np.percentile(np.concatenate([before[box], after[box]]), [1, 99]))
    rows = [
        ("before", before, "gray", window),
        ("after", after, "gray", window),
        ("after − before", diff, "RdBu_r", (-span, span)),
    ]
    fig, axes = plt.subplots(
        len(rows),
        len(views),
        figsize=(3.4 * len(views) + 0.8, 3.1 * len(rows) + 0.4),
        squeeze=False,
        layout="constrained",
    )
    for r, (name, volume, cmap, (lo, hi)) in enumerate(rows):
        for c, view in enumerate(views):
            ax, index = axes[r, c], centre[VIEWS.index(view)]
            plane = take_slice(volume, view, index)
            extent = slice_extent(plane.shape, view, spacing)
            image = draw_slice(ax, plane, vmin=lo, vmax=hi, cmap=cmap, extent=extent)
            outline(ax, take_slice(mask, view, index), extent)
            ax.set_title(f"{name} — {view}", fontsize=9)
            if zoom_mm is not None:
                x, y = slice_position(centre, view, spacing)
                ax.set_xlim(x - zoom_mm, x + zoom_mm)
                ax.set_ylim(y - zoom_mm, y + zoom_mm)
            if spacing is not None:
                mm_axes(ax, view)
            else:
                no_axes(ax)
        if r != 0:  # before and after share one grey colour bar
            unit = "after − before (normalised)" if r == 2 else NORMALISED
            add_colorbar(
                fig,
                image,
                axes[:2, :].ravel().tolist() if r == 1 else axes[r, :],
                unit,
                hu=hu,
                difference=r == 2,
                rows=2 if r == 1 else 1,
            )
    fig.legend(
        handles=[Line2D([], [], color=EDIT_COLOR, lw=1.5, label=region)],
        loc="outside lower center",
        fontsize=7,
        frameon=False,
    )
    return fig
