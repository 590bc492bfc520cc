"""What a location encoder learns from: embeddings with coordinates, read from a per-cell table or a CSV.

- :class:`LocatedEmbeddings`: ``ids``, ``lat``/``lon`` (degrees, WGS84), ``x`` (N, D) float32,
  ``kind`` (``cells``: a per-cell table, coordinates are the cell centres; ``points``: a CSV).
- :func:`from_cells`: a per-cell frame (index ``region_id``) -> cell centres + rows.
- :func:`read_points_csv`: a CSV with embedding columns ``dim_0, dim_1, ...`` and a WKT ``geometry``
  column of POINTs in any CRS (``crs``, reprojected with pyproj to EPSG:4326); an optional
  ``image_id`` or ``id`` column names the records (else the row number).

Bad input is one :class:`~urbanrepml.errors.UrbanReprError` line naming the file and the
problem: no ``dim_*`` columns, no ``geometry`` column, malformed WKT or a geometry that is not a
point, an unknown CRS, coordinates out of range after reprojection, NaN/inf embeddings, fewer
than two records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.areas import h3ops
from urbanrepml.errors import UrbanReprError
from urbanrepml.models.location.frame import check_latlon

DIM_COLUMN = re.compile(r"^dim_(\d+)$")
ID_COLUMNS = ("image_id", "id")


@dataclass
class LocatedEmbeddings:
    """Embeddings with coordinates (see the module docstring)."""

    ids: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    x: np.ndarray
    kind: str
    source: str
    feature_names: list[str] = field(default_factory=list)
    resolution: int | None = None

    def __post_init__(self):
        n = len(self.ids)
        if not (len(self.lat) == len(self.lon) == len(self.x) == n):
            raise UrbanReprError(f"{self.source}: ids, coordinates and embeddings differ in length")
        if n < 2:
            raise UrbanReprError(f"{self.source}: {n} record(s); a location encoder needs at least 2")
        if self.x.ndim != 2 or self.x.shape[1] < 1:
            raise UrbanReprError(f"{self.source}: embeddings must be a 2-D array with at least one column")
        if not np.isfinite(self.x).all():
            rows = np.flatnonzero(~np.isfinite(self.x).all(axis=1))
            raise UrbanReprError(f"{self.source}: NaN or inf in the embeddings of {len(rows)} record(s), "
                                 f"e.g. {list(self.ids[rows[:3]])}; drop or fill them first")
        self.lat, self.lon = check_latlon(self.lat, self.lon, self.source)
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)

    @property
    def n(self) -> int:
        return int(len(self.ids))

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    @property
    def latlon(self) -> np.ndarray:
        """(N, 2) float64: lat, lon."""
        return np.column_stack([self.lat, self.lon])


def from_cells(frame: pd.DataFrame, source: str) -> LocatedEmbeddings:
    """A per-cell frame (index ``region_id`` of one resolution, numeric columns) -> records at the cell centres."""
    cells = h3ops.parse_cells(frame.index, what=f"{source} region_id")
    res = np.unique(h3ops.cell_resolution(cells))
    if len(res) != 1:
        raise UrbanReprError(f"{source}: cells of several resolutions {res.tolist()}; give one resolution")
    lat, lon = h3ops.cell_centroids(cells)
    x = frame.to_numpy(dtype=np.float64)
    return LocatedEmbeddings(np.asarray(frame.index, dtype=object), lat, lon, x, "cells", source,
                             [str(c) for c in frame.columns], int(res[0]))


def _transformer(crs: str, path: Path):
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    try:
        source = CRS.from_user_input(crs)
    except CRSError:
        raise UrbanReprError(f"{path}: unknown CRS {crs!r}; pass -P crs=EPSG:<code> (e.g. EPSG:4326, EPSG:31982)") from None
    return Transformer.from_crs(source, CRS.from_epsg(4326), always_xy=True)


def read_points_csv(path: str | Path, crs: str = "EPSG:4326") -> LocatedEmbeddings:
    """A CSV of ``dim_*`` embedding columns and WKT ``geometry`` POINTs in ``crs`` -> records in EPSG:4326."""
    import shapely

    path = Path(path)
    if not path.is_file():
        raise UrbanReprError(f"embedding CSV {path} does not exist")
    transformer = _transformer(crs, path)
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any parser error is bad input
        raise UrbanReprError(f"{path}: not a readable CSV ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    dims = sorted((c for c in df.columns if DIM_COLUMN.match(str(c))), key=lambda c: int(DIM_COLUMN.match(c).group(1)))
    if not dims:
        raise UrbanReprError(f"{path}: no embedding columns named dim_0, dim_1, ... (found {list(df.columns)[:6]})")
    if "geometry" not in df.columns:
        raise UrbanReprError(f"{path}: no 'geometry' column (WKT POINTs such as 'POINT (-51.2 -30.0)')")
    try:
        x = df[dims].apply(pd.to_numeric, errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        raise UrbanReprError(f"{path}: non-numeric values in the dim_* columns") from None
    wkt = df["geometry"].astype(str).to_numpy()
    geoms = shapely.from_wkt(wkt, on_invalid="ignore")
    bad = pd.isna(geoms) | ~(shapely.get_type_id(geoms) == 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UrbanReprError(f"{path}: {int(bad.sum())} malformed or non-POINT geometry value(s), e.g. row {i}: "
                             f"{wkt[i][:60]!r}; give WKT POINTs such as 'POINT (x y)'")
    empty = shapely.is_empty(geoms)
    if empty.any():
        first = int(np.flatnonzero(empty)[0])
        raise UrbanReprError(f"{path}: {int(empty.sum())} empty POINT geometry value(s), e.g. row {first}")
    xs, ys = shapely.get_x(geoms), shapely.get_y(geoms)
    lon, lat = transformer.transform(xs, ys)
    lat, lon = check_latlon(lat, lon, f"{path} (geometry in {crs}, reprojected to EPSG:4326)")
    id_col = next((c for c in ID_COLUMNS if c in df.columns), None)
    ids = df[id_col].astype(str).to_numpy(dtype=object) if id_col else np.array([str(i) for i in range(len(df))], dtype=object)
    return LocatedEmbeddings(ids, lat, lon, x, "points", str(path), dims)


def point_blocks(lat: np.ndarray, lon: np.ndarray, block_resolution: int) -> np.ndarray:
    """The H3 cell (``uint64``) at ``block_resolution`` holding each point: its spatial block."""
    return h3ops.latlon_to_cells(lat, lon, block_resolution)


def block_split(lat: np.ndarray, lon: np.ndarray, block_resolution: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Bool mask of held-out records: whole H3 blocks at ``block_resolution`` chosen by a seeded hash.

    The blocks are chosen as the fusion trainer chooses its validation blocks
    (:func:`urbanrepml.tasks.fusion.split.spatial_split`); records never split at random. When the
    records fall in fewer than two blocks, the next finer resolution with two is used.
    """
    from urbanrepml.tasks.fusion.split import spatial_split

    if not 0 < fraction < 1:
        raise UrbanReprError(f"val_fraction must be in (0, 1), got {fraction}")
    for res in range(int(block_resolution), 16):
        blocks = point_blocks(lat, lon, res)
        uniq, inv = np.unique(blocks, return_inverse=True)
        if len(uniq) >= 2:
            return spatial_split(uniq, res, fraction, seed)[inv]
    raise UrbanReprError(f"{len(lat)} record(s) all lie at one place; they cannot be split into blocks")


def read_query_points(path: str | Path, crs: str = "EPSG:4326") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query points of a CSV: ``lat`` and ``lon`` columns (degrees), or a WKT ``geometry`` column in ``crs``.

    Returns ``(ids, lat, lon)``; ids from an ``image_id``/``id``/``region_id`` column, else the row number.
    """
    import shapely

    path = Path(path)
    if not path.is_file():
        raise UrbanReprError(f"points CSV {path} does not exist")
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any parser error is bad input
        raise UrbanReprError(f"{path}: not a readable CSV ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if {"lat", "lon"} <= set(df.columns):
        lat = pd.to_numeric(df["lat"], errors="coerce").to_numpy(np.float64)
        lon = pd.to_numeric(df["lon"], errors="coerce").to_numpy(np.float64)
        where = str(path)
    elif "geometry" in df.columns:
        transformer = _transformer(crs, path)
        wkt = df["geometry"].astype(str).to_numpy()
        geoms = shapely.from_wkt(wkt, on_invalid="ignore")
        bad = pd.isna(geoms) | ~(shapely.get_type_id(geoms) == 0) | shapely.is_empty(geoms)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UrbanReprError(f"{path}: {int(bad.sum())} malformed or non-POINT geometry value(s), "
                                 f"e.g. row {i}: {wkt[i][:60]!r}")
        lon, lat = transformer.transform(shapely.get_x(geoms), shapely.get_y(geoms))
        where = f"{path} (geometry in {crs}, reprojected to EPSG:4326)"
    else:
        raise UrbanReprError(f"{path}: needs 'lat' and 'lon' columns (degrees) or a WKT 'geometry' column")
    lat, lon = check_latlon(lat, lon, where)
    id_col = next((c for c in (*ID_COLUMNS, "region_id") if c in df.columns), None)
    ids = df[id_col].astype(str).to_numpy(dtype=object) if id_col else np.array([str(i) for i in range(len(df))], dtype=object)
    return ids, lat, lon
