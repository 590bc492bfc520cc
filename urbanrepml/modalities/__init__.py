"""Stage 1: one module per modality, all implementing :class:`~urbanrepml.modalities.base.Modality`.

``MODALITIES`` maps each MLproject entry-point name to its class (contributors add their own line).
"""

from urbanrepml.modalities.aerial import AerialModality
from urbanrepml.modalities.alphaearth import AlphaEarthModality
from urbanrepml.modalities.base import Modality, ModalityResult
from urbanrepml.modalities.gtfs import GTFSModality
from urbanrepml.modalities.location import LocationModality
from urbanrepml.modalities.poi import PoiModality
from urbanrepml.modalities.raster import RasterModality
from urbanrepml.modalities.roads import RoadsModality

MODALITIES: dict[str, type[Modality]] = {
    "poi": PoiModality,
    "roads": RoadsModality,
    "gtfs": GTFSModality,
    "raster": RasterModality,
    "alphaearth": AlphaEarthModality,
    "aerial": AerialModality,
    "location": LocationModality,
}

__all__ = ["MODALITIES", "Modality", "ModalityResult"]
