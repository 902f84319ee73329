"""Training on Hugging Face ``accelerate``.

- :mod:`~medlsdm.training.trainer` — the generic loop: mixed precision, accumulation,
  atomic checkpoints, resume, loss log.
- :mod:`~medlsdm.training.datasets` — seeded datasets (random crops, latents).
- :mod:`~medlsdm.training.losses` — VQ-GAN losses (L1, perceptual, PatchGAN, feature matching).
- :mod:`~medlsdm.training.vqgan` — VQ-GAN training (notebook 02).
- :mod:`~medlsdm.training.diffusion` — latent diffusion training (notebook 03).
- :mod:`~medlsdm.training.segnet` — the downstream segmentation network (notebook 05).
"""
