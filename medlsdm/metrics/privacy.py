"""Memorisation check: is a synthetic volume closer to a training volume than unseen real ones are?"""
from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import DataError
from .image import as_volume, ssim

log = logging.getLogger(__name__)


def _downsampled(volumes, factor: int, name: str) -> torch.Tensor:
    vols = [as_volume(v).double() for v in volumes]
    if not vols:
        raise DataError(f"nearest_neighbour_check: no {name} volumes")
    shapes = {tuple(v.shape) for v in vols}
    if len(shapes) != 1:
        raise DataError(f"nearest_neighbour_check: {name} volumes have different shapes {sorted(shapes)}")
    x = torch.stack(vols)[:, None]
    if factor > 1:
        x = F.avg_pool3d(x, factor)
    return x[:, 0]


def nearest_neighbour_check(synthetic, train, held_out, *, metric: str = "rmse", downsample: int = 2,
                            data_range: float = 2.0) -> dict[str, Any]:
    """Memorisation check: is any synthetic volume closer to a training volume than real
    unseen volumes ever are?

    Every volume is average-pooled ``downsample``× per axis (speed, and robustness to
    voxel noise). For each synthetic volume the distance to its nearest training volume is
    computed, and the same for each real held-out volume; the smallest held-out distance is
    the ``threshold``. A synthetic volume closer to a training volume than that threshold —
    closer than any independent real patient — is flagged as a possible copy.

    Args:
        synthetic, train, held_out: sequences of same-shaped ``(1, D, H, W)`` volumes.
        metric: ``"rmse"`` (root mean squared difference) or ``"1-ssim"`` (1 − :func:`ssim`
            with ``data_range``; needs every side ≥ 11 after downsampling).
        downsample: pooling factor.
        data_range: intensity range (for ``"1-ssim"``).

    Returns:
        ``{"metric", "downsample", "threshold", "held_out_nn_distance", "synthetic_nn_distance",
        "synthetic_nn_index" (index into ``train``), "flagged" (synthetic indices),
        "n_flagged", "n_synthetic"}``.
    """
    if metric not in ("rmse", "1-ssim"):
        raise DataError(f"nearest_neighbour_check: metric must be 'rmse' or '1-ssim', got {metric!r}")
    s = _downsampled(synthetic, downsample, "synthetic")
    t = _downsampled(train, downsample, "train")
    h = _downsampled(held_out, downsample, "held-out")
    if not (s.shape[1:] == t.shape[1:] == h.shape[1:]):
        raise DataError(f"nearest_neighbour_check: shapes differ: synthetic {tuple(s.shape[1:])}, "
                        f"train {tuple(t.shape[1:])}, held-out {tuple(h.shape[1:])}")

    def distances(a: torch.Tensor) -> torch.Tensor:
        if metric == "rmse":
            return torch.cdist(a.flatten(1), t.flatten(1)) / math.sqrt(t[0].numel())
        return torch.tensor([[1.0 - ssim(x, y, data_range=data_range) for y in t] for x in a], dtype=torch.float64)

    ds, dh = distances(s), distances(h)
    s_min, s_idx = ds.min(1)
    h_min = dh.min(1).values
    threshold = float(h_min.min())
    flagged = [int(i) for i in torch.nonzero(s_min < threshold).flatten()]
    return {
        "metric": metric, "downsample": int(downsample), "threshold": threshold,
        "held_out_nn_distance": h_min.tolist(), "synthetic_nn_distance": s_min.tolist(),
        "synthetic_nn_index": s_idx.tolist(), "flagged": flagged, "n_flagged": len(flagged),
        "n_synthetic": int(s.shape[0]),
    }
