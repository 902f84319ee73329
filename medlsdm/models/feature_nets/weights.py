"""Reading feature-network weights from a local file: the one state-dict loader of medlsdm."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...errors import DataError


def read_state_dict(path: Path, what: str) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: {what} weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a data error
        raise DataError(f"{path}: not a readable torch weights file ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise DataError(f"{path}: expected a state_dict (dict of tensors), got {type(state).__name__}")
    return state


def fill_bn_counters(model: nn.Module, state: dict) -> dict:
    """Add BatchNorm ``num_batches_tracked`` counters a file written by old PyTorch lacks
    (they are not used in eval mode)."""
    state = dict(state)
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    return state
