"""Metrics: pure functions of arrays, each tested against an independent reference.

- :mod:`~medlsdm.metrics.image` — PSNR, SSIM, MS-SSIM, RMSE, NMSE, class intensities.
- :mod:`~medlsdm.metrics.overlap` — Dice per class.
- :mod:`~medlsdm.metrics.distribution` — Fréchet distance, MMD, KID.
- :mod:`~medlsdm.metrics.privacy` — memorisation check, with controls that set its threshold.
- :mod:`~medlsdm.metrics.statistics` — bootstrap confidence intervals, paired differences, mean ± sd.
- :mod:`~medlsdm.metrics.conditional` — against an oracle: diversity, hidden-factor distributions, label painting.
- :mod:`~medlsdm.metrics.paper_conventions` — the reference code's conventions beside ours.
- :mod:`~medlsdm.metrics.radiomics` — Fréchet Radiomics Distance (optional ``frd-score``).

Code that runs networks to measure lives in :mod:`medlsdm.evaluation`.
"""
