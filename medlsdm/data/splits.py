"""Deterministic patient-level train/val/test splits.

Patients (not cases) are split: all cases of one patient (follow-up studies, ED/ES frames,
several blocks) land in the same set, so the test set never contains a patient seen in
training. The split depends only on the set of patients, the fractions and the seed: patients
are sorted, then shuffled with ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Sequence

import numpy as np

from ..atomic import read_json, write_json
from ..errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def check_fractions(fractions: Sequence[float]) -> np.ndarray:
    """(train, val, test) fractions as an array; ConfigError unless non-negative and summing to 1."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or not np.isclose(f.sum(), 1.0, atol=1e-6):
        raise ConfigError(
            f"fractions must be three non-negative numbers (train, val, test) summing to 1, got {tuple(fractions)}"
        )
    return f


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Patients per split: largest-remainder rounding, at least one per split with a
    positive fraction when there are enough patients.

    Args:
        n: number of patients.
        fractions: (train, val, test) fractions summing to 1.
    """
    f = check_fractions(fractions)
    raw = f * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    for i in order[: n - counts.sum()]:
        counts[i] += 1
    positive = np.flatnonzero(f > 0)
    if n >= len(positive):
        for i in positive:
            if counts[i] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[i] = 1
    return [int(c) for c in counts]


def make_split(cases: Iterable, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0) -> dict[str, list[str]]:
    """Split cases into train/val/test by patient, deterministically.

    Args:
        cases: objects with ``case_id`` and ``patient_id`` attributes (e.g.
            :class:`~medlsdm.data.datasets.Case`), dicts with those keys, or
            ``(case_id, patient_id)`` tuples.
        fractions: (train, val, test) fractions of the *patients*, summing to 1.
        seed: seed of the shuffle.

    Returns:
        ``{"train": [case ids], "val": [...], "test": [...]}``, each list sorted. Every split
        is non-empty when there are at least 3 patients (and its fraction is positive).
    """
    pairs = [_ids(c) for c in cases]
    if not pairs:
        raise DataError("cannot split an empty list of cases")
    patients = sorted({p for _, p in pairs})
    if len(patients) < 3:
        logger.warning("only %d patient(s): some splits will be empty", len(patients))
    counts = split_counts(len(patients), fractions)
    shuffled = [patients[i] for i in np.random.default_rng(seed).permutation(len(patients))]
    bounds = np.cumsum([0] + counts)
    split_of = {p: SPLITS[k] for k in range(3) for p in shuffled[bounds[k] : bounds[k + 1]]}
    split = {name: sorted(c for c, p in pairs if split_of[p] == name) for name in SPLITS}
    check_split(split, pairs)
    return split


def _ids(case) -> tuple[str, str]:
    if isinstance(case, tuple):
        return case
    if isinstance(case, dict):
        return str(case["case_id"]), str(case["patient_id"])
    return str(case.case_id), str(case.patient_id)


def check_split(split: dict, cases: Iterable) -> None:
    """Check that a split assigns every case exactly once and keeps patients together.

    Args:
        split: ``{"train": [...], "val": [...], "test": [...]}`` of case ids.
        cases: the cases (objects or dicts with ``case_id`` and ``patient_id``).

    Raises:
        DataError: wrong keys, unknown or missing case ids, a case in two splits, or a
            patient in two splits (named).
    """
    if not isinstance(split, dict) or set(split) != set(SPLITS):
        keys = sorted(split) if isinstance(split, dict) else type(split).__name__
        raise DataError(f"a split needs exactly the keys {list(SPLITS)}, got {keys}")
    patient_of = dict(_ids(c) for c in cases)
    seen: dict[str, str] = {}
    for name in SPLITS:
        for case_id in split[name]:
            if case_id not in patient_of:
                raise DataError(f"split {name!r}: unknown case id {case_id!r}")
            if case_id in seen:
                raise DataError(f"case {case_id!r} is in both {seen[case_id]!r} and {name!r}")
            seen[case_id] = name
    missing = sorted(set(patient_of) - set(seen))
    if missing:
        raise DataError(f"{len(missing)} case(s) are in no split, e.g. {missing[:5]}")
    leaked = shared_patients(split, cases)
    if leaked:
        example = sorted(leaked)[:5]
        raise DataError(
            f"{len(leaked)} patient(s) are in more than one split, e.g. "
            + ", ".join(f"{p} in {leaked[p]}" for p in example)
        )


def shared_patients(split: dict, cases: Iterable) -> dict[str, list[str]]:
    """The patients whose cases sit in more than one split: ``{patient_id: [split names]}``
    (empty for a patient-level split). Case ids of ``split`` missing from ``cases`` are ignored.

    Args:
        split: ``{"train": [...], "val": [...], "test": [...]}`` of case ids.
        cases: the cases (objects or dicts with ``case_id`` and ``patient_id``, or
            ``(case_id, patient_id)`` tuples).
    """
    patient_of = dict(_ids(c) for c in cases)
    sets_of: dict[str, set[str]] = {}
    for name in SPLITS:
        for case_id in split.get(name, ()):
            if case_id in patient_of:
                sets_of.setdefault(patient_of[case_id], set()).add(name)
    return {p: sorted(s, key=SPLITS.index) for p, s in sorted(sets_of.items()) if len(s) > 1}


def save_split(path: str | os.PathLike, split: dict[str, list[str]]) -> None:
    """Write a split as JSON (atomically)."""
    write_json(path, {name: list(split[name]) for name in SPLITS})


def load_split(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a split written by :func:`save_split`.

    Raises:
        DataError: missing file, invalid JSON, or not a train/val/test split (naming the file).
    """
    data = read_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in SPLITS):
        raise DataError(f"{path}: not a split file (needs lists 'train', 'val', 'test')")
    return {name: [str(c) for c in data[name]] for name in SPLITS}
