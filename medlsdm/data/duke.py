"""Duke Breast Cancer MRI as downloaded: DICOM series + the 3D Slicer ``.seg.nrrd`` segmentations.

Layout (TCIA "classic directory names" for the images, the segmentation supplement beside)::

    <root>/Duke-Breast-Cancer-MRI/Breast_MRI_001/<study>/<series>/*.dcm
    <root>/Segmentation_Masks_NRRD/Breast_MRI_001/Segmentation_Breast_MRI_001_Breast.seg.nrrd
    <root>/Segmentation_Masks_NRRD/Breast_MRI_001/Segmentation_Breast_MRI_001_Dense_and_Vessels.seg.nrrd

The series of a patient whose slice count equals the segmentation's is the image (as in the
original code); when several match (the dynamic series share one geometry), the one whose
``SeriesDescription`` contains the option ``series`` (default ``"pre"``: the pre-contrast
series the masks were drawn on) is taken. The masks are placed on the series grid through
the world coordinates of both files (the NRRD ``space directions``/``space origin``, the
DICOM position/orientation), so they need not be stored in the same axis order.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import nrrd
import numpy as np
import pydicom
from scipy import ndimage

from ..errors import ConfigError, DataError
from . import classes as tables
from .datasets import Case, DatasetAdapter, check_root, is_visible
from .dicom import LPS_TO_RAS, dicom_files, read_dicom_series, read_headers, series_affine
from .io import canonical_dhw

logger = logging.getLogger(__name__)

#: ``class_table`` option: the paper's 3 classes (fibroglandular tissue stays breast, as the
#: original's merge left it) or all four annotated ones.
CLASS_TABLES = {"paper": tables.DUKE_BREAST_PAPER, "full": tables.DUKE_BREAST}
_SEGMENT_KIND = (("vessel", re.compile(r"vessel", re.I)), ("fgt", re.compile(r"dense|fgt|fibroglandular", re.I)))


def _nrrd_affine(header: dict, path: Path) -> np.ndarray:
    """RAS nibabel affine of the three spatial axes of an NRRD header."""
    try:
        directions = np.array(header["space directions"], dtype=np.float64)
        origin = np.array(header["space origin"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: NRRD header without 'space directions' / 'space origin'") from None
    directions = directions[~np.isnan(directions).any(axis=1)]  # drop the 'none' row of a layer axis
    if directions.shape != (3, 3) or origin.shape != (3,):
        raise DataError(f"{path}: expected 3 spatial axes in the NRRD header, got directions {directions.tolist()}")
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = directions.T, origin
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space in ("left-posterior-superior", "lps"):
        return LPS_TO_RAS @ affine
    if space in ("right-anterior-superior", "ras"):
        return affine
    raise DataError(f"{path}: NRRD space {space!r} is not supported (LPS or RAS)")


def read_seg_nrrd(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The segments of a 3D Slicer ``.seg.nrrd`` file as boolean ``(x, y, z)`` masks, and its RAS affine.

    Segments come from the ``Segment<i>_Name`` / ``_LabelValue`` / ``_Layer`` header fields
    (3-D label maps and 4-D layered files both); a file without them is one segment named
    after the file, holding every non-zero voxel.

    Raises:
        DataError: unreadable file or header, naming it.
    """

    path = Path(path)
    try:
        data, header = nrrd.read(str(path))
    except (nrrd.NRRDError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable NRRD file ({exc})") from None
    affine = _nrrd_affine(header, path)
    if data.ndim not in (3, 4):
        raise DataError(f"{path}: expected a 3-D or layered 4-D segmentation, got shape {data.shape}")
    indices = sorted({int(m[1]) for key in header for m in [re.match(r"Segment(\d+)_Name$", key)] if m})
    if not indices:
        return {path.name: (data != 0) if data.ndim == 3 else (data != 0).any(axis=0)}, affine
    segments = {}
    for i in indices:
        try:
            value = int(header.get(f"Segment{i}_LabelValue", i + 1))
            layer = int(header.get(f"Segment{i}_Layer", 0))
        except ValueError:
            raise DataError(f"{path}: Segment{i}_LabelValue / _Layer is not an integer") from None
        layer_data = data if data.ndim == 3 else data[layer]
        segments[str(header[f"Segment{i}_Name"])] = layer_data == value
    return segments, affine


def place_on_grid(
    mask_xyz: np.ndarray, mask_affine: np.ndarray, shape_xyz: tuple, affine: np.ndarray, path: Path
) -> np.ndarray:
    """Put a mask on another voxel grid that it shares voxels with (axes may be permuted or flipped).

    Raises:
        DataError: the grids do not coincide (other spacing, rotation or a sub-voxel shift).
    """
    to_mask = np.linalg.inv(mask_affine) @ affine  # image voxel index → mask voxel index
    if not np.allclose(to_mask, np.rint(to_mask), atol=0.05) or abs(abs(np.linalg.det(to_mask[:3, :3])) - 1) > 0.05:
        raise DataError(
            f"{path}: the segmentation does not lie on the voxel grid of the image series "
            f"(image voxel → segmentation voxel: {np.round(to_mask, 3).tolist()})"
        )
    to_mask = np.rint(to_mask)
    return ndimage.affine_transform(
        mask_xyz.astype(np.uint8),
        to_mask[:3, :3],
        offset=to_mask[:3, 3],
        output_shape=tuple(shape_xyz),
        order=0,
        mode="constant",
        cval=0,
    ).astype(bool)


class DukeBreast(DatasetAdapter):
    """Duke Breast Cancer MRI: the pre-contrast DICOM series and its breast / FGT / vessel segmentations.

    Args:
        class_table: ``"paper"`` (background, breast, vessel; fibroglandular tissue counted as
            breast) or ``"full"`` (background, breast, fibroglandular, vessel).
        dicom_dir: image folder under ``root``.
        seg_dir: segmentation folder under ``root``.
        series: text in ``SeriesDescription`` that picks the series when several have the
            segmentation's slice count (case-insensitive).
        window, percentiles: as in :class:`~medlsdm.data.datasets.DatasetAdapter`.
    """

    name, modality = "duke_breast", "MR"
    layout = (
        "<root>/Duke-Breast-Cancer-MRI/Breast_MRI_xxx/<study>/<series>/*.dcm + <root>/Segmentation_Masks_NRRD/"
        "Breast_MRI_xxx/Segmentation_Breast_MRI_xxx_{Breast,Dense_and_Vessels}.seg.nrrd"
    )

    def __init__(
        self,
        *,
        class_table: str = "paper",
        dicom_dir: str = "Duke-Breast-Cancer-MRI",
        seg_dir: str = "Segmentation_Masks_NRRD",
        series: str = "pre",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if class_table not in CLASS_TABLES:
            raise ConfigError(
                f"dataset 'duke_breast': option class_table must be one of {list(CLASS_TABLES)}, got {class_table!r}"
            )
        self.class_table, self.classes = class_table, CLASS_TABLES[class_table]
        self.dicom_dir, self.seg_dir, self.series = dicom_dir, seg_dir, str(series).lower()

    @staticmethod
    def seg_files(folder: Path) -> tuple[Path, Path]:
        """The breast and the dense-and-vessels segmentation files of one patient folder."""
        pid = folder.name
        files = tuple(folder / f"Segmentation_{pid}_{part}.seg.nrrd" for part in ("Breast", "Dense_and_Vessels"))
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise DataError(f"{folder}: segmentation file(s) missing: {', '.join(missing)}")
        return files

    def _pick_series(self, patient: Path, n_slices: int, seg: Path) -> Path:
        folders = sorted({p.parent for p in patient.rglob("*") if p.is_file() and is_visible(p)})
        matching = [f for f in folders if len(dicom_files(f)) == n_slices]
        if not matching:
            raise DataError(f"{patient}: no DICOM series with {n_slices} slices, the slice count of {seg}")
        if len(matching) > 1:
            described = [
                f
                for f in matching
                if self.series
                in str(pydicom.dcmread(dicom_files(f)[0], stop_before_pixels=True).get("SeriesDescription", "")).lower()
            ]
            if len(described) != 1:
                raise DataError(
                    f"{patient}: {len(matching)} series have {n_slices} slices and {len(described)} of them "
                    f"have {self.series!r} in SeriesDescription; set option series to pick one"
                )
            matching = described
        return matching[0]

    def find_cases(self, root: str | os.PathLike) -> list[Case]:

        root = check_root(root, self.layout)
        seg_root, dicom_root = root / self.seg_dir, root / self.dicom_dir
        for folder, option in ((seg_root, "seg_dir"), (dicom_root, "dicom_dir")):
            if not folder.is_dir():
                raise DataError(f"{folder}: folder not found (option {option}; expected layout: {self.layout})")
        cases = []
        for patient in sorted(p for p in seg_root.iterdir() if p.is_dir() and is_visible(p)):
            breast, _ = self.seg_files(patient)
            try:
                n_slices = int(nrrd.read_header(str(breast))["sizes"][-1])
            except (nrrd.NRRDError, OSError, KeyError, ValueError) as exc:
                raise DataError(f"{breast}: unreadable NRRD header ({exc})") from None
            images = dicom_root / patient.name
            if not images.is_dir():
                raise DataError(f"{images}: no DICOM folder for the segmentations in {patient}")
            cases.append(Case(patient.name, patient.name, self._pick_series(images, n_slices, breast), breast))
        if not cases:
            raise DataError(f"{seg_root}: no patient folders (expected layout: {self.layout})")
        return cases

    def read_image(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        return read_dicom_series(case.image)

    def read_label(self, case: Case) -> tuple[np.ndarray, np.ndarray]:
        """The merged label map on the series grid: 1 breast, then (full) 2 fibroglandular, then vessel."""
        headers = read_headers(case.image)
        affine = series_affine(headers)
        shape = (int(headers[0].Columns), int(headers[0].Rows), len(headers))
        breast_file, dv_file = self.seg_files(case.label.parent)
        label = np.zeros(shape, np.int64)
        breast, breast_affine = read_seg_nrrd(breast_file)
        for mask in breast.values():
            label[place_on_grid(mask, breast_affine, shape, affine, breast_file)] = 1
        segments, dv_affine = read_seg_nrrd(dv_file)
        kinds = {kind: [m for name, m in segments.items() if pattern.search(name)] for kind, pattern in _SEGMENT_KIND}
        if not kinds["vessel"] or not kinds["fgt"]:
            raise DataError(f"{dv_file}: expected segments named like 'Vessels' and 'Dense', found {sorted(segments)}")
        order = ("fgt", "vessel")  # vessels win where the two overlap
        value = {
            "fgt": self.classes.names.index("fibroglandular") if self.class_table == "full" else None,
            "vessel": self.classes.names.index("vessel"),
        }
        for kind in order:
            if value[kind] is None:
                continue  # paper table: fibroglandular tissue stays breast
            for mask in kinds[kind]:
                label[place_on_grid(mask, dv_affine, shape, affine, dv_file)] = value[kind]
        return canonical_dhw(label, affine)
