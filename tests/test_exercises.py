"""Every notebook's exercises run as written, and show what their solutions say they show.

The commands are read from each notebook's ``## Exercises`` cell and checked by the runner's
own parameter checks (names and value types; no kernel); each is then run on the ``smoke``
profile on a copy of the session's smoke run, exercises of one notebook grouped into one run
where their outcomes land under different keys. ``notebooks/SOLUTIONS.md`` has a solution for
every exercise (its command, what to look at, the expected outcome on the quick profile).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from medlsdm.atomic import read_json
from medlsdm.errors import NotebookError
from medlsdm.runner import check_parameters, find_notebooks, parse_overrides, run_notebooks

SOLUTIONS = Path(__file__).resolve().parents[1] / "notebooks" / "SOLUTIONS.md"


def exercises(path: Path) -> dict[int, str]:
    """The numbered exercises of a notebook's final ``## Exercises`` cell: ``{number: text}``."""
    cell = json.loads(path.read_text())["cells"][-1]
    text = "".join(cell["source"])
    assert text.startswith("## Exercises"), f"{path.name}: the last cell is not the exercises"
    items = re.split(r"^(\d+)\. ", text, flags=re.M)
    return {int(n): body for n, body in zip(items[1::2], items[2::2])}


def commands(path: Path, text: str) -> list[tuple[list[str], dict]]:
    """``(notebook keys, overrides)`` of every ``medlsdm run …`` in ``text``; a lone ``-p …``
    fragment (\"and again with `-p x=1`\") is a run of the exercise's own notebook."""
    found = []
    for span in re.findall(r"`([^`\n]+)`", text):
        if not (span.startswith("medlsdm run ") or span.startswith("-p ")):
            continue
        words, only, items = shlex.split(span), [path.stem[:2]], []
        for flag, value in zip(words, words[1:]):
            if flag == "--only":
                only = value.split(",")
            elif flag == "-p":
                items.append(value)
        found.append((only, parse_overrides(items)))
    return found


NOTEBOOKS = find_notebooks()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_every_exercise_is_runnable_as_written_and_has_a_solution(path):
    """Each exercise gives a command (``medlsdm run``/``medlsdm synthesize`` or package helpers in
    a code block); every ``medlsdm run`` passes the runner's checks; SOLUTIONS.md answers each."""
    solutions = SOLUTIONS.read_text()
    found = exercises(path)
    assert found, f"{path.name}: no numbered exercises"
    for number, text in found.items():
        runs = commands(path, text)
        assert runs or "medlsdm synthesize" in text or "```python" in text, f"{path.stem[:2]}.{number}: no command"
        for only, overrides in runs:
            check_parameters(find_notebooks(only=only), overrides, "smoke")
        assert re.search(rf"^### {path.stem[:2]}\.{number} ", solutions, flags=re.M), (
            f"SOLUTIONS.md has no '### {path.stem[:2]}.{number} …' section"
        )


def metrics(run, key: str) -> dict:
    return run.read_metrics()[key]


def moved(a, b, rel: float = 1e-4) -> bool:
    """Whether a number moved by more than float rounding across thread counts could move it."""
    return a != pytest.approx(b, rel=rel, abs=1e-6)


def same_numbers(a, b, rel: float = 1e-5) -> bool:
    """Nested dicts / lists equal up to the rounding of another thread count (a rerun beside no
    other lane gets all cores, the fixture's run one)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_numbers(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same_numbers(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return b == pytest.approx(a, rel=rel, abs=1e-9, nan_ok=True)
    return a == b


def test_01_exercises(smoke_run, tmp_path):
    """Coarser grid, the MR phantom, and three blocks per scan: a block-level split leaks
    patients, the patient-level split does not."""
    from medlsdm.data import io, prepare, splits
    from medlsdm.rundir import RunDir

    coarse = RunDir(tmp_path / "coarse")
    run_notebooks("smoke", coarse.root, only=["01"], overrides={"spacing": [8.0, 8.0, 8.0]})
    case = prepare.load_manifest(coarse.data).cases[0]
    _, affine = io.read_nifti(coarse.data / case.image)
    assert np.allclose(io.spacing_dhw(affine), 8.0)
    assert (coarse.figures / "01_raw_vs_preprocessed.png").is_file()
    assert metrics(coarse, "01_preprocessing")["painting_r2"] != metrics(smoke_run, "01_preprocessing")["painting_r2"]

    breast = RunDir(tmp_path / "breast")
    run_notebooks("smoke", breast.root, only=["01"], overrides={"dataset": "breast-mr"})
    mr = metrics(breast, "01_preprocessing")
    assert mr["dataset"] == "breast-mr" and mr["classes"] != metrics(smoke_run, "01_preprocessing")["classes"]
    assert (breast.figures / "01_class_histograms.png").is_file()

    blocks = RunDir(tmp_path / "blocks")
    run_notebooks("smoke", blocks.root, only=["01"], overrides={"blocks_per_case": 3, "seed": 1})
    cases = prepare.load_manifest(blocks.data).cases
    per_patient = {}
    for c in cases:
        per_patient.setdefault(c.patient_id, []).append(c.case_id)
    assert max(len(v) for v in per_patient.values()) == 3  # a scan too short for three gives fewer
    split = splits.load_split(blocks.split_path)
    assert splits.shared_patients(split, cases) == {}
    naive = splits.make_split([(c.case_id, c.case_id) for c in cases], seed=1)
    leaked = splits.shared_patients(naive, cases)
    assert leaked and set(leaked) <= set(per_patient)
    with pytest.raises(Exception, match="more than one split"):
        splits.check_split(naive, cases)
    assert split != splits.load_split(smoke_run.split_path)  # seed 1 splits the patients otherwise


def test_02_exercises(smoke_run_copy):
    """Exercise 1 retrains with the normal decoder; the smoke profile already trains the SPADE
    decoder with label dropout 0.5 (exercise 2); restarts off, a smaller codebook and no GAN retrain."""
    run = smoke_run_copy
    base = metrics(run, "02_vqgan")
    assert base["decoder"] == "spade" and base["label_dropout"] == 0.5
    run_notebooks("smoke", run.root, only=["02"], overrides={"decoder_type": "normal", "label_dropout": 0.0})
    m = metrics(run, "02_vqgan")
    assert m["decoder"] == "normal" and m["label_dropout"] == 0.0
    assert "own_minus_other" in m["latent_ablation"] and "painting + pooled residual" in m["body"]

    run_notebooks("smoke", run.root, only=["02"], overrides={"training_options": {"restart_after": 0}})
    config = read_json(run.vqgan_model / "config.json")
    assert config["restart_after"] == 0
    assert 0 < metrics(run, "02_vqgan")["codebook_usage"] <= 1

    run_notebooks(
        "smoke", run.root, only=["02"], overrides={"num_embeddings": 32, "gan_weight_2d": 0, "gan_weight_3d": 0}
    )
    m = metrics(run, "02_vqgan")
    assert read_json(run.vqgan_model / "config.json")["num_embeddings"] == 32
    assert moved(m["psnr"], base["psnr"]) and set(m["texture"]) >= {"noise_ratio", "hf_power_ratio"}


def _log(path: Path) -> list[str]:
    return path.read_text().splitlines()[1:]


def test_03_and_04_exercises(smoke_run_copy, tmp_path):
    """03.4 resumes for more steps and 04.3 samples with UniPC-10 from it; then 03.1, 03.2, 03.3 /
    04.2 and 03.5 retrain once together (each setting lands in its own config key), and 04
    measures the guidance sweep and factor table of that model."""
    run = smoke_run_copy
    base_log, base = _log(run.diffusion / "log.csv"), read_json(run.diffusion / "train_params.json")
    more = 3 * base["steps"]
    run_notebooks("smoke", run.root, only=["03"], overrides={"steps": more})
    log = _log(run.diffusion / "log.csv")
    assert read_json(run.diffusion / "train_params.json")["steps"] == more == metrics(run, "03_diffusion")["steps"]
    assert log[: len(base_log)] == base_log  # resumed: the first run's rows (and their seconds) kept
    assert int(log[-1].split(",")[0]) == more

    run_notebooks("smoke", run.root, only=["04"], overrides={"steps": 10, "scheduler": "unipc"})
    m = metrics(run, "04_synthesis")
    assert (m["scheduler"], m["steps"]) == ("unipc", 10) and set(m["factor_w1"]) == set(m["counted"])

    overrides = {
        "cond_drop_prob": 0.0,
        "conditioning": "spade",
        "prediction_type": "epsilon",
        "training_options": {"latent_norm": "global"},
    }
    run_notebooks("smoke", run.root, only=["03", "04"], overrides=overrides)
    params = read_json(run.diffusion / "train_params.json")
    assert (params["cond_drop_prob"], params["conditioning"], params["prediction_type"], params["latent_norm"]) == (
        0.0,
        "spade",
        "epsilon",
        "global",
    )
    assert read_json(run.pipeline / "unet" / "config.json")["conditioning"] == "spade"
    assert read_json(run.pipeline / "scheduler" / "scheduler_config.json")["prediction_type"] == "epsilon"
    m = metrics(run, "04_synthesis")
    assert set(m["guidance_error"]) == {"0.0", "1.0"} and "bone_mean" in m["factor_spread_ratio"]
    assert m["class_intensity_error_mean"] > 0


def test_04_exercise_own_label_map(smoke_run, tmp_path):
    """04.4: a test label map with the liver grown, written with write_nifti and synthesised by
    ``medlsdm synthesize``: the volume has the label map's grid, and differs from the one the
    unedited map gives with the same seed."""
    from scipy import ndimage

    from medlsdm import cli
    from medlsdm.data import io, prepare, splits

    manifest = prepare.load_manifest(smoke_run.data)
    test_id = splits.load_split(smoke_run.split_path)["test"][0]
    case = next(c for c in manifest.cases if c.case_id == test_id)
    label, affine = io.read_nifti(smoke_run.data / case.label, kind="label")
    liver = manifest.classes.index("liver")
    grown = ndimage.binary_dilation(label == liver, iterations=2) & (label > 0)
    assert (grown & (label != liver)).any()
    edited = label.copy()
    edited[grown] = liver
    io.write_nifti(tmp_path / "labels" / "my_label.nii.gz", edited, affine, kind="label")
    io.write_nifti(tmp_path / "labels" / "original.nii.gz", label, affine, kind="label")
    assert (
        cli.main(
            [
                "synthesize",
                "--pipeline",
                str(smoke_run.pipeline),
                "--labels",
                str(tmp_path / "labels"),
                "--out-dir",
                str(tmp_path / "out"),
                "--steps",
                "3",
            ]
        )
        == 0
    )
    mine, mine_affine = io.read_nifti(tmp_path / "out" / "my_label_syn0.nii.gz")
    original, _ = io.read_nifti(tmp_path / "out" / "original_syn0.nii.gz")
    assert mine.shape == label.shape and np.allclose(mine_affine, affine)
    assert not np.allclose(mine[grown & (label != liver)], original[grown & (label != liver)])


def test_05_exercises(smoke_run_copy):
    """05.1-05.4 in one run, each outcome under its own key: a new UniPC-10 synthetic folder, the
    held-out volumes as the negative control (the threshold moves; the positive control is the
    same), one judge per arm, and twice the smoke profile's new anatomies (24 is twice quick's 12);
    05.5 retrains 02-03 with the normal decoder."""
    run = smoke_run_copy
    base = metrics(run, "05_evaluation")
    n_new = 2 * base["settings"]["n_new"]
    run_notebooks(
        "smoke",
        run.root,
        only=["05"],
        overrides={"steps": 10, "scheduler": "unipc", "negative_control": "held_out", "judge_seeds": 1, "n_new": n_new},
    )
    m = metrics(run, "05_evaluation")
    assert (m["settings"]["scheduler"], m["settings"]["steps"]) == ("unipc", 10)
    assert (run.eval_samples / "unipc-10-g1-s0" / "test").is_dir()
    assert "dice_ratio" in m and "kid_ci" in m

    before, after = base["privacy_controls"], m["privacy_controls"]
    assert (before["negative_control_kind"], after["negative_control_kind"]) == ("oracle", "held_out")
    assert after["distances"]["positive"] == pytest.approx(before["distances"]["positive"])
    assert after["threshold"] != before["threshold"]
    assert len(after["distances"]["negative"]) == base["n_test"] + len(read_json(run.split_path)["val"])

    assert len(m["judge"]["seconds"]) == 1 and m["judge_seeds"] == 1
    assert m["settings"]["n_new"] == n_new
    assert len(list((run.eval_samples / "unipc-10-g1-s0" / "new").glob("*.nii.gz"))) == n_new
    assert m["augmentation"]["arms"].keys() == base["augmentation"]["arms"].keys()

    # 05.5: the normal decoder reaches 05's arms, and the benchmark sentence names the decoder and its benchmark
    assert metrics(run, "02_vqgan")["decoder"] == "spade"
    run_notebooks("smoke", run.root, only=["02", "03", "05"], overrides={"decoder_type": "normal"})
    assert metrics(run, "02_vqgan")["decoder"] == "normal"
    arms = metrics(run, "05_evaluation")["augmentation"]["arms"]
    assert {"real_small_oracle_autoencoded", "real_small_synthetic"} <= arms.keys()
    executed = (run.executed / "05_evaluation.ipynb").read_text()
    assert "normal decoder" in executed and "benchmarks/results/augmentation.md" in executed


def test_06_exercises(smoke_run_copy, tmp_path):
    """06.2: guidance changes every sample but no model; 06.1: another edge smoothing changes the
    modes that read edges only; 06.3 without the M&Ms data refuses, naming the folder."""
    run = smoke_run_copy
    base = metrics(run, "06_cardiac_2d")
    run_notebooks("smoke", run.root, only=["06"], overrides={"guidance_scale": 4.0})
    g = metrics(run, "06_cardiac_2d")
    assert g["train_seconds"] == base["train_seconds"] and same_numbers(
        g["reconstruction"], base["reconstruction"]
    )  # nothing retrained
    assert all(moved(g["ablation"][mode]["ssim"], base["ablation"][mode]["ssim"]) for mode in g["ablation"])

    # new edge maps change the slice store, so every model retrains (same seeds): the semantic
    # mode's numbers stay (up to the rounding of another thread count), the modes that read edges move
    run_notebooks("smoke", run.root, only=["06"], overrides={"edge_sigma": 3.0})
    m = metrics(run, "06_cardiac_2d")
    scores = ("ssim", "nmse", "dice")
    for key in scores:
        assert m["ablation"]["semantic"][key] == pytest.approx(base["ablation"]["semantic"][key], rel=1e-3, abs=1e-4)
    for mode in ("edges", "edges+semantic"):
        assert any(
            m["ablation"][mode][k] != pytest.approx(base["ablation"][mode][k], rel=1e-3, abs=1e-4) for k in scores
        )

    missing = tmp_path / "MnMs"
    with pytest.raises(NotebookError, match=re.escape(str(missing))):
        run_notebooks(
            "smoke", run.root, only=["06"], overrides={"dataset": "mnms", "data_root": str(missing), "size": 128}
        )


def test_07_exercises(smoke_run_copy):
    """07.1 + 07.2 + 07.5: no overlap, windows shorter than a block (quick: 16 of 32 slices; smoke
    blocks are 16 deep, windows a multiple of 8, and 8-slice windows leave room for no overlap) and a
    lesion in the kidney; 07.3 + 07.4: a deeper scan and a bigger lesion."""
    run = smoke_run_copy
    base = metrics(run, "07_whole_volume")
    short = base["window"] // 2
    run_notebooks("smoke", run.root, only=["07"], overrides={"overlap": 0, "window": short, "lesion_organ": "kidney"})
    m = metrics(run, "07_whole_volume")
    assert (m["overlap"], m["window"]) == (0, short) and base["overlap"] > 0
    assert m["border_slices"] != base["border_slices"] and "seam_gap" in m  # the seam check looks at the new borders
    assert moved(m["edit_lesion_mean"], base["edit_lesion_mean"])
    assert "a lesion in the kidney" in (run.executed / "07_whole_volume_and_editing.ipynb").read_text()

    run_notebooks("smoke", run.root, only=["07"], overrides={"n_blocks": 5, "lesion_radius_mm": 25})
    m = metrics(run, "07_whole_volume")
    assert m["depth"] == 5 * base["depth"] // base["n_blocks"] and len(m["border_slices"]) > len(base["border_slices"])
    assert moved(m["edit_lesion_mean"], base["edit_lesion_mean"])

    # a lesion organ the data does not have stops in the setup cell, before any synthesis
    with pytest.raises(NotebookError, match=r"lesion_organ='spleen': choose one of \['soft_tissue'"):
        run_notebooks("smoke", run.root, only=["07"], overrides={"lesion_organ": "spleen"})
    assert metrics(run, "07_whole_volume")["depth"] == m["depth"]  # the failed run recorded nothing
