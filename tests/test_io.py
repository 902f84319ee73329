"""Tests of medlsdm.data.io: NIfTI read/write, orientation, affine convention, bad files."""

import nibabel as nib
import numpy as np
import pytest

from medlsdm.data.io import dhw_to_world, read_nifti, spacing_dhw, write_nifti
from medlsdm.errors import ConfigError, DataError

# An oblique-free but flipped/permuted (LPS-like, axes swapped) affine with anisotropic voxels.
NON_CANONICAL = np.array([[0.0, -0.8, 0.0, 40.0], [-0.7, 0.0, 0.0, 30.0], [0.0, 0.0, 3.0, -20.0], [0, 0, 0, 1]])


def _save(path, data, affine=NON_CANONICAL, **header_text):
    img = nib.Nifti1Image(data, affine)
    for key, value in header_text.items():
        img.header[key] = value
    nib.save(img, str(path))
    return path


def test_read_matches_as_closest_canonical(tmp_path):
    data = np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)
    path = _save(tmp_path / "a.nii.gz", data)
    array, affine = read_nifti(path)
    canonical = nib.as_closest_canonical(nib.load(str(path)))
    np.testing.assert_array_equal(array, np.asarray(canonical.dataobj).transpose(2, 1, 0))
    np.testing.assert_allclose(affine, canonical.affine)
    assert array.dtype == np.float32
    assert nib.aff2axcodes(affine) == ("R", "A", "S")


def test_voxel_world_position_is_kept(tmp_path):
    """A voxel of the source file and the same voxel of the returned array share world coords."""
    data = np.zeros((6, 5, 4), np.float32)
    data[1, 3, 2] = 7.0
    path = _save(tmp_path / "a.nii.gz", data)
    array, affine = read_nifti(path)
    d, h, w = np.argwhere(array == 7.0)[0]
    np.testing.assert_allclose(dhw_to_world(affine, (d, h, w)), nib.affines.apply_affine(NON_CANONICAL, [1, 3, 2]))


def test_spacing_dhw():
    assert spacing_dhw(NON_CANONICAL) == pytest.approx((3.0, 0.8, 0.7))
    affine = np.diag([0.5, 0.6, 2.5, 1.0])
    assert spacing_dhw(affine) == pytest.approx((2.5, 0.6, 0.5))


def test_round_trip_keeps_array_and_affine(tmp_path):
    data = np.random.default_rng(1).normal(size=(6, 5, 4)).astype(np.float32)
    array, affine = read_nifti(_save(tmp_path / "a.nii.gz", data))
    write_nifti(tmp_path / "b.nii.gz", array, affine)
    array2, affine2 = read_nifti(tmp_path / "b.nii.gz")
    np.testing.assert_array_equal(array2, array)
    np.testing.assert_allclose(affine2, affine, rtol=0, atol=1e-5)  # NIfTI stores float32
    write_nifti(tmp_path / "b2.nii.gz", array2, affine2)  # once stored, the round trip is exact
    np.testing.assert_array_equal(read_nifti(tmp_path / "b2.nii.gz")[1], affine2)
    # (1, D, H, W) is accepted too
    write_nifti(tmp_path / "c.nii.gz", array[None], affine)
    np.testing.assert_array_equal(read_nifti(tmp_path / "c.nii.gz")[0], array)


def test_label_round_trip_dtype_and_fresh_header(tmp_path):
    label = np.zeros((4, 5, 6), np.int64)
    label[1:3, 2:4, 1:5] = 3
    src = _save(
        tmp_path / "src.nii.gz",
        label.astype(np.float32).transpose(2, 1, 0),
        np.eye(4),
        descrip=b"patient John Doe",
        aux_file=b"secret",
        db_name=b"hospital",
        intent_name=b"name",
    )
    read, affine = read_nifti(src, kind="label")
    assert read.dtype == np.int64
    np.testing.assert_array_equal(read, label)
    out = write_nifti(tmp_path / "out.nii.gz", read, affine, kind="label")
    img = nib.load(str(out))
    assert img.get_data_dtype() == np.uint8
    for key in ("descrip", "aux_file", "db_name", "intent_name"):
        assert img.header[key].item() == b""
    assert img.header.get_sform(coded=True)[1] == 1 and img.header.get_qform(coded=True)[1] == 1
    big = label * 100  # 300 does not fit uint8
    write_nifti(tmp_path / "big.nii.gz", big, affine, kind="label")
    assert nib.load(str(tmp_path / "big.nii.gz")).get_data_dtype() == np.int16
    image_out = write_nifti(tmp_path / "img.nii.gz", read, affine, kind="image")
    assert nib.load(str(image_out)).get_data_dtype() == np.float32


def test_trailing_singleton_dim_and_frames(tmp_path):
    data = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    array, _ = read_nifti(_save(tmp_path / "s.nii.gz", data[..., None], np.eye(4)))
    np.testing.assert_array_equal(array, data.transpose(2, 1, 0))
    four_d = np.stack([data, data + 100], axis=-1)
    path = _save(tmp_path / "t.nii.gz", four_d, np.eye(4))
    with pytest.raises(DataError, match="t.nii.gz.*3-D"):
        read_nifti(path)
    frame1, _ = read_nifti(path, frame=1)
    np.testing.assert_array_equal(frame1, (data + 100).transpose(2, 1, 0))
    with pytest.raises(DataError, match="frame 5 out of range"):
        read_nifti(path, frame=5)
    with pytest.raises(DataError, match="2-D|3-D"):
        read_nifti(_save(tmp_path / "two.nii.gz", data[..., 0], np.eye(4)))


@pytest.mark.parametrize(
    "name, content, pattern",
    [
        ("missing.nii.gz", None, "file not found"),
        ("text.nii.gz", b"not a nifti at all", "not a readable NIfTI"),
        ("empty.nii", b"", "not a readable NIfTI"),
    ],
)
def test_unreadable_files(tmp_path, name, content, pattern):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=pattern) as info:
        read_nifti(path)
    assert str(path) in str(info.value)


def test_truncated_and_corrupt_files(tmp_path):
    data = np.random.default_rng(2).normal(size=(32, 32, 16)).astype(np.float32)
    good = _save(tmp_path / "good.nii.gz", data).read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    corrupt[len(good) // 2 : len(good) // 2 + 64] = (
        np.random.default_rng(7).integers(0, 256, 64, dtype=np.uint8).tobytes()
    )
    (tmp_path / "corrupt.nii.gz").write_bytes(bytes(corrupt))
    raw = _save(tmp_path / "raw.nii", data).read_bytes()
    (tmp_path / "short.nii").write_bytes(raw[:-100])
    for name in ("truncated.nii.gz", "corrupt.nii.gz", "short.nii"):
        with pytest.raises(DataError) as info:
            read_nifti(tmp_path / name)
        assert name in str(info.value)


def test_invalid_values(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="nan.nii.gz.*1 NaN"):
        read_nifti(_save(tmp_path / "nan.nii.gz", data))
    data[0, 0, 0] = np.inf
    with pytest.raises(DataError, match="inf.nii.gz.*1 Inf"):
        read_nifti(_save(tmp_path / "inf.nii.gz", data))
    labels = np.zeros((4, 4, 4), np.float32)
    labels[1, 1, 1] = 1.5
    with pytest.raises(DataError, match="frac.nii.gz.*non-integer"):
        read_nifti(_save(tmp_path / "frac.nii.gz", labels), kind="label")
    labels[1, 1, 1] = 2.0
    ok, _ = read_nifti(_save(tmp_path / "int.nii.gz", labels), kind="label")
    assert ok.dtype == np.int64 and ok.max() == 2


def test_write_refuses_bad_arrays_naming_the_file(tmp_path):
    volume, affine = np.zeros((4, 5, 6), np.int64), np.eye(4)
    with pytest.raises(DataError, match="flat.nii.gz: write_nifti expects"):
        write_nifti(tmp_path / "flat.nii.gz", volume[0], affine)
    with pytest.raises(DataError, match="aff.nii.gz: the affine must be 4x4"):
        write_nifti(tmp_path / "aff.nii.gz", volume, affine[:3])
    with pytest.raises(DataError, match="frac.nii.gz: a label array must have an integer dtype"):
        write_nifti(tmp_path / "frac.nii.gz", volume + 0.5, affine, kind="label")
    with pytest.raises(ConfigError, match="kind.nii.gz: kind must be one of"):
        write_nifti(tmp_path / "kind.nii.gz", volume, affine, kind="mask")
    with pytest.raises(ConfigError, match="kind must be one of"):
        read_nifti(tmp_path / "kind.nii.gz", kind="mask")
    assert not list(tmp_path.iterdir())  # nothing written
    write_nifti(tmp_path / "ok.nii.gz", volume, affine, kind="label")
    assert read_nifti(tmp_path / "ok.nii.gz", kind="label")[0].shape == volume.shape


def test_rgb_and_complex_voxels_refused_naming_the_file(tmp_path):
    rgb = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    with pytest.raises(DataError, match=r"rgb.nii.gz: voxel type .*RGB, complex"):
        read_nifti(_save(tmp_path / "rgb.nii.gz", rgb))
    with pytest.raises(DataError, match="complex.nii.gz: voxel type complex64"):
        read_nifti(_save(tmp_path / "complex.nii.gz", np.ones((4, 4, 4), np.complex64)), kind="label")


def test_a_header_claiming_a_huge_volume_is_refused_before_reading(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((2048, 2048, 2048))
    header.set_data_dtype(np.float32)
    header.set_sform(np.eye(4), code=1)
    path = tmp_path / "huge.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + np.zeros(64, np.float32).tobytes())  # 352-byte offset, then data
    with pytest.raises(
        DataError, match=r"huge.nii: the header gives shape \(2048, 2048, 2048\), 32 GiB.*MAX_VOLUME_BYTES"
    ):
        read_nifti(path)
