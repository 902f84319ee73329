"""Parameter sweeps: value parsing, checks before any run, and a real sweep of notebook 04."""

import csv
import signal
import subprocess
import sys

import nbformat
import pytest
from notebook_utils import error_outputs, unexecuted_cells
from PIL import Image

from medlsdm import cli
from medlsdm.errors import ConfigError, MedLSDMError, NotebookError
from medlsdm.profiles import PROFILES
from medlsdm.rundir import RunDir
from medlsdm.runner import find_notebooks
from medlsdm.sweep import (
    check_sweep_values,
    combination_name,
    flatten_scalars,
    parse_sweep,
    plot_sweep,
    split_top_level,
    sweep,
    table_row,
)

NB01 = find_notebooks(only=["01"])[0]


def test_values_split_at_top_level_commas_only():
    assert split_top_level("[8,8,8],[6,6,6]") == ["[8,8,8]", "[6,6,6]"]
    assert split_top_level("'a,b', (1, 2) ,3") == ["'a,b'", "(1, 2)", "3"]
    with pytest.raises(ConfigError, match="unbalanced"):
        split_top_level("[1,2")
    got = parse_sweep(
        ["spacing=[8,8,8],[6.0,6,6]", "dataset=torso-ct,breast-mr", "guidance_scale=0,1.5", "data_root=None"]
    )
    assert got == {
        "spacing": [[8, 8, 8], [6.0, 6, 6]],
        "dataset": ["torso-ct", "breast-mr"],
        "guidance_scale": [0, 1.5],
        "data_root": [None],
    }


@pytest.mark.parametrize("bad", [["seed"], ["seed="], ["=1,2"], ["seed=1,", "x=1"], ["seed=1", "seed=2"], []])
def test_malformed_sweeps_are_refused(bad):
    with pytest.raises(ConfigError):
        parse_sweep(bad)


def test_names_and_types_checked_against_the_parameters_cell():
    assert check_sweep_values(NB01, {"seed": [0, 1], "spacing": [(8, 8, 8)], "data_root": ["/x", None]}) == {
        "seed": [0, 1],
        "spacing": [[8, 8, 8]],
        "data_root": ["/x", None],
    }
    with pytest.raises(ConfigError, match="valid parameters.*n_cases"):
        check_sweep_values(NB01, {"n_casess": [1, 2]})
    with pytest.raises(ConfigError, match="expects int.*got float"):
        check_sweep_values(NB01, {"n_cases": [4, 4.5]})
    with pytest.raises(ConfigError, match="expects int.*got bool"):
        check_sweep_values(NB01, {"seed": [True]})
    with pytest.raises(ConfigError, match="expects bool"):
        check_sweep_values(NB01, {"interactive": [1]})
    with pytest.raises(ConfigError, match="expects str"):
        check_sweep_values(NB01, {"dataset": [3]})
    with pytest.raises(ConfigError, match="expects list"):
        check_sweep_values(NB01, {"spacing": [8.0]})
    with pytest.raises(ConfigError, match="run_dir"):
        check_sweep_values(NB01, {"run_dir": ["a", "b"]})
    with pytest.raises(ConfigError, match="--profile"):
        check_sweep_values(NB01, {"profile": ["smoke", "quick"]})
    with pytest.raises(ConfigError, match="repeated"):
        check_sweep_values(NB01, {"seed": [1, 1]})


def _notebook(path, source):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("pass")]
    nbformat.write(nb, path)
    return path


def test_int_accepted_for_float_default(tmp_path):
    path = _notebook(tmp_path / "04_synthesis.ipynb", "guidance_scale = 3.0\nrun_dir = 'r'\nseed = 0")
    assert check_sweep_values(path, {"guidance_scale": [0, 1, 2.5]}) == {"guidance_scale": [0.0, 1.0, 2.5]}


def test_earlier_notebooks_must_have_run(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for stem in ("01_preprocessing", "02_vqgan_training"):
        _notebook(folder / f"{stem}.ipynb", "run_dir = 'r'\nprofile = 'quick'\nseed = 0\ninteractive = False")
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="run notebook 01 first"):
        sweep("02", {"seed": [0, 1]}, run, profile="smoke", notebooks_dir=folder)
    assert not (run / "sweeps").exists(), "nothing may be written before the checks pass"


def test_table_rows_and_plot_with_two_parameters(tmp_path):
    metrics = {"psnr": 20.0, "nested": {"dice": 0.5, "per_class": [1, 2]}, "name": "x", "steps": 7}
    row = table_row({"guidance_scale": 1.0, "steps": 10}, metrics)
    assert row == {
        "guidance_scale": 1.0,
        "steps": 10,
        "psnr": 20.0,
        "nested.dice": 0.5,
        "name": "x",
        "metrics.steps": 7,
    }
    assert flatten_scalars({"a": {"b": {"c": 1}}, "l": [1]}) == {"a.b.c": 1}
    assert (
        combination_name({"spacing": [8.0, 8.0, 8.0], "dataset": "breast-mr"})
        == "spacing=8.0-8.0-8.0_dataset=breast-mr"
    )
    rows = [
        {"guidance_scale": g, "steps": s, "psnr": g + s, "dice": 0.1 * g} for g in (0.0, 1.0, 2.0) for s in (10, 25)
    ]
    plot_sweep(rows, ["guidance_scale", "steps"], tmp_path / "p.png", title="t")
    with Image.open(tmp_path / "p.png") as im:
        assert im.size[0] > 600 and im.size[1] > 250
    plot_sweep([{"dataset": "a", "v": 1}, {"dataset": "b", "v": 2}], ["dataset"], tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 1000


def test_cli_refuses_unknown_parameter_before_running(tmp_path, caplog):
    code = cli.main(
        ["sweep", "--only", "01", "-p", "bogus=1,2", "--run-dir", str(tmp_path / "run"), "--profile", "smoke"]
    )
    assert code == 2
    assert "bogus" in caplog.text and "n_cases" in caplog.text
    assert not (tmp_path / "run").exists()


@pytest.mark.notebook
def test_sweep_of_notebook_04_on_a_finished_run(smoke_run_copy):
    """The issue's sweep, on a copy of the session's smoke run: one executed notebook and one
    CSV row per combination, the swept values reach the notebook, metrics.json is the run's own
    afterwards. Two papermill runs of notebook 04 (the cheapest notebook that reads a model)."""
    run = smoke_run_copy
    before = run.metrics_path.read_text()
    assert (
        cli.main(
            [
                "sweep",
                "--only",
                "04",
                "-p",
                "guidance_scale=0,2",
                "-p",
                "steps=2",
                "--run-dir",
                str(run.root),
                "--profile",
                "smoke",
            ]
        )
        == 0
    )

    assert run.metrics_path.read_text() == before
    sweeps = run.root / "sweeps"
    executed = sorted((sweeps / "04_synthesis").glob("*.ipynb"))
    # the ints 0 and 2 reach the notebook as 0.0 and 2.0: its default is a float
    assert [p.name for p in executed] == ["guidance_scale=0.0_steps=2.ipynb", "guidance_scale=2.0_steps=2.ipynb"]
    for path in executed:
        assert not error_outputs(path) and not unexecuted_cells(path), path
    with open(sweeps / "04_synthesis.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(float(r["guidance_scale"]), int(r["steps"])) for r in rows] == [(0.0, 2), (2.0, 2)]
    for r in rows:  # the notebook's own record of what it ran with (a metric named like a parameter)
        assert float(r["metrics.guidance_scale"]) == float(r["guidance_scale"]) and r["metrics.steps"] == "2"
        assert int(r["n_samples"]) == PROFILES["smoke"]["04"]["n_test"] * PROFILES["smoke"]["04"]["n_samples"]
        assert float(r["class_intensity_error_mean"]) >= 0
    with Image.open(sweeps / "04_synthesis.png") as im:
        assert im.format == "PNG" and im.size[0] > 600


@pytest.mark.notebook
def test_failing_combination_names_it_and_restores_metrics(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(NotebookError, match="dataset=nifti"):
        sweep("01", {"dataset": ["nifti"]}, run.root, profile="smoke")
    assert not run.metrics_path.exists()
    assert (run.root / "sweeps" / "01_preprocessing" / "dataset=nifti.ipynb").exists()


KILLED_SWEEP = """
import os, sys, time
import medlsdm.sweep as sweep_module

def fake_run(path, run, params, **kwargs):  # notebook 01 writing its metrics, then stopped
    run.update_metrics("01_preprocessing", {"seed": params["seed"]})
    if params["seed"] == 1:
        print("running", flush=True)
        if sys.argv[3] == "SIGKILL":
            os._exit(9)
        time.sleep(60)
    return path

sweep_module.run_notebook = fake_run
sweep_module.sweep("01", {"seed": [0, 1]}, sys.argv[1], profile="smoke", notebooks_dir=sys.argv[2])
"""


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_killed_sweep_leaves_the_runs_own_metrics(tmp_path, how):
    """SIGTERM: restored before the sweep exits; SIGKILL: restored by the next writer of the run."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_preprocessing.ipynb", "run_dir = 'r'\nprofile = 'quick'\nseed = 0")
    run = RunDir(tmp_path / "run")
    run.update_metrics("01_preprocessing", {"seed": 7})
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SWEEP, str(run.root), str(folder), how], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "running"
    if how == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == (143 if how == "SIGTERM" else 9)
    if how == "SIGTERM":
        assert run.read_metrics() == {"01_preprocessing": {"seed": 7}}
        assert (run.sweeps / "01_preprocessing.csv").read_text().splitlines()[1] == "0,0"  # the done row
    else:
        assert run.read_metrics() == {"01_preprocessing": {"seed": 1}}
        with run.writing("medlsdm run"):
            assert run.read_metrics() == {"01_preprocessing": {"seed": 7}}


def test_a_sweep_waits_for_no_one(tmp_path, monkeypatch):
    """A sweep on a run directory another writer holds is refused before it runs anything."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_preprocessing.ipynb", "run_dir = 'r'\nprofile = 'quick'\nseed = 0")
    root = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom medlsdm.rundir import RunDir\n"
            "with RunDir(sys.argv[1]).writing('medlsdm run'):\n print('held', flush=True)\n"
            " time.sleep(60)",
            str(root),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr("medlsdm.sweep.run_notebook", lambda *a, **k: pytest.fail("ran"))
        with pytest.raises(MedLSDMError, match=f"in use by PID {holder.pid}"):
            sweep("01", {"seed": [0, 1]}, root, profile="smoke", notebooks_dir=folder)
    finally:
        holder.kill()
        holder.wait()
