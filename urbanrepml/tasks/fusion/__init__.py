"""Fusion of modality embeddings: inputs alignment, baselines, the fusion task on the training loop.

Importing this package registers the fusion models (``concat``, ``ring``, ``full_unet``,
``cone_unet``) in :mod:`urbanrepml.models.registry`.
"""

from urbanrepml.models import unet as _unet  # noqa: F401 - registers full_unet, cone_unet (first: the default)
from urbanrepml.tasks.fusion import baselines as _baselines  # noqa: F401 - registers concat, ring

FAMILY = "fusion"
