"""Small NIfTI cases and a run's data folder made of them, for the tests of medlsdm.evaluation."""
import json

import numpy as np

from medlsdm.data.io import write_nifti
from medlsdm.rundir import RunDir

AFFINE = np.diag([5.5, 5.5, 6.0, 1.0])


def make_case(seed, shape=(16, 16, 16)):
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.int64)
    label[2:6, 4:12, 4:12] = 1
    label[3:5, 6:10, 10:14] = 2
    image = np.where(label == 0, -0.8, np.where(label == 1, 0.2, 0.7)) + rng.normal(0, 0.05, shape)
    return image.astype(np.float32), label


def write_run(root, n=4):
    """A run's data folder (images/, labels/) of ``n`` small cases, split 2/1/1."""
    run = RunDir(root)
    ids = [f"case{i}" for i in range(n)]
    for i, cid in enumerate(ids):
        image, label = make_case(i)
        write_nifti(run.data / "images" / f"{cid}.nii.gz", image, AFFINE, kind="image")
        write_nifti(run.data / "labels" / f"{cid}.nii.gz", label, AFFINE, kind="label")
    (run.data / "manifest.json").write_text(json.dumps({"data_root": str(run.data), "cases": []}))  # not a phantom
    return run, {"train": ids[:2], "val": ids[2:3], "test": ids[3:]}
