"""Figures and the orthogonal-slice viewer."""

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
from matplotlib.collections import Collection
from matplotlib.figure import Figure

from medlsdm import viz


def panels(fig):
    """The figure's panels (grid cells), without its colour bars."""
    return [ax for ax in fig.axes if ax.get_subplotspec() is not None]


def rows_of(fig):
    """Panels that show something, grouped by the grid row they sit in."""
    rows = {}
    for ax in panels(fig):
        if ax.images:
            rows.setdefault(ax.get_subplotspec().rowspan.start, []).append(ax)
    return [rows[r] for r in sorted(rows)]


def contours(ax):
    return [c for c in ax.collections if isinstance(c, Collection) and type(c).__name__ == "QuadContourSet"]


def colorbar_labels(fig):
    return [ax.get_ylabel() for ax in fig.axes if ax.get_subplotspec() is None]


def legend_texts(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (8, 12, 16)).astype(np.float32)
    label = np.zeros((8, 12, 16), dtype=np.int64)
    label[2:6, 3:9, 4:12] = 2
    return image, label


def test_take_slice_axes_and_flip(volume):
    image, _ = volume
    assert viz.take_slice(image, "axial").shape == (12, 16)
    assert viz.take_slice(image, "coronal").shape == (8, 16)
    assert viz.take_slice(image, "sagittal", 3).shape == (8, 12)
    # rows flipped so the last row index (anterior / superior) is drawn on top
    np.testing.assert_array_equal(viz.take_slice(image, "axial", 1)[0], image[1, -1])


def test_label_colors_background_transparent():
    colors = viz.label_colors(4)
    assert colors.shape == (4, 4) and colors[0, 3] == 0 and (colors[1:, 3] == 1).all()


def test_static_fallback_and_widget(volume):
    image, label = volume
    fig = viz.slice_viewer({"a": (image, label)}, interactive=False, num_classes=3)
    assert isinstance(fig, Figure) and len(panels(fig)) == 3 and colorbar_labels(fig) == ["intensity (normalised)"]
    box = viz.slice_viewer(
        {"real": (image, label), "synthetic": (-image, label)}, interactive=True, num_classes=3, spacing=(2, 1, 1)
    )
    sliders = box.children[0].children
    img = box.children[2]
    first = img.value
    assert first[:4] == b"\x89PNG"
    sliders[0].value = 1  # move the axial slider: the picture must change
    assert img.value != first
    toggle = box.children[1]
    before = img.value
    toggle.value = False
    assert img.value != before


def test_histograms_and_fractions(volume):
    """What the figures draw, not only that they are figures."""
    image, label = volume  # classes 0 and 2 only
    ax = viz.plot_class_histograms([image], [label], ["bg", "a", "b"]).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["bg", "b"]  # an absent class gets no curve
    assert len(ax.patches) == 2 and not ax.child_axes
    ax = viz.plot_class_histograms([image], [label], ["bg", "a", "b"], hu=(-1000.0, 1000.0)).axes[0]
    (top,) = ax.child_axes  # an HU scale over the normalised one: -1 … 1 reads -1000 … 1000
    assert top.get_xlabel() == "HU" and ax.get_xlabel() == "intensity (normalised)"
    ax.figure.canvas.draw()  # a secondary axis takes its limits when drawn
    np.testing.assert_allclose(top.get_xlim(), np.array(ax.get_xlim()) * 1000.0)
    ax = viz.plot_class_fractions(np.array([[10, 0, 5], [8, 1, 6]]), ["bg", "a", "b"]).axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, [(10 / 15 + 8 / 15) / 2, (0 + 1 / 15) / 2, (5 / 15 + 6 / 15) / 2], rtol=1e-12)
    ax = viz.plot_split(
        {"train": ["x", "y"], "val": ["z"], "test": ["w"]}, {"x": "p1", "y": "p1", "z": "p2", "w": "p3"}
    ).axes[0]
    assert [bar.get_height() for bar in ax.patches] == [2, 1, 1, 1, 1, 1]  # cases, then patients per split
    assert [t.get_text() for t in ax.get_xticklabels()] == ["train", "val", "test"]


def test_plot_slice_grid_volumes_and_2d_slices(volume):
    """A 2-D slice is a one-slice volume: drawn like an axial slice (rows flipped), with
    its row's own value window; labels are drawn on every row (a light fill and contours)."""
    image, label = volume
    rows = {"volume": [image, image[None]], "slice": [image[3], image[3][None]]}
    fig = viz.plot_slice_grid(rows, labels=[label, label[3]], ranges={"slice": (0.0, 0.5)}, num_classes=3)
    axes = panels(fig)
    assert len(axes) == 4
    for ax in axes[:2]:  # central axial slice of (D, H, W) and (1, D, H, W), label overlay drawn
        np.testing.assert_array_equal(ax.images[0].get_array(), image[4, ::-1])
        assert ax.images[0].get_clim() == (-1.0, 1.0) and len(ax.images) == 2 and len(contours(ax)) == 1
    for ax in axes[2:]:  # (H, W) and (1, H, W): the slice itself, flipped like any axial slice
        np.testing.assert_array_equal(ax.images[0].get_array(), image[3, ::-1])
        assert ax.images[0].get_clim() == (0.0, 0.5) and len(contours(ax)) == 1
    # two windows: two colour bars, each beside its own row
    assert colorbar_labels(fig) == ["intensity (normalised)"] * 2
    fig = viz.plot_slice_grid({"a": [image[3]]}, vmin=0.0, vmax=2.0)  # no range for the row: vmin … vmax
    assert panels(fig)[0].images[0].get_clim() == (0.0, 2.0)


def test_slice_grid_wraps_at_six_panels_a_row_with_contours_on_every_row(volume):
    """12 cases × (real, synthetic) become two blocks of 6 columns; every row carries the
    label contours, the column titles follow their cases, one colour bar serves all rows."""
    image, label = volume
    ids = [f"case_{i}" for i in range(12)]
    fig = viz.plot_slice_grid(
        {"real": [image] * 12, "synthetic": [-image] * 12},
        col_titles=ids,
        labels=[label] * 12,
        class_names=["background", "organ", "tumour"],
        spacing=(6.0, 5.5, 4.0),
    )
    rows = rows_of(fig)
    assert [len(r) for r in rows] == [6, 6, 6, 6]
    assert all(len(contours(ax)) == 1 for r in rows for ax in r)
    titles = [ax.get_title() for r in rows for ax in r if ax.get_title()]
    assert titles == ids  # block 1: cases 0-5 over real and synthetic, block 2: cases 6-11
    np.testing.assert_array_equal(rows[1][0].images[0].get_array(), -image[4, ::-1])  # block 1's second row: synthetic
    assert colorbar_labels(fig) == ["intensity (normalised)"]
    assert legend_texts(fig) == ["tumour"]  # only the classes drawn, background never
    assert viz.wrap_columns(12) == (2, 6) and viz.wrap_columns(8) == (2, 4) and viz.wrap_columns(6) == (1, 6)
    fig = viz.plot_slice_grid({"edges": [image] * 8}, ranges={"edges": (0, 1)})
    assert [len(r) for r in rows_of(fig)] == [4, 4]


def test_slice_grid_axes_in_mm_and_contours_where_the_labels_are(volume):
    """With a spacing, the axes read in mm over the slice's physical extent; the contour lies
    on the label's border in those coordinates."""
    image, label = volume  # class 2 at h 3..8, w 4..11
    fig = viz.plot_slice_grid(
        {"real": [image], "synthetic": [image]}, labels=[label], spacing=(6.0, 5.0, 2.0), class_names=["bg", "a", "b"]
    )
    top, bottom = rows_of(fig)
    assert top[0].get_ylabel() == "real\ny (mm)" and bottom[0].get_ylabel() == "synthetic\ny (mm)"
    assert bottom[0].get_xlabel() == "x (mm)" and top[0].get_xlabel() == ""  # the x label under the grid only
    assert top[0].images[0].get_extent() == [0.0, 16 * 2.0, 0.0, 12 * 5.0]
    (path,) = contours(top[0])[0].get_paths()
    x, y = path.vertices.T
    # the box w 4..11 (voxel edges at 4 and 12 × 2 mm) and h 3..8 (edges 3 and 9 × 5 mm); the
    # contour runs through the pixel centres next to the edges, half a pixel inside at most
    assert x.min() >= 4 * 2.0 and x.max() <= 12 * 2.0 and x.min() <= 4 * 2.0 + 1.0 and x.max() >= 12 * 2.0 - 1.0
    assert y.min() >= 3 * 5.0 and y.max() <= 9 * 5.0 and y.min() <= 3 * 5.0 + 2.5 and y.max() >= 9 * 5.0 - 2.5


def test_orthogonal_legend_colorbars_in_hu_and_mm(volume):
    """Raw in HU beside preprocessed (normalised, with an HU scale from the window), each row
    with its colour bar; the label fill is light enough to see the image (alpha ≤ 0.2), with
    contours; a class legend names the classes drawn."""
    image, label = volume
    fig = viz.plot_orthogonal(
        {"raw": (image * 1000, label), "preprocessed": (image, label)},
        spacing=(6.0, 5.5, 5.5),
        window={"raw": (-1000, 1000)},
        class_names=["background", "liver", "lesion"],
        units={"raw": "HU"},
        hu=(-1000.0, 1000.0),
    )
    rows = rows_of(fig)
    assert [len(r) for r in rows] == [3, 3]
    assert [ax.get_xlabel() for ax in rows[0]] == ["x (mm)", "x (mm)", "y (mm)"]
    assert [ax.get_ylabel() for ax in rows[0]] == ["y (mm)", "z (mm)", "z (mm)"]
    assert all(len(contours(ax)) == 1 and ax.images[1].get_array()[..., 3].max() <= 0.2 for r in rows for ax in r)
    assert colorbar_labels(fig) == ["HU", "intensity (normalised)"]
    bars = [ax for ax in fig.axes if ax.get_subplotspec() is None]
    (hu_scale,) = bars[1].child_axes  # the normalised bar's HU scale: -1 … 1 reads -1000 … 1000 HU
    assert hu_scale.get_ylabel() == "HU" and not bars[0].child_axes
    fig.canvas.draw()
    np.testing.assert_allclose(hu_scale.get_ylim(), np.array(bars[1].get_ylim()) * 1000.0)
    assert legend_texts(fig) == ["lesion"]
    fig = viz.plot_orthogonal({"a": (image, label)}, overlay=False, class_names=["background", "liver", "lesion"])
    assert not fig.legends and not any(contours(ax) for ax in panels(fig))
    # real and reconstruction share one bar; the error row has its own colours, unit and bar
    fig = viz.plot_orthogonal(
        {"real": (image, None), "reconstruction": (image, None), "|error|": (image * 0, None)},
        window={"|error|": (0, 0.5)},
        cmap={"|error|": "magma"},
        units={"|error|": "|error|"},
    )
    assert colorbar_labels(fig) == ["intensity (normalised)", "|error|"]
    assert rows_of(fig)[2][0].images[0].get_cmap().name == "magma"


def test_plot_edit_outlines_the_region_and_shows_the_difference(volume):
    image, _ = volume
    mask = np.zeros(image.shape, bool)
    mask[3:5, 5:7, 6:9] = True
    after = np.where(mask, image + 0.05, image)
    fig = viz.plot_edit(image, after, mask, centre=(4, 6, 7), spacing=(6.0, 5.5, 5.5), hu=(-1000.0, 1000.0), zoom_mm=20)
    rows = rows_of(fig)
    assert [ax.get_title() for ax in rows[2]] == [f"after − before — {v}" for v in viz.VIEWS]
    assert all(len(contours(ax)) == 1 for r in rows for ax in r)  # the region outlined on every panel
    diff = rows[2][0].images[0]
    np.testing.assert_allclose(diff.get_array(), (after - image)[4, ::-1], atol=1e-7)
    lo, hi = diff.get_clim()
    assert lo == -hi and hi == pytest.approx(0.05, rel=1e-5) and diff.get_cmap().name == "RdBu_r"
    assert colorbar_labels(fig) == ["intensity (normalised)", "after − before (normalised)"]
    assert legend_texts(fig) == ["inserted lesion"]
    x, y = viz.slice_position((4, 6, 7), "axial", (6.0, 5.5, 5.5))  # the zoom is centred on the region
    assert rows[0][0].get_xlim() == (x - 20, x + 20) and rows[0][0].get_ylim() == (y - 20, y + 20)
    # the grey window: the local percentiles of before and after, in the box of half the zoom, ±10 mm rounded
    # outwards (±1.7 slices of 6 mm about slice 4: 2..5; ±1.8 rows and columns of 5.5 mm about 6 and 7: 4..7, 5..8)
    box = (slice(2, 6), slice(4, 8), slice(5, 9))
    expected = np.percentile(np.concatenate([image[box].ravel(), after[box].ravel()]), [1, 99])
    np.testing.assert_allclose(rows[0][0].images[0].get_clim(), expected, rtol=1e-6)
    assert rows[1][0].images[0].get_clim() == rows[0][0].images[0].get_clim()
    fig = viz.plot_edit(image, after, mask, centre=(4, 6, 7), window=(-1.0, 1.0))  # voxels, the window given
    assert rows_of(fig)[0][0].images[0].get_clim() == (-1.0, 1.0) and rows_of(fig)[0][0].get_xlabel() == ""


def test_class_values_every_bar_visible_and_labelled():
    """The background bar is black, not transparent (nor tab10's grey, the 8th class's colour);
    every bar carries its value, 0 included."""
    fig = viz.plot_class_values(
        {"background": 0.0, "liver": 0.02, "lesion": 0.05}, ["background", "liver", "lesion"], ylabel="|Δ mean|"
    )
    ax = fig.axes[0]
    assert [bar.get_facecolor()[3] for bar in ax.patches] == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(ax.patches[0].get_facecolor()[:3], (0.0, 0.0, 0.0))
    assert len({tuple(c) for c in viz.class_colors(10)}) == 10  # ten classes, ten colours
    np.testing.assert_allclose(ax.patches[2].get_facecolor()[:3], viz.label_colors(3)[2][:3])
    assert [t.get_text() for t in ax.texts] == ["0.000", "0.020", "0.050"]


def test_per_factor_panels_wrap_at_six():
    factors = [f"f{i}" for i in range(8)]
    estimates = {s: {f: list(np.arange(4.0) + i) for i, f in enumerate(factors)} for s in ("oracle", "synthetic")}
    fig = viz.plot_factor_histograms(estimates, factors)
    per_row = {}
    for ax in fig.axes:
        if ax.get_visible() and ax.axison:
            per_row[ax.get_subplotspec().rowspan.start] = per_row.get(ax.get_subplotspec().rowspan.start, 0) + 1
    assert per_row == {0: 4, 1: 4}
    assert [ax.get_title() for ax in fig.axes if ax.axison] == factors


def test_plot_training_log_one_run_and_several(tmp_path):
    logs = {}
    for name, scale in (("a", 1.0), ("b", 2.0)):
        logs[name] = tmp_path / f"{name}.csv"
        logs[name].write_text("step,loss,lr\n1,%g,0.1\n2,,0.1\n3,%g,0.2\n" % (scale, scale / 2))
    fig = viz.plot_training_log(logs, ["loss"], ylabel="MSE")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["a", "b"] and ax.get_ylabel() == "MSE"
    np.testing.assert_array_equal(ax.lines[1].get_xdata(), [1, 3])  # the empty entry is skipped
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [2.0, 1.0], rtol=0)
    fig = viz.plot_training_log(logs["a"], ["loss", "lr"], log_y=False)  # one file: curves named by column
    assert [line.get_label() for line in fig.axes[0].lines] == ["loss", "lr"] and fig.axes[0].get_yscale() == "linear"
    fig = viz.plot_training_log(logs, ["loss", "lr"])
    assert [line.get_label() for line in fig.axes[0].lines] == ["a: loss", "a: lr", "b: loss", "b: lr"]


def test_slice_viewer_browses_a_stack_of_2d_slices():
    rng = np.random.default_rng(1)
    stack = rng.uniform(-1, 1, (5, 12, 16)).astype(np.float32)
    labels = rng.integers(0, 3, (5, 12, 16))
    rows = {"real": (stack, labels), "edges": ((stack > 0).astype(np.float32), None)}
    box = viz.slice_viewer(rows, views=("axial",), window={"edges": (0, 1)}, num_classes=3)
    (slider,) = box.children[0].children  # one slider: the slice index
    assert (slider.min, slider.max, slider.value) == (0, 4, 2)
    img = box.children[2]
    first = img.value
    slider.value = 0
    assert img.value != first and img.value[:4] == b"\x89PNG"
    fig = viz.slice_viewer(rows, views=("axial",), window={"edges": (0, 1)}, interactive=False)
    axes = panels(fig)
    assert len(axes) == 2  # one column: rows only
    np.testing.assert_array_equal(axes[0].images[0].get_array(), stack[2, ::-1])
    assert axes[0].images[0].get_clim() == (-1.0, 1.0) and axes[1].images[0].get_clim() == (0.0, 1.0)


def test_plot_within_map_spread_puts_each_value_at_its_map():
    estimates = {"oracle": {"bone": [0.1, 0.5, 0.2, 0.6]}, "synthetic": {"bone": [0.3, 0.3, 0.4, 0.4, 0.4, 0.4]}}
    fig = viz.plot_within_map_spread(estimates, {"oracle": 2, "synthetic": 3}, ["bone"])
    ax = fig.axes[0]
    oracle, synthetic = (line.get_xdata() for line in ax.get_lines())
    assert np.allclose(np.round(oracle), [0, 0, 1, 1]) and np.allclose(np.round(synthetic), [0, 0, 0, 1, 1, 1])
    assert [line.get_label() for line in ax.get_lines()] == ["oracle", "synthetic"]
