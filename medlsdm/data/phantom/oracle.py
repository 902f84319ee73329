"""The phantom oracle: what the phantom renders for a preprocessed run's label maps.

A phantom case is drawn in two steps, anatomy (→ label map) and appearance (hidden factors →
image), so any anatomy can be re-rendered with fresh factors (:mod:`medlsdm.data.phantom`).
Re-rendered and preprocessed exactly as notebook 01 preprocessed the real case, these
*oracle re-renders* are what a perfect label-conditioned generator would produce
(:func:`oracle_samples`); the same phantom gives the body of a case over a longer field of
view (:func:`deep_scan`, notebook 07) and anatomies the run has never seen
(:func:`new_anatomies`, notebook 05's augmentation). The statistics that compare a generator
with these renders are in :mod:`medlsdm.evaluation.oracle`.

The phantom's hidden factors are described here too: :data:`FACTOR_CLASSES`,
:data:`NOISE_CLASS` and :data:`TEXTURE_CLASSES` name, per dataset, the classes whose intensity
and texture follow them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np

from ...atomic import read_json
from ...errors import ConfigError, DataError
from ...rundir import STORE
from ..adapters import get_adapter
from ..io import canonical_dhw
from ..prepare import load_manifest
from ..preprocess import preprocess_case
from ..store import CaseStore
from . import draw_anatomy, oracle_rerenders, render_case

if TYPE_CHECKING:
    from ..prepare import CaseEntry, Manifest

log = logging.getLogger(__name__)


#: Classes whose mean intensity is a factor estimator, per dataset (all non-background
#: classes when a dataset is not listed). Torso: aorta and kidney follow the contrast phase
#: and dose, the liver its enhancement and steatosis, the vertebra its mineral density.
FACTOR_CLASSES = {
    "torso-ct": ("aorta", "liver", "kidney", "bone"),
    "breast-mr": ("breast", "fibroglandular", "vessel"),
    "cardiac-2d": ("lv_blood_pool", "myocardium", "rv"),
}

#: The class whose fine-scale texture (intensity minus its 1-voxel Gaussian blur) estimates
#: the noise level.
NOISE_CLASS = {"torso-ct": "liver", "breast-mr": "breast", "cardiac-2d": "lv_blood_pool"}

#: Homogeneous classes whose neighbour differences measure the noise level
#: (:func:`~medlsdm.metrics.texture.noise_levels`, eroded by 2 voxels), per dataset (all
#: non-background classes when a dataset is not listed). Torso: liver and fat; not soft tissue
#: (it holds the unlabelled anatomy: muscle, bowel, ribs), kidney (cortex and medulla differ by
#: a contrast factor), aorta (too small once eroded), bone, lung or lesions.
TEXTURE_CLASSES = {"torso-ct": ("liver", "fat"), "breast-mr": ("breast",), "cardiac-2d": ("lv_blood_pool",)}


def phantom_source(data_dir: str | Path) -> dict:
    """Where a preprocessed run's phantom came from: ``phantom.json`` of its ``data_root``
    (a relative ``data_root``, as in a run unpacked from a pack, is relative to ``data_dir``),
    with the run's :class:`~medlsdm.data.prepare.Manifest` under ``"manifest"``.

    Raises:
        ConfigError: the run's data is not a phantom (no oracle exists for real data).
    """

    manifest = load_manifest(data_dir)
    root = manifest.data_root
    record = None if root is None else Path(data_dir) / root / "phantom.json"  # an absolute root stays as it is
    if record is None or not record.is_file():
        raise ConfigError(
            f"{root}: not a phantom dataset (no phantom.json); oracle re-renders exist only for the procedural phantoms"
        )
    return {**read_json(record), "manifest": manifest}


def phantom_index(entry: CaseEntry) -> int:
    """The phantom case index of a manifest entry (its source file ``<prefix>_<index>.nii.gz``)."""
    return int(Path(entry.source_image).name.split(".")[0].rsplit("_", 1)[1])


def preprocess_like_run(
    manifest: Manifest,
    image_xyz: np.ndarray,
    label_xyz: np.ndarray,
    affine: np.ndarray,
    block_shape: Sequence[int] | None = None,
):
    """One phantom rendering (``(x, y, z)`` arrays as the phantom makes them) preprocessed
    exactly as notebook 01 preprocessed the run's cases (canonical orientation, resampling,
    normalisation, crop/pad, depth block; the manifest's settings, or another ``block_shape``,
    e.g. a deeper one for a whole scan). Returns the :class:`~medlsdm.data.preprocess.CaseBlock`."""

    image, aff = canonical_dhw(image_xyz, affine)
    label, _ = canonical_dhw(np.asarray(label_xyz).astype(np.int64), affine)
    return preprocess_case(
        image,
        label,
        aff,
        classes=get_adapter(manifest.dataset).classes,
        normalisation=manifest.normalisation,
        spacing=manifest.spacing,
        block_shape=manifest.block_shape if block_shape is None else block_shape,
    )[0]


def oracle_samples(data_dir: str | Path, case_ids: Sequence[str], n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` oracle re-renders of each case's anatomy, preprocessed as the case was.

    Each re-render draws fresh appearance factors and noise for the same anatomy (same label
    map), then goes through the preprocessing of notebook 01 (canonical orientation,
    resampling, normalisation, crop/pad, depth block) with the run's manifest settings.

    Args:
        data_dir: the run's preprocessed data folder (``RUN/data``, from a phantom).
        case_ids: preprocessed case ids (one block per case).
        n: re-renders per case.
        seed: re-render ``k`` of a case uses the phantom's appearance seed ``seed·10⁴ + k``
            (never the case's own appearance, which is the "real" volume).

    Returns:
        ``(len(case_ids), n, 1, D, H, W)`` float32 in [-1, 1].

    Raises:
        ConfigError: not a phantom run; DataError: a re-rendered label map differs from the
            stored one (the preprocessing or the phantom changed since notebook 01).
    """

    source = phantom_source(data_dir)
    manifest = source["manifest"]
    entries = {e.case_id: e for e in manifest.cases}
    out = []
    with CaseStore(Path(data_dir) / (manifest.store or STORE)) as store:
        for cid in case_ids:
            if cid not in entries:
                raise DataError(f"{data_dir}: no case {cid!r} in the manifest")
            index = phantom_index(entries[cid])
            stored_label = np.asarray(store[cid][1])
            label, affine, images, _ = oracle_rerenders(
                source["kind"], source["seed"], index, [seed * 10_000 + k for k in range(n)], source.get("shape")
            )
            renders = []
            for image in images:
                block = preprocess_like_run(manifest, image, label, affine)
                if not np.array_equal(block.label, stored_label):
                    raise DataError(
                        f"{cid}: the re-rendered label map differs from the stored one; "
                        "rerun notebook 01 (the phantom or the preprocessing changed)"
                    )
                renders.append(block.image)
            out.append(np.stack(renders))
    return np.stack(out).astype(np.float32)


@dataclass
class DeepScan:
    """A phantom scan several blocks deep, preprocessed as notebook 01 preprocessed its case.

    Attributes:
        case_id: the preprocessed case whose body was scanned longer.
        label: ``(D, H, W)`` int64, ``D = n_blocks ×`` the block depth.
        oracle: ``(R, 1, D, H, W)`` float32 re-renders of that anatomy with fresh hidden factors.
        affine: the label map's affine.
        z_extent_mm: the field of view along z.
    """

    case_id: str
    label: np.ndarray
    oracle: np.ndarray
    affine: np.ndarray
    z_extent_mm: float


def deep_scan(data_dir: str | Path, case_id: str, n_blocks: int, n_oracle: int, *, seed: int = 0) -> DeepScan:
    """Scan the body of a phantom case over ``n_blocks`` training blocks along z, with oracle re-renders.

    The phantom draws the case's anatomy over a field of view along z of ``n_blocks × D ×``
    the run's slice spacing (:func:`medlsdm.data.phantom.draw_anatomy` with ``z_extent_mm``:
    the same body and organ parameters, the anatomy continuing above and below the block), at
    the case's own slice spacing or finer, renders it ``n_oracle`` times with fresh factors and
    preprocesses each rendering like notebook 01 (resampling, normalisation, in-plane crop),
    keeping the whole depth. Re-render ``k`` uses the appearance seed ``seed·10⁴ + k`` as
    :func:`oracle_samples` does.

    Args:
        data_dir: the run's preprocessed data folder (``RUN/data``) of a ``torso-ct`` phantom.
        case_id: a preprocessed case id.
        n_blocks: depth in training blocks (>= 1).
        n_oracle: re-renders (>= 2).
        seed: see above.

    Raises:
        ConfigError: not a torso phantom run, or bad counts; DataError: unknown case.
    """

    if int(n_blocks) < 1 or int(n_oracle) < 2:
        raise ConfigError(f"deep_scan: n_blocks must be >= 1 and n_oracle >= 2, got {n_blocks} and {n_oracle}")
    source = phantom_source(data_dir)
    manifest = source["manifest"]
    if source["kind"] != "torso-ct":
        raise ConfigError(f"{data_dir}: deep scans need the torso-ct phantom, this run's is {source['kind']}")
    entry = next((e for e in manifest.cases if e.case_id == case_id), None)
    if entry is None:
        raise DataError(f"{data_dir}: no case {case_id!r} in the manifest")
    index = phantom_index(entry)
    block = [int(v) for v in manifest.block_shape]
    depth = int(n_blocks) * block[0]
    z_extent = float(depth * manifest.spacing[0])
    own = draw_anatomy(source["kind"], source["seed"], index, source.get("shape"))
    shape = (*own.label.shape[:2], int(np.ceil(z_extent / own.spacing[2])))
    label, affine, images, _ = oracle_rerenders(
        source["kind"],
        source["seed"],
        index,
        [seed * 10_000 + k for k in range(int(n_oracle))],
        shape,
        z_extent_mm=z_extent,
    )
    blocks = [preprocess_like_run(manifest, image, label, affine, block_shape=[depth, *block[1:]]) for image in images]
    log.info(
        "%s: a scan of %.0f mm along z (%d slices) and %d oracle re-renders", case_id, z_extent, depth, len(blocks)
    )
    return DeepScan(
        case_id, blocks[0].label, np.stack([b.image for b in blocks]).astype(np.float32), blocks[0].affine, z_extent
    )


class NewAnatomies(NamedTuple):
    """What :func:`new_anatomies` returns."""

    ids: list[str]  #: ``new_<index>``
    images: list[np.ndarray]  #: oracle renders, ``(1, D, H, W)`` float32 in [-1, 1]
    labels: list[np.ndarray]  #: ``(D, H, W)`` int64 label maps of the run's block shape
    affines: list[np.ndarray]


def new_anatomies(data_dir: str | Path, n: int, *, first_index: int | None = None) -> NewAnatomies:
    """``n`` phantom anatomies that are not among the run's cases, with their oracle renders.

    Anatomy ``k`` is phantom case ``first_index + k`` (default ``first_index``: the phantom's
    ``n_cases``, so none of them is a case of the run), drawn with the run's phantom kind, seed
    and grid (:func:`medlsdm.data.phantom.render_case`: its own appearance factors, as a real
    patient has) and preprocessed as notebook 01 preprocessed the run's cases (canonical
    orientation, resampling, normalisation, crop/pad, depth block; the manifest's settings).

    Args:
        data_dir: the run's preprocessed data folder (``RUN/data``, from a phantom).
        n: number of anatomies (>= 1).
        first_index: phantom case index of the first anatomy (>= the phantom's ``n_cases``).

    Returns:
        :class:`NewAnatomies` ``(ids, images, labels, affines)``.

    Raises:
        ConfigError: not a phantom run (:func:`phantom_source`), ``n < 1``,
            or ``first_index`` inside the run's cases.
    """

    source = phantom_source(data_dir)
    manifest = source["manifest"]
    n_cases = int(source["n_cases"])
    start = n_cases if first_index is None else int(first_index)
    if int(n) < 1:
        raise ConfigError(f"new_anatomies: n must be >= 1, got {n}")
    if start < n_cases:
        raise ConfigError(
            f"new_anatomies: first_index {start} is a case of the run (the phantom has {n_cases} cases); "
            f"use an index >= {n_cases}"
        )
    ids, images, labels, affines = [], [], [], []
    for index in range(start, start + int(n)):
        image, label, affine, _ = render_case(source["kind"], source["seed"], index, source.get("shape"))
        block = preprocess_like_run(manifest, image, label, affine)
        ids.append(f"new_{index:03d}")
        images.append(np.asarray(block.image, np.float32))
        labels.append(np.asarray(block.label, np.int64))
        affines.append(np.asarray(block.affine, np.float64))
    log.info("new_anatomies: %d label maps from phantom cases %d-%d", n, start, start + int(n) - 1)
    return NewAnatomies(ids, images, labels, affines)
