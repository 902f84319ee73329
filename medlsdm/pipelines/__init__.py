"""The diffusers pipeline: label map in, volume out.

- :mod:`~medlsdm.pipelines.pipeline_medlsdm` — :class:`MedLSDMPipeline`.
- :mod:`~medlsdm.pipelines.loading` — load the trained models of a run.
- :mod:`~medlsdm.pipelines.synthesis` — schedulers by name, synthesis from NIfTI files.
- :mod:`~medlsdm.pipelines.plan` — the sampling plan of one call; encoding and decoding in depth tiles.
- :mod:`~medlsdm.pipelines.windows` — overlapping depth windows for whole volumes.
- :mod:`~medlsdm.pipelines.editing` — edits of real volumes: ``insert_lesion``, masks, paste-back.
"""

from .pipeline_medlsdm import MedLSDMPipeline, MedLSDMPipelineOutput

__all__ = ["MedLSDMPipeline", "MedLSDMPipelineOutput"]
