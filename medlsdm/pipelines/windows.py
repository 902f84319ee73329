"""Overlapping windows along depth: where they lie, how much each one counts, how to blend them.

Whole-volume synthesis (:meth:`MedLSDMPipeline.__call__` with ``window``) denoises a deep
latent as overlapping depth windows and averages their predictions where they overlap;
decoding (and encoding, for edits) runs in overlapping depth tiles blended the same way.

Windows of ``window`` slices start every ``window - overlap`` slices; the last one is moved
back to end at the volume's last slice (so it may overlap its neighbour by more). Where
windows overlap, each slice is a weighted mean of the windows covering it. A window's weight
is 1 in its middle and ramps linearly over the ``overlap`` slices at each side that has a
neighbour, ``1/(overlap+1), 2/(overlap+1), …`` (no ramp at the volume's ends): two regular
neighbours' ramps sum to 1, and the slices nearest a window's border, which see the least
context, count least ("feathering"; MultiDiffusion, Bar-Tal et al. 2023, is the uniform case).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import ConfigError


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """First slice of every window covering ``range(length)``.

    Args:
        length: slices to cover.
        window: slices per window; a window at least ``length`` long is one window.
        overlap: slices shared by consecutive windows (``0 <= overlap < window``).
    """
    if window < 1 or not 0 <= overlap < window:
        raise ConfigError(f"window ({window}) must be >= 1 and overlap ({overlap}) within 0…window-1")
    if window >= length:
        return [0]
    starts = list(range(0, length - window, window - overlap))
    return starts + [length - window]


def window_weights(starts: list[int], window: int, overlap: int, length: int) -> list[torch.Tensor]:
    """Blending weight of every slice of every window: 1-D float tensors of ``min(window, length)``.

    Args:
        starts: from :func:`window_starts`.
        window: slices per window.
        overlap: the ramp length (slices) at each side with a neighbouring window.
        length: slices of the whole volume.
    """
    size = min(window, length)
    ramp = torch.arange(1, overlap + 1, dtype=torch.float64) / (overlap + 1)
    weights = []
    for start in starts:
        w = torch.ones(size, dtype=torch.float64)
        if start > 0:
            w[:overlap] = ramp
        if start + size < length:
            w[size - overlap :] = torch.minimum(w[size - overlap :], ramp.flip(0))
        weights.append(w.float())
    return weights


def blend_windows(
    parts: list[torch.Tensor], starts: list[int], weights: list[torch.Tensor], length: int, dim: int = 2
) -> torch.Tensor:
    """Weighted mean of overlapping windows along ``dim``.

    Args:
        parts: one tensor per window, each covering ``len(weights[i])`` slices along ``dim``.
        starts: their first slices.
        weights: their per-slice weights (:func:`window_weights`).
        length: slices of the result along ``dim``.
        dim: the depth dimension (2 for ``(B, C, D, H, W)``).
    """
    shape = list(parts[0].shape)
    shape[dim] = length
    total = parts[0].new_zeros(shape)
    norm = torch.zeros(length, dtype=total.dtype, device=total.device)
    view = [1] * len(shape)
    view[dim] = -1
    for part, start, w in zip(parts, starts, weights):
        w = w.to(total.device, total.dtype)
        total.narrow(dim, start, len(w)).add_(part * w.view(view))
        norm[start : start + len(w)] += w
    return total / norm.view(view)


def tiled(
    fn: Callable[[int, int], torch.Tensor], length: int, window: int | None, overlap: int, scale: float = 1.0
) -> torch.Tensor:
    """Apply ``fn`` to overlapping depth tiles of an input and blend its outputs.

    Args:
        fn: ``fn(start, stop)`` maps input slices ``start:stop`` to an output ``(B, C, D', H', W')``
            of ``D' = (stop - start) · scale`` slices (e.g. the VQ-GAN decoder: ``scale`` = 4).
        length: input slices.
        window: input slices per tile; ``None`` runs ``fn(0, length)`` once.
        overlap: input slices shared by consecutive tiles.
        scale: output slices per input slice.
    """
    if window is None or window >= length:
        return fn(0, length)
    starts = window_starts(length, window, overlap)
    parts = [fn(s, s + window) for s in starts]
    out_starts = [round(s * scale) for s in starts]
    out_window, out_length = round(window * scale), round(length * scale)
    weights = window_weights(out_starts, out_window, round(overlap * scale), out_length)
    return blend_windows(parts, out_starts, weights, out_length)


@dataclass
class WindowCalls:
    """The UNet calls of one denoising step: windows of ``size`` slices starting at ``starts``
    with blending ``weights``, grouped into ``batches`` of starts (one UNet call each);
    ``conditions``: each call's condition (a tensor, or a function building it), set by the pipeline."""

    starts: list[int]
    size: int
    weights: list[torch.Tensor]
    batches: list[list[int]]
    conditions: list = field(default_factory=list)


def window_calls(length: int, windows: tuple[int, int] | None, batch_size: int) -> WindowCalls:
    """Depth windows ``(window, overlap)`` over ``length`` slices (``None``: one window), ``batch_size`` per call."""
    window, overlap = windows if windows is not None else (length, 0)
    starts = window_starts(length, window, overlap)
    if int(batch_size) < 1:
        raise ConfigError(f"window_batch_size must be >= 1, got {batch_size}")
    size = min(window, length)
    batches = [starts[k : k + int(batch_size)] for k in range(0, len(starts), int(batch_size))]
    return WindowCalls(starts, size, window_weights(starts, size, overlap, length), batches)
