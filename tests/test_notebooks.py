"""Every notebook executed headless with papermill on the ``smoke`` profile, results read back.

One run directory for the whole module: the notebooks run in order through the real runner
(the same code path as ``medlsdm run``), then each test checks one notebook's outputs.
"""
import json

import nibabel as nib
import numpy as np
import pytest

from medlsdm.rundir import RunDir
from medlsdm.runner import find_notebooks, run_notebooks

pytestmark = pytest.mark.notebook


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run = RunDir(tmp_path_factory.mktemp("smoke_run"))
    executed = run_notebooks("smoke", run.root)
    assert [p.name for p in executed] == [p.name for p in find_notebooks()]
    return run


def _outputs(path):
    nb = json.loads(path.read_text())
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def test_executed_notebooks_have_no_errors_and_show_figures(smoke_run):
    for path in sorted(smoke_run.executed.glob("*.ipynb")):
        outputs = _outputs(path)
        assert not [o for o in outputs if o["output_type"] == "error"], path
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} shows no figure"


def test_01_preprocessing(smoke_run):
    m = smoke_run.read_metrics()["01_preprocessing"]
    assert m["n_cases"] == 6
    assert m["n_train"] + m["n_val"] + m["n_test"] == 6 and min(m["n_train"], m["n_val"], m["n_test"]) >= 1
    assert m["block_shape"] == [16, 32, 32]
    assert m["seconds"] > 0
    assert abs(sum(m["class_fraction"].values()) - 1) < 1e-6
    manifest = json.loads((smoke_run.data / "manifest.json").read_text())
    split = json.loads((smoke_run.data / "split.json").read_text())
    assert sorted(sum(split.values(), [])) == sorted(c["case_id"] for c in manifest["cases"])
    for case in manifest["cases"]:
        img = nib.load(smoke_run.data / case["image"])
        lab = nib.load(smoke_run.data / case["label"])
        assert np.allclose(img.affine, lab.affine)
        data = np.asarray(img.dataobj)
        assert data.shape == (32, 32, 16)  # (x, y, z) on disk = (W, H, D)
        assert data.min() >= -1 and data.max() <= 1
        assert np.asarray(lab.dataobj).max() < len(m["classes"])
    for name in ("01_raw_vs_preprocessed", "01_class_histograms", "01_class_fractions", "01_split"):
        assert (smoke_run.figures / f"{name}.png").stat().st_size > 1000
