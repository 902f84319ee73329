"""Read and write NIfTI volumes in the package's array convention.

Array convention
    :func:`read_nifti` returns a 3-D array indexed ``(D, H, W)`` = (z, y, x) of the volume
    reoriented to the closest canonical (RAS+) orientation, i.e. the transpose of nibabel's
    ``(x, y, z)`` data array.

Affine convention (one rule everywhere in ``medlsdm``)
    The affine that travels with a ``(D, H, W)`` array is the **nibabel affine of the
    canonical volume**, which maps nibabel voxel indices ``(i, j, k) = (x, y, z)`` to world
    (RAS, mm) coordinates. Voxel ``array[d, h, w]`` is therefore at
    ``affine @ [w, h, d, 1]`` (see :func:`dhw_to_world`). Keeping the nibabel affine
    unchanged means :func:`write_nifti` only transposes the array back, and a write → read
    round trip keeps the affine up to NIfTI's float32 storage (exactly, for an affine that was
    itself read from a file written by :func:`write_nifti`).

Spacings and shapes are given in ``(D, H, W)`` order in millimetres (:func:`spacing_dhw`).
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation
from nibabel.spatialimages import HeaderDataError, ImageDataError

from ..atomic import atomic_path
from ..errors import ConfigError, DataError

logger = logging.getLogger(__name__)

KINDS = ("image", "label")
NIFTI_SUFFIXES = (".nii.gz", ".nii")

#: The largest array :func:`read_nifti` returns (float32 images, int64 label maps), and the
#: largest resampled volume :func:`medlsdm.data.prepare.prepare_dataset` makes: 8 GiB. A
#: header claiming more is refused before its data are read.
MAX_VOLUME_BYTES = 8 * 2**30

# Everything nibabel / gzip / zlib raise on a file that is not a (complete) NIfTI, both
# when the header is loaded and lazily when the data are read.
READ_ERRORS = (ImageFileError, HeaderDataError, ImageDataError, OSError, EOFError, ValueError, zlib.error, struct.error)


def is_nifti(path: str | os.PathLike) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """``"case_001.nii.gz"`` → ``"case_001"``."""
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_kind(kind: str, path) -> None:
    if kind not in KINDS:
        raise ConfigError(f"{path}: kind must be one of {KINDS}, got {kind!r}")


def _verify_gzip(path: Path) -> None:
    """Decompress a ``.gz`` file to its end so its CRC and length are checked.

    nibabel reads only as many bytes as the image needs, so damage that still inflates to
    enough bytes would otherwise go unnoticed.
    """
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip data ({type(exc).__name__}: {exc})") from None


def format_bytes(size: float) -> str:
    """``"32 GiB"``, ``"1.53 TiB"``."""
    return f"{size / 2**40:.3g} TiB" if size >= 2**40 else f"{size / 2**30:.3g} GiB"


def check_size(where, shape, itemsize: int) -> None:
    """Refuse a volume of ``shape`` whose array of ``itemsize``-byte voxels exceeds :data:`MAX_VOLUME_BYTES`."""
    size = float(np.prod([int(n) for n in shape], dtype=np.float64)) * int(itemsize)
    if size > MAX_VOLUME_BYTES:
        raise DataError(
            f"{where}: the header gives shape {tuple(int(n) for n in shape)}, {format_bytes(size)} as {itemsize}-byte "
            f"voxels, over medlsdm's limit of {format_bytes(MAX_VOLUME_BYTES)} per volume "
            "(medlsdm.data.io.MAX_VOLUME_BYTES)"
        )


def _load_xyz(path: Path, frame: int | None, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Load the (x, y, z) data of ``path`` (one time frame of a 4-D file when ``frame`` is set)."""
    try:
        img = nib.load(str(path))
    except READ_ERRORS as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(f"{path}: not a NIfTI file (nibabel reads it as {type(img).__name__})")
    shape = img.shape
    affine = np.asarray(img.affine, dtype=np.float64)
    if frame is None:
        if len(shape) == 4 and shape[3] == 1:
            index = (slice(None), slice(None), slice(None), 0)
        elif len(shape) == 3:
            index = (slice(None),) * 3
        else:
            raise DataError(
                f"{path}: expected a 3-D volume, got shape {tuple(shape)} "
                "(a trailing 4th dimension of size 1 is accepted)"
            )
    else:
        if len(shape) != 4:
            raise DataError(
                f"{path}: expected a 4-D (x, y, z, t) volume to take frame {frame}, got shape {tuple(shape)}"
            )
        if not 0 <= frame < shape[3]:
            raise DataError(f"{path}: frame {frame} out of range (the file has {shape[3]} frames)")
        index = (slice(None), slice(None), slice(None), frame)
    dtype = np.dtype(img.get_data_dtype())
    if dtype.kind not in "biuf":
        raise DataError(
            f"{path}: voxel type {dtype} (RGB, complex or structured) is not supported; "
            "expected one scalar integer or float value per voxel"
        )
    check_size(path, shape[:3], 4 if kind == "image" else 8)
    try:
        data = np.asarray(img.dataobj[index])
    except READ_ERRORS as exc:
        raise DataError(f"{path}: truncated or corrupt NIfTI data ({type(exc).__name__}: {exc})") from None
    if str(path).lower().endswith(".gz"):
        _verify_gzip(path)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(f"{path}: the affine is singular or not finite:\n{affine}")
    return data, affine


def _reorient_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same as ``nib.as_closest_canonical`` on a 3-D (x, y, z) array."""
    ornt = io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return data, affine
    return apply_orientation(data, ornt), affine @ inv_ornt_aff(ornt, data.shape)


def canonical_dhw(data_xyz: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An ``(x, y, z)`` array and its affine as :func:`read_nifti` returns them: canonical
    (RAS+) orientation, ``(D, H, W)`` = (z, y, x) axis order (e.g. a phantom made in memory)."""
    data, affine = _reorient_canonical(data_xyz, np.asarray(affine, np.float64))
    return np.ascontiguousarray(data.transpose(2, 1, 0)), affine


def _check_values(data: np.ndarray, path: Path, kind: str) -> np.ndarray:
    """Image → float32 without NaN/Inf; label → int64 with integer values only."""
    if kind == "image":
        data = data.astype(np.float32, copy=False)
        finite = np.isfinite(data)
        if not finite.all():
            n_nan = int(np.isnan(data).sum())
            n_inf = int(np.isinf(data).sum())
            raise DataError(f"{path}: image contains {n_nan} NaN and {n_inf} Inf voxels")
        return data
    if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        return data.astype(np.int64, copy=False)
    if not np.all(np.isfinite(data)):
        raise DataError(f"{path}: label map contains NaN or Inf values")
    rounded = np.rint(data)
    bad = rounded != data
    if bad.any():
        examples = np.unique(data[bad])[:5].tolist()
        raise DataError(
            f"{path}: label map has {int(bad.sum())} non-integer values (e.g. {examples}); "
            "labels must be integer class values"
        )
    return rounded.astype(np.int64)


def read_nifti(
    path: str | os.PathLike, *, kind: str = "image", frame: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file as a ``(D, H, W)`` array in canonical (RAS+) orientation.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        kind: ``"image"`` (returns float32; NaN/Inf are an error) or ``"label"`` (returns
            int64; non-integer values are an error).
        frame: for a 4-D ``(x, y, z, t)`` file, the time frame to read. Without it the file
            must be 3-D; a trailing 4th dimension of size 1 is dropped, any other 4-D file
            is an error.

    Returns:
        ``(array, affine)``: the ``(D, H, W)`` = (z, y, x) array and the canonical nibabel
        affine (maps ``(x, y, z)`` = ``(w, h, d)`` indices to world mm; module docstring).

    Raises:
        DataError: naming the file, when it is missing, not a NIfTI, truncated or corrupt,
            has the wrong number of dimensions, a voxel type that is not one number (RGB,
            complex), more than :data:`MAX_VOLUME_BYTES`, or invalid values.
    """
    _check_kind(kind, path)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data, affine = _load_xyz(path, frame, kind)
    return canonical_dhw(_check_values(data, path, kind), affine)


def _label_dtype(array: np.ndarray) -> type:
    lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if lo >= 0 and hi <= np.iinfo(np.uint8).max:
        return np.uint8
    if np.iinfo(np.int16).min <= lo and hi <= np.iinfo(np.int16).max:
        return np.int16
    return np.int32


def write_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, *, kind: str = "image") -> Path:
    """Write a ``(D, H, W)`` array (or ``(1, D, H, W)``) as NIfTI, atomically.

    The header is built fresh (no text fields such as ``descrip`` or ``aux_file`` are copied
    from anywhere); sform and qform are both set from ``affine`` with code 1 (scanner), units
    are mm.

    Args:
        path: target ``.nii.gz`` (or ``.nii``) file; parent folders are created.
        array: ``(D, H, W)`` array, or ``(1, D, H, W)`` (the channel axis is dropped).
        affine: the nibabel affine of the volume (module docstring).
        kind: ``"image"`` is stored as float32; ``"label"`` as uint8 (int16 / int32 when
            the values need it).

    Returns:
        The written path.
    """
    _check_kind(kind, path)
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise DataError(f"{path}: write_nifti expects a (D, H, W) or (1, D, H, W) array, got shape {array.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise DataError(f"{path}: the affine must be 4x4, got {affine.shape}")
    if kind == "image":
        data = array.astype(np.float32)
    else:
        if not np.issubdtype(array.dtype, np.integer):
            raise DataError(f"{path}: a label array must have an integer dtype, got {array.dtype}")
        data = array.astype(_label_dtype(array))
    data = np.ascontiguousarray(data.transpose(2, 1, 0))
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    img = nib.Nifti1Image(data, affine, header=header)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm")
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def spacing_dhw(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm in ``(D, H, W)`` order of an array carrying ``affine``.

    Args:
        affine: nibabel affine (module docstring): column 0 steps along x = W, column 2
            along z = D.
    """
    sizes = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    return float(sizes[2]), float(sizes[1]), float(sizes[0])


def dhw_to_world(affine: np.ndarray, index_dhw) -> np.ndarray:
    """World (mm) coordinates of voxel(s) ``[d, h, w]`` of a ``(D, H, W)`` array.

    Args:
        affine: nibabel affine of the array (module docstring).
        index_dhw: one index ``(d, h, w)`` or an ``(N, 3)`` array of them (may be fractional).

    Returns:
        ``(3,)`` or ``(N, 3)`` world coordinates.
    """
    idx = np.asarray(index_dhw, dtype=np.float64)
    xyz = idx[..., ::-1]
    return xyz @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
