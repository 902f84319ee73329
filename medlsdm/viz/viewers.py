"""Viewers: the ipywidgets 8 orthogonal-slice viewer (a static figure when ``interactive=False``:
papermill, CI), the ipyniivue 3-D viewer (ships its JavaScript, works offline) and the optional
itkwidgets one, shown only when ``interactive=True``."""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display
from matplotlib.figure import Figure

from .slices import NORMALISED, VIEWS, plot_orthogonal


def _render_png(volumes, indices, overlay, **options) -> bytes:

    fig = plot_orthogonal(volumes, indices=indices, overlay=overlay, **options)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def slice_viewer(
    volumes: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    spacing: Sequence[float] | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    window: tuple[float, float] | Mapping[str, tuple[float, float]] = (-1.0, 1.0),
    interactive: bool = True,
    views: Sequence[str] = VIEWS,
    units: str | Mapping[str, str] = NORMALISED,
    hu: tuple[float, float] | None = None,
):
    """Orthogonal-slice viewer: rows = volumes side by side (same shape), a slider per view.

    With ``interactive=True`` returns an ipywidgets 8 ``VBox`` (one slice slider per view
    and a label-overlay toggle; the image is re-rendered on each change). With
    ``interactive=False`` (headless runs) returns a static matplotlib figure instead.
    ``views=("axial",)`` browses a stack of 2-D slices ``(N, H, W)`` with one slider;
    ``window`` may give each row its own grey-value window; ``class_names``, ``units`` and ``hu``
    add a class legend and colour bars (see :func:`~medlsdm.viz.slices.plot_orthogonal`).
    """
    options = dict(
        spacing=spacing,
        num_classes=num_classes,
        class_names=class_names,
        window=window,
        views=views,
        units=units,
        hu=hu,
    )
    if not interactive:
        return plot_orthogonal(volumes, **options)

    shape = next(iter(volumes.values()))[0].shape
    sliders = [
        w.IntSlider(
            value=shape[VIEWS.index(view)] // 2,
            min=0,
            max=shape[VIEWS.index(view)] - 1,
            description=view,
            continuous_update=False,
        )
        for view in views
    ]
    toggle = w.Checkbox(value=True, description="label overlay")
    image = w.Image(format="png")

    def update(_=None):
        image.value = _render_png(volumes, [s.value for s in sliders], toggle.value, **options)

    for control in (*sliders, toggle):
        control.observe(update, names="value")
    update()
    box = w.VBox([w.HBox(sliders), toggle, image])
    box.add_class("medlsdm-slice-viewer")
    return box


def volume_viewer_3d(image_path, label_path=None):
    """A 3-D ipyniivue viewer of a NIfTI image with an optional label overlay (interactive only)."""
    from ipyniivue import NiiVue  # noqa: PLC0415  (optional: medlsdm[viewers])

    nv = NiiVue()
    volumes = [{"path": str(image_path), "colormap": "gray"}]
    if label_path is not None:
        volumes.append({"path": str(label_path), "colormap": "actc", "opacity": 0.5})
    nv.load_volumes(volumes)
    return nv


def show(obj) -> None:
    """Display a viewer: a matplotlib figure inline, or a widget through IPython."""

    if isinstance(obj, Figure):
        plt.show()
    else:
        display(obj)


def itk_viewer(image: np.ndarray, label: np.ndarray | None = None):
    """An itkwidgets 3-D viewer (optional extra ``medlsdm[itk]``; interactive sessions only:
    its 1.0 alphas fetch the viewer from the web)."""
    from itkwidgets import view  # noqa: PLC0415  (optional: medlsdm[itk])

    return view(image=image, label_image=label)
