"""The Regional-SatCLIP embedding CSV -> an index (one row per point) plus its embedding vectors.

The CSV has columns ``dim_0 .. dim_<n>`` (the vectors) and ``geometry`` holding a WKT ``POINT (x y)``
in the CRS given by ``crs`` (default EPSG:4326, where x is the longitude); other columns are
ignored except an ``id`` / ``image_id`` column, which names the rows (else ``p<row number>``).
Points are reprojected to lat/lon. Each point is its own ``group`` (split them spatially with
``split=blocks``); ``path`` is the CSV itself (there is no image file).

Errors: no ``dim_*`` columns, no ``geometry`` column, a WKT that is not a point (the message names
the row), a value that is not a number, a CRS pyproj does not know.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from urbanrepml.errors import UrbanReprError
from urbanrepml.images import index_frame
from urbanrepml.sources.imagery.base import BuildResult, pick_column, read_table_file

_DIM = re.compile(r"^dim_(\d+)$")
_POINT = re.compile(r"^\s*POINT\s*(?:Z\s*)?\(\s*([-+0-9.eE]+)\s+([-+0-9.eE]+)(?:\s+[-+0-9.eE]+)?\s*\)\s*$", re.IGNORECASE)


def parse_points(wkt: list, *, where: str) -> tuple[np.ndarray, np.ndarray]:
    """WKT ``POINT (x y)`` strings -> (x, y); one clear error naming the first row that is not a point."""
    x, y = np.empty(len(wkt)), np.empty(len(wkt))
    for i, text in enumerate(wkt):
        m = _POINT.match(str(text)) if isinstance(text, str) else None
        try:
            if m is None:
                raise ValueError
            x[i], y[i] = float(m.group(1)), float(m.group(2))
        except ValueError:
            raise UrbanReprError(f"{where}: row {i + 1}: geometry {str(text)[:60]!r} is not a WKT point like "
                                 "'POINT (13.4 52.5)'; fix the row or remove it") from None
    return x, y


def build_satclip(source: Path, *, crs: str = "EPSG:4326") -> BuildResult:
    """Read a Regional-SatCLIP style CSV (see the module docstring)."""
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    where = str(source)
    table = read_table_file(source, "embedding CSV")
    if len(table) == 0:
        raise UrbanReprError(f"{where}: the CSV has no rows")
    dims = sorted((int(m.group(1)), c) for c in table.columns if (m := _DIM.match(str(c))))
    if not dims:
        raise UrbanReprError(f"{where}: no embedding columns dim_0..dim_<n>; found {', '.join(map(str, table.columns[:8]))}")
    if [d for d, _ in dims] != list(range(len(dims))):
        raise UrbanReprError(f"{where}: embedding columns must be dim_0..dim_{len(dims) - 1} without gaps")
    geom_col = pick_column(table, ("geometry",), where=where)
    x, y = parse_points(table[geom_col].tolist(), where=where)
    try:
        src_crs = CRS.from_user_input(crs)
    except CRSError:
        raise UrbanReprError(f"parameter crs: {crs!r} is not a known CRS; use e.g. EPSG:4326 or EPSG:32633") from None
    if src_crs.to_epsg() == 4326:
        lon, lat = x, y
    else:
        lon, lat = Transformer.from_crs(src_crs, "EPSG:4326", always_xy=True).transform(x, y)
        bad = ~(np.isfinite(lat) & np.isfinite(lon))
        if bad.any():
            raise UrbanReprError(f"{where}: row {int(np.flatnonzero(bad)[0]) + 1}: point cannot be reprojected from {crs}; "
                                 "is crs right?")
    try:
        values = table[[c for _, c in dims]].to_numpy(dtype=np.float32)
    except (TypeError, ValueError):
        raise UrbanReprError(f"{where}: an embedding value in dim_* is not a number") from None
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise UrbanReprError(f"{where}: row {row + 1} has a missing or infinite dim_* value")
    id_col = pick_column(table, ("id", "image_id"), where=where, required=False)
    ids = table[id_col].astype(str).to_numpy() if id_col else np.array([f"p{i}" for i in range(len(table))], dtype=object)
    frame = index_frame(image_id=ids, path=[str(source.resolve())] * len(table), lat=lat, lon=lon, group=ids)
    notes = [f"{len(table)} point(s) with {len(dims)}-d embeddings from {source.name} ({crs} -> EPSG:4326)"]
    return BuildResult(frame=frame, counts={"points": len(table), "embedding_dims": len(dims)}, notes=notes,
                       settings={"crs": crs}, embeddings=values, embeddings_name=f"csv:{source.name}")
