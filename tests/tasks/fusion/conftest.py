"""Fixtures of the fusion-task tests: small study areas with synthetic modality tables, a 7-cell H3 disk."""

from __future__ import annotations

import os
from pathlib import Path

import h3
import numpy as np
import pytest

from tests.support.areas import AMSTERDAM_BBOX, unique_area_name, write_study_area
from urbanrepml.areas import build_area, h3ops
from urbanrepml.tables import EmbeddingTable, TableMeta, to_embedding_frame, write_table

# ~1,500 res-9 cells in central Porto Alegre
BOX = (-51.24, -30.08, -51.12, -29.98)


@pytest.fixture
def area_setup(tmp_path, data_dir, study_area_toml):
    """(name, TOML, area at res 8 and 9): the bundled amsterdam box under a unique name (isolates the shared store)."""
    name = unique_area_name("fi")
    toml = study_area_toml(name, AMSTERDAM_BBOX)
    area = build_area(toml, [8, 9])
    return name, toml, area


@pytest.fixture(scope="module")
def disk():
    """The 7 cells of a res-9 H3 disk (centre + 1-ring), sorted, with their 1-ring graph."""
    centre = h3.latlng_to_cell(52.37, 4.90, 9)
    cells = np.sort(h3ops.parse_cells(h3.grid_disk(centre, 1)))
    centre_pos = int(np.flatnonzero(h3ops.cells_to_str(cells) == centre)[0])
    return cells, h3ops.neighbour_edges(cells), centre_pos


def _table(cells: np.ndarray, modality: str, area: str, res: int, d: int, seed: int, path: Path) -> Path:
    lat, lon = h3ops.cell_centroids(cells)
    rng = np.random.default_rng(seed)
    feats = np.stack([lat, lon, np.sin(lat * 50), np.cos(lon * 50)], 1) @ rng.standard_normal((4, d))
    feats += 0.1 * rng.standard_normal(feats.shape)
    frame, _ = to_embedding_frame(feats.astype(np.float32), h3ops.cells_to_str(cells), modality)
    return write_table(EmbeddingTable(frame, TableMeta(modality, res, area, modality)), path)


@pytest.fixture(scope="module")
def small_area(tmp_path_factory):
    """A bbox study area (own name, so its experiment is fresh) and two synthetic modality tables at res 9."""
    root = tmp_path_factory.mktemp("fuse-area")
    name = f"fuse_small_{os.getpid()}"
    toml = write_study_area(root / "study_area.toml", name, BOX)
    area = build_area(toml, [8, 9], use_cache=False)
    cells = area.cells(9)
    raster = _table(cells, "raster", name, 9, 6, 0, root / "raster_res9.parquet")
    keep = cells[::3]  # a zero-fill modality with gaps -> indicator column
    poi = _table(keep, "poi", name, 9, 4, 1, root / "poi_res9.parquet")
    roads8 = _table(area.cells(8), "roads", name, 8, 3, 2, root / "roads_res8.parquet")
    return {"name": name, "toml": toml, "tables": f"raster={raster},poi={poi}", "roads8": roads8, "n_cells": len(cells)}
