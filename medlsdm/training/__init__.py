"""Training on Hugging Face ``accelerate``.

- :mod:`~medlsdm.training.trainer` — the generic loop: mixed precision, accumulation,
  atomic checkpoints, resume, loss log.
- :mod:`~medlsdm.training.stage_params` — a stage's settings checked and read into its trainer.
- :mod:`~medlsdm.training.datasets` — seeded datasets (random crops, latents).
- :mod:`~medlsdm.training.losses` — VQ-GAN losses (L1, perceptual, PatchGAN, feature matching).
- :mod:`~medlsdm.training.vqgan` — VQ-GAN training (notebook 02).
- :mod:`~medlsdm.training.diffusion` — latent diffusion training (notebook 03).
- :mod:`~medlsdm.training.early_stopping` — the in-memory loop of the segmentation networks, best
  validation weights kept; every fit ends there (:class:`~medlsdm.training.early_stopping.FitResult`).
- :mod:`~medlsdm.training.judge` — the judge of notebook 05 (:class:`~medlsdm.training.judge.JudgeFit`).
- :mod:`~medlsdm.training.segnet` — the small segmentation network (notebooks 06 and 07).
"""
