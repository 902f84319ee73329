"""The data layer: from dataset folders to preprocessed training blocks.

Modules (import them directly; nothing heavy is imported here):

- :mod:`~medlsdm.data.classes` — class tables of every dataset.
- :mod:`~medlsdm.data.phantom` — procedural phantom datasets (the tutorial's embedded data), one file per kind.
- :mod:`~medlsdm.data.phantom.oracle` — the phantom oracle: re-renders of a run's anatomies preprocessed like the run.
- :mod:`~medlsdm.data.io` — NIfTI read/write in the ``(D, H, W)`` + affine convention.
- :mod:`~medlsdm.data.preprocess` — resample, normalise, crop/pad, depth blocks, one case end to end.
- :mod:`~medlsdm.data.labels` — label values, remapping to class indices, one-hot.
- :mod:`~medlsdm.data.datasets` — cases, the adapter interface and the validation pass.
- :mod:`~medlsdm.data.adapters` — the adapters of the supported datasets (folder layouts).
- :mod:`~medlsdm.data.nnunet` — the nnU-Net raw format, read (adapter ``nnunet``) and written.
- :mod:`~medlsdm.data.dicom` — DICOM series → ``(D, H, W)`` + affine (pydicom).
- :mod:`~medlsdm.data.duke` — Duke Breast MRI: DICOM series + ``.seg.nrrd`` segmentations.
- :mod:`~medlsdm.data.splits` — deterministic patient-level train/val/test splits.
- :mod:`~medlsdm.data.store` — HDF5 cache of preprocessed cases.
- :mod:`~medlsdm.data.prepare` — ``prepare_dataset``: the whole pipeline (notebook 01, CLI).
"""
