"""Preprocess a whole dataset into a folder later notebooks read (notebook 01, ``medlsdm preprocess``).

Output folder (``RUN/data``)::

    images/<case_id>.nii.gz   float32 in [-1, 1], the block's true affine
    labels/<case_id>.nii.gz   uint8 contiguous class indices, same affine
    cases.h5                  the same blocks as an HDF5 cache (:class:`~medlsdm.data.store.CaseStore`)
    split.json                patient-level train/val/test case ids (:mod:`medlsdm.data.splits`)
    manifest.json             what was done (dataset, classes, spacing, normalisation, cases)

``images/`` + ``labels/`` is the generic layout, so the folder is itself readable by the
``nifti`` adapter.

The folder is built under a temporary name beside ``out_dir`` and put in place whole when it
is complete (:func:`medlsdm.atomic.save_pretrained_atomic`), so a failure at any point leaves
the old folder as it was.
An ``out_dir`` holding anything else than these outputs is refused before any work.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..atomic import read_json, save_pretrained_atomic, write_json
from ..errors import ConfigError, DataError
from ..rundir import MANIFEST, SPLIT, STORE
from .adapters import get_adapter
from .datasets import Case, validate_cases
from .io import MAX_VOLUME_BYTES, format_bytes, write_nifti
from .preprocess import PREPROCESSING, preprocess_case, preprocess_case_paper, resampled_shape
from .splits import check_fractions, make_split, save_split
from .store import MAX_CLASSES, CaseStore

logger = logging.getLogger(__name__)

#: What a data folder holds (module docstring); nothing else may be in an ``out_dir``.
OUTPUTS = ("images", "labels", MANIFEST, SPLIT, STORE)


_RERUN = "rerun notebook 01 / `medlsdm preprocess`"


@dataclass(kw_only=True)
class CaseEntry:
    """One block of the manifest's ``cases``: where its files are and where it came from.

    Only ``case_id`` and ``patient_id`` are in every entry; the cardiac manifest's entries (a
    case's ``n_slices``, in ``extra``) have none of the others.
    """

    case_id: str
    patient_id: str
    image: str | None = None  #: ``images/<case_id>.nii.gz``, relative to the data folder
    label: str | None = None  #: ``labels/<case_id>.nii.gz``
    source_image: str | None = None  #: relative to the dataset root (only the file name for a file outside it)
    source_label: str | None = None
    source_shape: list[int] | None = None
    source_spacing: list[float] | None = None
    block_start: int | None = None  #: first slice of the block in the preprocessed volume
    class_voxels: list[int] | None = None  #: voxels of each class in the block
    source_frame: int | None = None  #: time frame of a 4-D file; not written when ``None``
    extra: dict[str, Any] = field(default_factory=dict)  #: keys this version does not know, kept as read

    @classmethod
    def from_dict(cls, values: dict, where: str = "manifest") -> "CaseEntry":
        return _from_dict(cls, values, where)

    def to_dict(self) -> dict[str, Any]:
        out = _to_dict(self)
        if self.source_frame is None:
            del out["source_frame"]
        return out


@dataclass(kw_only=True)
class Manifest:
    """``RUN/data/manifest.json``: what :func:`prepare_dataset` did (read with :func:`load_manifest`).

    :meth:`to_dict` gives the file's JSON, keys in the order of the fields; keys of a file that
    this version does not know are kept in ``extra`` and written back after the others.
    ``dataset``, ``classes``, ``spacing`` and ``cases`` are in every manifest; the others are
    ``None`` in the 2-D cardiac manifest (:func:`medlsdm.cardiac.data.prepare_cardiac`, whose
    own keys are in ``extra``), which the trainers read too.
    """

    dataset: str  #: adapter name
    modality: str | None = None  #: ``"CT"`` or ``"MR"``
    classes: list[str]  #: class names, index 0 background
    source_values: list[int] | None = None  #: label value of each class in the dataset's files
    spacing: list[float]  #: voxel size (mm), ``(D, H, W)``
    block_shape: list[int] | None = None  #: ``(D, H, W)``
    preprocessing: str = "resample"  #: ``"resample"`` or ``"paper"`` (absent from files before it existed)
    normalisation: dict[str, Any] | None = None
    data_root: str | None = None  #: the dataset folder; ``None`` in a pack of own data, relative in a pack of a phantom
    split: str | None = None  #: file name of the split in the data folder
    store: str | None = None  #: file name of the HDF5 cache in the data folder
    seed: int | None = None  #: seed of the split
    fractions: list[float] | None = None  #: (train, val, test) fractions of patients
    cases: list[CaseEntry]
    extra: dict[str, Any] = field(default_factory=dict)  #: keys this version does not know, kept as read

    @classmethod
    def from_dict(cls, values: dict, where: str = "manifest") -> "Manifest":
        """The manifest of the JSON object ``values``; :class:`DataError` naming ``where`` when it is not one."""
        if not isinstance(values, dict) or not isinstance(values.get("cases"), list):
            raise DataError(f"{where}: not a medlsdm manifest (no 'cases' list); {_RERUN}")
        cases = []
        for k, entry in enumerate(values["cases"]):
            if not isinstance(entry, dict):
                raise DataError(f"{where}: case {k} is not a JSON object; {_RERUN}")
            cases.append(CaseEntry.from_dict(entry, f"{where}: case {k}"))
        return _from_dict(cls, {**values, "cases": cases}, where)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json``."""
        return {**_to_dict(self), "cases": [c.to_dict() for c in self.cases]}


def _from_dict(cls, values: dict, where: str):
    """``cls`` from the JSON object ``values``: unknown keys go to ``extra``; missing ones raise."""
    names = [f.name for f in fields(cls) if f.name != "extra"]
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in values]
    if missing:
        raise DataError(f"{where}: no {', '.join(map(repr, missing))}; not a complete medlsdm manifest, {_RERUN}")
    return cls(
        **{k: v for k, v in values.items() if k in names}, extra={k: v for k, v in values.items() if k not in names}
    )


def _to_dict(obj) -> dict[str, Any]:
    return {**{f.name: getattr(obj, f.name) for f in fields(obj) if f.name != "extra"}, **obj.extra}


def _check_parameters(spacing, block_shape, n_cases, blocks_per_case):
    try:
        spacing = [float(v) for v in spacing]
        block_shape = [int(v) for v in block_shape]
    except (TypeError, ValueError):
        raise ConfigError(
            f"spacing and block_shape must be sequences of numbers, got {spacing!r}, {block_shape!r}"
        ) from None
    if len(spacing) != 3 or not all(math.isfinite(v) and v > 0 for v in spacing):
        raise ConfigError(f"spacing must be three positive numbers (D, H, W) in mm, got {spacing}")
    if len(block_shape) != 3 or min(block_shape) < 1:
        raise ConfigError(f"block_shape must be three positive integers (D, H, W), got {block_shape}")
    if n_cases is not None and int(n_cases) < 1:
        raise ConfigError(f"n_cases must be >= 1 or None (all), got {n_cases}")
    if int(blocks_per_case) < 1:
        raise ConfigError(f"blocks_per_case must be >= 1, got {blocks_per_case}")
    return spacing, block_shape


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to the dataset root; only the file name for a file outside it (no folder
    names of the user's disk in the manifest)."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return path.name


def _is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and ".tmp" in path.name  # medlsdm.atomic's temporary files


def check_out_dir(out_dir: Path, data_root: Path) -> None:
    """Refuse an ``out_dir`` that is (or holds) the dataset, or holds files preprocess did not write."""
    if out_dir.resolve() == data_root.resolve() or out_dir.resolve() in data_root.resolve().parents:
        raise ConfigError(f"out_dir {out_dir} must not be data_root {data_root} or a folder above it")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"out_dir {out_dir}: exists and is not a folder")
    foreign = [p for p in out_dir.iterdir() if p.name not in OUTPUTS and not _is_temporary(p)]
    for sub in ("images", "labels"):
        if (out_dir / sub).is_dir():
            foreign += [
                p
                for p in (out_dir / sub).iterdir()
                if not (p.is_file() and (p.name.endswith(".nii.gz") or _is_temporary(p)))
            ]
    if foreign:
        raise ConfigError(
            f"out_dir {out_dir}: holds {foreign[0]}"
            + (f" and {len(foreign) - 1} more" if len(foreign) > 1 else "")
            + ", not written by medlsdm preprocess; preprocess replaces the whole folder, so give a new or "
            "empty --out-dir"
        )


def check_sizes(cases: Sequence[Case], source_info: dict, spacing: list[float] | None, block_shape: list[int]) -> None:
    """Refuse (before any work) a case whose resampled or padded volume would exceed
    :data:`~medlsdm.data.io.MAX_VOLUME_BYTES` as float32; ``spacing=None``: no resampling."""
    for case in cases:
        info = source_info[case.case_id]
        shape = resampled_shape(info["shape"], info["spacing"], spacing) if spacing else tuple(info["shape"])
        padded = (max(shape[0], block_shape[0]), *block_shape[1:])
        size = 4 * max(math.prod(shape), math.prod(padded))
        if size > MAX_VOLUME_BYTES:
            raise ConfigError(
                f"spacing {spacing} mm, block_shape {block_shape}: {case.image} ({tuple(info['shape'])} voxels of "
                f"{[round(v, 3) for v in info['spacing']]} mm) would become {tuple(shape)} voxels, padded {padded}: "
                f"{format_bytes(size)} as float32, over the limit of {format_bytes(MAX_VOLUME_BYTES)} per volume "
                "(medlsdm.data.io.MAX_VOLUME_BYTES); choose a coarser spacing or a smaller block_shape"
            )


def prepare_dataset(
    dataset: str,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    spacing: Sequence[float],
    block_shape: Sequence[int],
    n_cases: int | None = None,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    blocks_per_case: int = 1,
    preprocessing: str = "resample",
    **adapter_kwargs,
) -> Manifest:
    """Validate, preprocess and split a dataset; write everything to ``out_dir``.

    Steps: find the cases (the first ``n_cases``, sorted) → validate *all* of them before any
    work → one case at a time: read (canonical orientation), resample to ``spacing``,
    normalise to [-1, 1], crop/pad in-plane to ``(H, W)``, take ``blocks_per_case`` depth
    blocks of ``D`` slices (the centred one by default), remap labels, write NIfTI + cache →
    patient-level split → manifest.

    With ``preprocessing="paper"`` (Med-LSDM's handling, :func:`~medlsdm.data.preprocess.preprocess_case_paper`)
    the volumes keep their native spacing (``spacing`` is not used; the manifest's ``spacing``
    is then the median native spacing, for display), each case gives about depth/4 random
    depth blocks (``blocks_per_case`` is not used) without all-background ones, and each block
    is min–max scaled to [-1, 1].

    Args:
        dataset: adapter name (:func:`medlsdm.data.adapters.get_adapter`).
        data_root: the dataset folder.
        out_dir: output folder (``RUN/data``); new, empty, or an earlier output of this
            function, which is replaced whole once the new folder is complete.
        spacing: target voxel size (mm), ``(D, H, W)``.
        block_shape: block size in voxels, ``(D, H, W)``.
        n_cases: use only the first ``n_cases`` cases (sorted by id); ``None``: all.
        fractions: (train, val, test) fractions of patients.
        seed: seed of the split.
        blocks_per_case: depth blocks per case; with more than one, block ``k`` of case
            ``c`` gets the id ``c_b<k>``.
        preprocessing: ``"resample"`` (ours) or ``"paper"`` (Med-LSDM's; see above).
        adapter_kwargs: passed to the adapter (e.g. ``modality``, ``num_classes``).

    Returns:
        The manifest (also written to ``out_dir/manifest.json``).

    Raises:
        DataError: a missing/bad input file (before any output is written).
        ConfigError: invalid parameters: more classes than :data:`~medlsdm.data.store.MAX_CLASSES`,
            an ``out_dir`` holding other files, volumes that ``spacing`` and ``block_shape``
            would make larger than :data:`~medlsdm.data.io.MAX_VOLUME_BYTES` (before any output).
    """
    spacing, block_shape = _check_parameters(spacing, block_shape, n_cases, blocks_per_case)
    check_fractions(fractions)
    if preprocessing not in PREPROCESSING:
        raise ConfigError(f"option preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")
    adapter = get_adapter(dataset, **adapter_kwargs)
    if adapter.classes.num_classes > MAX_CLASSES:
        raise ConfigError(
            f"dataset {adapter.name!r}: {adapter.classes.num_classes} classes, more than the {MAX_CLASSES} "
            "that uint8 label maps hold; check option num_classes (--num-classes) or the class table file"
        )
    data_root, out_dir = Path(data_root).expanduser(), Path(out_dir).expanduser()
    check_out_dir(out_dir, data_root)

    cases = adapter.find_cases(data_root)
    if n_cases is not None:
        if int(n_cases) > len(cases):
            raise DataError(f"{data_root}: asked for {n_cases} cases but the folder holds only {len(cases)}")
        cases = cases[: int(n_cases)]
    source_info = validate_cases(cases, adapter)
    check_sizes(cases, source_info, spacing if preprocessing == "resample" else None, block_shape)

    built = {}

    def build(folder):
        built["manifest"] = _write_dataset(
            Path(folder),
            adapter,
            cases,
            data_root,
            source_info,
            spacing=spacing,
            block_shape=block_shape,
            fractions=fractions,
            seed=seed,
            blocks_per_case=int(blocks_per_case),
            preprocessing=preprocessing,
        )

    save_pretrained_atomic(SimpleNamespace(save_pretrained=build), out_dir)  # built aside, swapped in whole
    manifest = built["manifest"]
    logger.info("wrote %d blocks of %d cases to %s", len(manifest.cases), len(cases), out_dir)
    return manifest


def _write_dataset(
    out_dir: Path,
    adapter,
    cases: list[Case],
    data_root: Path,
    source_info: dict,
    *,
    spacing: list[float],
    block_shape: list[int],
    fractions,
    seed: int,
    blocks_per_case: int,
    preprocessing: str,
) -> Manifest:
    """Preprocess every case into the (new, empty) folder ``out_dir``; write split and manifest."""
    normalisation = (
        adapter.normalisation if preprocessing == "resample" else {"method": "minmax_per_block", "range": [-1.0, 1.0]}
    )
    entries = []
    store = CaseStore(out_dir / STORE, mode="w")
    try:
        for index, case in enumerate(tqdm(cases, desc=f"preprocess {adapter.name}")):
            rng = np.random.default_rng([int(seed), index]) if preprocessing == "paper" else None
            entries += _process_case(
                case,
                adapter,
                out_dir,
                data_root,
                source_info[case.case_id],
                normalisation,
                spacing,
                block_shape,
                blocks_per_case,
                store,
                rng,
            )
        store.close()
    except BaseException:
        store.abort()
        raise
    if not entries:
        raise DataError(f"{data_root}: every block of every case was background; nothing to train on")
    if preprocessing == "paper":
        spacing = [float(v) for v in np.median([source_info[c.case_id]["spacing"] for c in cases], axis=0)]
    split = make_split(entries, fractions=fractions, seed=seed)
    save_split(out_dir / SPLIT, split)
    manifest = Manifest(
        dataset=adapter.name,
        modality=adapter.modality,
        classes=list(adapter.classes.names),
        source_values=list(adapter.classes.source_values),
        spacing=spacing,
        block_shape=block_shape,
        preprocessing=preprocessing,
        normalisation=normalisation,
        data_root=str(data_root.resolve()),
        split=SPLIT,
        store=STORE,
        seed=int(seed),
        fractions=[float(f) for f in fractions],
        cases=[CaseEntry.from_dict(e) for e in entries],
    )
    write_json(out_dir / MANIFEST, manifest.to_dict())
    return manifest


def _process_case(
    case: Case,
    adapter,
    out_dir: Path,
    data_root: Path,
    info: dict,
    normalisation: dict,
    spacing: list[float],
    block_shape: list[int],
    blocks_per_case: int,
    store: CaseStore,
    rng: np.random.Generator | None = None,
) -> list[dict]:
    """Preprocess one case and write its blocks; returns their manifest entries.

    ``rng`` set: the paper's handling (:func:`preprocess_case_paper`), blocks ``<case>_b<start>``.
    """
    image, affine = adapter.read_image(case)
    label, _ = adapter.read_label(case)
    if rng is not None:
        blocks = preprocess_case_paper(
            image, label, affine, classes=adapter.classes, block_shape=block_shape, rng=rng, label_path=case.label
        )
    else:
        blocks = preprocess_case(
            image,
            label,
            affine,
            classes=adapter.classes,
            normalisation=normalisation,
            spacing=spacing,
            block_shape=block_shape,
            n_blocks=blocks_per_case,
            label_path=case.label,
        )
    del image, label
    entries = []
    for k, block in enumerate(blocks):
        if rng is not None:
            block_id = f"{case.case_id}_b{block.start}"
        else:
            block_id = case.case_id if blocks_per_case == 1 else f"{case.case_id}_b{k}"
        image_rel, label_rel = f"images/{block_id}.nii.gz", f"labels/{block_id}.nii.gz"
        write_nifti(out_dir / image_rel, block.image, block.affine, kind="image")
        write_nifti(out_dir / label_rel, block.label, block.affine, kind="label")
        store.add(block_id, block.image, block.label, block.affine)
        entry = {
            "case_id": block_id,
            "patient_id": case.patient_id,
            "image": image_rel,
            "label": label_rel,
            "source_image": _relative(case.image, data_root),
            "source_label": _relative(case.label, data_root),
            "source_shape": info["shape"],
            "source_spacing": info["spacing"],
            "block_start": block.start,
            "class_voxels": np.bincount(block.label.ravel(), minlength=adapter.classes.num_classes).tolist(),
        }
        if case.frame is not None:
            entry["source_frame"] = case.frame
        entries.append(entry)
    return entries


def load_manifest(out_dir: str | os.PathLike) -> Manifest:
    """Read ``out_dir/manifest.json`` written by :func:`prepare_dataset`.

    Args:
        out_dir: the preprocessed data folder (``RUN/data``).

    Raises:
        DataError: missing or invalid manifest, naming the path and how to make it.
    """
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{path}: no preprocessed data manifest; run notebook 01_preprocessing "
            "or `medlsdm preprocess --out-dir ...` first"
        )
    return Manifest.from_dict(read_json(path), str(path))
