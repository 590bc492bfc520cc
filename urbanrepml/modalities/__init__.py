"""Stage 1: one module per modality, all implementing :class:`~urbanrepml.modalities.base.Modality`.

``MODALITIES`` maps each MLproject entry-point name to its class (contributors add their own line).
:func:`current_sources_digests` says, per modality, which source files a study area names now
(as one digest): tables built from other files are stale.
"""

from urbanrepml.config import StudyArea
from urbanrepml.errors import UrbanReprError
from urbanrepml.modalities.aerial import AerialModality
from urbanrepml.modalities.alphaearth import AlphaEarthModality
from urbanrepml.modalities.base import Modality, ModalityResult, sources_digest
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



def current_sources_digests(spec: StudyArea) -> dict[str, str]:
    """``{modality: digest of the source files spec names for it}`` (default settings), for every modality with sources."""
    out: dict[str, str] = {}
    for name, cls in MODALITIES.items():
        try:
            files = cls().source_files(spec)
        except UrbanReprError:
            continue
        out[name] = sources_digest(files)
    return out


__all__ = ["MODALITIES", "Modality", "ModalityResult", "current_sources_digests", "sources_digest"]
