"""Small NIfTI cases and a run's data folder made of them, for the tests of medlsdm.evaluation."""

import numpy as np

from medlsdm.atomic import write_json
from medlsdm.data.io import write_nifti
from medlsdm.data.prepare import Manifest
from medlsdm.rundir import SPLIT, STORE, RunDir

AFFINE = np.diag([5.5, 5.5, 6.0, 1.0])


def make_case(seed, shape=(16, 16, 16)):
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.int64)
    label[2:6, 4:12, 4:12] = 1
    label[3:5, 6:10, 10:14] = 2
    image = np.where(label == 0, -0.8, np.where(label == 1, 0.2, 0.7)) + rng.normal(0, 0.05, shape)
    return image.astype(np.float32), label


def write_manifest(data_dir, data_root, classes=("background", "organ", "lesion")):
    """A ``manifest.json`` in ``data_dir`` of a dataset at ``data_root`` listing no cases."""
    manifest = Manifest(
        dataset="nifti",
        modality="CT",
        classes=list(classes),
        source_values=list(range(len(classes))),
        spacing=[6.0, 5.5, 5.5],
        block_shape=[16, 16, 16],
        normalisation={},
        data_root=str(data_root),
        split=SPLIT,
        store=STORE,
        seed=0,
        fractions=[0.5, 0.25, 0.25],
        cases=[],
    )
    write_json(data_dir / "manifest.json", manifest.to_dict())


def write_run(root, n=4):
    """A run's data folder (images/, labels/) of ``n`` small cases, split 2/1/1."""
    run = RunDir(root)
    ids = [f"case{i}" for i in range(n)]
    for i, cid in enumerate(ids):
        image, label = make_case(i)
        write_nifti(run.data / "images" / f"{cid}.nii.gz", image, AFFINE, kind="image")
        write_nifti(run.data / "labels" / f"{cid}.nii.gz", label, AFFINE, kind="label")
    write_manifest(run.data, run.data)  # not a phantom
    return run, {"train": ids[:2], "val": ids[2:3], "test": ids[3:]}
