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
    assert m["n_cases"] == 9
    assert m["n_train"] + m["n_val"] + m["n_test"] == 9 and min(m["n_train"], m["n_val"], m["n_test"]) >= 1
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


def test_02_vqgan(smoke_run):
    m = smoke_run.read_metrics()["02_vqgan"]
    for key in ("psnr", "ssim", "baseline_psnr", "codebook_usage", "decoder", "seconds"):
        assert key in m, key
    assert m["decoder"] == "spade" and set(m["decoders"]) == {"spade", "normal"}
    assert np.isfinite(m["psnr"]) and 0 < m["codebook_usage"] <= 1
    assert (smoke_run.vqgan / "model" / "config.json").exists()
    assert (smoke_run.figures / "02_reconstruction.png").exists()


def test_03_diffusion(smoke_run):
    m = smoke_run.read_metrics()["03_diffusion"]
    assert np.isfinite(m["final_loss"]) and m["seconds"] > 0 and m["steps"] == 6
    assert (smoke_run.pipeline / "model_index.json").exists()
    assert len(list((smoke_run.root / "diffusion").glob("samples-*.npz"))) == 2


def test_04_synthesis(smoke_run):
    m = smoke_run.read_metrics()["04_synthesis"]
    classes = smoke_run.read_metrics()["01_preprocessing"]["classes"]
    assert set(m["class_intensity_error"]) <= set(classes) and "background" in m["class_intensity_error"]
    assert np.isclose(m["class_intensity_error_mean"], np.mean(list(m["class_intensity_error"].values())))
    assert {"ddim-3", "unipc-2"} <= set(m["seconds_per_volume"])
    assert set(m["guidance_error"]) == {"0.0", "1.0", "2.0"}
    split = json.loads((smoke_run.data / "split.json").read_text())
    samples = sorted(smoke_run.samples.glob("*.nii.gz"))
    assert [p.name for p in samples] == [f"{c}_syn0.nii.gz" for c in split["test"][:2]]
    for path in samples:  # the synthetic volume sits on its label map's grid
        case = path.name[: -len("_syn0.nii.gz")]
        np.testing.assert_allclose(nib.load(path).affine, nib.load(smoke_run.data / "labels" / f"{case}.nii.gz").affine, atol=1e-5)


def test_05_evaluation(smoke_run):
    m = smoke_run.read_metrics()["05_evaluation"]
    split = json.loads((smoke_run.data / "split.json").read_text())
    for key in ("dice_real_train", "dice_real_test", "dice_synthetic", "dice_augmented", "ssim"):
        assert 0 <= m[key] <= 1, key
    assert m["dice_ratio"] == pytest.approx(m["dice_synthetic"] / m["dice_real_test"])
    assert np.isfinite(m["psnr"]) and m["rmse"] > 0 and m["fd_seg"] >= 0 and m["seconds"] > 0
    assert m["fid"] is None and m["fid_3d"] is None and m["lpips"] is None  # no weights given
    assert set(m["skipped"]) == {"fid_2d", "fid_3d", "lpips"}
    assert 0 <= m["privacy_flagged"] <= m["n_test"] == 2
    classes = smoke_run.read_metrics()["01_preprocessing"]["classes"]
    assert set(m["dice_per_class"]["synthetic"]) == set(classes[1:])
    folder = smoke_run.samples / "eval" / "ddim-3-g1-s0"
    assert sorted(p.name for p in (folder / "test").iterdir()) == [f"{c}_syn0.nii.gz" for c in sorted(split["test"][:2])]
    assert len(list((folder / "train").iterdir())) == len(split["train"])
    for name in ("05_real_vs_synthetic", "05_dice_per_class", "05_segmentation", "05_privacy"):
        assert (smoke_run.figures / f"{name}.png").stat().st_size > 1000


def test_evaluate_cli_gives_the_notebooks_numbers(smoke_run, capsys):
    """``medlsdm evaluate`` reuses notebook 05's synthetic volumes and repeats its steps."""
    from medlsdm.cli import main

    notebook = smoke_run.read_metrics()["05_evaluation"]
    assert main(["evaluate", "--run-dir", str(smoke_run.root), "--profile", "smoke"]) == 0
    cli = smoke_run.read_metrics()["05_evaluation"]
    out = capsys.readouterr().out
    assert "| dataset | decoder | #channels | FID" in out and "| class |" in out
    for key in ("ssim", "psnr", "rmse", "nmse"):  # same files, same numbers
        assert cli[key] == pytest.approx(notebook[key], rel=1e-6), key
    for key in ("dice_real_test", "dice_synthetic", "dice_augmented"):  # same seed (thread counts may differ)
        assert cli[key] == pytest.approx(notebook[key], abs=0.02), key
    assert cli["settings"] == notebook["settings"]


def test_every_notebook_wrote_its_declared_metrics_key(smoke_run):
    from medlsdm.profiles import METRICS_KEYS

    assert set(smoke_run.read_metrics()) == set(METRICS_KEYS.values())


def test_sweep_of_notebook_04_on_a_finished_run(smoke_run):
    """The issue's sweep, on a real run: one executed notebook and one CSV row per value."""
    import csv

    from medlsdm.cli import main

    before = smoke_run.read_metrics()
    assert main(["sweep", "--only", "04", "-p", "guidance_scale=0,2", "--run-dir", str(smoke_run.root),
                 "--profile", "smoke"]) == 0
    assert smoke_run.read_metrics() == before
    with open(smoke_run.root / "sweeps" / "04_synthesis.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["guidance_scale"]) for r in rows] == [0.0, 2.0]
    assert all(float(r["class_intensity_error_mean"]) >= 0 for r in rows)
    assert (smoke_run.root / "sweeps" / "04_synthesis.png").stat().st_size > 1000


def test_06_cardiac_2d(smoke_run):
    m = smoke_run.read_metrics()["06_cardiac_2d"]
    assert set(m["ablation"]) == {"edges", "semantic", "edges+semantic"}
    for mode, row in m["ablation"].items():
        for key in ("ssim", "nmse", "fd_seg"):
            assert np.isfinite(row[key]), (mode, key)
        assert -1 <= row["ssim"] <= 1 and row["nmse"] >= 0 and row["fd_seg"] >= 0
    assert np.isfinite(m["reconstruction"]["ssim"]) and m["fid"].startswith("skipped")
    assert m["seconds"] > 0 and m["steps"]["ldm"] == 4 and m["n_test_slices"] >= 1
    cardiac = smoke_run.root / "cardiac"  # everything under RUN/cardiac, next to (not in) the 3-D run's folders
    assert (cardiac / "data" / "slices.h5").exists() and (cardiac / "vqgan" / "model" / "config.json").exists()
    for slug in ("edges", "semantic", "edges_semantic"):
        assert (cardiac / "ldm" / slug / "pipeline" / "model_index.json").exists()
    for name in ("06_slices_and_edges", "06_edge_sigma", "06_reconstructions", "06_condition_channels", "06_samples"):
        assert (smoke_run.figures / f"{name}.png").stat().st_size > 1000
