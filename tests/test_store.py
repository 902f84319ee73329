"""Tests of medlsdm.data.store: round trip, lazy reading, atomic writing."""

import pickle

import numpy as np
import pytest

from medlsdm.data.store import CaseStore, stack_cases
from medlsdm.errors import ConfigError, DataError


def _case(seed, shape=(4, 6, 5)):
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1, 1, size=(1,) + shape).astype(np.float32)
    label = rng.integers(0, 9, size=shape)
    affine = np.diag([1.5, 2.0, 3.0, 1.0])
    affine[:3, 3] = rng.normal(size=3)
    return image, label, affine


def test_round_trip(tmp_path):
    path = tmp_path / "cases.h5"
    cases = {f"c{i}": _case(i) for i in (2, 0, 1)}
    with CaseStore(path, mode="w") as store:
        for case_id, (image, label, affine) in cases.items():
            store.add(case_id, image, label, affine)
        assert not path.exists()  # only the temporary file exists while writing
    with CaseStore(path) as store:
        assert store.ids() == ["c2", "c0", "c1"] and len(store) == 3 and "c0" in store
        for case_id, (image, label, affine) in cases.items():
            got_image, got_label, got_affine = store[case_id]
            np.testing.assert_array_equal(got_image, image)
            np.testing.assert_array_equal(got_label, label)
            np.testing.assert_array_equal(got_affine, affine)
            assert got_image.dtype == np.float32 and got_label.dtype == np.int64
        with pytest.raises(KeyError):
            store["nope"]
    clone = pickle.loads(pickle.dumps(CaseStore(path)))  # DataLoader workers reopen lazily
    assert clone.ids() == ["c2", "c0", "c1"]
    clone.close()


def test_crash_leaves_no_half_cache(tmp_path):
    path = tmp_path / "cases.h5"
    with CaseStore(path, mode="w") as store:
        store.add("old", *_case(0))
    with pytest.raises(RuntimeError):
        with CaseStore(path, mode="w") as store:
            store.add("new", *_case(1))
            raise RuntimeError("crash")
    with CaseStore(path) as store:
        assert store.ids() == ["old"]  # the previous complete cache is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.h5"]


def test_errors(tmp_path):
    with pytest.raises(DataError, match="missing.h5"):
        CaseStore(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_text("junk")
    with pytest.raises(DataError, match="junk.h5"):
        CaseStore(tmp_path / "junk.h5").ids()
    store = CaseStore(tmp_path / "x.h5", mode="w")
    image, label, affine = _case(0)
    store.add("a", image, label, affine)
    with pytest.raises(DataError, match="x.h5, case a: already"):
        store.add("a", image, label, affine)
    with pytest.raises(DataError, match="case b: expected image"):
        store.add("b", image[0], label, affine)
    with pytest.raises(DataError, match="case b: affine must be 4x4"):
        store.add("b", image, label, affine[:3])
    with pytest.raises(DataError, match="case b: class indices"):
        store.add("b", image, label + 300, affine)
    store.add("b", image, label, affine)  # the refused adds left nothing behind
    store.close()
    assert CaseStore(tmp_path / "x.h5").ids() == ["a", "b"]
    with pytest.raises(ConfigError, match="y.h5: mode must be"):
        CaseStore(tmp_path / "y.h5", mode="a")


def test_stack_cases(tmp_path):
    cases = {f"c{i}": _case(i) for i in range(3)}
    with CaseStore(tmp_path / "cases.h5", "w") as store:
        for cid, (image, label, affine) in cases.items():
            store.add(cid, image, label, affine)
    images, labels, affines = stack_cases(CaseStore(tmp_path / "cases.h5"), ["c2", "c0"])
    assert images.shape == (2, 1, 4, 6, 5) and images.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(images[0], cases["c2"][0])  # in the order asked for
    np.testing.assert_array_equal(labels[1], cases["c0"][1])
    np.testing.assert_array_equal(affines[0], cases["c2"][2])
    with pytest.raises(DataError, match="no cases"):
        stack_cases(cases, [])
