"""HDF5 cache of preprocessed cases, written one case at a time and read lazily.

Layout of ``cases.h5``::

    /cases/<case_id>/image   (1, D, H, W) float32, compressed
    /cases/<case_id>/label   (D, H, W)    uint8 class indices, compressed
    /cases/<case_id>.attrs["affine"]      4x4 nibabel affine (medlsdm.data.io convention)

Writing is atomic: the file is filled under a temporary name and renamed to ``path`` only
when :meth:`CaseStore.close` succeeds, so a crash never leaves a half-written cache. Reading
opens the file on first access in each process (safe with ``DataLoader`` workers).

Example::

    with CaseStore(path, mode="w") as store:
        store.add("case_000", image, label, affine)
    with CaseStore(path) as store:
        image, label, affine = store["case_000"]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import h5py
import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import ConfigError, DataError

FORMAT_VERSION = 1

#: Label maps are stored as uint8 class indices: at most 256 classes (background included).
MAX_CLASSES = 256


class H5Store:
    """File handling shared by the package's HDF5 stores (:class:`CaseStore`; the cardiac slices
    subclass it too): written under a temporary name and renamed into
    place by :meth:`close`; read lazily, opened once per process.

    Subclasses set ``kind`` (for messages), ``hint`` (what makes a missing store) and
    ``required`` (top-level names a valid file holds), and fill a new file after
    ``super().__init__`` (``self._file`` is open for writing then).
    """

    kind = "store"
    hint = ""
    required: tuple[str, ...] = ()

    def __init__(self, path: str | os.PathLike, mode: str = "r"):
        if mode not in ("r", "w"):
            raise ConfigError(f"{path}: mode must be 'r' or 'w', got {mode!r}")
        self.path, self.mode = Path(path), mode
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._atomic = None
        if mode == "w":
            self._atomic = atomic_path(self.path)
            self._file = h5py.File(self._atomic.__enter__(), "w", track_order=True)
            self._file.attrs["format_version"] = FORMAT_VERSION
        elif not self.path.is_file():
            raise DataError(f"{self.path}: {self.kind} not found ({self.hint})")

    def _h5(self) -> h5py.File:
        if self._file is not None and (self.mode == "w" or self._pid == os.getpid()):
            return self._file
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise DataError(f"{self.path}: not a readable HDF5 {self.kind} ({exc})") from None
        missing = [k for k in self.required if k not in self._file]
        if missing:
            raise DataError(f"{self.path}: not a medlsdm {self.kind} (missing {missing})")
        self._pid = os.getpid()
        return self._file

    def _writable(self) -> h5py.File:
        if self.mode != "w" or self._file is None:
            raise RuntimeError(f"{self!r} is not open for writing")
        return self._file

    def close(self) -> None:
        """Close the file; a store opened for writing is renamed to ``path`` now."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._atomic is not None:
            atomic, self._atomic = self._atomic, None
            atomic.__exit__(None, None, None)

    def abort(self) -> None:
        """Discard a store being written (the temporary file is removed)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._atomic is not None:
            atomic, self._atomic = self._atomic, None
            try:
                atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)
            except RuntimeError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close() if exc_type is None else self.abort()

    def __getstate__(self) -> dict:
        if self.mode == "w":
            raise TypeError(f"a {type(self).__name__} open for writing cannot be pickled")
        return {**self.__dict__, "_file": None, "_pid": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, mode={self.mode!r})"


class CaseStore(H5Store):
    """An HDF5 file of preprocessed cases.

    Args:
        path: the ``.h5`` file.
        mode: ``"r"`` to read an existing store, ``"w"`` to write a new one (replaces
            ``path`` on :meth:`close`).
        compression: h5py compression filter for new datasets.
    """

    kind = "case store"
    hint = "run notebook 01 or `medlsdm preprocess`"
    required = ("cases",)

    def __init__(self, path: str | os.PathLike, mode: str = "r", *, compression: str = "gzip"):
        super().__init__(path, mode)
        self.compression = compression
        if mode == "w":
            self._file.create_group("cases", track_order=True)

    # ------------------------------------------------------------------ writing
    def add(self, case_id: str, image: np.ndarray, label: np.ndarray, affine: np.ndarray) -> None:
        """Add one case.

        Args:
            case_id: unique id.
            image: ``(1, D, H, W)`` float32 in [-1, 1].
            label: ``(D, H, W)`` integer class indices (0 … 255).
            affine: 4x4 nibabel affine of the case.
        """
        cases = self._writable()["cases"]
        image = np.asarray(image, dtype=np.float32)
        label = np.asarray(label)
        affine = np.asarray(affine, dtype=np.float64)
        where = f"{self.path}, case {case_id}"
        if image.ndim != 4 or image.shape[0] != 1 or image.shape[1:] != label.shape:
            raise DataError(
                f"{where}: expected image (1, D, H, W) and label (D, H, W), got {image.shape} and {label.shape}"
            )
        if affine.shape != (4, 4):
            raise DataError(f"{where}: affine must be 4x4, got {affine.shape}")
        if label.size and (label.min() < 0 or label.max() >= MAX_CLASSES):
            raise DataError(f"{where}: class indices must lie in 0 … {MAX_CLASSES - 1}")
        if case_id in cases:
            raise DataError(f"{where}: already in the store")
        group = cases.create_group(case_id)
        group.create_dataset("image", data=image, compression=self.compression, shuffle=True)
        group.create_dataset("label", data=label.astype(np.uint8), compression=self.compression)
        group.attrs["affine"] = affine

    # ------------------------------------------------------------------ reading
    def ids(self) -> list[str]:
        """Case ids in the order they were added."""
        return list(self._h5()["cases"].keys())

    def __len__(self) -> int:
        return len(self._h5()["cases"])

    def __contains__(self, case_id: str) -> bool:
        return case_id in self._h5()["cases"]

    def __iter__(self):
        return iter(self.ids())

    def __getitem__(self, case_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image (1, D, H, W) float32, label (D, H, W) int64, affine (4, 4))`` of a case."""
        cases = self._h5()["cases"]
        if case_id not in cases:
            raise KeyError(f"{case_id!r} is not in {self.path}")
        group = cases[case_id]
        return (
            group["image"][()].astype(np.float32, copy=False),
            group["label"][()].astype(np.int64),
            np.array(group.attrs["affine"], dtype=np.float64),
        )


def stack_cases(store: Mapping, case_ids: Iterable[str]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Images ``(N, 1, *spatial)`` float32, label maps ``(N, *spatial)`` int64 and affines of
    cases of a store (:class:`CaseStore`, a slice store, or any mapping ``id -> (image, label, affine)``)."""
    items = [store[c] for c in case_ids]
    if not items:
        raise DataError(f"{getattr(store, 'path', 'store')}: no cases given")
    images = np.stack([np.asarray(img, np.float32) for img, _, _ in items])
    labels = np.stack([np.asarray(lab, np.int64) for _, lab, _ in items])
    return images, labels, [np.asarray(aff) for _, _, aff in items]


def as_cases(images, labels=None) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Normalise a stacked array ``(N, 1, *spatial)`` or a sequence of ``(1, *spatial)`` arrays."""

    if isinstance(images, (np.ndarray, torch.Tensor)):
        images = [images[i] for i in range(images.shape[0])]
    images = [np.asarray(im.detach().cpu() if isinstance(im, torch.Tensor) else im, dtype=np.float32) for im in images]
    if not images:
        raise DataError("no images given")
    for i, im in enumerate(images):
        if im.ndim not in (3, 4) or im.shape[0] != 1:
            raise DataError(f"image {i}: expected (1, D, H, W) or (1, H, W), got shape {im.shape}")
    if labels is None:
        return images, None
    if isinstance(labels, (np.ndarray, torch.Tensor)):
        labels = [labels[i] for i in range(labels.shape[0])]
    labels = [np.asarray(lb.detach().cpu() if isinstance(lb, torch.Tensor) else lb) for lb in labels]
    if len(labels) != len(images):
        raise DataError(f"{len(images)} images but {len(labels)} label maps")
    out = []
    for i, (im, lb) in enumerate(zip(images, labels)):
        if lb.ndim == im.ndim and lb.shape[0] == 1:
            lb = lb[0]
        if lb.shape != im.shape[1:]:
            raise DataError(f"case {i}: label shape {lb.shape} does not match image shape {im.shape[1:]}")
        if not np.issubdtype(lb.dtype, np.integer):
            raise DataError(f"case {i}: labels must be integer class indices, got {lb.dtype}")
        out.append(lb.astype(np.int64))
    return images, out


def check_plain_store(path: str | os.PathLike, case_ids: list[str]) -> None:
    """Refuse a case store (e.g. one from a pack) holding anything but plain case data: the cases
    ``case_ids`` as hard-linked ``image`` and ``label`` datasets without external or virtual storage
    and with no filter but gzip and shuffle (HDF5 would load a plugin library for another one)."""
    deflate, shuffle = 1, 2
    with h5py.File(path, "r") as f:
        if set(f) != {"cases"} or f.get("cases", getlink=True).__class__ is not h5py.HardLink:
            raise DataError(f"{path}: not a medlsdm case store (top level {sorted(f)})")
        cases = f["cases"]
        if sorted(cases) != sorted(case_ids):
            raise DataError(f"{path}: its cases differ from the data manifest's")
        for cid in cases:
            if cases.get(cid, getlink=True).__class__ is not h5py.HardLink or set(cases[cid]) != {"image", "label"}:
                raise DataError(f"{path}: case {cid!r} is not an image and a label map")
            for key in ("image", "label"):
                if cases[cid].get(key, getlink=True).__class__ is not h5py.HardLink:
                    raise DataError(f"{path}: {cid}/{key} is a link")
                data = cases[cid][key]
                plist = data.id.get_create_plist()
                filters = {plist.get_filter(i)[0] for i in range(plist.get_nfilters())}
                if data.is_virtual or data.external or not filters <= {deflate, shuffle}:
                    raise DataError(f"{path}: {cid}/{key} uses external or virtual storage or an unknown filter")
