"""The phantom oracle (medlsdm.data.phantom.oracle): re-renders of a run's anatomies preprocessed
as the run was, a scan of a case several blocks deep, and anatomies the run has never seen."""

import numpy as np
import pytest

from medlsdm.data.phantom.oracle import deep_scan, new_anatomies, oracle_samples, phantom_source
from medlsdm.errors import ConfigError, DataError


def test_oracle_samples_rerender_the_stored_label_maps(phantom_data, one_thread):
    from medlsdm.data.prepare import load_manifest

    ids = [e.case_id for e in load_manifest(phantom_data).cases][:2]
    renders = oracle_samples(phantom_data, ids, 2, seed=1)
    assert renders.shape == (2, 2, 1, 16, 32, 32) and renders.dtype == np.float32
    assert -1 <= renders.min() < renders.max() <= 1
    assert not np.allclose(renders[0, 0], renders[0, 1])  # fresh hidden factors and noise
    np.testing.assert_array_equal(oracle_samples(phantom_data, ids[:1], 1, seed=1)[0, 0], renders[0, 0])  # seeded
    with pytest.raises(DataError, match="no case"):
        oracle_samples(phantom_data, ["nope"], 1)


def test_phantom_source_refuses_data_that_is_not_a_phantom(tmp_path):
    from evaluation_utils import write_manifest

    write_manifest(tmp_path, tmp_path.as_posix())
    with pytest.raises(ConfigError, match="not a phantom dataset"):
        phantom_source(tmp_path)


def test_new_anatomies_are_not_cases_of_the_run(phantom_data):
    from medlsdm.data.prepare import load_manifest
    from medlsdm.data.store import CaseStore

    ids, images, labels, affines = new_anatomies(phantom_data, 2)
    assert ids == ["new_004", "new_005"] and labels[0].shape == (16, 32, 32) and labels[0].dtype == np.int64
    with CaseStore(phantom_data / "cases.h5") as store:
        run_labels = [np.asarray(store[e.case_id][1]) for e in load_manifest(phantom_data).cases]
    assert not any(np.array_equal(new, old) for new in labels for old in run_labels)
    assert len(np.unique(labels[0])) > 3  # an anatomy, not an empty block
    np.testing.assert_array_equal(new_anatomies(phantom_data, 1, first_index=5).labels[0], labels[1])  # deterministic
    assert images[0].shape == (1, 16, 32, 32) and -1 <= images[0].min() < images[0].max() <= 1  # the oracle render
    with pytest.raises(ConfigError, match="is a case of the run"):
        new_anatomies(phantom_data, 1, first_index=3)


@pytest.fixture(scope="module")
def tiny_phantom_run(tmp_path_factory):
    from medlsdm.data.phantom import make_phantom
    from medlsdm.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("phantom")
    make_phantom("torso-ct", root / "raw", 2, seed=0, shape=(32, 32, 16))
    prepare_dataset(
        "torso-ct", root / "raw", root / "data", spacing=[12.0, 11.0, 11.0], block_shape=[16, 32, 32], n_cases=2
    )
    return root / "data"


def test_deep_scan_is_the_same_body_several_blocks_deep(tiny_phantom_run, one_thread):
    from medlsdm.data.prepare import load_manifest

    case = load_manifest(tiny_phantom_run).cases[0].case_id
    scan = deep_scan(tiny_phantom_run, case, n_blocks=3, n_oracle=2)
    assert scan.label.shape == (48, 32, 32) and scan.oracle.shape == (2, 1, 48, 32, 32)
    assert scan.z_extent_mm == pytest.approx(48 * 12.0)
    assert (scan.label > 0).any(axis=(1, 2)).all()  # body in every slice: the phantom scanned the whole length
    assert not np.allclose(scan.oracle[0], scan.oracle[1])  # fresh hidden factors and noise
    assert scan.oracle.min() >= -1 and scan.oracle.max() <= 1
    np.testing.assert_allclose(np.sqrt((scan.affine[:3, :3] ** 2).sum(0)), [11.0, 11.0, 12.0], rtol=1e-5)
    with pytest.raises(DataError, match="no case"):
        deep_scan(tiny_phantom_run, "nope", n_blocks=2, n_oracle=2)
