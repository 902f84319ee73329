"""Torch threads that follow the free CPU cores while notebooks run side by side.

``medlsdm run --jobs 2`` (:mod:`medlsdm.runner`) runs notebook lanes side by side, each kernel
with ``cpu_count // lanes`` threads. When one lane ends before the other (the standalone
cardiac notebook beside the VQ-GAN's), its cores would idle: the runner keeps a folder with one
file per lane still running, names it in :data:`LANES_ENV`, and the training loops call
:func:`follow_free_cores` every few steps to take ``cpu_count // running lanes`` threads.
Outside such a run (the variable unset) nothing changes.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch

log = logging.getLogger(__name__)

#: Environment variable naming the folder of running lanes (set by the runner for its kernels).
LANES_ENV = "MEDLSDM_LANES_DIR"
_pinned = 0  # inside torch_threads(n): the caller's thread count wins


def free_threads() -> int | None:
    """Threads this kernel may use now: ``cpu_count // lanes still running`` (at least 1);
    ``None`` outside a side-by-side run."""
    folder = os.environ.get(LANES_ENV)
    if not folder:
        return None
    try:
        lanes = len(os.listdir(folder))
    except OSError:  # the run is over or the folder is gone: keep what we have
        return None
    return max(1, (os.cpu_count() or 1) // max(1, lanes))


def follow_free_cores() -> None:
    """Set torch's thread count to :func:`free_threads` when it differs (not inside :func:`torch_threads`)."""
    n = free_threads()
    if n is None or _pinned:
        return

    if n != torch.get_num_threads():
        log.info("torch threads %d -> %d: a lane beside this one has ended", torch.get_num_threads(), n)
        torch.set_num_threads(n)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Use ``n`` torch CPU threads inside the block (and never follow the free cores there),
    then restore the previous number; ``None`` changes nothing."""
    global _pinned
    if n is None:
        yield
        return

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    _pinned += 1
    try:
        yield
    finally:
        _pinned -= 1
        torch.set_num_threads(before)
