"""Feature networks for perceptual losses and distribution metrics, weights from local files.

- :mod:`~medlsdm.models.feature_nets.weights` — the one state-dict loader.
- :mod:`~medlsdm.models.feature_nets.vgg` — the VGG16 trunk (perceptual loss, LPIPS).
- :mod:`~medlsdm.models.feature_nets.lpips` — LPIPS.
- :mod:`~medlsdm.models.feature_nets.inception` — InceptionV3 pool features (FID).
- :mod:`~medlsdm.models.feature_nets.medicalnet` — MedicalNet 3-D ResNet features (3-D FID).
"""
