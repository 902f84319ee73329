"""Procedural phantom datasets: seeded, NIfTI on disk, good enough to learn from.

The walkthrough notebooks need data that a CPU laptop can make in seconds, that anyone may
share, and that still looks like the real thing to the code: NIfTI files with a real affine
(not RAS, so reorientation is exercised), anisotropic spacing that differs from case to case
(so resampling is exercised), intensities in the modality's units, texture, partial volume,
noise and anatomy that varies between cases. Three kinds:

``torso-ct``
    An abdominal/lower-thorax CT block in Hounsfield units: air, body with a subcutaneous fat
    rim, two lungs in the upper part (their bases domed over the diaphragm), the liver (right,
    below the right lung), two kidneys (posterior, lower part), a vertebra (body, arch and
    spinous process) through all slices, the aorta anterior-left of the spine, and 0-2
    hypodense liver lesions. Labels: :data:`~medlsdm.data.classes.TORSO_CT`. Mean HU per class:
    :data:`TORSO_HU`. The image is rendered from the label map, blurred with a Gaussian of
    :data:`CT_BLUR_SIGMA` voxels (partial volume), and white Gaussian noise of
    ``CT_NOISE_HU = 20.0`` HU is added (soft-tissue noise of clinical CT is typically 10-30 HU);
    values are rounded to whole HU and clipped to [-1024, 3071]. Files store the image as
    int16 HU (like DICOM-converted CT) and the label as uint8.
``breast-mr``
    A prone breast MR block (axial slices): two breasts protruding anteriorly from the chest
    wall, made of fat with fibroglandular clumps (a smooth random field thresholded inside the
    breast, denser near the centre, density varying per case) and thin vessels (random smooth
    curves from the chest wall toward the nipple); behind them the thorax (fat, pectoral
    muscle, lungs, heart), which is labelled background as in the Duke 3D segmentations.
    Contrast mimics the images those segmentations were drawn on, a fat-saturated T1-weighted
    gradient echo before contrast: fat dark (suppressed, with a smooth, incomplete
    suppression), fibroglandular tissue brighter than fat, vessels brightest. Multiplicative
    smooth bias field, Rician noise; arbitrary units, roughly 0 … 1000. Labels:
    :data:`~medlsdm.data.classes.BREAST_MR`. Image float32, label uint8.
``cardiac-2d``
    A short-axis cine-MR-like stack (bSSFP contrast) of 8 slices from base (``z = 0``) to apex:
    bright LV blood pool (papillary muscles inside it, labelled as blood pool as in M&Ms),
    dark myocardial ring (8-10 mm at end-diastole, thicker and with a smaller cavity at
    end-systole; the phase is drawn per case), RV cavity as a crescent on the septal side,
    lungs, chest wall and air around. The LV and RV shrink toward the apex. The affine is
    double oblique like a real short-axis plan (slice axis closest to the S-I axis), and the RV
    lies toward the patient's right/anterior in world coordinates. Bias field, per-slice gain,
    Rician noise. Labels: :data:`~medlsdm.data.classes.CARDIAC`. Image float32, label uint8.

What the phantoms are not: anatomically accurate, physically simulated (no X-ray or MR
physics, no artefacts beyond blur, bias and noise), or a benchmark. They are for learning the
pipeline and for testing it; numbers measured on them say nothing about real data.

Geometry. Anatomy is defined analytically in millimetres in a body frame (``u`` toward the
patient's left, ``v`` anterior, ``w`` superior) whose axes are taken from the affine's voxel
axes (for ``cardiac-2d``: in the short-axis plane, with the RV and lung directions projected
from world directions), so what is drawn always agrees with the orientation the file
declares. Per case:
spacing, body size and shape, position, in-plane rotation, organ sizes and positions, and a
smooth random deformation (displacing the coordinates at which the label map is evaluated,
which is the nearest-neighbour warp of the label map without its double interpolation).

Grid and ``shape``. Each kind has a default grid (:data:`DEFAULT_SHAPES`) and per-case spacing
ranges (:data:`SPACING_RANGES`). The physical field of view is always
``default_shape * drawn_spacing``; passing ``shape`` keeps that field of view and sets the
spacing to ``field_of_view / shape`` per axis, so the body still fits and the anatomy (and the
smooth random fields, which live on a physical control grid) is the same at any resolution;
only the white noise and texture samples change.

Determinism. A case depends only on ``(kind, seed, index, shape)``: its random streams come
from ``np.random.SeedSequence([seed, index, kind_id])``, never from global state, and not on
how many cases are made.
"""
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
from .breast import breast_case
from .cardiac import cardiac_case
from .common import CASE_PREFIXES, PHANTOM_KINDS, PHANTOM_VERSION, case_streams, check_int, check_kind, check_shape
from .torso import torso_case

__all__ = ["PHANTOM_KINDS", "generate_case", "make_phantom"]

logger = logging.getLogger(__name__)


_GENERATORS = {"torso-ct": torso_case, "breast-mr": breast_case, "cardiac-2d": cardiac_case}


def generate_case(kind: str, seed: int, index: int, shape: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate one phantom case in memory.

    Args:
        kind: one of :data:`PHANTOM_KINDS`.
        seed: dataset seed (>= 0).
        index: case number (>= 0); cases are independent of each other.
        shape: grid ``(x, y, z)``; default :data:`DEFAULT_SHAPES` ``[kind]``. The field of view
            stays the same, the spacing becomes ``field_of_view / shape``.

    Returns:
        ``(image, label, affine)``: image ``(x, y, z)`` float32 (HU for CT, whole numbers),
        label ``(x, y, z)`` uint8 with the contiguous indices of ``CLASS_TABLES[kind]``, and the
        4×4 float64 affine (voxel ``(i, j, k)`` → RAS mm), in NIfTI order as written to disk.

    Raises:
        ConfigError: unknown kind, negative seed or index, bad shape.
    """
    kind = check_kind(kind)
    seed = check_int("seed", seed, 0)
    index = check_int("index", index, 0)
    shape = check_shape(kind, shape)
    return _GENERATORS[kind](case_streams(kind, seed, index), shape)


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
    what was made. When it says the folder already holds exactly these cases with the same
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
    record_path = out_dir / "phantom.json"
    record = {
        "generator": "medlsdm.data.phantom", "version": PHANTOM_VERSION, "kind": kind,
        "n_cases": n_cases, "seed": seed, "shape": list(shape), "cases": ids,
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
    for i, (image_path, label_path) in enumerate(tqdm(pairs, desc=f"phantom {kind}", disable=n_cases < 10)):
        image, label, affine = generate_case(kind, seed, i, shape)
        if kind == "torso-ct":
            image = image.astype(np.int16)  # whole HU in [-1024, 3071]
        descrip = f"medlsdm phantom {kind} seed={seed} index={i}"
        _save(image, affine, image_path, label=False, descrip=descrip)
        _save(label.astype(np.uint8), affine, label_path, label=True, descrip=descrip)
    write_json(record_path, {**record, "complete": True})
    return pairs
