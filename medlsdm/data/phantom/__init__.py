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
    spinous process) through all slices, the aorta anterior-left of the spine, and 0-2 liver
    lesions. Labels: :data:`~medlsdm.data.classes.TORSO_CT`. Beneath the label map lies a
    finer tissue map (:data:`~medlsdm.data.phantom.torso.TORSO_TISSUES`) with anatomy the
    labels do not show, each part labelled as the class around it: ribs, muscle (abdominal
    wall, psoas, paraspinal), spleen, heart, spinal canal, bowel loops (wall, fluid or gas
    contents), mesenteric, retroperitoneal and mediastinal fat (all ``soft_tissue``), intrahepatic vessels
    (``liver``), pulmonary vessels (``lung``), renal cortex and medulla (``kidney``), lesion
    rims and necrotic cores (``lesion``). The image is the tissues' HU under the case's hidden
    factors (:data:`~medlsdm.data.phantom.torso.TORSO_FACTORS`: contrast phase and strength,
    which move aorta, heart, kidney cortex and medulla, spleen, liver and its vessels together;
    steatosis, which lowers the liver; bone density; oral contrast in the bowel; noise level),
    plus a smooth per-tissue texture, blurred with a Gaussian of :data:`CT_BLUR_SIGMA` voxels
    (partial volume), plus CT-kernel-like correlated noise (white noise band-passed by a
    difference of Gaussians) of the case's ``noise_hu`` std; rounded to whole HU and clipped
    to [-1024, 3071]. Files store the image as int16 HU (like DICOM-converted CT) and the
    label as uint8.
``breast-mr``
    A prone breast MR block (axial slices): two breasts protruding anteriorly from the chest
    wall, made of fat with fibroglandular clumps (a smooth random field thresholded inside the
    breast, denser near the centre, density varying per case) and thin vessels (random smooth
    curves from the chest wall toward the nipple); behind them the thorax (fat, pectoral
    muscle, lungs, heart), which is labelled background as in the Duke 3D segmentations.
    Contrast mimics the images those segmentations were drawn on, a fat-saturated T1-weighted
    gradient echo before contrast: fat dark (suppressed, with a smooth, incomplete
    suppression), fibroglandular tissue brighter than fat, vessels brightest. Multiplicative
    smooth bias field, Rician noise; arbitrary units, roughly 0 … 1000. Appearance factors
    (:data:`~medlsdm.data.phantom.breast.BREAST_FACTORS`): gain, bias-field strength, coil
    gradient, fat signal (how incomplete the suppression is), noise level. Labels:
    :data:`~medlsdm.data.classes.BREAST_MR`. Image float32, label uint8.
``cardiac-2d``
    A short-axis cine-MR-like stack (bSSFP contrast) of 8 slices from base (``z = 0``) to apex:
    bright LV blood pool (papillary muscles inside it, labelled as blood pool as in M&Ms),
    dark myocardial ring (8-10 mm at end-diastole, thicker and with a smaller cavity at
    end-systole; the phase is drawn per case), RV cavity as a crescent on the septal side,
    lungs, chest wall and air around. The LV and RV shrink toward the apex. The affine is
    double oblique like a real short-axis plan (slice axis closest to the S-I axis), and the RV
    lies toward the patient's right/anterior in world coordinates. Bias field, per-slice gain,
    Rician noise. Appearance factors (:data:`~medlsdm.data.phantom.cardiac.CARDIAC_FACTORS`):
    gain, blood signal, bias-field strength, spread of the slice gains, noise level. Labels: :data:`~medlsdm.data.classes.CARDIAC`. Image float32, label uint8.

Two steps: anatomy, then appearance. Every case is drawn as an anatomy (:func:`draw_anatomy`:
label map, tissue map, affine; from ``(kind, seed, index, shape)`` alone) rendered with hidden
per-case appearance factors (:data:`FACTOR_TABLES`, one table per kind with each factor's
range, distribution, effect and spatial scale) and fresh texture and noise
(:func:`render_anatomy`). A factor that would change the label map belongs to the anatomy
(breast density, the cardiac phase), so the factors are exactly what the label map leaves
open. :func:`make_phantom` stores each case's factors in ``phantom.json`` (:func:`load_factors`);
the label files never hold them. Because the anatomy can be rendered again with freshly
drawn factors and noise (:func:`render_case` with ``appearance_seed=k``, or
:func:`oracle_rerenders` for several), the true conditional distribution p(image | label map)
can be sampled: an *oracle* to compare a label-conditioned generator's samples with (their
diversity, the distribution of each factor), not only the one real volume.

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
only the noise and texture samples change.

Determinism. A case depends only on ``(kind, seed, index, shape)``: its random streams come
from ``np.random.SeedSequence([seed, index, kind_id])`` (anatomy and the case's own
appearance; an oracle re-render ``k`` from ``[seed, index, kind_id, ORACLE_TAG, k]``), never
from global state, and not on how many cases are made.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Mapping, Sequence

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from ...atomic import atomic_path, read_json, write_json
from ...errors import ConfigError, DataError
from .breast import BREAST_FACTORS, breast_anatomy, render_breast
from .cardiac import CARDIAC_FACTORS, cardiac_anatomy, render_cardiac
from .common import (
    CASE_PREFIXES,
    PHANTOM_KINDS,
    PHANTOM_VERSION,
    Anatomy,
    Factor,
    anatomy_streams,
    appearance_streams,
    check_factors,
    check_int,
    check_kind,
    check_shape,
    draw_uniform_factors,
)
from .torso import TORSO_FACTORS, draw_torso_factors, render_torso, torso_anatomy

__all__ = [
    "PHANTOM_KINDS", "FACTOR_TABLES", "Anatomy", "Factor", "generate_case", "draw_anatomy", "draw_factors",
    "render_anatomy", "render_case", "oracle_rerenders", "make_phantom", "load_factors",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Kind:
    anatomy: Callable  # (anatomy streams, shape) -> Anatomy
    factors: tuple[Factor, ...]
    draw: Callable  # (factor rng) -> factor dict
    render: Callable  # (Anatomy, factors, noise rng) -> image


_KINDS = {
    "torso-ct": _Kind(torso_anatomy, TORSO_FACTORS, draw_torso_factors, render_torso),
    "breast-mr": _Kind(breast_anatomy, BREAST_FACTORS, partial(draw_uniform_factors, BREAST_FACTORS), render_breast),
    "cardiac-2d": _Kind(cardiac_anatomy, CARDIAC_FACTORS, partial(draw_uniform_factors, CARDIAC_FACTORS), render_cardiac),
}


FACTOR_TABLES: dict[str, tuple[Factor, ...]] = {kind: spec.factors for kind, spec in _KINDS.items()}
"""Each kind's hidden appearance factors: name, range, distribution, effect, spatial scale."""


def draw_anatomy(kind: str, seed: int, index: int, shape: Sequence[int] | None = None, *,
                 z_extent_mm: float | None = None, detail_seed: int | None = None) -> Anatomy:
    """Draw the anatomy of one case (step 1 of 2): label map, tissue map, affine.

    Args:
        kind: one of :data:`PHANTOM_KINDS`.
        seed: dataset seed (>= 0).
        index: case number (>= 0).
        shape: grid ``(x, y, z)``; see :func:`generate_case`.
        z_extent_mm: ``torso-ct`` only: the field of view along z in mm instead of the
            case's own (``40 ×`` its drawn slice spacing): a longer scan of the same body,
            whose anatomy continues beyond the default block (lungs and heart above, bowel
            below). Give ``shape`` a z size to match, e.g. ``z_extent_mm / 5``; the body and
            organ parameters are those of the case, the smooth random fields differ.
        detail_seed: ``None`` for the case's own anatomy; an integer for the same label map
            with freshly drawn unlabelled anatomy (what the label map does not show: bowel
            loops and gas, muscles, ribs, spleen, vessels, kidney medulla, lesion necrosis),
            as an oracle re-render needs.

    Returns:
        The :class:`Anatomy`; it depends only on ``(kind, seed, index, shape, z_extent_mm, detail_seed)``.

    Raises:
        ConfigError: unknown kind, negative seed or index, bad shape, ``z_extent_mm`` not
            positive or given for another kind.
    """
    kind = check_kind(kind)
    seed, index = check_int("seed", seed, 0), check_int("index", index, 0)
    shape = check_shape(kind, shape)
    streams = anatomy_streams(kind, seed, index, detail_seed)
    if z_extent_mm is None:
        return _KINDS[kind].anatomy(streams, shape)
    if kind != "torso-ct" or not float(z_extent_mm) > 0:
        raise ConfigError(f"z_extent_mm={z_extent_mm!r}: a positive field of view along z (mm), for torso-ct only "
                          f"(got kind {kind!r})")
    return _KINDS[kind].anatomy(streams, shape, float(z_extent_mm))


def draw_factors(kind: str, rng: np.random.Generator | int) -> dict:
    """Draw one set of hidden appearance factors of ``kind`` (:data:`FACTOR_TABLES`).

    Args:
        kind: one of :data:`PHANTOM_KINDS`.
        rng: a numpy Generator, or an integer seed for one.

    Returns:
        ``{factor: value}``: floats, and strings for categorical factors (torso ``phase``).
    """
    kind = check_kind(kind)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(check_int("rng", rng, 0))
    return _KINDS[kind].draw(rng)


def render_anatomy(anatomy: Anatomy, factors: Mapping, rng: np.random.Generator) -> np.ndarray:
    """Render an anatomy with the given factors (step 2 of 2).

    Args:
        anatomy: from :func:`draw_anatomy`.
        factors: every factor of the kind (:data:`FACTOR_TABLES`), each in its range.
        rng: draws the texture, smooth fields and noise (use a fresh one for fresh noise).

    Returns:
        The image ``(x, y, z)`` float32 (CT: whole HU).

    Raises:
        ConfigError: a missing, unknown or out-of-range factor.
    """
    table = FACTOR_TABLES[anatomy.kind]
    checked = check_factors(table, factors, anatomy.kind)
    missing = [f.name for f in table if f.name not in checked]
    if missing:
        raise ConfigError(f"{anatomy.kind} factors missing: {missing}")
    return _KINDS[anatomy.kind].render(anatomy, checked, rng)


def _appearance(kind: str, seed: int, index: int, appearance_seed: int | None, factors: Mapping | None):
    """The factors (drawn, then overridden by ``factors``) and the noise generator of one appearance."""
    factor_rng, noise_rng = appearance_streams(kind, seed, index, appearance_seed)
    drawn = _KINDS[kind].draw(factor_rng)
    drawn.update(check_factors(FACTOR_TABLES[kind], factors or {}, kind))
    return drawn, noise_rng


def render_case(
    kind: str, seed: int, index: int, shape: Sequence[int] | None = None, *,
    appearance_seed: int | None = None, factors: Mapping | None = None, z_extent_mm: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Draw one case's anatomy and render it; with ``appearance_seed``, an oracle re-render.

    The anatomy (label map) depends only on ``(kind, seed, index, shape)``. The appearance
    (factors, texture, noise) is the case's own with ``appearance_seed=None`` (what
    :func:`generate_case` and :func:`make_phantom` give) and a fresh, independent draw for
    each ``appearance_seed`` ``k >= 0``: a sample of p(image | label map).

    Args:
        kind: one of :data:`PHANTOM_KINDS`.
        seed: dataset seed (>= 0).
        index: case number (>= 0).
        shape: grid ``(x, y, z)``; see :func:`generate_case`.
        appearance_seed: ``None`` (the case's own appearance) or an integer >= 0.
        factors: factor values to use instead of the drawn ones (any subset of the kind's
            factors); the other factors, texture and noise stay those of the appearance.
        z_extent_mm: a longer field of view along z (see :func:`draw_anatomy`).

    Returns:
        ``(image, label, affine, factors)``; ``factors`` are the values the image was rendered with.

    Raises:
        ConfigError: bad argument, unknown or out-of-range factor.
    """
    if appearance_seed is not None:
        appearance_seed = check_int("appearance_seed", appearance_seed, 0)
    anatomy = draw_anatomy(kind, seed, index, shape, z_extent_mm=z_extent_mm, detail_seed=appearance_seed)
    drawn, noise_rng = _appearance(kind, seed, index, appearance_seed, factors)
    return _KINDS[kind].render(anatomy, drawn, noise_rng), anatomy.label, anatomy.affine, drawn


def oracle_rerenders(
    kind: str, seed: int, index: int, appearance_seeds: Sequence[int], shape: Sequence[int] | None = None, *,
    z_extent_mm: float | None = None,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[dict]]:
    """Render one label map several times with fresh factors, noise and unlabelled anatomy:
    samples of p(image | label map).

    Same as calling :func:`render_case` with each appearance seed: re-render ``k`` redraws
    everything the label map leaves open (the hidden factors, texture and noise, and the
    anatomy it does not show, :func:`draw_anatomy` ``detail_seed=k``); the label map is the same.

    Args:
        kind, seed, index, shape: the case (see :func:`render_case`).
        appearance_seeds: one integer >= 0 per re-render.
        z_extent_mm: a longer field of view along z (see :func:`draw_anatomy`).

    Returns:
        ``(label, affine, images, factors)``: the label map and affine all re-renders share,
        and per appearance seed the image and its factors.
    """
    images, factor_list, label, affine = [], [], None, None
    for k in appearance_seeds:
        k = check_int("appearance_seed", k, 0)
        anatomy = draw_anatomy(kind, seed, index, shape, z_extent_mm=z_extent_mm, detail_seed=k)
        if label is None:
            label, affine = anatomy.label, anatomy.affine
        elif not np.array_equal(anatomy.label, label):  # the unlabelled anatomy must never touch the label map
            raise DataError(f"{kind} case {index}: redrawing the unlabelled anatomy changed the label map")
        drawn, noise_rng = _appearance(kind, seed, index, k, None)
        images.append(_KINDS[kind].render(anatomy, drawn, noise_rng))
        factor_list.append(drawn)
    if label is None:  # no re-render asked for
        anatomy = draw_anatomy(kind, seed, index, shape, z_extent_mm=z_extent_mm)
        label, affine = anatomy.label, anatomy.affine
    return label, affine, images, factor_list


def generate_case(kind: str, seed: int, index: int, shape: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate one phantom case in memory (its own appearance; :func:`render_case` also returns the factors).

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
    return render_case(kind, seed, index, shape)[:3]


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
    path = Path(out_dir).expanduser() / "phantom.json"
    if not path.is_file():
        raise DataError(f"{path}: no phantom record; make the phantom with make_phantom first")
    record = read_json(path)
    if not isinstance(record, dict) or not record.get("complete") or not isinstance(record.get("factors"), dict):
        raise DataError(
            f"{path}: holds no stored factors (an incomplete phantom, or one of generator version "
            f"{record.get('version') if isinstance(record, dict) else '?'} < 2); rerun make_phantom"
        )
    return record["factors"]
