"""Conditioning modes of the cardiac ablation: what each model sees of the label and edge maps."""

from __future__ import annotations

import logging
from typing import Sequence

import torch

from ..errors import ConfigError
from ..models.unet import semantic_condition
from .store import CLASS_NAMES

log = logging.getLogger(__name__)


#: The conditioning modes of the ablation.
MODES = ("edges", "semantic", "edges+semantic")


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"unknown conditioning mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def check_modes(modes: Sequence[str]) -> list[str]:
    """The modes as a list; :class:`~medlsdm.errors.ConfigError` for an unknown or repeated
    one (call it before any work starts)."""
    modes = [_check_mode(m) for m in modes]
    if not modes or len(set(modes)) != len(modes):
        raise ConfigError(f"modes must list distinct modes out of {', '.join(MODES)}, got {modes}")
    return modes


def mode_slug(mode: str) -> str:
    """File-name form of a mode: ``"edges+semantic"`` → ``"edges_semantic"``."""
    return _check_mode(mode).replace("+", "_")


def condition_inputs(labels, edges, mode: str):
    """The ``(labels, edges)`` a model of ``mode`` sees (numpy or torch, any batch shape).

    ``"edges"``: the label map is all background (a constant one-hot map, no semantic
    information); ``"semantic"``: the edge map is all zeros; ``"edges+semantic"``: both.
    """
    _check_mode(mode)
    if mode == "edges":
        labels = labels * 0
    if mode == "semantic":
        edges = edges * 0
    return labels, edges


def make_condition(labels, edges, mode: str, num_classes: int = len(CLASS_NAMES)):
    """The UNet condition ``(B, num_classes + 2, H, W)`` of a mode: one-hot, edge, null channel.

    Args:
        labels: ``(B, H, W)`` class indices.
        edges: ``(B, 1, H, W)`` edge maps in {0, 1}.
        mode: one of :data:`MODES`.
    """

    labels, edges = condition_inputs(torch.as_tensor(labels).long(), torch.as_tensor(edges, dtype=torch.float32), mode)
    return semantic_condition(labels, num_classes, edges)
