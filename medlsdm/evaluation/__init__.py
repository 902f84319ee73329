"""Evaluation, in one home: measuring models, and the whole evaluation of a run.

Measuring (what runs networks to produce the numbers of notebooks 02, 04, 05 and 07):

- :mod:`~medlsdm.evaluation.reconstruction` — VQ-GAN reconstructions beside the pooling baseline.
- :mod:`~medlsdm.evaluation.features` — FID, 3-D FID, LPIPS, segmentation-feature distances.
- :mod:`~medlsdm.evaluation.segmentation` — a segmentation network's predictions and Dice.
- :mod:`~medlsdm.evaluation.oracle` — samples against the phantom oracle's re-renders
  (:mod:`medlsdm.data.phantom.oracle`): factors, diversity, within-map spread, texture.
- :mod:`~medlsdm.evaluation.controls` — memorisation with its controls; KID and FRD beside their references.
- :mod:`~medlsdm.evaluation.whole_volume` — whole scans deeper than a block: the seam check (notebook 07).
- :mod:`~medlsdm.evaluation.edits` — lesion edits of real volumes and what they keep (notebook 07).
- :mod:`~medlsdm.evaluation.summary` — the ``05_evaluation`` metrics entry, its tables and verdict sentences.

The whole evaluation of a run (notebook 05, ``medlsdm evaluate``), layers above the rest (it
trains judges and reads the profiles), each importing only from those before it:
:mod:`~medlsdm.evaluation.cases` (the cases, the judges trained on them, their Dice), the
augmentation arms in :mod:`~medlsdm.evaluation.augmentation`, and :mod:`~medlsdm.evaluation.run`,
the steps of a run.
"""
