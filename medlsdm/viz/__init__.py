"""Figures and viewers for the notebooks: ``from medlsdm import viz``.

- :mod:`~medlsdm.viz.slices`: slices of volumes in mm with label contours, class legends and
  colour bars (grids wrap at six panels a row); the before / after / difference of an edit;
- :mod:`~medlsdm.viz.charts`: distributions, bars per class, training curves;
- :mod:`~medlsdm.viz.viewers`: the orthogonal-slice widget (static when headless) and the 3-D viewers.
"""

from .charts import (
    panel_grid,
    plot_class_fractions,
    plot_class_histograms,
    plot_class_values,
    plot_factor_histograms,
    plot_grouped_bars,
    plot_split,
    plot_training_log,
    plot_within_map_spread,
)
from .slices import (
    AXIS_NAMES,
    MAX_COLUMNS,
    NORMALISED,
    VIEWS,
    add_class_legend,
    add_colorbar,
    as_3d,
    class_colors,
    draw_slice,
    hu_window,
    label_colors,
    mm_axes,
    no_axes,
    outline,
    plot_edit,
    plot_orthogonal,
    plot_slice_grid,
    slice_extent,
    slice_position,
    take_slice,
    wrap_columns,
)
from .viewers import itk_viewer, show, slice_viewer, volume_viewer_3d

__all__ = [
    "panel_grid",
    "plot_class_fractions",
    "plot_class_histograms",
    "plot_class_values",
    "plot_factor_histograms",
    "plot_grouped_bars",
    "plot_split",
    "plot_training_log",
    "plot_within_map_spread",
    "AXIS_NAMES",
    "MAX_COLUMNS",
    "NORMALISED",
    "VIEWS",
    "add_class_legend",
    "add_colorbar",
    "as_3d",
    "class_colors",
    "draw_slice",
    "hu_window",
    "label_colors",
    "mm_axes",
    "no_axes",
    "outline",
    "plot_edit",
    "plot_orthogonal",
    "plot_slice_grid",
    "slice_extent",
    "slice_position",
    "take_slice",
    "wrap_columns",
    "itk_viewer",
    "show",
    "slice_viewer",
    "volume_viewer_3d",
]
