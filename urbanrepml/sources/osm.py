"""Reading a local OSM file (PBF or XML) fully offline with pyosmium, shared by ``poi`` and ``roads``.

Two readers, each one pass over the file with node locations cached in memory:

* :func:`read_tagged_features` -> :class:`OsmFeatures`: nodes (points) and areas
  (closed ways and multipolygon relations, assembled by osmium) whose tags match
  a ``{key: [values]}`` filter, as a shapely geometry array plus the matching
  ``(feature, category)`` pairs.
* :func:`read_highways` -> :class:`OsmWays`: ways with a ``highway`` tag in a set of
  classes, as flat node arrays (id, lon, lat) with per-way offsets, ready for
  vectorised segment maths.

Python only touches objects that pass osmium's C++ key filter; geometry building
and everything after is numpy/shapely vectorised. Any decoding failure (corrupt
or truncated file) becomes one :class:`~urbanrepml.errors.UrbanReprError` line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely

from urbanrepml.errors import UrbanReprError

EARTH_RADIUS_M = 6_371_008.8

#: tag filter type: key -> list of accepted values (``True`` accepts any value)
TagFilter = Mapping[str, "Sequence[str] | bool"]


def _fail(path: Path, exc: BaseException) -> UrbanReprError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return UrbanReprError(
        f"{path}: cannot read OSM data ({reason[:200]}); the file is corrupt or truncated - "
        "re-export the extract (e.g. `osmium extract`) and point [sources] osm at it"
    )


def _check_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UrbanReprError(f"OSM file {path} does not exist; set [sources] osm in the study-area TOML")
    if path.stat().st_size == 0:
        raise UrbanReprError(f"{path}: OSM file is empty; re-export the extract")
    return path


@dataclass
class OsmFeatures:
    """Tagged OSM objects matching a filter.

    ``ids``: ``node/<id>``, ``way/<id>`` or ``relation/<id>`` (object array, length n).
    ``geometry``: shapely array (Point for nodes, (Multi)Polygon for areas).
    ``pair_feature`` / ``pair_category``: int arrays, one row per matching tag,
    indices into ``ids`` and ``categories``; ``categories`` are ``key_value`` names.
    ``values``: per feature, ``{key: value}`` of the matching tags (SRAI's wide format).
    """

    ids: np.ndarray
    geometry: np.ndarray
    pair_feature: np.ndarray
    pair_category: np.ndarray
    categories: list[str]
    values: list[dict[str, str]]
    keys: list[str]
    skipped_areas: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def is_point(self) -> np.ndarray:
        return shapely.get_type_id(self.geometry) == 0

    def to_srai_gdf(self):
        """Features as SRAI expects them: GeoDataFrame indexed ``feature_id``, one column per key, EPSG:4326."""
        import geopandas as gpd
        import pandas as pd

        frame = pd.DataFrame.from_records(self.values, columns=self.keys)
        frame.index = pd.Index(self.ids, name="feature_id")
        return gpd.GeoDataFrame(frame, geometry=self.geometry, crs="EPSG:4326")


def _category_table(tag_filter: TagFilter) -> tuple[list[str], dict[str, dict[str, int] | None], list[str]]:
    keys = list(tag_filter)
    categories: list[str] = []
    lookup: dict[str, dict[str, int] | None] = {}
    for key, values in tag_filter.items():
        if values is True:
            lookup[key] = None  # any value: categories are added as they appear
            continue
        if isinstance(values, str):
            values = [values]
        lookup[key] = {}
        for value in values:
            lookup[key][value] = len(categories)
            categories.append(f"{key}_{value}")
    return keys, lookup, categories


def read_tagged_features(path: str | Path, tag_filter: TagFilter) -> OsmFeatures:
    """Nodes and areas whose tags match ``tag_filter``, in one pass over ``path``.

    Open (non-closed) ways are not features here: POIs are points and polygons.
    Areas osmium cannot assemble (broken rings, missing members) are skipped and counted.
    """
    import osmium

    path = _check_file(path)
    keys, lookup, categories = _category_table(tag_filter)
    dynamic: dict[str, int] = {}
    ids: list[str] = []
    points_lon: list[float] = []
    points_lat: list[float] = []
    point_slots: list[int] = []
    area_wkb: list[str] = []
    area_slots: list[int] = []
    pair_f: list[int] = []
    pair_c: list[int] = []
    values: list[dict[str, str]] = []
    skipped = 0
    factory = osmium.geom.WKBFactory()
    try:
        processor = (
            osmium.FileProcessor(str(path))
            .with_areas(osmium.filter.KeyFilter(*keys))
            .with_filter(osmium.filter.KeyFilter(*keys))
        )
        for obj in processor:
            if obj.is_way() or obj.is_relation():
                continue  # ways/relations come back as areas (closed ways, multipolygons)
            matched: dict[str, str] = {}
            cats: list[int] = []
            for tag in obj.tags:
                if tag.k not in lookup:
                    continue
                allowed = lookup[tag.k]
                if allowed is None:
                    name = f"{tag.k}_{tag.v}"
                    if name not in dynamic:
                        dynamic[name] = len(categories)
                        categories.append(name)
                    cats.append(dynamic[name])
                elif tag.v in allowed:
                    cats.append(allowed[tag.v])
                else:
                    continue
                matched[tag.k] = tag.v
            if not cats:
                continue
            if obj.is_node():
                if not obj.location.valid():
                    continue
                slot = len(ids)
                ids.append(f"node/{obj.id}")
                points_lon.append(obj.location.lon)
                points_lat.append(obj.location.lat)
                point_slots.append(slot)
            else:  # area
                try:
                    wkb = factory.create_multipolygon(obj)
                except (RuntimeError, osmium.InvalidLocationError):
                    skipped += 1
                    continue
                slot = len(ids)
                ids.append(f"{'way' if obj.from_way() else 'relation'}/{obj.orig_id()}")
                area_wkb.append(wkb)
                area_slots.append(slot)
            values.append(matched)
            pair_f.extend([slot] * len(cats))
            pair_c.extend(cats)
    except UrbanReprError:
        raise
    except Exception as exc:  # osmium raises RuntimeError and friends on corrupt input
        raise _fail(path, exc) from None
    geometry = np.empty(len(ids), dtype=object)
    if point_slots:
        geometry[np.asarray(point_slots)] = shapely.points(np.asarray(points_lon), np.asarray(points_lat))
    if area_slots:
        polys = shapely.from_wkb(np.asarray(area_wkb, dtype=object))
        bad = ~shapely.is_valid(polys)
        if bad.any():
            polys[bad] = shapely.make_valid(polys[bad])
        geometry[np.asarray(area_slots)] = polys
    return OsmFeatures(
        ids=np.asarray(ids, dtype=object), geometry=geometry,
        pair_feature=np.asarray(pair_f, dtype=np.int64), pair_category=np.asarray(pair_c, dtype=np.int64),
        categories=categories, values=values, keys=keys, skipped_areas=skipped,
    )


@dataclass
class OsmWays:
    """Highway ways as flat node arrays.

    ``node_id``, ``lon``, ``lat``: one entry per way node, ways back to back;
    ``offsets``: start of each way in those arrays (length n_ways + 1);
    ``way_id``, ``way_class``: per way (class index into ``classes``);
    ``valid``: per node, False where the node's location is missing from the file.
    ``tags``: per way, a few attributes (``oneway``, ``lanes``, ``maxspeed``) as strings.
    """

    node_id: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    valid: np.ndarray
    offsets: np.ndarray
    way_id: np.ndarray
    way_class: np.ndarray
    classes: list[str]
    tags: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.way_id)


WAY_ATTRIBUTES = ("oneway", "lanes", "maxspeed")


def highway_class(value: str, classes: Mapping[str, int]) -> int:
    """Index of a ``highway`` value in ``classes`` (``*_link`` counts as its road), -1 if not a road class."""
    if value.endswith("_link"):
        value = value[: -len("_link")]
    return classes.get(value, -1)


def read_highways(path: str | Path, classes: Sequence[str]) -> OsmWays:
    """Ways whose ``highway`` value is in ``classes`` (links folded into their road class), one pass."""
    import osmium

    path = _check_file(path)
    class_index = {c: i for i, c in enumerate(classes)}
    node_ids: list[int] = []
    lons: list[float] = []
    lats: list[float] = []
    offsets = [0]
    way_ids: list[int] = []
    way_classes: list[int] = []
    tags: list[dict[str, str]] = []
    try:
        processor = (
            osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY)
            .with_locations()
            .with_filter(osmium.filter.EntityFilter(osmium.osm.WAY))
            .with_filter(osmium.filter.KeyFilter("highway"))
        )
        for way in processor:
            cls = highway_class(way.tags.get("highway", ""), class_index)
            if cls < 0 or len(way.nodes) < 2:
                continue
            for node in way.nodes:
                loc = node.location
                node_ids.append(node.ref)
                if loc.valid():
                    lons.append(loc.lon)
                    lats.append(loc.lat)
                else:
                    lons.append(np.nan)
                    lats.append(np.nan)
            offsets.append(len(node_ids))
            way_ids.append(way.id)
            way_classes.append(cls)
            tags.append({k: way.tags.get(k) for k in WAY_ATTRIBUTES if k in way.tags})
    except Exception as exc:
        raise _fail(path, exc) from None
    lon = np.asarray(lons, dtype=np.float64)
    lat = np.asarray(lats, dtype=np.float64)
    return OsmWays(
        node_id=np.asarray(node_ids, dtype=np.int64), lon=lon, lat=lat, valid=np.isfinite(lon),
        offsets=np.asarray(offsets, dtype=np.int64), way_id=np.asarray(way_ids, dtype=np.int64),
        way_class=np.asarray(way_classes, dtype=np.int64), classes=list(classes), tags=tags,
    )


def haversine_m(lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray) -> np.ndarray:
    """Great-circle distance in metres between coordinate arrays (degrees)."""
    lon1, lat1, lon2, lat2 = (np.radians(a) for a in (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0, 1)))
