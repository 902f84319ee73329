"""New anatomies: label maps of phantom cases the run has never seen, for augmentation that adds anatomy.

Synthetic training volumes made from the run's own training label maps add no anatomy: the
real arm already has those label maps. To ask whether a label-conditioned generator can
*add* data, it must be given label maps whose images nobody has — for the phantoms, fresh
anatomies: case indices beyond the run's ``n_cases`` with the same kind, seed and grid as
``RUN/raw/<dataset>/phantom.json``, preprocessed as notebook 01 preprocessed the real cases.
Their rendered images, each anatomy with its own appearance, are what a perfect generator could
give for those label maps: the augmentation experiment's oracle arm trains on them, the synthetic
arm on the generator's samples. (For real data the label maps would come from another source,
e.g. a segmentation model run on unlabelled scans, and no oracle exists.)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError
from .oracle import phantom_source, preprocess_like_run

log = logging.getLogger(__name__)


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
        ConfigError: not a phantom run (:func:`medlsdm.evaluation.oracle.phantom_source`), ``n < 1``,
            or ``first_index`` inside the run's cases.
    """
    from ..data.phantom import render_case

    source = phantom_source(data_dir)
    manifest = source["manifest"]
    n_cases = int(source["n_cases"])
    start = n_cases if first_index is None else int(first_index)
    if int(n) < 1:
        raise ConfigError(f"new_anatomies: n must be >= 1, got {n}")
    if start < n_cases:
        raise ConfigError(f"new_anatomies: first_index {start} is a case of the run (the phantom has {n_cases} cases); "
                          f"use an index >= {n_cases}")
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
