"""The concept-geolocation CSV -> index rows with concepts and countries.

Columns: ``pano_id, image_path, meta_name, parent_concept, country, lat, lng, note`` (``note`` is
ignored; ``lon`` or ``longitude`` is accepted for ``lng``). ``image_id`` and ``group`` are the
``pano_id`` (all images of one panorama stay in one split); ``meta_concept`` is ``meta_name``;
image paths are relative to the CSV's folder or absolute. Rows whose ``pano_id`` repeats keep
their own image as ``<pano_id>_<k>`` (k counting from 1 within the panorama).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.errors import UrbanReprError
from urbanrepml.images import index_frame
from urbanrepml.sources.imagery.base import (
    BuildResult,
    numbers,
    pick_column,
    read_table_file,
)


def build_concepts(source: Path) -> BuildResult:
    """Index the panoramas of a concept-geolocation CSV (see the module docstring)."""
    where = str(source)
    table = read_table_file(source, "concept CSV")
    if len(table) == 0:
        raise UrbanReprError(f"{where}: the CSV has no rows")
    cols = {k: pick_column(table, names, where=where) for k, names in {
        "pano": ("pano_id",), "path": ("image_path", "path"), "meta": ("meta_name", "meta_concept"),
        "parent": ("parent_concept",), "country": ("country",), "lat": ("lat", "latitude"),
        "lon": ("lng", "lon", "longitude")}.items()}
    pano = table[cols["pano"]]
    if pano.isna().any():
        raise UrbanReprError(f"{where}: row {int(np.flatnonzero(pano.isna())[0]) + 1} has no pano_id")
    pano = pano.astype(str)
    k = pano.groupby(pano).cumcount() + 1
    repeated = pano.duplicated(keep=False).to_numpy()
    ids = np.where(repeated, pano + "_" + k.astype(str), pano)
    paths = table[cols["path"]]
    if paths.isna().any():
        raise UrbanReprError(f"{where}: row {int(np.flatnonzero(paths.isna())[0]) + 1} has no image_path")
    frame = index_frame(
        image_id=ids, path=paths.astype(str).to_numpy(),
        lat=numbers(table[cols["lat"]], what="lat", where=where),
        lon=numbers(table[cols["lon"]], what="lng", where=where),
        group=pano.to_numpy(),
        meta_concept=table[cols["meta"]].tolist(), parent_concept=table[cols["parent"]].tolist(),
        country=table[cols["country"]].tolist(),
    )
    counts = {"panoramas": int(pano.nunique()), "meta_concepts": int(pd.Series(frame["meta_concept"]).nunique()),
              "countries": int(pd.Series(frame["country"]).nunique())}
    notes = [(f"{len(frame)} image(s) of {counts['panoramas']} panorama(s), {counts['meta_concepts']} concept(s), "
              f"{counts['countries']} countr(ies) from {source.name}")]
    return BuildResult(frame=frame, root=source.parent.resolve(), counts=counts, notes=notes)
