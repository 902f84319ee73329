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
