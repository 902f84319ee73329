"""Atomic writes and the run directory's shared files."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from medlsdm.atomic import atomic_path, read_json, write_json
from medlsdm.errors import DataError
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
    assert run.eval_samples == run.root / "samples" / "eval" and run.eval_samples.is_dir()  # folders: created
    assert run.diffusion.is_dir() and run.cardiac.is_dir() and run.sweeps.is_dir()
