"""Torch threads that follow the free cores (medlsdm.training.cores); the runner's side is in test_runner.py."""

import os

import torch

from medlsdm.training.cores import LANES_ENV, follow_free_cores, free_threads, torch_threads


def test_free_threads_is_the_cores_shared_by_the_running_lanes(tmp_path, monkeypatch):
    monkeypatch.delenv(LANES_ENV, raising=False)
    assert free_threads() is None  # not under the runner: nothing to follow
    monkeypatch.setenv(LANES_ENV, str(tmp_path))
    (tmp_path / "lane-0").touch()
    (tmp_path / "lane-1").touch()
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert free_threads() == 4
    (tmp_path / "lane-1").unlink()
    assert free_threads() == 8
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    (tmp_path / "lane-1").touch()
    assert free_threads() == 1  # never 0
    monkeypatch.setenv(LANES_ENV, str(tmp_path / "gone"))
    assert free_threads() is None


def test_follow_free_cores_sets_torch_threads_except_where_the_caller_chose(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv(LANES_ENV, str(tmp_path))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    (tmp_path / "lane-0").touch()
    (tmp_path / "lane-1").touch()
    try:
        follow_free_cores()
        assert torch.get_num_threads() == 1
        (tmp_path / "lane-1").unlink()
        with torch_threads(1):  # an explicit num_threads wins over the free cores
            follow_free_cores()
            assert torch.get_num_threads() == 1
        follow_free_cores()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
