"""Make the tiny file fixtures under ``tests/data/`` (run from the repository root: ``python -m tests.data.make_fixtures``).

``poa_tiny/``: a small part of central Porto Alegre for running every entry point end to end.

- ``study_area.toml``: 274 res-9 cells in 9 res-7 blocks (enough for the default 5 spatial folds);
  OSM, the two GTFS feeds, the DEM and the hexgrid targets (log1p jobs, schools) come from the
  ``porto_alegre`` dataset, so nothing third-party is committed here.
- ``alphaearth.tif``: an AlphaEarth-format raster (64 int8 bands, NoData -128, ~20 m pixels) over
  a few cells around (-30.03, -51.22); band k = a smooth function of the pixel position.
- ``tiles/<region_id>.png``: 32 x 32 RGB tiles of that cell and its 1-ring (an aerial tile folder).
- ``imagery.toml``: study area ``poa_tiny_imagery`` (the same box) naming only those two; its own name
  keeps their partial-coverage tables out of ``poa_tiny``'s fusions.

The output is deterministic; a test checks that the committed files are what this script makes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h3
import numpy as np

from tests.support import TEST_DATA
from tests.support.areas import write_study_area
from tests.support.rasters import write_tif

POA_TINY_NAME = "poa_tiny"
POA_TINY_BOX = [-51.24, -30.06, -51.19, -30.02]
CENTRE = h3.latlng_to_cell(-30.03, -51.22, 9)
AE_PIX_DEG = 0.0002
AE_HALF_DEG = 0.002
TILE_PX = 32


def write_poa_tiny_toml(folder: Path) -> Path:
    return write_study_area(
        folder / "study_area.toml", POA_TINY_NAME, POA_TINY_BOX,
        sources={"osm": "dataset:porto_alegre/poa_osm.pbf",
                 "gtfs": ["dataset:porto_alegre/poa_eptc.zip", "dataset:porto_alegre/poa_trensurb.zip"],
                 "rasters": {"elevation": "dataset:porto_alegre/poa_elevation.tif"}},
        targets={"hexgrid": {"path": "dataset:porto_alegre/poa_hexgrid.csv", "id": "id", "columns": ["jobs", "schools"],
                             "transform": {"jobs": "log1p"}}},
    )


def write_imagery_toml(folder: Path) -> Path:
    return write_study_area(folder / "imagery.toml", f"{POA_TINY_NAME}_imagery", POA_TINY_BOX,
                            sources={"images": "tiles", "rasters": {"alphaearth": "alphaearth.tif"}})


def alphaearth_array() -> tuple[np.ndarray, tuple[float, float]]:
    """(64, n, n) int8 and the (west, north) corner: a square of ~400 m around :data:`CENTRE`."""
    lat, lon = h3.cell_to_latlng(CENTRE)
    n = int(round(2 * AE_HALF_DEG / AE_PIX_DEG))
    rr, cc = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    k = np.arange(64)[:, None, None]
    values = 100 * np.sin(0.15 * rr[None] + 0.1 * k) * np.cos(0.12 * cc[None] - 0.05 * k)
    return np.clip(np.round(values), -127, 127).astype(np.int8), (lon - AE_HALF_DEG, lat + AE_HALF_DEG)


def write_alphaearth(folder: Path) -> Path:
    from rasterio.transform import from_origin

    data, (west, north) = alphaearth_array()
    path = folder / "alphaearth.tif"
    write_tif(path, data, from_origin(west, north, AE_PIX_DEG, AE_PIX_DEG), nodata=-128, compress="deflate")
    return path


def tile_cells() -> list[str]:
    return sorted({CENTRE, *h3.grid_ring(CENTRE, 1)})


def tile_array(i: int) -> np.ndarray:
    """(TILE_PX, TILE_PX, 3) uint8: tile ``i`` of :func:`tile_cells`, a colour gradient that differs per tile."""
    rr, cc = np.meshgrid(np.arange(TILE_PX), np.arange(TILE_PX), indexing="ij")
    rgb = [(rr * 8 + 30 * i) % 256, (cc * 8 + 50 * i) % 256, ((rr + cc) * 4 + 70 * i) % 256]
    return np.stack(rgb, axis=-1).astype(np.uint8)


def write_tiles(folder: Path) -> Path:
    from PIL import Image

    tiles = folder / "tiles"
    tiles.mkdir(parents=True, exist_ok=True)
    for i, cell in enumerate(tile_cells()):
        Image.fromarray(tile_array(i), "RGB").save(tiles / f"{cell}.png")
    return tiles


def make_poa_tiny(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_poa_tiny_toml(folder)
    write_imagery_toml(folder)
    write_alphaearth(folder)
    write_tiles(folder)
    return folder


def main(root: Path = TEST_DATA) -> int:
    print(make_poa_tiny(root / "poa_tiny"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
