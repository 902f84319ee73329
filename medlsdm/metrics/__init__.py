"""Metrics: pure functions of arrays, each tested against an independent reference.

- :mod:`~medlsdm.metrics.image` — PSNR, SSIM, MS-SSIM, RMSE, NMSE, class intensities.
- :mod:`~medlsdm.metrics.overlap` — Dice per class.
- :mod:`~medlsdm.metrics.distribution` — Fréchet distance, MMD.
- :mod:`~medlsdm.metrics.privacy` — nearest-neighbour memorisation check.

Code that runs networks to measure lives in :mod:`medlsdm.evaluation`.
"""
