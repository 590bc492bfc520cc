"""Study-area boundary: a lon/lat box or a vector file -> one polygonal geometry in EPSG:4326."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from urbanrepml.config import BBox
from urbanrepml.errors import UrbanReprError

WGS84 = "EPSG:4326"


def read_boundary(boundary: Path | BBox | str) -> BaseGeometry:
    """Return the boundary as a valid (Multi)Polygon in EPSG:4326.

    Files in a projected CRS are reprojected; a file with no CRS, no geometry,
    non-polygon geometry, or an empty/invalid polygon is refused.
    """
    if isinstance(boundary, (tuple, list)):
        return box(*boundary)
    path = Path(boundary)
    if not path.exists():
        raise UrbanReprError(f"boundary file {path} does not exist")
    try:
        if path.suffix == ".parquet":
            gdf = gpd.read_parquet(path)
        else:
            gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio/fiona raise many types for unreadable files
        raise UrbanReprError(f"boundary file {path} is not a readable vector file ({type(exc).__name__}: {exc})") from None
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf or len(gdf) == 0:
        raise UrbanReprError(f"boundary file {path} holds no geometry")
    if gdf.crs is None:
        raise UrbanReprError(f"boundary file {path} has no CRS; set one (e.g. EPSG:4326) and try again")
    gdf = gdf[~gdf.geometry.isna()]
    if len(gdf) and not gdf.crs.equals(WGS84):
        gdf = gdf.to_crs(WGS84)
    return check_polygon(shapely.union_all(gdf.geometry.values), str(path))


def check_polygon(geometry: BaseGeometry, where: str) -> BaseGeometry:
    """Refuse empty, non-polygonal or invalid geometry with a message naming ``where``."""
    if geometry is None or geometry.is_empty:
        raise UrbanReprError(f"boundary {where} is empty")
    if geometry.geom_type not in ("Polygon", "MultiPolygon"):
        raise UrbanReprError(f"boundary {where} must be a Polygon or MultiPolygon, got {geometry.geom_type}")
    if not geometry.is_valid:
        reason = shapely.is_valid_reason(geometry)
        raise UrbanReprError(f"boundary {where} is not a valid polygon ({reason}); fix it, e.g. with shapely.make_valid")
    minx, miny, maxx, maxy = geometry.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise UrbanReprError(f"boundary {where} has bounds {geometry.bounds} outside lon/lat range")
    return geometry


def polygon_parts_wkb(geometry: BaseGeometry) -> list[bytes]:
    """WKB of each polygon part (SRAI explodes multipolygons the same way)."""
    parts = getattr(geometry, "geoms", [geometry])
    return [shapely.to_wkb(p) for p in parts]


def geodesic_area_km2(geometry: BaseGeometry) -> float:
    """Area on the WGS84 ellipsoid in km²."""
    from pyproj import Geod

    area, _ = Geod(ellps="WGS84").geometry_area_perimeter(geometry)
    return abs(area) / 1e6
