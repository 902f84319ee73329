"""The ``duke_breast`` adapter on a tiny download-shaped tree: DICOM series written with pydicom,
3D Slicer ``.seg.nrrd`` segmentations written with pynrrd."""

import nrrd
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from medlsdm.data.adapters import get_adapter
from medlsdm.data.datasets import validate_cases
from medlsdm.data.dicom import read_dicom_series
from medlsdm.errors import ConfigError, DataError

ROWS, COLS, SLICES = 6, 8, 5
SPACING, STEP, ORIGIN = 0.7, 2.0, np.array([-20.0, -30.0, 10.0])  # LPS mm


def pixel(k, r, c):
    """The stored value of slice k, row r, column c: every voxel is recognisable after any reorientation."""
    return 100 * k + 10 * r + c


def write_series(folder, description, n_slices=SLICES, reverse_files=False):
    folder.mkdir(parents=True)
    series_uid = generate_uid()
    for k in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesDescription = "MR", series_uid, description
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = (ORIGIN + [0, 0, k * STEP]).tolist()
        ds.PixelSpacing = [SPACING, SPACING]
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 2, -5
        stored = np.fromfunction(lambda r, c: pixel(k, r, c), (ROWS, COLS)).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        name = f"1-{(n_slices - k if reverse_files else k + 1):03d}.dcm"  # file order need not be slice order
        ds.save_as(folder / name, enforce_file_format=True)


def write_seg(path, masks, flip_z=False):
    """``masks``: {(name, value): bool (x, y, z) array} written as one 3-D label map with Slicer's fields."""
    data = np.zeros((COLS, ROWS, SLICES), np.uint8)
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag([SPACING, SPACING, STEP]),
        "space origin": ORIGIN.copy(),
    }
    for i, ((name, value), mask) in enumerate(masks.items()):
        data[mask] = value
        header[f"Segment{i}_Name"], header[f"Segment{i}_LabelValue"], header[f"Segment{i}_Layer"] = (
            name,
            str(value),
            "0",
        )
    if flip_z:  # the same segmentation stored with the slice axis reversed
        data = data[:, :, ::-1]
        header["space directions"] = np.diag([SPACING, SPACING, -STEP])
        header["space origin"] = ORIGIN + [0, 0, (SLICES - 1) * STEP]
    path.parent.mkdir(parents=True, exist_ok=True)
    nrrd.write(str(path), np.ascontiguousarray(data), header)


def box(x, y, z):
    mask = np.zeros((COLS, ROWS, SLICES), bool)
    mask[x, y, z] = True
    return mask


BREAST, FGT, VESSEL = (
    box(slice(1, 7), slice(1, 5), slice(0, 4)),
    box(slice(2, 4), slice(2, 4), slice(1, 3)),
    box(5, 3, slice(0, 5)),
)


@pytest.fixture
def duke_root(tmp_path):
    root = tmp_path / "duke"
    patient = root / "Duke-Breast-Cancer-MRI" / "Breast_MRI_002" / "01-01-1990-NA-BREASTROUTINE DYNAMICS-51487"
    write_series(patient / "3.000000-ax dyn pre-93877", "ax dyn pre", reverse_files=True)
    write_series(patient / "4.000000-ax dyn 1st pass-36555", "ax dyn 1st pass")
    write_series(patient / "2.000000-ax 3d t1 bilateral-10492", "ax 3d t1 bilateral", n_slices=3)
    (patient / "LICENSE").write_text("CC BY-NC 4.0")
    write_series(root / "Duke-Breast-Cancer-MRI" / "Breast_MRI_900" / "s" / "1-pre", "ax dyn pre")  # not annotated
    segs = root / "Segmentation_Masks_NRRD" / "Breast_MRI_002"
    write_seg(segs / "Segmentation_Breast_MRI_002_Breast.seg.nrrd", {("Breast", 1): BREAST})
    write_seg(
        segs / "Segmentation_Breast_MRI_002_Dense_and_Vessels.seg.nrrd",
        {("Dense", 2): FGT, ("Vessels", 1): VESSEL},
        flip_z=True,
    )
    (root / "Segmentation_Masks_NRRD" / ".DS_Store").write_text("")
    return root


def test_read_dicom_series_geometry(duke_root):
    folder = next((duke_root / "Duke-Breast-Cancer-MRI" / "Breast_MRI_002").rglob("3.000000-ax dyn pre-93877"))
    image, affine = read_dicom_series(folder)
    assert image.shape == (SLICES, ROWS, COLS)  # axial, canonical (D, H, W)
    # voxel (slice k, row r, column c) of the series → world RAS = (-(x), -(y), z) of LPS
    for k, r, c in [(0, 0, 0), (3, 2, 5)]:
        d, h, w = k, ROWS - 1 - r, COLS - 1 - c  # canonical RAS flips the L and P axes of LPS
        assert image[d, h, w] == pixel(k, r, c) * 2 - 5  # rescale slope 2, intercept -5
        lps = ORIGIN + [c * SPACING, r * SPACING, k * STEP]
        np.testing.assert_allclose(affine @ [w, h, d, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-6)


@pytest.mark.parametrize(
    "table, values", [("paper", {"breast": 1, "fgt": 1, "vessel": 2}), ("full", {"breast": 1, "fgt": 2, "vessel": 3})]
)
def test_duke_breast_adapter(duke_root, table, values):
    adapter = get_adapter("duke_breast", class_table=table)
    cases = adapter.find_cases(duke_root)
    assert [(c.case_id, c.patient_id, c.image.name) for c in cases] == [
        ("Breast_MRI_002", "Breast_MRI_002", "3.000000-ax dyn pre-93877")
    ]
    image, _ = adapter.read_image(cases[0])
    label, _ = adapter.read_label(cases[0])
    validate_cases(cases, adapter)
    # every voxel of a class holds exactly the pixel values of the voxels drawn in that class
    drawn = {"breast": BREAST & ~FGT & ~VESSEL, "fgt": FGT & ~VESSEL, "vessel": VESSEL}
    for name, mask in drawn.items():
        x, y, z = np.nonzero(mask)
        expected = {float(pixel(k, r, c) * 2 - 5) for c, r, k in zip(x, y, z)}
        assert expected <= set(image[label == values[name]].tolist()), name
    assert int((label > 0).sum()) == int((BREAST | FGT | VESSEL).sum())
    assert adapter.classes.num_classes == len(set(values.values())) + 1


def test_duke_breast_errors(duke_root):
    with pytest.raises(DataError, match="2 series have 5 slices"):
        get_adapter("duke_breast", series="dyn").find_cases(duke_root)
    with pytest.raises(ConfigError, match="option class_table"):
        get_adapter("duke_breast", class_table="three")
    segs = duke_root / "Segmentation_Masks_NRRD" / "Breast_MRI_002"
    write_seg(segs / "Segmentation_Breast_MRI_002_Dense_and_Vessels.seg.nrrd", {("Segment_1", 1): VESSEL})
    adapter = get_adapter("duke_breast")
    with pytest.raises(
        DataError, match="Dense_and_Vessels.seg.nrrd: expected segments named like 'Vessels' and 'Dense'"
    ):
        validate_cases(adapter.find_cases(duke_root), adapter)
    (segs / "Segmentation_Breast_MRI_002_Dense_and_Vessels.seg.nrrd").unlink()
    with pytest.raises(DataError, match="segmentation file\\(s\\) missing: .*Dense_and_Vessels.seg.nrrd"):
        adapter.find_cases(duke_root)
    dcm = sorted((duke_root / "Duke-Breast-Cancer-MRI" / "Breast_MRI_900").rglob("*.dcm"))
    dcm[2].unlink()
    with pytest.raises(DataError, match="uneven slice positions"):
        read_dicom_series(dcm[0].parent)
    dcm[0].write_bytes(b"not dicom at all")
    with pytest.raises(DataError, match="1-001.dcm: not a readable DICOM file"):
        read_dicom_series(dcm[0].parent)
