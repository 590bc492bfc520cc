"""Mapillary-style image metadata (JSONL, CSV or parquet) -> index rows.

Columns (case-insensitive; the first name found is used):

- ``id`` / ``image_id``: the image id;
- ``lat`` / ``latitude`` and ``lon`` / ``lng`` / ``longitude``: EPSG:4326 degrees (a GeoJSON-like
  ``geometry`` / ``computed_geometry`` object ``{"type": "Point", "coordinates": [lon, lat]}``, as the
  Mapillary API returns, is read when there are no lat/lon columns);
- ``sequence_id`` / ``sequence`` / ``group``: the sequence (the group a split keeps whole);
- ``captured_at``: milliseconds since 1970 (Mapillary's convention) or ISO text; optional;
- ``path`` / ``image_path`` / ``file``: the image file, relative to the metadata file's folder or absolute.

Rows without a sequence are an error (name the column or fill it); rows whose path is empty are
skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from urbanrepml.errors import UrbanReprError
from urbanrepml.images import index_frame
from urbanrepml.sources.imagery.base import (
    BuildResult,
    epoch_or_text_times,
    numbers,
    pick_column,
    read_table_file,
)


def _point_coordinates(values, where: str) -> tuple[np.ndarray, np.ndarray]:
    lat, lon = np.full(len(values), np.nan), np.full(len(values), np.nan)
    for i, g in enumerate(values):
        try:
            lon[i], lat[i] = (float(c) for c in g["coordinates"][:2])
        except (TypeError, KeyError, ValueError, IndexError):
            raise UrbanReprError(f"{where}: row {i + 1} has no Point geometry {{'coordinates': [lon, lat]}}, got {g!r:.80}") from None
    return lat, lon


def build_manifest(source: Path) -> BuildResult:
    """Index the images listed in metadata file ``source`` (see the module docstring)."""
    where = str(source)
    table = read_table_file(source, "image metadata")
    if len(table) == 0:
        raise UrbanReprError(f"{where}: the metadata file lists no image")
    id_col = pick_column(table, ("id", "image_id"), where=where)
    path_col = pick_column(table, ("path", "image_path", "file"), where=where)
    seq_col = pick_column(table, ("sequence_id", "sequence", "group"), where=where)
    lat_col = pick_column(table, ("lat", "latitude"), where=where, required=False)
    lon_col = pick_column(table, ("lon", "lng", "longitude"), where=where, required=False)
    if lat_col and lon_col:
        lat = numbers(table[lat_col], what="lat", where=where)
        lon = numbers(table[lon_col], what="lon", where=where)
    else:
        geom_col = pick_column(table, ("computed_geometry", "geometry"), where=where, required=False)
        if geom_col is None:
            raise UrbanReprError(f"{where}: no lat/lon columns (lat or latitude, lon or lng or longitude) and no Point "
                                 f"geometry; found {', '.join(map(str, table.columns[:12]))}")
        lat, lon = _point_coordinates(table[geom_col], where)
    time_col = pick_column(table, ("captured_at", "timestamp", "time"), where=where, required=False)
    seq = table[seq_col]
    no_seq = seq.isna() | (seq.astype(str).str.strip() == "")
    if no_seq.any():
        raise UrbanReprError(f"{where}: {int(no_seq.sum())} row(s) have no '{seq_col}', e.g. row {int(np.flatnonzero(no_seq)[0]) + 1}; "
                             "every image needs its sequence (use its own id for a single photo)")
    paths = table[path_col]
    has_path = (paths.notna() & (paths.astype(str).str.strip() != "")).to_numpy()
    keep = np.flatnonzero(has_path)
    if len(keep) == 0:
        raise UrbanReprError(f"{where}: no row has a '{path_col}'; the index needs the image files")
    times = epoch_or_text_times(table[time_col], where=where) if time_col else [None] * len(table)
    frame = index_frame(
        image_id=table[id_col].astype(str).to_numpy()[keep],
        path=paths.astype(str).str.strip().to_numpy()[keep],
        lat=lat[keep], lon=lon[keep],
        group=seq.astype(str).to_numpy()[keep],
        captured_at=[times[i] for i in keep],
    )
    skipped = int((~has_path).sum())
    notes = [f"{len(keep)} image(s) in {frame['group'].nunique()} sequence(s) from {source.name}"
             + (f", {skipped} row(s) without a path skipped" if skipped else "")]
    return BuildResult(frame=frame, root=source.parent.resolve(), counts={"rows_skipped_no_path": skipped}, notes=notes)
