"""Study areas on H3: boundary -> cells per resolution, parent maps, neighbour graphs (cached).

Knows nothing of torch or MLflow.
"""

from urbanrepml.areas.area import (
    DEFAULT_RESOLUTIONS,
    Area,
    build_area,
    cache_on_success,
    estimate_cells,
    parse_resolutions,
)
from urbanrepml.areas.boundary import read_boundary

__all__ = [
    "DEFAULT_RESOLUTIONS",
    "Area",
    "build_area",
    "cache_on_success",
    "estimate_cells",
    "parse_resolutions",
    "read_boundary",
]
