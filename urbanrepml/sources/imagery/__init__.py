"""Image datasets: builders of the index table (:mod:`urbanrepml.images`), one module per source kind, and decoding.

=============  ==================================================  ===========================
kind           source                                              module
=============  ==================================================  ===========================
``chips``      GeoTIFF scenes cut into square chips                :mod:`.chips`
``photos``     a folder of photos with GPS in their EXIF           :mod:`.photos`
``mapillary``  Mapillary-style metadata (JSONL / CSV / parquet)    :mod:`.manifest`
``satclip``    the Regional-SatCLIP embedding CSV                  :mod:`.satclip`
``concepts``   the concept-geolocation CSV                         :mod:`.concepts`
``buildings``  street-view building metadata (JSONL)               :mod:`.buildings`
=============  ==================================================  ===========================

Every builder returns a :class:`~urbanrepml.sources.imagery.base.BuildResult`; :mod:`.decode`
reads the pixels of index rows.
"""

from urbanrepml.sources.imagery.base import BuildResult
from urbanrepml.sources.imagery.buildings import build_buildings
from urbanrepml.sources.imagery.chips import build_chips
from urbanrepml.sources.imagery.concepts import build_concepts
from urbanrepml.sources.imagery.manifest import build_manifest
from urbanrepml.sources.imagery.photos import build_photos
from urbanrepml.sources.imagery.satclip import build_satclip

BUILDERS = {
    "chips": build_chips,
    "photos": build_photos,
    "mapillary": build_manifest,
    "satclip": build_satclip,
    "concepts": build_concepts,
    "buildings": build_buildings,
}

__all__ = ["BUILDERS", "BuildResult", "build_buildings", "build_chips", "build_concepts", "build_manifest",
           "build_photos", "build_satclip"]
