"""The diffusers pipeline: label map in, volume out.

- :mod:`~medlsdm.pipelines.pipeline_medlsdm` — :class:`MedLSDMPipeline`.
- :mod:`~medlsdm.pipelines.loading` — load the trained models of a run.
- :mod:`~medlsdm.pipelines.synthesis` — schedulers by name, synthesis from NIfTI files.
"""
from .pipeline_medlsdm import MedLSDMPipeline, MedLSDMPipelineOutput

__all__ = ["MedLSDMPipeline", "MedLSDMPipelineOutput"]
