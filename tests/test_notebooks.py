"""Every notebook executed headless with papermill on the ``smoke`` profile, results read back.

The run is the session's ``smoke_run`` (``conftest.py``): the notebooks run once, in order,
through the real runner; each test here checks one notebook's outputs against the numbers
of ``PROFILES["smoke"]`` (never a copy of them). Tests that write into the run work on a copy.
"""

import json

import nbformat
import nibabel as nib
import numpy as np
import pytest
from notebook_utils import effective_parameters, error_outputs, unexecuted_cells

from medlsdm.data.prepare import load_manifest
from medlsdm.profiles import METRICS_KEYS, NOTEBOOKS, PROFILES
from medlsdm.runner import find_notebooks

pytestmark = pytest.mark.notebook

#: What each notebook ran with in the smoke run: its parameters cell under PROFILES["smoke"].
P = {key: effective_parameters("smoke", key) for key in NOTEBOOKS}


def _outputs(path):
    nb = json.loads(path.read_text())
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def test_every_notebook_ran_every_cell_with_the_smoke_parameters(smoke_run):
    """What papermill leaves: every code cell executed, no error output, the profile's values
    in the injected parameters, and at least one figure."""
    executed = sorted(smoke_run.executed.glob("*.ipynb"))
    assert [p.name for p in executed] == [p.name for p in find_notebooks()]
    for path in executed:
        assert not error_outputs(path), "\n".join(error_outputs(path))
        assert not unexecuted_cells(path), f"{path.name}: cells {unexecuted_cells(path)} did not run"
        key = path.name[:2]
        injected = json.loads(path.read_text())["metadata"]["papermill"]["parameters"]
        expected = {**PROFILES["smoke"].get(key, {}), "profile": "smoke", "run_dir": str(smoke_run.root)}
        if key == "01":
            expected["interactive"] = True  # see the smoke_run fixture
        assert injected == expected, path.name
        assert any("image/png" in o.get("data", {}) for o in _outputs(path)), f"{path.name} shows no figure"


def test_every_notebook_explains_its_numbers(smoke_run):
    """Each notebook shows at least one "What this shows" paragraph after a measured section and
    ends with a Takeaways cell (written by medlsdm.interpret*, from the numbers it measured)."""
    for path in sorted(smoke_run.executed.glob("*.ipynb")):
        shown = ["".join(o["data"]["text/markdown"]) for o in _outputs(path) if "text/markdown" in o.get("data", {})]
        assert any(text.startswith("**What this shows.**") for text in shown), f"{path.name} interprets no section"
        assert shown and shown[-1].startswith("**Takeaways**"), f"{path.name} does not end with its takeaways"


def test_the_notebook_checks_see_an_error_and_a_skipped_cell(tmp_path):
    """Negative control of the helpers above: a notebook as papermill leaves it after a failure."""
    nb = nbformat.v4.new_notebook()
    ok = nbformat.v4.new_code_cell("x = 1", execution_count=1)
    bad = nbformat.v4.new_code_cell("load(data_root)\nmore()", execution_count=2)
    bad.outputs = [
        nbformat.v4.new_output(
            "error",
            ename="FileNotFoundError",
            evalue="/missing",
            traceback=["\x1b[0;31mTraceback\x1b[0m", "FileNotFoundError: /missing"],
        )
    ]
    nb.cells = [ok, bad, nbformat.v4.new_code_cell("after = 2")]
    nbformat.write(nb, tmp_path / "01_x.ipynb")
    (error,) = error_outputs(tmp_path / "01_x.ipynb")
    assert "01_x.ipynb, In [2] `load(data_root)`: FileNotFoundError: /missing" in error
    assert "\x1b" not in error and error.endswith("FileNotFoundError: /missing")
    assert unexecuted_cells(tmp_path / "01_x.ipynb") == [2]


def test_01_preprocessing(smoke_run):
    p = P["01"]
    m = smoke_run.read_metrics()["01_preprocessing"]
    assert m["n_cases"] == p["n_cases"]
    assert m["n_train"] + m["n_val"] + m["n_test"] == p["n_cases"] and min(m["n_train"], m["n_val"], m["n_test"]) >= 1
    assert m["block_shape"] == p["block_shape"]
    assert abs(sum(m["class_fraction"].values()) - 1) < 1e-6
    assert 0 < m["painting_r2"] < 1  # hidden factors: the label map does not fix the image
    manifest = load_manifest(smoke_run.data)
    split = json.loads((smoke_run.data / "split.json").read_text())
    assert sorted(sum(split.values(), [])) == sorted(c.case_id for c in manifest.cases)
    for case in manifest.cases:
        img = nib.load(smoke_run.data / case.image)
        lab = nib.load(smoke_run.data / case.label)
        np.testing.assert_allclose(img.affine, lab.affine, atol=1e-6)  # one grid (float32 header)
        np.testing.assert_allclose(np.sqrt((img.affine[:3, :3] ** 2).sum(0)), p["spacing"][::-1], rtol=1e-5)
        data = np.asarray(img.dataobj)
        assert data.shape == tuple(p["block_shape"][::-1])  # (x, y, z) on disk = (W, H, D)
        assert data.min() >= -1 and data.max() <= 1
        assert np.asarray(lab.dataobj).max() < len(m["classes"])
    for name in ("01_raw_vs_preprocessed", "01_class_histograms", "01_class_fractions", "01_split", "01_painting"):
        assert (smoke_run.figures / f"{name}.png").stat().st_size > 1000


def _painting_residual_psnr(run):
    """Notebook 02's "painting + pooled residual" baseline recomputed from the run's data alone:
    each validation voxel painted with its class's mean training intensity, plus the residual
    average-pooled by the VQ-GAN's factor and upsampled trilinearly; PSNR (data range 2) inside
    the body (label > 0), averaged over the validation cases."""
    import torch
    import torch.nn.functional as F

    from medlsdm.data.store import CaseStore, stack_cases
    from medlsdm.models import VQGAN

    split = json.loads(run.split_path.read_text())
    factor = VQGAN.from_pretrained(run.vqgan / "model").downsample_factor
    with CaseStore(run.store_path) as store:
        train_images, train_labels, _ = stack_cases(store, split["train"])
        images, labels, _ = stack_cases(store, split["val"])
    k = int(max(train_labels.max(), labels.max())) + 1
    sums = np.bincount(train_labels.ravel(), weights=train_images[:, 0].ravel().astype(np.float64), minlength=k)
    means = sums / np.maximum(np.bincount(train_labels.ravel(), minlength=k), 1)
    painted = means[labels][:, None].astype(np.float32)
    residual = torch.as_tensor(images - painted)
    pooled = F.interpolate(
        F.avg_pool3d(residual, factor), size=residual.shape[2:], mode="trilinear", align_corners=False
    )
    out = painted + pooled.numpy()
    body = labels > 0
    mse = [np.mean((images[i, 0][body[i]].astype(np.float64) - out[i, 0][body[i]]) ** 2) for i in range(len(images))]
    return float(np.mean([10 * np.log10(4.0 / e) for e in mse]))


def test_02_vqgan(smoke_run):
    from medlsdm.models import VQGAN

    p = P["02"]
    m = smoke_run.read_metrics()["02_vqgan"]
    assert m["decoder"] == p["decoder_type"]
    assert set(m["decoders"]) == ({"spade", "normal"} if p["compare_decoder"] else {p["decoder_type"]})
    assert np.isfinite(m["psnr"]) and np.isfinite(m["baseline_psnr"]) and -1 <= m["ssim"] <= 1
    assert 0 < m["codebook_usage"] <= 1
    assert m["held_out_split"] == "val" and m["n_held_out"] == smoke_run.read_metrics()["01_preprocessing"]["n_val"]
    assert set(m["latent_ablation"]) == {"own", "other", "random", "own_minus_other"}
    assert all(np.isfinite(v) for v in m["latent_ablation"].values())
    assert set(m["body"]) == {"VQ-GAN", "average-pool", "painting", "painting + pooled residual"}
    assert m["painting_residual_psnr"] == pytest.approx(_painting_residual_psnr(smoke_run), rel=1e-4)
    assert set(m["texture"]) == {"noise_ratio", "hf_power_ratio"} and all(np.isfinite(v) for v in m["texture"].values())
    model = VQGAN.from_pretrained(smoke_run.vqgan / "model")  # the model the profile asked for
    assert list(model.config.channels) == p["channels"] and model.config.decoder_type == p["decoder_type"]
    assert model.config.num_embeddings == p["num_embeddings"] and model.config.embedding_dim == p["embedding_dim"]
    for name in ("02_reconstruction", "02_latent_ablation"):
        assert (smoke_run.figures / f"{name}.png").stat().st_size > 1000


def test_03_diffusion(smoke_run):
    from medlsdm.pipelines.loading import load_pipeline

    p = P["03"]
    m = smoke_run.read_metrics()["03_diffusion"]
    assert np.isfinite(m["final_loss"]) and m["steps"] == p["steps"]
    pipe = load_pipeline(smoke_run.root)
    assert list(pipe.unet.config.channels) == p["channels"]
    assert list(pipe.unet.config.attention_levels) == p["attention_levels"]
    samples = sorted(f.name for f in (smoke_run.root / "diffusion").glob("samples-*.npz"))
    every = p["sample_every"]
    assert samples == [f"samples-{s:07d}.npz" for s in range(every, p["steps"] + 1, every)]


def test_04_synthesis(smoke_run):
    p = P["04"]
    m = smoke_run.read_metrics()["04_synthesis"]
    classes = smoke_run.read_metrics()["01_preprocessing"]["classes"]
    assert set(m["class_intensity_error"]) <= set(classes) and "background" in m["class_intensity_error"]
    assert np.isclose(m["class_intensity_error_mean"], np.mean(list(m["class_intensity_error"].values())))
    assert {f"{name}-{steps}" for name, steps in p["compare"]} <= set(m["seconds_per_volume"])
    # guidance errors against the real volumes through the VQ-GAN, and raw; the oracle's floor for both
    assert set(m["guidance_error"]) == set(m["guidance_error_raw"]) == {str(float(g)) for g in p["guidance_scales"]}
    assert m["guidance_floor"] > 0 and m["guidance_floor_raw"] > 0
    # the oracle comparison ran (the smoke data is a phantom) on every sample and re-render
    assert m["n_factor_values"] == {"synthetic": p["n_test"] * p["n_samples"], "oracle": p["n_test"] * p["n_oracle"]}
    assert m["diversity_ratio"] >= 0 and set(m["factor_w1"]) == set(m["factor_ks_p"]) == set(m["counted"])
    assert set(m["counted"]) <= set(m["factor_preserved"]) and "aorta_mean" in m["factor_preserved"]
    assert set(m["factor_spread_ratio"]) == set(m["factor_spread_reference"]) == set(m["factor_preserved"])
    # texture against the raw oracle, beside oracle half against half; the autoencoder's share; its paired row
    texture = ("noise_ratio", "hf_power_ratio", "noise_ratio_reference", "hf_power_ratio_reference")
    assert set(texture) <= set(m["texture"]) and all(np.isfinite(m["texture"][k]) for k in texture)
    for key in ("noise_ratio", "hf_power_ratio"):
        assert m["texture"][key] == pytest.approx(m["texture"][f"{key}_autoencoder"] * m["texture"][f"{key}_diffusion"])
    assert "oracle via the autoencoder" in m["paired_body"]
    for name in ("04_samples_vs_oracle", "04_factor_histograms", "04_guidance", "04_texture_spectra"):
        assert (smoke_run.figures / f"{name}.png").stat().st_size > 1000
    split = json.loads((smoke_run.data / "split.json").read_text())
    samples = sorted(smoke_run.samples.glob("*.nii.gz"))
    assert [s.name for s in samples] == [
        f"{c}_syn{k}.nii.gz" for c in split["test"][: p["n_test"]] for k in range(p["n_samples"])
    ]
    for path in samples:  # the synthetic volume sits on its label map's grid
        case = path.name.split("_syn")[0]
        np.testing.assert_allclose(
            nib.load(path).affine, nib.load(smoke_run.data / "labels" / f"{case}.nii.gz").affine, atol=1e-5
        )


def test_05_evaluation(smoke_run):
    from medlsdm.evaluation.run import synthetic_folder

    p = P["05"]
    m = smoke_run.read_metrics()["05_evaluation"]
    split = json.loads((smoke_run.data / "split.json").read_text())
    for key in ("dice_real_test", "dice_synthetic", "dice_lesion_real_test", "ssim"):
        assert 0 <= m[key] <= 1 or (key.startswith("dice_lesion") and np.isnan(m[key])), key
    assert m["dice_ratio"] == pytest.approx(m["dice_synthetic"] / m["dice_real_test"])
    assert np.isfinite(m["psnr"]) and m["rmse"] > 0 and m["fd_seg"] >= 0
    assert m["fid"] is None and m["fid_3d"] is None and m["lpips"] is None  # no weights given
    assert {"fid_2d", "fid_3d", "lpips"} <= set(m["skipped"])
    # statistics: per-case values and a CI for every headline number, several judge seeds
    judge = m["judge"]
    assert m["judge_seeds"] == p["judge_seeds"] and len(judge["best_steps"]) == p["judge_seeds"]
    assert judge["network"].startswith("medlsdm SegNet") and judge["max_steps"] == p["judge_options"]["max_steps"]
    assert all(b <= s <= judge["max_steps"] for b, s in zip(judge["best_steps"], judge["stopped_steps"]))
    assert 0 <= judge["lesion_detection_rate"] <= 1 or np.isnan(judge["lesion_detection_rate"])
    assert m["dice_ratio_oracle"] == pytest.approx(m["dice_oracle"] / m["dice_real_test"])
    for key in ("ssim", "psnr", "rmse", "dice_real_test", "dice_synthetic", "augmentation_gain"):
        assert len(m["per_case"][key]) == m["n_test"] == p["n_test"], key
        low, high = m["ci"][key]
        assert low <= high, key
    classes = smoke_run.read_metrics()["01_preprocessing"]["classes"]
    assert set(m["dice_per_class"]["synthetic"]) == set(classes[1:])
    # memorisation with controls: the copies are always flagged (the threshold lies above them)
    pc = m["privacy_controls"]
    assert (
        pc["positive_flagged"] == 1.0 and 0 <= pc["negative_flagged"] <= 1 and pc["negative_control_kind"] == "oracle"
    )
    assert set(pc["synthetic_flagged"]) == {"from_train_maps", "from_test_maps"}
    aug = m["augmentation"]
    assert (
        aug["n_small"] == p["n_small"]
        and aug["n_extra"]
        == {**{k: p["n_new"] for k in ("oracle", "oracle_autoencoded", "synthetic")}, "lesion_edits": p["n_small"]}
        and list(aug["arms"])
        == [
            "real_small",
            "real_small_oracle",
            "real_small_oracle_autoencoded",
            "real_small_synthetic",
            "real_small_lesion_edits",
            "real_all",
        ]
    )
    # lesion augmentation: lesion Dice gain on the test cases with a lesion, beside the all-real control
    la = m["lesion_augmentation"]
    assert la["n_edits"] == p["n_small"] and set(la["lesions_found"]) == {
        "real_small",
        "real_small_lesion_edits",
        "real_all",
    }
    assert la["n_lesion_cases"] < 2 or la["gain_ci"][0] <= la["gain"] <= la["gain_ci"][1]
    assert "lesion_augmentation" not in aug and m["settings"]["lesion_edit_steps"] == 10
    assert (
        p["lesion_augmentation"] is True and "skipped" not in la
    )  # the smoke profile runs the arm whatever the judge finds
    assert aug["gain_ci"][0] <= aug["gain"] <= aug["gain_ci"][1] and isinstance(aug["bar_holds"], bool)
    assert aug["oracle_gain_ci"][0] <= aug["oracle_gain"] <= aug["oracle_gain_ci"][1] and aug["mix"] == 0.5
    assert "fraction_of_oracle_gain" in aug
    assert np.isfinite(m["kid"]) and np.isfinite(m["kid_reference"]) and np.isfinite(m["kid_oracle"])
    assert (m["frd"] is None) == (m["frd_reference"] is None) == (m["frd_skipped"] is not None)
    assert set(m["paper_conventions"]) == {"psnr", "ssim", "fid_2d", "dice"}
    assert m["paper_conventions"]["psnr"] == pytest.approx(m["psnr"] - 20 * np.log10(2), abs=1e-3)
    folder = synthetic_folder(smoke_run, **{k: p[k] for k in ("scheduler", "steps", "guidance_scale", "seed")})
    assert sorted(f.name for f in (folder / "test").iterdir()) == [
        f"{c}_syn0.nii.gz" for c in sorted(split["test"][: p["n_test"]])
    ]
    assert (
        len(list((folder / "train").iterdir())) == p["n_train_maps"]
        and len(list((folder / "new").iterdir())) == p["n_new"]
    )
    for name in ("05_real_vs_synthetic", "05_dice_per_class", "05_segmentation", "05_privacy"):
        assert (smoke_run.figures / f"{name}.png").stat().st_size > 1000


def test_evaluate_cli_gives_the_notebooks_numbers(smoke_run_copy, capsys):
    """``medlsdm evaluate`` reuses notebook 05's synthetic volumes and repeats its steps."""
    from medlsdm.cli import main

    run = smoke_run_copy
    notebook = run.read_metrics()["05_evaluation"]
    assert main(["evaluate", "--run-dir", str(run.root), "--profile", "smoke"]) == 0
    cli = run.read_metrics()["05_evaluation"]
    out = capsys.readouterr().out
    assert "| dataset | decoder | #channels | FID" in out and "| class |" in out and "positive control" in out
    for key in ("ssim", "psnr", "rmse", "nmse"):  # same files, same code: only summation order may differ
        assert cli[key] == pytest.approx(notebook[key], rel=1e-6), key
    for key in ("dice_real_test", "dice_synthetic"):  # same seeds (thread counts may differ)
        assert cli[key] == pytest.approx(notebook[key], abs=0.02), key
    assert cli["augmentation"]["gain"] == pytest.approx(notebook["augmentation"]["gain"], abs=0.02)
    for key in ("positive_flagged", "negative_flagged", "threshold"):  # same volumes, same controls
        assert cli["privacy_controls"][key] == pytest.approx(notebook["privacy_controls"][key], rel=1e-6), key
    assert cli["paper_conventions"]["psnr"] == pytest.approx(notebook["paper_conventions"]["psnr"], rel=1e-6)
    assert cli["settings"] == notebook["settings"] and cli["judge_seeds"] == notebook["judge_seeds"]


def test_every_notebook_wrote_its_declared_metrics_key(smoke_run):
    assert set(smoke_run.read_metrics()) == set(METRICS_KEYS.values())


def test_06_cardiac_2d(smoke_run):
    p = P["06"]
    m = smoke_run.read_metrics()["06_cardiac_2d"]
    assert set(m["ablation"]) == set(p["modes"])
    for mode, row in m["ablation"].items():
        for key in ("ssim", "nmse", "fd_seg"):
            assert np.isfinite(row[key]), (mode, key)
        assert -1 <= row["ssim"] <= 1 and row["nmse"] >= 0 and row["fd_seg"] >= 0
    assert np.isfinite(m["reconstruction"]["ssim"]) and m["fid"].startswith("skipped")
    assert m["steps"]["ldm"] == p["ldm_steps"] and m["n_test_slices"] >= 1
    cardiac = smoke_run.root / "cardiac"  # everything under RUN/cardiac, next to (not in) the 3-D run's folders
    assert (cardiac / "data" / "slices.h5").exists() and (cardiac / "vqgan" / "model" / "config.json").exists()
    for slug in ("edges", "semantic", "edges_semantic"):
        assert (cardiac / "ldm" / slug / "pipeline" / "model_index.json").exists()
    for name in ("06_slices_and_edges", "06_edge_sigma", "06_reconstructions", "06_condition_channels", "06_samples"):
        assert (smoke_run.figures / f"{name}.png").stat().st_size > 1000


def test_07_whole_volume(smoke_run):
    p = P["07"]
    m = smoke_run.read_metrics()["07_whole_volume"]
    block = smoke_run.read_metrics()["01_preprocessing"]["block_shape"]
    # a phantom scan several blocks deep, synthesised in windows of one block (the default) and in one pass
    assert m["depth"] == p["n_blocks"] * block[0] and m["window"] == block[0] and 0 < m["overlap"] < m["window"]
    # the bar: windowed less one pass (paired by seed); beside it each mode's gap in excess of the oracle's
    for key in ("seam_gap", "seam_gap_windowed", "seam_gap_one_pass", "seam_gap_oracle"):
        gap = m[key]
        assert gap["ci"][0] <= gap["gap"] <= gap["ci"][1] and gap["n_volumes"] == (
            p["n_oracle"] if key.endswith("oracle") else p["n_samples"]
        )
        assert gap["passes"] == (gap["ci"][0] <= 0) and gap["n_border"] >= 1 and gap["n_centre"] >= 1
    assert set(m["mean_error"]) == {"windowed", "one pass", "oracle via VQ-GAN"}
    assert set(m["border_slices"]).isdisjoint(m["centre_slices"])
    # the edit keeps the real volume beyond its soft border
    assert 1 <= len(m["edit_cases"]) <= p["n_edit"] and m["edit_outside_max_abs"] <= 1e-4
    assert len(m["edit_lesion_mean"]) == len(m["edit_cases"]) and all(-1 <= v <= 1 for v in m["edit_lesion_mean"])
    if m["oracle_lesion_range"] is not None:
        assert m["oracle_lesion_range"][0] <= m["oracle_lesion_range"][1] and len(m["edit_lesion_in_range"]) == len(
            m["edit_cases"]
        )
    assert 0 <= m["edit_lesion_dice"] <= 1 and m["segnet"]["steps"] == p["segnet_steps"] and m["seconds"] > 0
    for name in ("07_whole_scan", "07_windowed_vs_one_pass", "07_seam_check", "07_lesion_before_after"):
        assert (smoke_run.figures / f"{name}.png").stat().st_size > 1000


def test_notebooks_01_to_05_on_an_nnunet_dataset(tmp_path):
    """The real-data path: a dataset in nnU-Net raw format (no oracle) through notebooks 01-05
    on the smoke profile; the oracle sections say they are skipped and the memorisation check
    falls back to held-out real volumes as its negative control."""
    from medlsdm.data.adapters import get_adapter
    from medlsdm.data.classes import TORSO_CT
    from medlsdm.data.io import read_nifti
    from medlsdm.data.nnunet import write_nnunet_dataset
    from medlsdm.data.phantom import make_phantom
    from medlsdm.rundir import RunDir
    from medlsdm.runner import run_notebooks

    phantom = tmp_path / "phantom"
    pairs = make_phantom("torso-ct", phantom, P["01"]["n_cases"], seed=4)
    cases = [(read_nifti(i)[0], read_nifti(lab, kind="label")[0], read_nifti(i)[1]) for i, lab in pairs]
    root = tmp_path / "Dataset001_Torso"
    write_nnunet_dataset(root, cases, classes=TORSO_CT, channel_name="CT", prefix="torso")
    assert get_adapter("nnunet").find_cases(root)
    run = RunDir(tmp_path / "run")
    run_notebooks("smoke", run.root, only=["01"], overrides={"dataset": "nnunet", "data_root": str(root)})
    run_notebooks("smoke", run.root, only=["02", "03", "04", "05"])
    m = run.read_metrics()
    assert m["01_preprocessing"]["dataset"] == "nnunet"
    assert "diversity_ratio" not in m["04_synthesis"]  # no oracle for real data
    assert m["05_evaluation"]["privacy_controls"]["negative_control_kind"] == "held_out"
    for path in sorted(run.executed.glob("*.ipynb")):
        assert error_outputs(path) == [] and unexecuted_cells(path) == []
