"""Tests of medlsdm.data.splits: deterministic, patient-level, fractions respected."""

import json

import pytest

from medlsdm.data.datasets import Case
from medlsdm.data.splits import check_split, load_split, make_split, save_split, shared_patients, split_counts
from medlsdm.errors import ConfigError, DataError


def _cases(n_patients, studies=lambda p: 1):
    return [
        Case(f"p{p:03d}_s{s}", f"p{p:03d}", f"i{p}_{s}", f"l{p}_{s}")
        for p in range(n_patients)
        for s in range(studies(p))
    ]


def test_deterministic_and_independent_of_input_order():
    cases = _cases(20)
    split = make_split(cases, seed=3)
    assert split == make_split(list(reversed(cases)), seed=3)
    assert split == make_split(cases[7:] + cases[:7], seed=3)
    assert split != make_split(cases, seed=4)
    assert all(ids == sorted(ids) for ids in split.values())


def test_fractions_respected():
    split = make_split(_cases(20), fractions=(0.6, 0.2, 0.2))
    assert [len(split[k]) for k in ("train", "val", "test")] == [12, 4, 4]
    assert split_counts(10, (0.7, 0.15, 0.15)) == [7, 2, 1]  # ties in the remainder: earlier split first
    assert sum(split_counts(101, (0.6, 0.2, 0.2))) == 101
    assert split_counts(5, (1.0, 0.0, 0.0)) == [5, 0, 0]
    with pytest.raises(ConfigError):
        make_split(_cases(5), fractions=(0.5, 0.2, 0.2))


@pytest.mark.parametrize("n", [3, 4, 5])
def test_every_split_non_empty_with_three_patients(n):
    split = make_split(_cases(n), fractions=(0.8, 0.1, 0.1))
    assert all(len(ids) >= 1 for ids in split.values())


def test_multi_study_patients_stay_together():
    cases = _cases(12, studies=lambda p: 1 + p % 3)
    for seed in range(5):
        split = make_split(cases, seed=seed)
        check_split(split, cases)
        where = {c: k for k, ids in split.items() for c in ids}
        for patient in {c.patient_id for c in cases}:
            assert len({where[c.case_id] for c in cases if c.patient_id == patient}) == 1
    dict_cases = [{"case_id": c.case_id, "patient_id": c.patient_id} for c in cases]
    assert make_split(dict_cases, seed=1) == make_split(cases, seed=1)


def test_shared_patients_counts_what_a_case_level_split_leaks():
    cases = _cases(12, studies=lambda p: 3)
    assert shared_patients(make_split(cases, seed=1), cases) == {}
    naive = make_split([(c.case_id, c.case_id) for c in cases], seed=1)  # every study its own "patient"
    leaked = shared_patients(naive, cases)
    assert leaked and all(len(where) > 1 for where in leaked.values())
    for patient, where in leaked.items():  # exactly the splits that hold the patient's studies
        studies = [c.case_id for c in cases if c.patient_id == patient]
        assert where == [k for k in ("train", "val", "test") if set(naive[k]) & set(studies)]
    with pytest.raises(DataError, match=f"{len(leaked)} patient"):
        check_split(naive, cases)


def test_check_split_errors():
    cases = _cases(4, studies=lambda p: 2)
    good = make_split(cases)
    check_split(good, cases)
    leak = {"train": ["p000_s0"], "val": ["p000_s1"], "test": [c.case_id for c in cases[2:]]}
    with pytest.raises(DataError, match="p000 in"):
        check_split(leak, cases)
    with pytest.raises(DataError, match="unknown case id"):
        check_split({**good, "test": good["test"] + ["zzz"]}, cases)
    with pytest.raises(DataError, match="in no split"):
        check_split({**good, "test": []}, cases)
    with pytest.raises(DataError, match="keys"):
        check_split({"train": []}, cases)


def test_save_and_load(tmp_path):
    split = make_split(_cases(6))
    save_split(tmp_path / "split.json", split)
    assert load_split(tmp_path / "split.json") == split
    assert list(json.loads((tmp_path / "split.json").read_text())) == ["train", "val", "test"]
    (tmp_path / "bad.json").write_text('{"train": []}')
    with pytest.raises(DataError, match="bad.json"):
        load_split(tmp_path / "bad.json")
    with pytest.raises(DataError, match="missing.json"):
        load_split(tmp_path / "missing.json")
