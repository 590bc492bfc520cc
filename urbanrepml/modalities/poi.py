"""POI modality: OSM points and polygons -> counts per ``key_value`` sub-category per H3 cell.

Features are the OSM nodes and areas (closed ways, multipolygon relations) whose
tags match SRAI's ``HEX2VEC_FILTER`` (15 keys, 725 ``key=value`` pairs). Each
matching tag of an object counts once in its ``key_value`` column.

Assignment to cells (SRAI ``IntersectionJoiner`` semantics, computed vectorised):
a point goes to the cell containing it; a polygon goes to *every* cell it
intersects (shapely STRtree over the cell polygons), so a park spanning three
cells counts in all three. Only cells of the study area are kept, and only sub-categories
that occur somewhere in the area become columns.

``embedder="counts"`` (default) returns the counts. ``embedder="hex2vec"`` trains
SRAI's :class:`~srai.embedders.Hex2VecEmbedder` on those counts (the cells'
1-ring neighbourhood as positives) and returns ``embedding_size`` dimensions
for the cells that have at least one POI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

from urbanrepml.areas import Area, h3ops
from urbanrepml.config import StudyArea
from urbanrepml.constants import REGION_ID
from urbanrepml.errors import UrbanReprError
from urbanrepml.modalities.base import (
    Modality,
    ModalityResult,
    osm_source,
    quiet_lightning,
)
from urbanrepml.params import param
from urbanrepml.sources.osm import OsmFeatures, TagFilter, read_tagged_features

EMBEDDERS = ("counts", "hex2vec")


def default_filter() -> TagFilter:
    """SRAI's Hex2Vec tag filter (``srai.loaders.osm_loaders.filters.HEX2VEC_FILTER``)."""
    from srai.loaders.osm_loaders.filters import HEX2VEC_FILTER

    return HEX2VEC_FILTER


def assign_cells(geometry: np.ndarray, area_cells: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(feature index, position in ``area_cells``) pairs: a point -> its cell, a polygon -> every cell it intersects.

    Points: one vectorised H3 lookup. Polygons: a shapely STRtree over the area's
    cell polygons queried with ``intersects`` (what SRAI's ``IntersectionJoiner``
    does). Features outside the area's cells give no pair.
    """
    geometry = np.asarray(geometry, dtype=object)
    is_point = shapely.get_type_id(geometry) == 0
    point = np.flatnonzero(is_point)
    pos = h3ops.positions(area_cells, h3ops.latlon_to_cells(shapely.get_y(geometry[point]), shapely.get_x(geometry[point]), resolution))
    feats, cells = [point[pos >= 0]], [pos[pos >= 0]]
    other = np.flatnonzero(~is_point)
    if len(other) and len(area_cells):
        tree = shapely.STRtree(shapely.from_wkb(h3ops.cells_to_polygons_wkb(area_cells)))
        hit_feature, hit_cell = tree.query(geometry[other], predicate="intersects")
        feats.append(other[hit_feature])
        cells.append(hit_cell)
    return np.concatenate(feats).astype(np.int64), np.concatenate(cells).astype(np.int64)


def count_per_cell(features: OsmFeatures, area_cells: np.ndarray, resolution: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Counts per (cell of ``area_cells``, category).

    Returns the frame (cells with data, present categories) and the used feature indices.
    """
    feat, pos = assign_cells(features.geometry, area_cells, resolution)
    # expand (feature, cell) rows by the feature's categories (CSR over features)
    order = np.argsort(features.pair_feature, kind="stable")
    pf, pc = features.pair_feature[order], features.pair_category[order]
    n_cat = np.bincount(pf, minlength=len(features))
    start = np.concatenate([[0], np.cumsum(n_cat)[:-1]])
    reps = n_cat[feat]
    row = np.repeat(np.arange(len(feat)), reps)
    within = np.arange(len(row)) - np.repeat(np.cumsum(reps) - reps, reps)
    cat = pc[start[feat[row]] + within]
    cell_pos = pos[row]
    used_cells, cell_inv = np.unique(cell_pos, return_inverse=True)
    used_cats, cat_inv = np.unique(cat, return_inverse=True)
    matrix = np.bincount(cell_inv * len(used_cats) + cat_inv, minlength=len(used_cells) * len(used_cats))
    matrix = matrix.reshape(len(used_cells), len(used_cats)).astype(np.float32)
    index = pd.Index(h3ops.cells_to_str(area_cells[used_cells]), name=REGION_ID)
    frame = pd.DataFrame(matrix, index=index, columns=[features.categories[c] for c in used_cats])
    return frame, np.unique(feat)


def hex2vec_embed(counts: pd.DataFrame, features: OsmFeatures, used: np.ndarray, area: Area, resolution: int,
                  embedding_size: int, epochs: int, seed: int = 0) -> pd.DataFrame:
    """SRAI Hex2VecEmbedder on the area's cells; rows for cells that have POIs."""
    import pytorch_lightning as pl
    from srai.embedders import Hex2VecEmbedder
    from srai.neighbourhoods import H3Neighbourhood

    regions = area.regions_gdf(resolution)
    if len(regions) < 8:
        raise UrbanReprError(f"hex2vec needs at least 8 cells to sample neighbours and non-neighbours; area {area.name!r} has "
                             f"{len(regions)} at resolution {resolution} - use a finer resolution or embedder=counts")
    features_gdf = features.to_srai_gdf().iloc[used]
    feat, pos = assign_cells(features.geometry[used], area.cells(resolution), resolution)
    joint = pd.DataFrame(index=pd.MultiIndex.from_arrays(
        [regions.index[pos], features_gdf.index[feat]], names=[REGION_ID, "feature_id"]))
    quiet_lightning()
    pl.seed_everything(seed, workers=False, verbose=False)
    hidden = max(2 * embedding_size, 64)
    embedder = Hex2VecEmbedder(encoder_sizes=[hidden, embedding_size], expected_output_features=list(counts.columns))
    trainer_kwargs = dict(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, deterministic=True)
    out = embedder.fit_transform(regions, features_gdf, joint, H3Neighbourhood(regions), batch_size=64, trainer_kwargs=trainer_kwargs)
    out.index.name = REGION_ID
    out = out.loc[counts.index]
    out.columns = [f"hex2vec_{i}" for i in range(out.shape[1])]
    return out.astype(np.float32)


class PoiModality(Modality):
    """OSM POIs (points + polygons matching the Hex2Vec tag filter) -> per-cell sub-category counts or Hex2Vec."""

    name = "poi"

    @dataclass
    class Params:
        """The ``poi`` entry point's own settings."""

        embedder: str = param("counts", "counts (default) or hex2vec", choices=EMBEDDERS)
        embedding_size: int = param(32, "hex2vec output dimensions")

    def __init__(self, embedder: str = "counts", embedding_size: int = 32, epochs: int = 5):
        if embedder not in EMBEDDERS:
            raise UrbanReprError(f"poi: unknown embedder {embedder!r}; choose one of {', '.join(EMBEDDERS)}")
        if embedding_size < 1:
            raise UrbanReprError(f"poi: embedding_size must be >= 1, got {embedding_size}")
        self.embedder = embedder
        self.embedding_size = int(embedding_size)
        self.epochs = int(epochs)
        self.tag_filter = "srai.HEX2VEC_FILTER"

    def source_files(self, spec: StudyArea) -> dict[str, Path]:
        return osm_source(spec)

    def compute(self, spec: StudyArea, area: Area, resolution: int) -> ModalityResult:
        (path,) = self.source_files(spec).values()
        features = read_tagged_features(path, default_filter())
        area_cells = area.cells(resolution)
        if len(features) == 0:
            counts, used = pd.DataFrame(index=pd.Index([], name=REGION_ID)), np.zeros(0, np.int64)
        else:
            counts, used = count_per_cell(features, area_cells, resolution)
        metrics = {
            "osm_features": float(len(features)),
            "osm_features_in_area": float(len(used)),
            "osm_points_in_area": float(features.is_point[used].sum()) if len(used) else 0.0,
            "osm_polygons_skipped": float(features.skipped_areas),
            "categories_present": float(counts.shape[1]),
            "poi_tag_total": float(counts.to_numpy().sum()) if counts.size else 0.0,
        }
        notes = [f"POI filter: SRAI HEX2VEC_FILTER; {int(metrics['osm_features_in_area'])} OSM objects in the area, "
                 f"{counts.shape[1]} sub-categories present; polygons counted in every cell they intersect."]
        if features.skipped_areas:
            notes.append(f"{features.skipped_areas} OSM areas could not be assembled and were skipped.")
        if self.embedder == "counts" or len(counts) == 0:
            return ModalityResult(counts, metrics=metrics, params={"embedder": self.embedder}, notes=notes)
        out = hex2vec_embed(counts, features, used, area, resolution, self.embedding_size, self.epochs)
        notes.append(f"Hex2Vec: SRAI Hex2VecEmbedder (encoder [{counts.shape[1]}, {max(2 * self.embedding_size, 64)}, "
                     f"{self.embedding_size}], {self.epochs} epochs, seed 0) trained on the counts above.")
        return ModalityResult(out, metrics=metrics, params={"embedder": self.embedder}, notes=notes)
