"""The HDF5 store of preprocessed cardiac slices and their edge maps."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping, NamedTuple, Sequence

import h5py
import numpy as np

from ..data.store import H5Store
from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)


#: Classes of the cardiac label maps (``medlsdm.data.classes.CARDIAC``).
CLASS_NAMES = ("background", "lv_blood_pool", "myocardium", "rv")


class CardiacSlice(NamedTuple):
    """One preprocessed short-axis slice (the store's item, also a ``(image, label, affine)``
    tuple like :class:`medlsdm.data.store.CaseStore` items, so the 3-D training code reads it).

    Attributes:
        image: ``(1, H, W)`` float32 in [-1, 1].
        label: ``(H, W)`` int64 class indices (:data:`CLASS_NAMES`).
        affine: 4×4 nibabel affine of the slice as a one-slice volume (:mod:`medlsdm.data.io`).
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray


class SliceStore(H5Store):
    """An HDF5 file of preprocessed slices and their edge maps, read one slice at a time.

    Layout (``N`` slices of ``S × S``; every array is one dataset, chunked per slice, so
    reading slice ``i`` reads (and decompresses) only its own chunk)::

        /images       (N, 1, S, S) float32 in [-1, 1]
        /labels       (N, S, S)    uint8 class indices (CLASS_NAMES)
        /edges        (N, 1, S, S) uint8 in {0, 1} (Canny, computed once when written)
        /affines      (N, 4, 4)    float64 affine of each slice as a one-slice volume
        /slice_ids, /case_ids, /patient_ids   (N,) strings; /slice_index (N,) int32
        attrs: format_version and whatever the writer passes (size, pixel size, edge settings …)

    Writing is atomic: the file is filled under a temporary name and renamed to ``path`` by
    :meth:`close` (a crash never leaves a half-written store). Reading opens the file on
    first access in each process.

    Args:
        path: the ``.h5`` file.
        mode: ``"r"`` to read, ``"w"`` to write a new store (replaces ``path`` on close).
        size: slice side ``S`` (writing only).
        attrs: file attributes to record (writing only; JSON-serialisable values).
        compression: h5py compression filter of the arrays.

    Example::

        with SliceStore(path, "w", size=64, attrs={"edge_sigma": 1.5}) as store:
            store.add("cardiac_000_s03", "cardiac_000", "cardiac_000", 3, slice_, edges)
        store = SliceStore(path)
        image, label, affine = store["cardiac_000_s03"]   # or store[0]
        edges = store.edges("cardiac_000_s03")
    """

    kind = "slice store"
    hint = "run the preprocessing of notebook 06 first"
    required = ("images", "labels", "edges", "affines", "slice_ids")

    def __init__(
        self,
        path: str | os.PathLike,
        mode: str = "r",
        *,
        size: int | None = None,
        attrs: Mapping[str, Any] | None = None,
        compression: str = "gzip",
    ):
        if mode == "w" and (size is None or int(size) < 1):
            raise ConfigError("SliceStore(mode='w') needs the slice size")
        super().__init__(path, mode)
        self._index: dict[str, int] | None = None
        if mode == "w":
            f, s = self._file, int(size)
            for key, value in (attrs or {}).items():
                f.attrs[key] = json.dumps(value)
            shapes = {
                "images": ((1, s, s), np.float32),
                "labels": ((s, s), np.uint8),
                "edges": ((1, s, s), np.uint8),
                "affines": ((4, 4), np.float64),
            }
            for name, (shape, dtype) in shapes.items():
                f.create_dataset(
                    name,
                    shape=(0, *shape),
                    maxshape=(None, *shape),
                    dtype=dtype,
                    chunks=(1, *shape),
                    compression=None if name == "affines" else compression,
                    shuffle=name == "images",
                )
            for name in ("slice_ids", "case_ids", "patient_ids"):
                f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(256,))
            f.create_dataset("slice_index", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(256,))
            self._index = {}

    # ------------------------------------------------------------------ writing
    def add(
        self, slice_id: str, case_id: str, patient_id: str, slice_index: int, item: CardiacSlice, edges: np.ndarray
    ) -> None:
        """Append one slice with its edge map ``(H, W)`` or ``(1, H, W)`` (bool or 0/1)."""
        f, n = self._writable(), len(self._index)
        if slice_id in self._index:
            raise DataError(f"{slice_id}: already in the store")
        values = {
            "images": np.asarray(item.image, np.float32),
            "labels": np.asarray(item.label),
            "edges": np.asarray(edges).reshape(1, *np.shape(item.label)).astype(np.uint8),
            "affines": np.asarray(item.affine, np.float64),
        }
        for name, value in values.items():
            if value.shape != f[name].shape[1:]:
                raise DataError(f"{slice_id}: {name} has shape {value.shape}, the store holds {f[name].shape[1:]}")
        if values["labels"].min() < 0 or values["labels"].max() >= len(CLASS_NAMES):
            raise DataError(f"{slice_id}: class indices must lie in 0 … {len(CLASS_NAMES) - 1}")
        for name, value in {
            **values,
            "slice_ids": slice_id,
            "case_ids": case_id,
            "patient_ids": patient_id,
            "slice_index": int(slice_index),
        }.items():
            f[name].resize(n + 1, axis=0)
            f[name][n] = value
        self._index[slice_id] = n

    # ------------------------------------------------------------------ reading
    def _position(self, key: int | str) -> int:
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.ids())}
        if isinstance(key, (int, np.integer)):
            if not -len(self._index) <= key < len(self._index):
                raise IndexError(f"slice {key} out of range ({len(self._index)} slices in {self.path})")
            return int(key) % len(self._index)
        if key not in self._index:
            raise KeyError(f"{key!r} is not in {self.path}")
        return self._index[key]

    def ids(self) -> list[str]:
        """Slice ids in the order they were written."""
        return [s.decode() if isinstance(s, bytes) else str(s) for s in self._h5()["slice_ids"][()]]

    def __len__(self) -> int:
        return int(self._h5()["slice_ids"].shape[0])

    def __contains__(self, key: str) -> bool:
        try:
            self._position(key)
        except (KeyError, IndexError):
            return False
        return True

    def __iter__(self):
        return iter(self.ids())

    def __getitem__(self, key: int | str) -> CardiacSlice:
        """One slice (by id or position): ``CardiacSlice(image (1, S, S), label (S, S) int64, affine)``."""
        i, f = self._position(key), self._h5()
        return CardiacSlice(f["images"][i], f["labels"][i].astype(np.int64), f["affines"][i])

    def edges(self, key: int | str) -> np.ndarray:
        """The stored edge map of a slice, ``(1, S, S)`` float32 in {0, 1}."""
        return self._h5()["edges"][self._position(key)].astype(np.float32)

    def column(self, name: str) -> list:
        """A per-slice metadata column: ``"case_ids"``, ``"patient_ids"`` or ``"slice_index"``."""
        values = self._h5()[name][()]
        return [v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v for v in values]

    @property
    def attrs(self) -> dict[str, Any]:
        """The attributes recorded by the writer."""
        return {
            k: (json.loads(v) if isinstance(v, str) else v.item() if hasattr(v, "item") else v)
            for k, v in self._h5().attrs.items()
        }

    def stack(self, keys: Sequence[int | str]) -> dict[str, np.ndarray]:
        """``{"images" (N, 1, S, S), "labels" (N, S, S), "edges" (N, 1, S, S)}`` of the given slices."""
        items = [self[k] for k in keys]
        return {
            "images": np.stack([s.image for s in items]),
            "labels": np.stack([s.label for s in items]),
            "edges": np.stack([self.edges(k) for k in keys]),
        }
