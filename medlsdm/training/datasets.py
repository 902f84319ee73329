"""Seeded training datasets: item ``i`` is a pure function of ``(seed, i)``.

So a run is reproducible and resumable without saving any data-loader state:
:class:`~medlsdm.training.trainer.Trainer` asks for indices derived from the step.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)


class ArrayStore(dict):
    """A case store in memory: ``{case_id: (image (1, D, H, W), label (D, H, W), affine)}``.

    Same reading interface as :class:`medlsdm.data.store.CaseStore` (``store[case_id]``).
    """


class SeededDataset(torch.utils.data.Dataset):
    """An endless map-style dataset whose item ``i`` draws its random choices from
    :meth:`rng` ``(i)`` alone, seeded by ``(seed, i)``."""

    LENGTH = 2**62
    seed: int = 0

    def __len__(self) -> int:
        return self.LENGTH

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(index)])


def random_window(rng: np.random.Generator, shape: Sequence[int], crop: Sequence[int]) -> tuple[slice, ...]:
    """A uniformly placed window of size ``crop`` inside an array of ``shape`` (one draw per axis)."""
    starts = [int(rng.integers(0, s - c + 1)) for s, c in zip(shape, crop)]
    return tuple(slice(a, a + c) for a, c in zip(starts, crop))


class RandomCropDataset(SeededDataset):
    """Random crops of a case store; item ``i`` is a pure function of ``(seed, i)``.

    Args:
        store: mapping ``case_id -> (image (1, D, H, W) float32, label (D, H, W) int64, affine)``
            (:class:`medlsdm.data.store.CaseStore` or :class:`ArrayStore`).
        case_ids: the cases to crop from (the training split).
        crop_shape: crop size ``(D, H, W)`` (or ``(H, W)`` for 2-D cases ``(1, H, W)``);
            ``None`` uses whole cases (they must all have the same shape).
        seed: seed of the crop positions.
        cache: keep every case in memory after its first read (fast; the cases must fit).
    """

    def __init__(
        self,
        store: Mapping,
        case_ids: Sequence[str],
        crop_shape: Sequence[int] | None,
        seed: int = 0,
        cache: bool = True,
    ):
        self.store = store
        self.case_ids = list(case_ids)
        if not self.case_ids:
            raise DataError(f"{_store_name(store)}: no training cases to crop from")
        self.crop_shape = None if crop_shape is None else tuple(int(s) for s in crop_shape)
        self.seed = int(seed)
        self.cache = cache
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        image, _ = self._case(self.case_ids[0])
        if self.crop_shape is not None and len(self.crop_shape) != image.ndim - 1:
            raise ConfigError(f"crop_shape {self.crop_shape} does not match cases of shape {image.shape[1:]}")

    def _case(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        if case_id in self._cache:
            return self._cache[case_id]
        try:
            image, label, _ = self.store[case_id]
        except KeyError:
            raise DataError(f"{_store_name(self.store)}: case {case_id!r} not found") from None
        image, label = np.asarray(image, dtype=np.float32), np.asarray(label, dtype=np.int64)
        if self.crop_shape is not None and any(c > s for c, s in zip(self.crop_shape, image.shape[1:])):
            raise DataError(
                f"{_store_name(self.store)}: case {case_id!r} of shape {image.shape[1:]} is smaller "
                f"than crop_shape {self.crop_shape}"
            )
        if self.cache:
            self._cache[case_id] = (image, label)
        return image, label

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng(index)
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
        image, label = self._case(case_id)
        if self.crop_shape is None:
            return torch.from_numpy(image.copy()), torch.from_numpy(label.copy())
        window = random_window(rng, image.shape[1:], self.crop_shape)
        return (
            torch.from_numpy(np.ascontiguousarray(image[(slice(None), *window)])),
            torch.from_numpy(np.ascontiguousarray(label[window])),
        )


def _store_name(store: Any) -> str:
    return str(getattr(store, "path", type(store).__name__))


class LatentDataset(SeededDataset):
    """Item ``i`` is the (latent, label map) of a case drawn from ``(seed, i)`` alone
    (``(latent, label map, extra condition)`` when ``extra`` is given)."""

    def __init__(self, latents: torch.Tensor, labels: torch.Tensor, seed: int = 0, extra: torch.Tensor | None = None):
        if len(latents) == 0:
            raise DataError("no training latents")
        self.latents, self.labels, self.seed, self.extra = latents, labels, int(seed), extra

    def __getitem__(self, index: int):
        k = int(self.rng(index).integers(len(self.latents)))
        if self.extra is not None:
            return self.latents[k], self.labels[k], self.extra[k]
        return self.latents[k], self.labels[k]


class StepBatches(torch.utils.data.Sampler):
    """Batch indices for optimiser steps ``start …``: disjoint per process and micro-batch."""

    def __init__(self, start_step, batch_size, accumulation, rank, world):
        self.start_step, self.batch_size = start_step, batch_size
        self.accumulation, self.rank, self.world = accumulation, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        micro = self.start_step * self.accumulation
        while True:
            first = (micro * self.world + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))
            micro += 1
