"""Atomic writes and the run directory's shared files."""

import json
import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from medlsdm import cli
from medlsdm.atomic import atomic_path, read_json, write_json
from medlsdm.errors import DataError, MedLSDMError
from medlsdm.rundir import RunDir


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left behind


def test_atomic_path_keeps_suffixes(tmp_path):
    with atomic_path(tmp_path / "x.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"1")
    assert (tmp_path / "x.nii.gz").read_bytes() == b"1"


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        read_json(bad)
    with pytest.raises(DataError, match="missing.json: file not found"):
        read_json(tmp_path / "missing.json")


def test_update_metrics_keeps_other_keys(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.read_metrics() == {}
    run.update_metrics("01_preprocessing", {"n_cases": 3})
    run.update_metrics("02_vqgan", {"psnr": 30.0})
    run.update_metrics("01_preprocessing", {"n_cases": 4})
    assert json.loads(run.metrics_path.read_text()) == {"01_preprocessing": {"n_cases": 4}, "02_vqgan": {"psnr": 30.0}}


def test_save_figure(tmp_path):
    run = RunDir(tmp_path)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = run.save_figure(fig, "line")
    plt.close(fig)
    assert path == run.figures / "line.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {})
    finally:
        os.umask(umask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def test_run_layout_names_every_hand_off(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.store_path == run.root / "data" / "cases.h5" and not run.store_path.exists()  # file paths: names only
    assert run.split_path.name == "split.json" and run.manifest_path.name == "manifest.json"
    assert run.vqgan_model == run.root / "vqgan" / "model"
    assert run.eval_samples == run.root / "samples" / "eval" and run.sweeps == run.root / "sweeps"
    assert not run.root.exists()  # reading a run creates nothing


def test_data_root_resolves_the_manifests_root(tmp_path):
    """Absolute as written; a pack's relative root from data/; None without a manifest or a root."""
    run = RunDir(tmp_path / "run")
    assert run.data_root() is None
    run.data.mkdir(parents=True)
    for root, expected in [
        (str(tmp_path / "raw"), tmp_path / "raw"),
        ("../raw/torso", run.root / "raw" / "torso"),
        (None, None),
    ]:
        write_json(run.manifest_path, {"data_root": root})
        assert run.data_root() == expected


@pytest.mark.parametrize("command", [["report"], ["evaluate", "--profile", "smoke"]])
def test_read_commands_on_a_missing_run_dir_create_nothing(tmp_path, caplog, command):
    typo = tmp_path / "typo"
    assert cli.main([command[0], "--run-dir", str(typo), *command[1:]]) == 2
    assert f"{typo}: run directory not found" in caplog.text
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="run directory not found"):
        RunDir(typo).require()


HOLD = """
import sys, time
from medlsdm.rundir import RunDir
with RunDir(sys.argv[1]).writing("medlsdm run"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_one_writer_per_run_directory(tmp_path):
    run = RunDir(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(MedLSDMError, match=rf"run directory in use by PID {holder.pid} \(medlsdm run\)"):
            with run.writing("medlsdm sweep"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run.writing("medlsdm sweep"):  # the dead holder's lock is taken over
        with run.writing("nested"):  # the same process may nest
            assert f"PID {os.getpid()} (medlsdm sweep)" in (run.root / ".writer.lock").read_text()


KILLED = """
import os, sys
from medlsdm.rundir import RunDir
run = RunDir(sys.argv[1])
with run.writing("medlsdm sweep"), run.metrics_restored("04_synthesis"):
    run.update_metrics("04_synthesis", {"steps": 2})
    os._exit(9)  # SIGKILL: no finally runs
"""


def test_metrics_restored_after_the_block_and_after_a_kill(tmp_path):
    run = RunDir(tmp_path / "run")
    run.update_metrics("04_synthesis", {"steps": 50})
    with pytest.raises(RuntimeError):
        with run.writing("test"), run.metrics_restored("04_synthesis"), run.metrics_restored("05_evaluation"):
            run.update_metrics("04_synthesis", {"steps": 2})
            run.update_metrics("05_evaluation", {"x": 1})
            raise RuntimeError("a combination failed")
    assert run.read_metrics() == {"04_synthesis": {"steps": 50}}
    assert subprocess.run([sys.executable, "-c", KILLED, str(run.root)]).returncode == 9
    assert run.read_metrics() == {"04_synthesis": {"steps": 2}}  # what the kill left …
    with run.writing("medlsdm run"):  # … until the next writer takes the run directory
        assert run.read_metrics() == {"04_synthesis": {"steps": 50}}
    assert sorted(p.name for p in run.root.iterdir()) == [".metrics.lock", ".writer.lock", "metrics.json"]
