"""Measuring models: what runs networks to produce the numbers of notebooks 02 and 05.

- :mod:`~medlsdm.evaluation.reconstruction` — VQ-GAN reconstructions beside the pooling baseline.
- :mod:`~medlsdm.evaluation.features` — FID, 3-D FID, LPIPS, segmentation-feature distances.
- :mod:`~medlsdm.evaluation.segmentation` — a segmentation network's predictions and Dice.
- :mod:`~medlsdm.evaluation.whole_volume` — whole scans deeper than a block: the seam check (notebook 07).
- :mod:`~medlsdm.evaluation.edits` — lesion edits of real volumes and what they keep (notebook 07).

The whole evaluation of a run (notebook 05, ``medlsdm evaluate``) is :mod:`medlsdm.evaluate`.
"""
