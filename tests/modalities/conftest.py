"""Fixtures of the modality tests: study areas naming rasters, and GeoTIFFs built around two known cells."""

from __future__ import annotations

import h3
import numpy as np
import pytest
from rasterio.transform import from_origin

from tests.support.rasters import BOX, CELL_A, CELL_B, NODATA, disc_grid, write_tif


@pytest.fixture
def raster_area(study_area_toml):
    """``raster_area(rasters, box=BOX, name="raster_test", sources=None) -> Path``: ``area.toml`` naming ``[sources.rasters]``.

    ``sources`` adds other ``[sources]`` keys (e.g. ``images``); ``[sources.rasters]`` is written even when empty.
    """

    def make(rasters: dict, box=BOX, name: str = "raster_test", sources: dict | None = None):
        return study_area_toml(name, box, sources={**(sources or {}), "rasters": rasters}, filename="area.toml")

    return make


@pytest.fixture
def two_cell_raster(tmp_path, data_dir):
    """Band 1: 10 + (row + col) % 3 inside 25 m of A's centroid, 50 inside 15 m of B's, nodata elsewhere; band 2 = 2 x band 1."""
    transform, shape, labels, rr, cc = disc_grid({CELL_A: 25.0, CELL_B: 15.0})
    band = np.full(shape, NODATA, dtype=np.float32)
    in_a, in_b = labels == CELL_A, labels == CELL_B
    band[in_a] = 10 + (rr[in_a] + cc[in_a]) % 3
    band[in_b] = 50
    data = np.stack([band, np.where(band == NODATA, NODATA, 2 * band)]).astype(np.float32)
    write_tif(tmp_path / "two.tif", data, transform, nodata=NODATA, descriptions=["red", ""])
    return tmp_path / "two.tif", band[in_a].astype(np.float64), band[in_b].astype(np.float64)


@pytest.fixture
def alphaearth_tif(tmp_path):
    """64 int8 bands. Inside 25 m of A: band k = k - 32 on pixels with even (row + col), 0 on odd, -128 (NoData)
    on the pixels of one column. Inside 15 m of B: 127 in every band. Elsewhere NoData."""
    transform, shape, labels, rr, cc = disc_grid({CELL_A: 25.0, CELL_B: 15.0})
    in_a, in_b = labels == CELL_A, labels == CELL_B
    hole_col = int(np.median(cc[in_a]))
    data = np.full((64, *shape), -128, dtype=np.int8)
    for k in range(64):
        band = data[k]
        band[in_a] = np.where((rr[in_a] + cc[in_a]) % 2 == 0, k - 32, 0)
        band[in_a & (cc == hole_col)] = -128
        band[in_b] = 127
    write_tif(tmp_path / "ae.tif", data, transform, nodata=-128)
    valid_a = in_a & (cc != hole_col)
    even_share = ((rr[valid_a] + cc[valid_a]) % 2 == 0).mean()
    return tmp_path / "ae.tif", even_share, int(valid_a.sum())


@pytest.fixture
def ortho(tmp_path):
    """RGB uint8 orthophoto, ~5 m pixels over A and its ring: red west of A's centroid + 0.0005 deg, blue east."""
    lat, lon = h3.cell_to_latlng(CELL_A)
    pix, half = 0.00005, 0.006
    west, north = lon - half, lat + half
    n = int(2 * half / pix)
    data = np.zeros((3, n, n), dtype=np.uint8)
    split = int((lon + 0.0005 - west) / pix)
    data[0, :, :split] = 255
    data[2, :, split:] = 255
    return write_tif(tmp_path / "ortho.tif", data, from_origin(west, north, pix, pix))
