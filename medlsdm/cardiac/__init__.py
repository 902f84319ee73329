"""The 2-D cardiac latent diffusion model (notebook 06): only what is specific to cardiac data.

- :mod:`~medlsdm.cardiac.data` — Canny edges, short-axis slicing, preparing a slice store.
- :mod:`~medlsdm.cardiac.store` — the HDF5 slice store.
- :mod:`~medlsdm.cardiac.conditioning` — the conditioning modes (edges, semantic, both).
- :mod:`~medlsdm.cardiac.training` — the VQ-VAE and one latent diffusion model per mode.
- :mod:`~medlsdm.cardiac.evaluation` — paired and set metrics of synthetic slices, the ablation table.

The models, training loop, pipeline, metrics and figures are the 3-D package's with ``spatial_dims=2``.
"""
