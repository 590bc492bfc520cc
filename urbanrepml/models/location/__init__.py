"""Location encoders: (lat, lon) -> embedding, trained contrastively against embeddings found at those places.

- :mod:`~urbanrepml.models.location.frame`: coordinate frames (lat, lon at the boundary; region plane, stretched sphere).
- :mod:`~urbanrepml.models.location.positional`: spherical harmonics, Space2Vec grid/theory, random Fourier features.
- :mod:`~urbanrepml.models.location.networks`: SIREN and MLP.
- :mod:`~urbanrepml.models.location.encoders`: the families, registered as ``location_encoder`` models.
- :mod:`~urbanrepml.models.location.geoclip`: GeoCLIP's pretrained global encoder (``geoclip``).
- :mod:`~urbanrepml.models.location.contrastive`: encoder + embedding projection + temperature, symmetric InfoNCE.
- :mod:`~urbanrepml.models.location.retrieval`: a bank of embeddings with coordinates and the retrieval-augmented service.

Importing this package registers the families in :mod:`urbanrepml.models.registry`.
"""

from urbanrepml.models.location.contrastive import ContrastiveLocationModel, symmetric_infonce
from urbanrepml.models.location.encoders import FAMILY, LocationEncoder, MultiScaleFourierEncoder
from urbanrepml.models.location.frame import RegionFrame, bounds_of, check_latlon
from urbanrepml.models.location.geoclip import GeoCLIPLocationEncoder, build_geoclip
from urbanrepml.models.location.retrieval import LocationService
from urbanrepml.models.registry import ModelSpec, list_models, model_spec, register_model

register_model(ModelSpec("geoclip", FAMILY, "GeoCLIP's pretrained global encoder (512-d, pip install --no-deps geoclip==1.3.0)",
                         build=build_geoclip))

# Families the locenc stage trains (those with a search space); geoclip is pretrained and only evaluated.
TRAINABLE = tuple(m for m in list_models(FAMILY) if model_spec(m).search_space(1))

__all__ = ["FAMILY", "TRAINABLE", "ContrastiveLocationModel", "GeoCLIPLocationEncoder", "LocationEncoder", "LocationService",
           "MultiScaleFourierEncoder", "RegionFrame", "bounds_of", "check_latlon", "symmetric_infonce"]
