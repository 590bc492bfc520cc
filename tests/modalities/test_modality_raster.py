"""Raster modality: per-cell band statistics on tiny rasters built here (lon/lat and UTM), the bundled DEM, bad rasters."""

from __future__ import annotations

import h3
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from tests.support.processes import run_entry_expect_error
from tests.support.rasters import CELL_A, CELL_B, NODATA, disc_grid, write_tif
from urbanrepml.areas import build_area
from urbanrepml.config import load_study_area
from urbanrepml.datasets import fetch
from urbanrepml.modalities.raster import RasterModality
from urbanrepml.stages.modality import run_modality_stage, table_path
from urbanrepml.tables import read_table


def test_two_cells_by_construction(two_cell_raster, tmp_path, raster_area):
    path, a_vals, b_vals = two_cell_raster
    spec = load_study_area(raster_area({"dem": path.name}))
    area = build_area(spec, [9])
    f = RasterModality().compute(spec, area, 9).features
    assert set(f.index) == {CELL_A, CELL_B}  # nodata everywhere else
    assert list(f.columns) == ["dem_red_mean", "dem_red_std", "dem_red_count", "dem_b2_mean", "dem_b2_std", "dem_b2_count"]
    assert f.loc[CELL_A, "dem_red_count"] == len(a_vals) > len(b_vals) == f.loc[CELL_B, "dem_red_count"]
    assert f.loc[CELL_A, "dem_red_mean"] == pytest.approx(a_vals.mean(), rel=1e-12)
    assert f.loc[CELL_A, "dem_red_std"] == pytest.approx(a_vals.std(), rel=1e-9)
    assert f.loc[CELL_A, "dem_b2_mean"] == pytest.approx(2 * a_vals.mean(), rel=1e-12)
    assert f.loc[CELL_B, "dem_red_mean"] == 50 and f.loc[CELL_B, "dem_red_std"] == 0
    # min_pixels drops B (fewer pixels) but keeps A
    g = RasterModality(min_pixels=len(b_vals) + 1).compute(spec, area, 9).features
    assert list(g.index) == [CELL_A]


def test_duplicate_band_descriptions_get_band_index(tmp_path, data_dir, raster_area):
    from urbanrepml.sources.rasterstats import raster_cell_stats, unique_names

    assert unique_names(["red", "nir", "red"]) == ["red_1", "nir", "red_3"]
    assert unique_names(["a", "a", "a_2"]) == ["a_1", "a_2", "a_2_3"]  # a suffix would collide: every band indexed
    transform, shape, labels, _, _ = disc_grid({CELL_A: 25.0})
    band = np.where(labels == CELL_A, 1.0, NODATA).astype(np.float32)
    data = np.stack([band, np.where(band == NODATA, NODATA, 3 * band)]).astype(np.float32)
    write_tif(tmp_path / "dup.tif", data, transform, nodata=NODATA, descriptions=["red", "red"])
    spec = load_study_area(raster_area({"dup": "dup.tif"}))
    f = raster_cell_stats([tmp_path / "dup.tif"], build_area(spec, [9]), 9, stats=("mean",))
    assert list(f.columns) == ["red_1_mean", "red_2_mean"]
    assert f.loc[CELL_A, "red_1_mean"] == 1.0 and f.loc[CELL_A, "red_2_mean"] == 3.0


def test_projected_raster_is_reprojected_by_points(tmp_path, data_dir, raster_area):
    from pyproj import Transformer

    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32722", always_xy=True)
    (alat, alon), (blat, blon) = h3.cell_to_latlng(CELL_A), h3.cell_to_latlng(CELL_B)
    (ax, bx), (ay, by) = to_utm.transform([alon, blon], [alat, blat])
    west, north, size = min(ax, bx) - 200, max(ay, by) + 200, 10.0
    cols, rows = int((max(ax, bx) + 200 - west) / size), int((north - min(ay, by) + 200) / size)
    cc, rr = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    x, y = west + cc * size, north - rr * size
    band = np.full((rows, cols), 255, dtype=np.uint8)
    near_a = np.hypot(x - ax, y - ay) <= 30
    near_b = np.hypot(x - bx, y - by) <= 30
    band[near_a], band[near_b] = 7, 9
    path = write_tif(tmp_path / "utm.tif", band[None], from_origin(west, north, size, size), crs="EPSG:32722", nodata=255)
    spec = load_study_area(raster_area({"utm": path.name}))
    f = RasterModality("utm").compute(spec, build_area(spec, [9]), 9).features
    assert set(f.index) == {CELL_A, CELL_B}
    assert f.loc[CELL_A, "utm_b1_count"] == near_a.sum() and f.loc[CELL_A, "utm_b1_mean"] == 7
    assert f.loc[CELL_B, "utm_b1_count"] == near_b.sum() and f.loc[CELL_B, "utm_b1_mean"] == 9


def test_bundled_dem_end_to_end_matches_per_pixel_h3(tracking):
    from mlflow.tracking import MlflowClient

    table = run_modality_stage(RasterModality(), "porto_alegre", 9)
    back = read_table(table_path("porto_alegre", "raster", 9), resolution=9, study_area="porto_alegre")
    assert back.meta.feature_names == ["elevation_b1_mean", "elevation_b1_std", "elevation_b1_count"]
    run = MlflowClient().get_run(table.meta.producer_run_id)
    assert run.info.status == "FINISHED" and run.data.params["raster.rasters"] == "all"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["elevation"]
    # Independent check: every pixel through the h3 library, grouped with numpy.
    with rasterio.open(fetch("porto_alegre") / "poa_elevation.tif") as src:
        vals = src.read(1).astype(float)
        rows, cols = np.indices(vals.shape)
        xs, ys = rasterio.transform.xy(src.transform, rows.ravel(), cols.ravel())
    cells = np.array([h3.latlng_to_cell(y, x, 9) for x, y in zip(xs, ys, strict=False)])
    area_ids = set(build_area("porto_alegre", [9]).region_ids(9))
    inside = np.isin(cells, list(area_ids))
    ids, inv, counts = np.unique(cells[inside], return_inverse=True, return_counts=True)
    means = np.bincount(inv, weights=vals.ravel()[inside]) / counts
    frame = back.frame
    assert sorted(frame.index) == sorted(ids)
    order = np.searchsorted(ids, frame.index.to_numpy())
    np.testing.assert_allclose(frame["raster_0"].to_numpy(), means[order], rtol=1e-5)
    np.testing.assert_array_equal(frame["raster_2"].to_numpy(), counts[order])
    assert run.data.metrics["cells_with_data"] == len(ids)


def test_no_overlap_one_line_no_table(tracking, tmp_path, capsys, raster_area):
    data = np.ones((1, 10, 10), dtype=np.uint8)
    write_tif(tmp_path / "far.tif", data, from_origin(4.89, 52.37, 0.001, 0.001))  # Amsterdam
    toml = raster_area({"far": "far.tif"})
    line = run_entry_expect_error("raster", ["--study_area", str(toml), "--resolution", "9"], capsys)
    assert "does not overlap study area 'raster_test'" in line and "far.tif" in line
    assert not table_path("raster_test", "raster", 9).exists()


def test_no_crs_one_line_no_table(tracking, tmp_path, capsys, raster_area):
    data = np.ones((1, 10, 10), dtype=np.uint8)
    write_tif(tmp_path / "nocrs.tif", data, from_origin(-51.22, -30.03, 0.001, 0.001), crs=None)
    toml = raster_area({"nocrs": "nocrs.tif"})
    line = run_entry_expect_error("raster", ["--study_area", str(toml), "--resolution", "9", "--min_pixels", "1"], capsys)
    assert "has no CRS" in line and "nocrs.tif" in line
    assert not table_path("raster_test", "raster", 9).exists()


def test_unknown_raster_name(tmp_path, two_cell_raster, capsys, tracking, raster_area):
    toml = raster_area({"dem": "two.tif"})
    line = run_entry_expect_error("raster", ["--study_area", str(toml), "--rasters", "dem,slope"], capsys)
    assert "['slope'] not in [sources.rasters]" in line
