"""A phantom dataset on disk: :func:`make_phantom` writes ``images/`` and ``labels/`` (NIfTI) and
``phantom.json`` (what was made, each case's hidden factors); :func:`load_factors` reads the factors."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from ...atomic import atomic_path, read_json, write_json
from ...errors import DataError
from .common import CASE_PREFIXES, PHANTOM_VERSION, check_int, check_kind, check_shape
from .render import render_case

logger = logging.getLogger(__name__)

#: The record make_phantom writes in its folder: version, case list, each case's factors.
RECORD = "phantom.json"


def _save(array: np.ndarray, affine: np.ndarray, path: Path, *, label: bool, descrip: str) -> None:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)  # scanner coordinates
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if label:
        img.header.set_intent("label")
    img.header["descrip"] = descrip.encode()[:79]
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def _case_ids(kind: str, n_cases: int) -> list[str]:
    return [f"{CASE_PREFIXES[kind]}_{i:03d}" for i in range(n_cases)]


def _nifti_names(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def make_phantom(
    kind: str, out_dir: str | os.PathLike, n_cases: int, seed: int = 0, shape: Sequence[int] | None = None
) -> list[tuple[Path, Path]]:
    """Write a phantom dataset in the ``images/`` + ``labels/`` layout.

    Files: ``out_dir/images/<case_id>.nii.gz`` (CT: int16 HU; MR: float32) and
    ``out_dir/labels/<case_id>.nii.gz`` (uint8 class indices), same affine; case ids
    ``<prefix>_000 …`` (``torso_``, ``breast_``, ``cardiac_``). ``out_dir/phantom.json`` records
    what was made and, under ``"factors"``, each case's hidden appearance factors
    (:func:`load_factors`). When it says the folder already holds exactly these cases with the same
    ``(kind, n_cases, seed, shape)``, nothing is regenerated. Files of an earlier phantom in the
    same folder that are not part of the new one are removed (only files listed in
    ``phantom.json``); any other file in ``images/`` or ``labels/`` is an error.

    Args:
        kind: one of :data:`PHANTOM_KINDS`.
        out_dir: dataset folder (created if needed).
        n_cases: number of cases (>= 1).
        seed: dataset seed (>= 0).
        shape: grid ``(x, y, z)``, see :func:`generate_case`.

    Returns:
        Sorted ``(image, label)`` path pairs.

    Raises:
        ConfigError: bad argument.
        DataError: ``out_dir`` holds files that make_phantom did not write.
    """
    kind = check_kind(kind)
    n_cases = check_int("n_cases", n_cases, 1)
    seed = check_int("seed", seed, 0)
    shape = check_shape(kind, shape)
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder")
    ids = _case_ids(kind, n_cases)
    pairs = [(out_dir / "images" / f"{c}.nii.gz", out_dir / "labels" / f"{c}.nii.gz") for c in ids]
    record_path = out_dir / RECORD
    record = {
        "generator": "medlsdm.data.phantom",
        "version": PHANTOM_VERSION,
        "kind": kind,
        "n_cases": n_cases,
        "seed": seed,
        "shape": list(shape),
        "cases": ids,
    }
    old = read_json(record_path) if record_path.exists() else None
    if old is not None and not isinstance(old, dict):
        raise DataError(f"{record_path}: not a phantom record (expected a JSON object)")
    ours = {f"{c}.nii.gz" for c in ids}
    if old is not None and old.get("complete") and {k: old.get(k) for k in record} == record:
        if _nifti_names(out_dir / "images") == ours and _nifti_names(out_dir / "labels") == ours:
            logger.info("%s: phantom %s (%d cases, seed %d) already up to date", out_dir, kind, n_cases, seed)
            return pairs

    # Remove what an earlier phantom left that the new one does not overwrite; refuse foreign files.
    previous = {f"{c}.nii.gz" for c in (old or {}).get("cases", [])} if old else set()
    for sub in ("images", "labels"):
        for name in sorted(_nifti_names(out_dir / sub) - ours):
            if name not in previous:
                raise DataError(
                    f"{out_dir / sub / name}: not written by make_phantom; use an empty folder for "
                    "the phantom (its images/ and labels/ must hold only phantom cases)"
                )
    for sub in ("images", "labels"):
        for name in sorted(_nifti_names(out_dir / sub) - ours):
            (out_dir / sub / name).unlink()
            logger.debug("removed stale phantom file %s", out_dir / sub / name)

    # Record the case list first, so an interrupted run is cleaned up by the next one.
    write_json(record_path, {**record, "complete": False})
    logger.info("writing %d %s phantom cases (seed %d, shape %s) to %s", n_cases, kind, seed, shape, out_dir)
    factors = {}
    for i, (image_path, label_path) in enumerate(tqdm(pairs, desc=f"phantom {kind}", disable=n_cases < 10)):
        image, label, affine, factors[ids[i]] = render_case(kind, seed, i, shape)
        if kind == "torso-ct":
            image = image.astype(np.int16)  # whole HU in [-1024, 3071]
        descrip = f"medlsdm phantom {kind} seed={seed} index={i}"
        _save(image, affine, image_path, label=False, descrip=descrip)
        _save(label.astype(np.uint8), affine, label_path, label=True, descrip=descrip)
    write_json(record_path, {**record, "factors": factors, "complete": True})
    return pairs


def phantom_version(out_dir: str | os.PathLike | None) -> int | None:
    """The version of the phantom generator that wrote ``out_dir`` (its ``phantom.json``), or None
    when ``out_dir`` is None or holds no phantom record (real data, or a folder that is gone)."""
    path = Path(out_dir).expanduser() / RECORD if out_dir is not None else None
    return read_json(path).get("version") if path is not None and path.is_file() else None


def load_factors(out_dir: str | os.PathLike) -> dict[str, dict]:
    """Read the hidden appearance factors :func:`make_phantom` stored with each case.

    Args:
        out_dir: the phantom folder (holding ``phantom.json``).

    Returns:
        ``{case_id: {factor: value}}`` (see :data:`FACTOR_TABLES` for the factors of each kind).

    Raises:
        DataError: no complete phantom record in ``out_dir``, or one written before factors
            were stored (``version`` < 2: rerun :func:`make_phantom`).
    """
    path = Path(out_dir).expanduser() / RECORD
    if not path.is_file():
        raise DataError(f"{path}: no phantom record; make the phantom with make_phantom first")
    record = read_json(path)
    if not isinstance(record, dict) or not record.get("complete") or not isinstance(record.get("factors"), dict):
        raise DataError(
            f"{path}: holds no stored factors (an incomplete phantom, or one of generator version "
            f"{record.get('version') if isinstance(record, dict) else '?'} < 2); rerun make_phantom"
        )
    return record["factors"]
