"""Read a DICOM image series (one folder) as a ``(D, H, W)`` array with its nibabel affine.

Reader: ``pydicom`` (pure Python, maintained by the pydicom project, the reference DICOM
parser of the Python ecosystem; no compiled toolkit needed). The geometry comes from the
standard attributes: slices sorted along the normal of ``ImageOrientationPatient`` by
``ImagePositionPatient``, ``PixelSpacing`` in-plane, the slice step from the positions;
intensities are ``pixel * RescaleSlope + RescaleIntercept``. DICOM world coordinates are LPS;
the affine returned is RAS (nibabel's), as :mod:`medlsdm.data.io` describes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.misc import is_dicom

from ..errors import DataError
from .datasets import is_visible
from .io import canonical_dhw

logger = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")


def dicom_files(folder: str | os.PathLike) -> list[Path]:
    """The DICOM files directly in ``folder`` (``*.dcm``, or files with the DICOM preamble), sorted."""

    folder = Path(folder)
    return sorted(
        p for p in folder.iterdir() if p.is_file() and is_visible(p) and (p.suffix.lower() == ".dcm" or is_dicom(p))
    )


def read_headers(folder: str | os.PathLike) -> list:
    """The headers (no pixel data) of a series folder's files, sorted along the slice normal.

    Raises:
        DataError: no DICOM files, unreadable files, missing geometry, several series or
            orientations in one folder (each naming the file).
    """
    folder = Path(folder)
    files = dicom_files(folder)
    if not files:
        raise DataError(f"{folder}: no DICOM files")
    headers = []
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable DICOM file ({exc})") from None
        missing = [key for key in _GEOMETRY if key not in ds]
        if missing:
            raise DataError(f"{path}: DICOM file without {', '.join(missing)} (not an image slice)")
        ds.filename = str(path)
        headers.append(ds)
    uids = {str(ds.get("SeriesInstanceUID", "")) for ds in headers}
    if len(uids) > 1:
        raise DataError(f"{folder}: holds {len(uids)} series (SeriesInstanceUID); one folder per series expected")
    orientation = np.array(headers[0].ImageOrientationPatient, dtype=np.float64)
    for ds in headers[1:]:
        if not np.allclose(np.array(ds.ImageOrientationPatient, dtype=np.float64), orientation, atol=1e-4):
            raise DataError(f"{ds.filename}: ImageOrientationPatient differs from {headers[0].filename}")
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(headers, key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=np.float64))))


def series_affine(headers: list) -> np.ndarray:
    """The nibabel (RAS) affine of a sorted series: indices ``(x = column, y = row, z = slice)`` → mm.

    Raises:
        DataError: uneven slice positions (a gap or a duplicate slice), naming the folder.
    """
    first = headers[0]
    orientation = np.array(first.ImageOrientationPatient, dtype=np.float64)
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    positions = np.array([ds.ImagePositionPatient for ds in headers], dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    if len(headers) > 1:
        steps = np.diff(positions @ normal)
        if steps.min() <= 1e-3 or not np.allclose(steps, steps.mean(), rtol=0.01, atol=0.01):
            raise DataError(
                f"{Path(first.filename).parent}: uneven slice positions along the normal "
                f"(steps {np.round(np.unique(np.round(steps, 3)), 3).tolist()} mm): a missing or duplicate slice"
            )
        slice_step = (positions[-1] - positions[0]) / (len(headers) - 1)
    else:
        slice_step = normal * float(first.get("SliceThickness", 1.0) or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = orientation[:3] * col_spacing  # along a row: increasing column index (x)
    lps[:3, 1] = orientation[3:] * row_spacing  # down a column: increasing row index (y)
    lps[:3, 2] = slice_step
    lps[:3, 3] = positions[0]
    return LPS_TO_RAS @ lps


def read_dicom_series(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a series folder as a canonical ``(D, H, W)`` float32 array and its nibabel affine.

    Args:
        folder: a folder holding the slices of one series.

    Raises:
        DataError: see :func:`read_headers`; pixel data that cannot be decoded (e.g. a
            compressed transfer syntax without its decoder installed).
    """
    headers = read_headers(folder)
    affine = series_affine(headers)
    slices = []
    for header in headers:
        try:
            ds = pydicom.dcmread(header.filename)
            pixels = ds.pixel_array.astype(np.float32)
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, RuntimeError, AttributeError) as exc:
            raise DataError(f"{header.filename}: cannot decode the pixel data ({type(exc).__name__}: {exc})") from None
        if pixels.shape != (int(header.Rows), int(header.Columns)):
            raise DataError(f"{header.filename}: pixel array {pixels.shape} is not Rows x Columns")
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        slices.append(pixels * np.float32(slope) + np.float32(intercept))
    xyz = np.stack(slices, axis=0).transpose(2, 1, 0)  # (slice, row, column) → (x, y, z)
    return canonical_dhw(xyz, affine)
