"""The runner and CLI: notebook discovery, parameter checks, failures named by notebook and cell."""

import json
import re
from pathlib import Path

import pytest

from medlsdm import cli
from medlsdm.errors import ConfigError, NotebookError
from medlsdm.profiles import INPUTS, NOTEBOOKS, PROFILES, notebook_parameters
from medlsdm.rundir import RunDir
from medlsdm.runner import (
    DEFAULT_NOTEBOOKS_DIR,
    PLAN,
    find_notebooks,
    notebook_parameter_names,
    parse_overrides,
    plan_stages,
    run_notebooks,
)


def test_parse_overrides_literals_and_strings():
    got = parse_overrides(
        ["n_cases=4", "spacing=[1.0, 2.0, 2.0]", "dataset=breast-mr", "interactive=True", "data_root=None"]
    )
    assert got == {
        "n_cases": 4,
        "spacing": [1.0, 2.0, 2.0],
        "dataset": "breast-mr",
        "interactive": True,
        "data_root": None,
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["oops"])


def test_every_notebook_has_parameters_cell_first_and_profile_keys_exist():
    for path in find_notebooks():
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert "parameters" in code[0]["metadata"].get("tags", []), path
        assert not any(c.get("outputs") for c in code), f"{path} has outputs committed"
        assert all("id" in c for c in nb["cells"]), f"{path}: a cell without an id (nbformat 4.5 requires one)"
        names = notebook_parameter_names(path)
        assignments = [line for line in "".join(code[0]["source"]).splitlines() if re.match(r"^\w+\s*=", line)]
        assert len(assignments) == len(names), f"papermill could not parse every parameter line of {path.name}"
        assert {"run_dir", "profile", "seed", "interactive"} <= set(names), path
        for profile in PROFILES:
            unknown = set(notebook_parameters(profile, path.stem)) - set(names)
            assert not unknown, f"profile {profile} sets {unknown} that {path.name} does not declare"


def test_find_notebooks_only_and_unknown():
    assert [p.stem for p in find_notebooks(only=["01"])] == [NOTEBOOKS["01"]]
    with pytest.raises(ConfigError, match="unknown notebook"):
        find_notebooks(only=["09"])
    with pytest.raises(ConfigError, match="not found"):
        find_notebooks("/nonexistent/notebooks")


def test_unknown_parameter_refused_before_running(tmp_path):
    with pytest.raises(ConfigError, match="valid parameters.*block_shape"):
        run_notebooks("smoke", tmp_path / "run", only=["01"], overrides={"n_casess": 3})
    assert not (tmp_path / "run").exists()


def test_the_parallel_plan_runs_every_notebook_once_after_its_inputs():
    order = [k for stage in PLAN for lane in stage for k in lane]
    assert sorted(order) == sorted(NOTEBOOKS)
    done = set()
    for stage in PLAN:
        for lane in stage:
            ready = set(done)
            for key in lane:
                assert set(INPUTS[key]) <= ready, f"{key} needs {INPUTS[key]}, ready: {sorted(ready)}"
                ready.add(key)
        done |= {k for lane in stage for k in lane}
    # a run of some notebooks keeps the plan's order; jobs=1 is one notebook per stage
    assert plan_stages(["03", "04", "05"], 2) == [[["03"]], [["05"], ["04"]]]
    assert plan_stages(["01", "02"], 1) == [[["01"]], [["02"]]]
    with pytest.raises(ConfigError, match="jobs=3"):
        plan_stages(["01"], 3)


def _update_many(root, key, n):
    for i in range(n):
        RunDir(root).update_metrics(f"{key}{i}", {"i": i})


def test_metrics_updates_from_two_processes_keep_both():
    # notebooks running side by side write metrics.json at the same time: no update may be lost
    import multiprocessing

    with __import__("tempfile").TemporaryDirectory() as root:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_update_many, args=(root, key, 200)) for key in ("a", "b")]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert all(p.exitcode == 0 for p in procs)
        assert set(RunDir(root).read_metrics()) == {f"{k}{i}" for k in "ab" for i in range(200)}


def test_unknown_profile_refused():
    with pytest.raises(ConfigError, match="unknown profile"):
        notebook_parameters("huge", "01")


@pytest.mark.notebook
def test_failing_notebook_names_notebook_and_cell(tmp_path):
    with pytest.raises(NotebookError) as info:
        run_notebooks(
            "smoke",
            tmp_path / "run",
            only=["01"],
            overrides={
                "dataset": "nifti",
                "dataset_options": {"modality": "CT", "num_classes": 2},
                "data_root": str(tmp_path / "missing"),
            },
        )
    message = str(info.value)
    assert "01_preprocessing" in message and "cell" in message and "missing" in message
    assert (tmp_path / "run" / "executed" / "01_preprocessing.ipynb").exists()


def test_cli_reports_errors_with_exit_code(tmp_path, caplog):
    code = cli.main(["run", "--profile", "smoke", "--run-dir", str(tmp_path), "--only", "01", "-p", "bogus=1"])
    assert code == 2
    assert "bogus" in caplog.text


def test_default_notebooks_dir_is_the_repository_folder():
    assert DEFAULT_NOTEBOOKS_DIR.resolve() == (Path(__file__).resolve().parent.parent / "notebooks")
    assert [p.stem for p in find_notebooks()] == list(NOTEBOOKS.values())  # all six are there


@pytest.mark.parametrize(
    "only, param, message",
    [
        ("01", "n_cases=sixty", "-p n_cases='sixty': 01_preprocessing.ipynb expects int (default 60), got str"),
        ("01", "spacing=6", "-p spacing=6: 01_preprocessing.ipynb expects list (default [6.0, 5.5, 5.5]), got int"),
        ("01", "spacing=[6.0, -1, 5.5]", "expects list of float >= 0"),
        ("01", "n_cases=-3", "expects int >= 0"),
        ("01", "interactive=1", "expects bool"),
        ("04", "guidance_scale=1e999", "expects a finite float"),
        ("05", "n_test='all'", "expects int (the profile's value 2)"),
        ("01", "run_dir='elsewhere'", "give it with --run-dir"),
        ("01", "profile='paper'", "give it with --profile"),
    ],
)
def test_cli_run_checks_parameter_values_before_any_kernel_starts(tmp_path, caplog, only, param, message):
    code = cli.main(["run", "--profile", "smoke", "--run-dir", str(tmp_path / "run"), "--only", only, "-p", param])
    assert code == 2 and message in caplog.text
    assert not (tmp_path / "run").exists()


def test_checked_parameters_are_converted_like_the_sweep_does():
    from medlsdm.runner import check_parameters

    paths = find_notebooks(only=["04", "05"])
    checked = check_parameters(paths, {"guidance_scale": 2, "compare": [("ddim", 3)], "n_test": 3}, "smoke")
    assert checked == {"guidance_scale": 2.0, "compare": [("ddim", 3)], "n_test": 3}
    assert isinstance(checked["guidance_scale"], float)
    with pytest.raises(ConfigError, match="04_synthesis.ipynb expects int"):  # 05 takes None (all), 04 does not
        check_parameters(paths, {"n_test": None}, "smoke")


def _notebooks(folder, bodies):
    """Stand-in notebooks ``{key: code of its one cell after the parameters}`` in ``folder``."""
    import nbformat

    folder.mkdir()
    for key, body in bodies.items():
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        params = nbformat.v4.new_code_cell("run_dir = 'r'\nprofile = 'quick'\nseed = 0\ninteractive = False")
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_markdown_cell("Work."), nbformat.v4.new_code_cell(body)]
        nbformat.write(nb, folder / f"{NOTEBOOKS[key]}.ipynb")
    return folder


def _sleeping_notebooks(folder):
    return _notebooks(folder, {key: "import time\ntime.sleep(120)" for key in ("01", "06")})


@pytest.mark.notebook
def test_a_lane_takes_the_cores_the_other_lane_frees(tmp_path):
    """With --jobs 2 each kernel starts with half the threads; once the short lane (01) ends, the
    long one (06) is told it may use them all (medlsdm.training.cores), as its training loops do."""
    import os

    out = tmp_path / "threads.json"
    long_lane = (
        "import json, os, time\n"
        "from medlsdm.training.cores import free_threads, follow_free_cores\n"
        "import torch\n"
        "first = (free_threads(), torch.get_num_threads())\n"
        "deadline = time.time() + 60\n"
        "while free_threads() != os.cpu_count() and time.time() < deadline:\n"
        "    time.sleep(0.2)\n"
        "follow_free_cores()\n"
        f"json.dump([first, [free_threads(), torch.get_num_threads()]], open({str(out)!r}, 'w'))"
    )
    folder = _notebooks(tmp_path / "nb", {"01": "import time\ntime.sleep(3)", "06": long_lane})
    run_notebooks("smoke", tmp_path / "run", only=["01", "06"], notebooks_dir=folder, jobs=2)
    (first_free, first_torch), (then_free, then_torch) = json.loads(out.read_text())
    half = max(1, os.cpu_count() // 2)
    assert (first_free, first_torch) == (half, half)
    assert (then_free, then_torch) == (os.cpu_count(), os.cpu_count())


@pytest.mark.notebook
def test_run_streams_progress_and_ctrl_c_with_two_jobs_prints_one_line(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    folder = _sleeping_notebooks(tmp_path / "nb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medlsdm.cli",
            "run",
            "--profile",
            "smoke",
            "--run-dir",
            str(tmp_path / "run"),
            "--notebooks",
            str(folder),
            "--only",
            "01,06",
            "--jobs",
            "2",
        ],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # its own process group, as in a terminal
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    waiting = ["[1/2] 01 cell 3/3: import time", "[2/2] 06 cell 3/3: import time"]  # both kernels in the long cell
    while time.monotonic() < deadline and not all(any(w in line for line in lines) for w in waiting):
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole foreground group
    assert proc.wait(120) == 130
    reader.join(10)
    text = "".join(lines)
    assert all(w in text for w in waiting), text
    assert "Traceback" not in text and text.count("interrupted (Ctrl-C)") == 1, text
    assert "without encryption" not in text, text  # the kernels' channels are encrypted (CurveZMQ)
