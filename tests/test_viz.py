"""Figures and the orthogonal-slice viewer."""
import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
from matplotlib.figure import Figure

from medlsdm import viz


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
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    box = viz.slice_viewer({"real": (image, label), "synthetic": (-image, label)}, interactive=True, num_classes=3, spacing=(2, 1, 1))
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
    assert len(ax.patches) == 2
    ax = viz.plot_class_fractions(np.array([[10, 0, 5], [8, 1, 6]]), ["bg", "a", "b"]).axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    np.testing.assert_allclose(heights, [(10 / 15 + 8 / 15) / 2, (0 + 1 / 15) / 2, (5 / 15 + 6 / 15) / 2], rtol=1e-12)
    ax = viz.plot_split({"train": ["x", "y"], "val": ["z"], "test": ["w"]}, {"x": "p1", "y": "p1", "z": "p2", "w": "p3"}).axes[0]
    assert [bar.get_height() for bar in ax.patches] == [2, 1, 1, 1, 1, 1]  # cases, then patients per split
    assert [t.get_text() for t in ax.get_xticklabels()] == ["train", "val", "test"]


def test_plot_slice_grid_volumes_and_2d_slices(volume):
    """A 2-D slice is a one-slice volume: drawn like an axial slice (rows flipped), with
    its row's own grey-value window; labels overlay the first row only."""
    image, label = volume
    rows = {"volume": [image, image[None]], "slice": [image[3], image[3][None]]}
    fig = viz.plot_slice_grid(rows, labels=[label, label], ranges={"slice": (0.0, 0.5)}, num_classes=3)
    axes = fig.axes
    assert len(axes) == 4
    for ax in axes[:2]:  # central axial slice of (D, H, W) and (1, D, H, W), label overlay drawn
        np.testing.assert_array_equal(ax.images[0].get_array(), image[4, ::-1])
        assert ax.images[0].get_clim() == (-1.0, 1.0) and len(ax.images) == 2
    for ax in axes[2:]:  # (H, W) and (1, H, W): the slice itself, flipped like any axial slice
        np.testing.assert_array_equal(ax.images[0].get_array(), image[3, ::-1])
        assert ax.images[0].get_clim() == (0.0, 0.5) and len(ax.images) == 1
    fig = viz.plot_slice_grid({"a": [image[3]]}, vmin=0.0, vmax=2.0)  # no range for the row: vmin … vmax
    assert fig.axes[0].images[0].get_clim() == (0.0, 2.0)


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
    assert len(fig.axes) == 2  # one column: rows only
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), stack[2, ::-1])
    assert fig.axes[0].images[0].get_clim() == (-1.0, 1.0) and fig.axes[1].images[0].get_clim() == (0.0, 1.0)


def test_plot_within_map_spread_puts_each_value_at_its_map():
    estimates = {"oracle": {"bone": [0.1, 0.5, 0.2, 0.6]}, "synthetic": {"bone": [0.3, 0.3, 0.4, 0.4, 0.4, 0.4]}}
    fig = viz.plot_within_map_spread(estimates, {"oracle": 2, "synthetic": 3}, ["bone"])
    ax = fig.axes[0]
    oracle, synthetic = (line.get_xdata() for line in ax.get_lines())
    assert np.allclose(np.round(oracle), [0, 0, 1, 1]) and np.allclose(np.round(synthetic), [0, 0, 0, 1, 1, 1])
    assert [line.get_label() for line in ax.get_lines()] == ["oracle", "synthetic"]
