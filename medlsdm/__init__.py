"""medlsdm: Med-LSDM, 3D semantic medical image synthesis with a latent diffusion model.

The notebooks in ``notebooks/`` are the front door; this package holds their helpers:
``data`` (phantoms, NIfTI I/O, preprocessing, adapters, splits, cache), ``models``,
``training``, ``metrics``, ``viz``, ``profiles`` (smoke / quick / paper), ``runner`` and
``cli``.
"""

from .errors import ConfigError, DataError, MedLSDMError, NotebookError
from .rundir import RunDir

__version__ = "0.1.0"
__all__ = ["MedLSDMError", "DataError", "ConfigError", "NotebookError", "RunDir", "__version__"]
