"""New anatomies: label maps of phantom cases the run has never seen, for augmentation that adds anatomy.

Synthetic training volumes made from the run's own training label maps add no anatomy: the
real arm already has those label maps. To ask whether a label-conditioned generator can
*add* data, it must be given label maps whose images nobody has — for the phantoms, fresh
anatomies: case indices beyond the run's ``n_cases`` with the same kind, seed and grid as
``RUN/raw/<dataset>/phantom.json``, preprocessed as notebook 01 preprocessed the real cases.
Their rendered images are thrown away; only the label maps are returned. (For real data the
label maps would come from another source, e.g. a segmentation model run on unlabelled scans.)
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .oracle import phantom_source

log = logging.getLogger(__name__)


def new_anatomies(data_dir: str | Path, n: int, *, first_index: int | None = None) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Label maps of ``n`` phantom anatomies that are not among the run's cases.

    Anatomy ``k`` is phantom case ``first_index + k`` (default ``first_index``: the phantom's
    ``n_cases``, so none of them is a case of the run), drawn with the run's phantom kind, seed
    and grid, rendered once (:func:`medlsdm.data.phantom.render_case`) only so that the
    preprocessing of notebook 01 (canonical orientation, resampling, crop/pad, depth block;
    the manifest's settings) applies unchanged; the image is discarded.

    Args:
        data_dir: the run's preprocessed data folder (``RUN/data``, from a phantom).
        n: number of anatomies (>= 1).
        first_index: phantom case index of the first anatomy (>= the phantom's ``n_cases``).

    Returns:
        ``(ids, labels, affines)``: ids ``new_<index>``, ``(D, H, W)`` int64 label maps of the
        run's block shape, and their affines.

    Raises:
        ConfigError: not a phantom run (:func:`medlsdm.evaluation.oracle.phantom_source`), ``n < 1``,
            or ``first_index`` inside the run's cases.
    """
    from ..data.adapters import get_adapter
    from ..data.io import canonical_dhw
    from ..data.phantom import render_case
    from ..data.preprocess import preprocess_case

    source = phantom_source(data_dir)
    manifest = source["manifest"]
    n_cases = int(source["n_cases"])
    start = n_cases if first_index is None else int(first_index)
    if int(n) < 1:
        raise ConfigError(f"new_anatomies: n must be >= 1, got {n}")
    if start < n_cases:
        raise ConfigError(f"new_anatomies: first_index {start} is a case of the run (the phantom has {n_cases} cases); "
                          f"use an index >= {n_cases}")
    adapter = get_adapter(manifest["dataset"])
    ids, labels, affines = [], [], []
    for index in range(start, start + int(n)):
        image, label, affine, _ = render_case(source["kind"], source["seed"], index, source.get("shape"))
        image, aff = canonical_dhw(image, affine)
        label, _ = canonical_dhw(label.astype(np.int64), affine)
        block = preprocess_case(image, label, aff, classes=adapter.classes, normalisation=manifest["normalisation"],
                                spacing=manifest["spacing"], block_shape=manifest["block_shape"])[0]
        ids.append(f"new_{index:03d}")
        labels.append(np.asarray(block.label, np.int64))
        affines.append(np.asarray(block.affine, np.float64))
    log.info("new_anatomies: %d label maps from phantom cases %d-%d", n, start, start + int(n) - 1)
    return ids, labels, affines
