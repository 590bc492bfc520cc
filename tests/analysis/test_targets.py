"""Targets: H3 tables, points and polygons onto cells, checked against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import box

from urbanrepml.analysis.targets import load_targets
from urbanrepml.areas import h3ops
from urbanrepml.errors import UrbanReprError


def test_points_mean_sum_count_by_hand(cells, tmp_path, targets_area):
    a, b = cells.cells(9)[:2]
    (lat_a, lat_b), (lon_a, lon_b) = h3ops.cell_centroids(np.array([a, b], dtype=np.uint64))
    rows = [(lat_a, lon_a, 1.0), (lat_a + 1e-5, lon_a, 2.0), (lat_a, lon_a + 1e-5, 6.0), (lat_b, lon_b, 10.0),
            (10.0, 10.0, 99.0)]  # the last one is far outside the area
    pd.DataFrame(rows, columns=["la", "lo", "v"]).to_csv(tmp_path / "pts.csv", index=False)
    ra, rb = h3ops.cells_to_str(np.array([a, b], dtype=np.uint64))
    for agg, expect_a, expect_b, expect_other in [("mean", 3.0, 10.0, None), ("sum", 9.0, 10.0, 0.0), ("count", 3.0, 1.0, 0.0)]:
        toml = targets_area({"p": {"path": "pts.csv", "lat": "la", "lon": "lo", "columns": ["v"], "agg": agg}})
        t = load_targets(toml, 9)
        v = t.frame["v"]
        assert v[ra] == pytest.approx(expect_a) and v[rb] == pytest.approx(expect_b)
        if expect_other is None:
            assert t.coverage["v"] == 2 and len(t.frame) == 2
        else:
            assert t.coverage["v"] == 16 and (v.drop([ra, rb]) == expect_other).all()
        assert t.cells_in_area == 16


def test_log1p_and_count_detection(cells, tmp_path, targets_area):
    ids = cells.region_ids(9)
    pd.DataFrame({"id": ids, "pop": np.arange(16) * 10.0, "schools": [0, 1] * 8}).to_csv(tmp_path / "h.csv", index=False)
    toml = targets_area({"h": {"path": "h.csv", "id": "id", "columns": ["pop", "schools"], "transform": {"pop": "log1p"}}})
    t = load_targets(toml, 9)
    assert t.names == ["log1p_pop", "schools"]
    assert t.frame["log1p_pop"].to_numpy() == pytest.approx(np.log1p(np.arange(16) * 10.0))
    assert t.counts == ["schools"]


def test_h3_table_at_finer_resolution_aggregates_to_parents(cells, tmp_path, targets_area):
    children = cells.cells(10)
    parents = h3ops.parent_cells(children, 9)
    values = np.arange(len(children), dtype=float)
    pd.DataFrame({"id": h3ops.cells_to_str(children), "v": values}).to_csv(tmp_path / "fine.csv", index=False)
    toml = targets_area({"f": {"path": "fine.csv", "id": "id", "columns": ["v"], "agg": "sum"}})
    t = load_targets(toml, 9)
    expected = pd.Series(values).groupby(parents).sum()
    for parent, total in expected.items():
        rid = h3ops.cells_to_str(np.array([parent], dtype=np.uint64))[0]
        if rid in t.frame.index:
            assert t.frame.loc[rid, "v"] == pytest.approx(total)
    assert any("aggregated to 9 by sum" in n for n in t.notes)
    # coarser than the probe resolution: refuse, naming the fix
    pd.DataFrame({"id": cells.region_ids(9), "v": 1.0 + np.arange(16)}).to_csv(tmp_path / "fine.csv", index=False)
    with pytest.raises(UrbanReprError, match="coarser than the probe resolution 10"):
        load_targets(toml, 10)


def test_polygons_area_weighted_on_two_squares(cells, tmp_path, targets_area):
    import geopandas as gpd

    cell = cells.cells(9)[5:6]
    rid = h3ops.cells_to_str(cell)[0]
    lat, lon = (v[0] for v in h3ops.cell_centroids(cell))
    # Two squares meeting on the meridian through the cell centre: a centrally symmetric hexagon is cut in half.
    west = box(lon - 0.01, lat - 0.01, lon, lat + 0.01)
    east = box(lon, lat - 0.01, lon + 0.01, lat + 0.01)
    wkb = shapely.to_wkb(np.array([west, east]))
    pd.DataFrame({"geometry": wkb, "g": [10.0, 30.0], "n": [100.0, 0.0]}).to_parquet(tmp_path / "sq.parquet")
    toml = targets_area({"s": {"path": "sq.parquet", "columns": ["g"]}})
    t = load_targets(toml, 9)
    assert t.frame.loc[rid, "g"] == pytest.approx(20.0, abs=0.05)  # 10·½ + 30·½
    # extensive (agg = "sum"): the west square's 100 is shared by the fraction of its area inside each cell
    toml = targets_area({"s": {"path": "sq.parquet", "columns": ["n"], "agg": "sum"}})
    t2 = load_targets(toml, 9)
    west_utm = gpd.GeoSeries([west], crs=4326).to_crs(cells.regions_gdf(9).estimate_utm_crs()).area[0]
    cell_utm = cells.regions_gdf(9).to_crs(cells.regions_gdf(9).estimate_utm_crs()).area.loc[rid]
    assert t2.frame.loc[rid, "n"] == pytest.approx(100.0 * (cell_utm / 2) / west_utm, rel=0.01)


def test_bundled_amsterdam_buurten_cover_every_cell(data_dir):
    t = load_targets("amsterdam", 9)
    assert t.coverage == {"g_woz": 16, "g_ink_pi": 16, "bev_dich": 16, "log1p_price": 16}
    assert 56 <= t.frame["g_woz"].min() and t.frame["g_woz"].max() <= 1985  # weighted means stay within the data's range


def test_no_overlap_is_one_clear_error(cells, tmp_path, targets_area):
    pd.DataFrame({"la": [-30.0, -30.01], "lo": [-51.2, -51.21], "v": [1.0, 2.0]}).to_csv(tmp_path / "far.csv", index=False)
    toml = targets_area({"far": {"path": "far.csv", "lat": "la", "lon": "lo", "columns": ["v"]}})
    with pytest.raises(UrbanReprError, match=r"\[targets.far\] far.csv has no values on any of the 16 cells"):
        load_targets(toml, 9)


def test_constant_target_is_one_clear_error(cells, tmp_path, targets_area):
    pd.DataFrame({"id": cells.region_ids(9), "c": 4.0}).to_csv(tmp_path / "c.csv", index=False)
    toml = targets_area({"c": {"path": "c.csv", "id": "id", "columns": ["c"]}})
    with pytest.raises(UrbanReprError, match=r"target 'c' .* is constant \(4\) on its 16 cell\(s\)"):
        load_targets(toml, 9)
