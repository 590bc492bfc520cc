"""Raster modality: any GeoTIFF/COG named in the area's ``[sources.rasters]`` -> per-cell band statistics.

Inputs: the rasters chosen by ``rasters`` (``"all"`` or a comma list of names from
``[sources.rasters]``). Output: index ``region_id``, per raster and band the
columns ``<raster>_<band>_mean``, ``<raster>_<band>_std`` (population std) and
``<raster>_<band>_count`` (valid pixels whose centre lies in the cell). A cell is
kept when it has at least ``min_pixels`` valid pixels in every band of every
chosen raster (cells must have all features: the table holds no NaN). Rasters in
another CRS than EPSG:4326 have their pixel centres reprojected (no warping).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from urbanrepml.areas import Area
from urbanrepml.config import StudyArea
from urbanrepml.errors import UrbanReprError
from urbanrepml.modalities.base import Modality, ModalityResult
from urbanrepml.params import param
from urbanrepml.sources.rasterstats import raster_cell_stats

RESERVED = ("alphaearth",)  # rasters with their own modality; "all" leaves them out


def select_rasters(spec: StudyArea, rasters: str) -> dict[str, Path]:
    """``"all"`` or ``"a,b"`` -> {name: path} from the area's ``[sources.rasters]``."""
    available = dict(spec.sources.rasters)
    if not available:
        raise UrbanReprError(f"study area {spec.name!r} ({spec.source_file}) lists no [sources.rasters]; add e.g. elevation = \"dem.tif\"")
    wanted = str(rasters or "all").strip()
    if wanted == "all":
        chosen = {k: v for k, v in available.items() if k not in RESERVED}
        if not chosen:
            raise UrbanReprError(f"study area {spec.name!r} lists only {sorted(available)} rasters; name them with rasters=<names>")
        return chosen
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise UrbanReprError(f"rasters={rasters!r}: {unknown or 'no names'} not in [sources.rasters] of {spec.name!r}; "
                             f"available: {sorted(available)}")
    return {n: available[n] for n in names}


class RasterModality(Modality):
    """Per-cell mean, std and pixel count of every band of the chosen rasters."""

    name = "raster"

    @dataclass
    class Params:
        """The ``raster`` entry point's own settings."""

        rasters: str = param("all", "'all' or comma-separated names from [sources.rasters]")
        min_pixels: int = param(1, "drop cells with fewer valid pixels")

    def __init__(self, rasters: str = "all", min_pixels: int = 1):
        if int(min_pixels) < 1:
            raise UrbanReprError(f"min_pixels must be at least 1, got {min_pixels}")
        self.rasters = rasters
        self.min_pixels = int(min_pixels)

    def source_files(self, spec: StudyArea) -> dict[str, Path]:
        return select_rasters(spec, self.rasters)

    def compute(self, spec: StudyArea, area: Area, resolution: int) -> ModalityResult:
        frames = []
        metrics: dict[str, float] = {}
        for name, path in select_rasters(spec, self.rasters).items():
            frame = raster_cell_stats([path], area, resolution, min_pixels=self.min_pixels)
            frame.columns = [f"{name}_{c}" for c in frame.columns]
            metrics[f"cells_{name}"] = len(frame)
            frames.append(frame)
        features = pd.concat(frames, axis=1, join="inner") if len(frames) > 1 else frames[0]
        notes = []
        if len(frames) > 1:
            notes.append(f"cells kept where every raster has >= {self.min_pixels} pixel(s): {len(features)}")
        return ModalityResult(features=features, metrics=metrics, notes=notes)
