"""Study areas on H3: cell sets (against SRAI), hierarchy, graphs, cache, bad input."""

from __future__ import annotations

import subprocess
import sys

import geopandas as gpd
import h3
import numpy as np
import pytest
from shapely.geometry import Polygon, box

from tests.support import REPO
from urbanrepml.areas import build_area, h3ops, parse_resolutions
from urbanrepml.errors import UrbanReprError


def test_finest_cells_match_srai(data_dir):
    from srai.regionalizers import H3Regionalizer

    area = build_area("porto_alegre", [9])
    srai_cells = H3Regionalizer(9).transform(gpd.GeoDataFrame(geometry=[area.boundary], crs=4326))
    assert set(srai_cells.index) == set(area.region_ids(9))
    assert len(area.cells(9)) == 2093


def test_hierarchy_is_closed_and_parents_are_right(data_dir):
    area = build_area("porto_alegre", "7,8,9")
    for child, parent in [(9, 8), (8, 7), (9, 7)]:
        idx = area.parent_index(child, parent)
        expected = [h3.cell_to_parent(c, parent) for c in area.region_ids(child)[:200]]
        assert list(area.region_ids(parent)[idx[:200]]) == expected
        assert idx.min() >= 0
    # coarser sets hold the parents of the finer set (closure), so a few extra cells at most
    assert len(area.cells(9)) >= 2093


def test_edges_are_symmetric_one_ring(data_dir):
    area = build_area("amsterdam", [9])
    ei = area.edge_index(9)
    ids = area.region_ids(9)
    pairs = set(zip(ei[0].tolist(), ei[1].tolist(), strict=False))
    assert all((b, a) in pairs for a, b in pairs)
    for a, b in list(pairs)[:50]:
        assert h3.grid_distance(ids[a], ids[b]) == 1
    # every 1-ring neighbour inside the set is an edge
    pos = {c: i for i, c in enumerate(ids)}
    expected = {(pos[c], pos[n]) for c in ids for n in h3.grid_ring(c, 1) if n in pos}
    assert pairs == expected


def test_regions_gdf_like_srai(data_dir):
    gdf = build_area("amsterdam", [9]).regions_gdf(9)
    assert gdf.index.name == "region_id" and gdf.crs.to_epsg() == 4326 and len(gdf) == 16
    assert gdf.geometry.iloc[0].geom_type == "Polygon"


def test_cache_reused_and_rebuilt_on_change(data_dir, tmp_path, study_area_toml):
    toml = study_area_toml("custom", [4.89, 52.36, 4.90, 52.37], filename="a.toml")
    first = build_area(toml, [9])
    second = build_area(toml, [9])
    assert first.cache_path == second.cache_path and first.cache_path.is_dir()
    study_area_toml("custom", [4.89, 52.36, 4.91, 52.37], filename="a.toml")
    third = build_area(toml, [9])
    assert third.cache_path != first.cache_path
    assert len(third.cells(9)) > len(first.cells(9))


def test_boundary_file_in_projected_crs_is_reprojected(data_dir, tmp_path, study_area_toml):
    poly = box(4.89, 52.36, 4.90, 52.37)
    gpd.GeoDataFrame(geometry=[poly], crs=4326).to_crs(28992).to_file(tmp_path / "b.gpkg")
    area = build_area(study_area_toml("custom", "b.gpkg", filename="a.toml"), [9])
    ref = build_area(study_area_toml("custom", [4.89, 52.36, 4.90, 52.37], filename="r.toml"), [9])
    # reprojection bends the edges a little: nearly the same set
    a, r = set(area.region_ids(9)), set(ref.region_ids(9))
    assert len(a ^ r) <= 0.1 * len(r)


@pytest.mark.parametrize("resolutions", ["16", "-1", "7,x", ""])
def test_bad_resolutions(resolutions):
    with pytest.raises(UrbanReprError, match="resolution"):
        parse_resolutions(resolutions)


def test_cell_limit_refuses_with_estimate(data_dir):
    with pytest.raises(UrbanReprError, match=r"about [\d,]+ cells, over the limit of 1,000"):
        build_area("porto_alegre", [9], max_cells=1000)
    assert not (data_dir / "cache").exists()


def test_bad_boundaries(data_dir, tmp_path, study_area_toml):
    with pytest.raises(UrbanReprError, match="does not exist"):
        build_area(study_area_toml("custom", "missing.geojson", filename="a.toml"), [9])
    (tmp_path / "junk.geojson").write_text("not geometry at all")
    with pytest.raises(UrbanReprError, match="not a readable vector file"):
        build_area(study_area_toml("custom", "junk.geojson", filename="a.toml"), [9])
    bowtie = Polygon([(4.89, 52.36), (4.90, 52.37), (4.90, 52.36), (4.89, 52.37)])
    gpd.GeoDataFrame(geometry=[bowtie], crs=4326).to_file(tmp_path / "bowtie.geojson")
    with pytest.raises(UrbanReprError, match="not a valid polygon"):
        build_area(study_area_toml("custom", "bowtie.geojson", filename="a.toml"), [9])
    gpd.GeoDataFrame(geometry=[Polygon()], crs=4326).to_file(tmp_path / "empty.geojson")
    with pytest.raises(UrbanReprError, match="empty|no geometry"):
        build_area(study_area_toml("custom", "empty.geojson", filename="a.toml"), [9])
    with pytest.raises(UrbanReprError, match="lon/lat box"):
        build_area(study_area_toml("custom", [5, 52, 4, 53], filename="a.toml"), [9])
    assert not (data_dir / "cache").exists()


def test_toml_errors(tmp_path, study_area_toml):
    (tmp_path / "a.toml").write_text('boundary = [4.89, 52.36, 4.90, 52.37]\n')
    with pytest.raises(UrbanReprError, match="missing key 'name'"):
        build_area(tmp_path / "a.toml", [9])
    study_area_toml("custom", [4.89, 52.36, 4.90, 52.37], sources={"osm": "nope.pbf"}, filename="b.toml")
    with pytest.raises(UrbanReprError, match="sources.osm.*does not exist"):
        build_area(tmp_path / "b.toml", [9])
    with pytest.raises(UrbanReprError, match="unknown study area"):
        build_area("atlantis", [9])


def test_parse_cells_rejects_bad_ids():
    with pytest.raises(UrbanReprError, match="invalid H3"):
        h3ops.parse_cells(["89a90e1a6cfffff", "not-a-cell"])
    cells = h3ops.parse_cells(["89a90e1a6cfffff"])
    assert h3ops.cells_to_str(cells)[0] == "89a90e1a6cfffff"
    assert h3ops.cells_to_str(h3ops.parent_cells(cells, 7))[0] == h3.cell_to_parent("89a90e1a6cfffff", 7)


@pytest.mark.e2e
def test_cli_bad_input_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "entrypoints" / "area.py"), "--study_area", str(tmp_path / "nope.toml")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: study area file {tmp_path / 'nope.toml'} does not exist"]


@pytest.mark.parametrize("compiled", [True, False])
def test_local_ij_edges_equal_grid_disk_edges(data_dir, compiled):
    area = build_area("porto_alegre", [10])
    cells = area.cells(10)
    fast = h3ops._edges_local_ij(cells, compiled=compiled)
    assert fast is not None
    slow = h3ops._edges_grid_disk(cells, 1)
    key = lambda e: np.sort(e[0] * len(cells) + e[1])  # noqa: E731
    assert np.array_equal(key(fast), key(slow))


def test_pentagon_area_falls_back_to_grid_disk():
    pentagon = h3.str_to_int(sorted(h3.get_pentagons(5))[0])
    cells = np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(h3.int_to_str(pentagon), 2)), dtype=np.uint64)
    assert h3ops._edges_local_ij(cells) is None
    edges = h3ops.neighbour_edges(cells)
    ids = h3ops.cells_to_str(cells)
    assert all(h3.grid_distance(ids[a], ids[b]) == 1 for a, b in edges.T)
    assert edges.shape[1] == sum(len([n for n in h3.grid_ring(c, 1) if h3.str_to_int(n) in set(cells.tolist())]) for c in ids)


def _grid_disk_pairs(cells: np.ndarray) -> set[tuple[int, int]]:
    """Directed 1-ring pairs (positions) among ``cells``, from h3's own grid_disk."""
    ids = [h3.int_to_str(int(c)) for c in cells]
    pos = {c: i for i, c in enumerate(ids)}
    return {(pos[c], pos[n]) for c in ids for n in h3.grid_disk(c, 1) if n != c and n in pos}


def _pairs(edges: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(edges[0].tolist(), edges[1].tolist(), strict=False))


def _fill(bounds, res):
    from urbanrepml.areas.boundary import polygon_parts_wkb

    return h3ops.polyfill(polygon_parts_wkb(box(*bounds)), res)


@pytest.mark.parametrize("bounds, res", [
    ((4.0, 51.3, 6.9, 53.2), 7),       # two base cells
    ((170.0, -47.0, 179.0, -34.0), 5),  # two base cells, far east
    ((-10.0, 35.0, 30.0, 60.0), 4),     # seven base cells, one holding a pentagon (left to h3ronpy)
])
def test_local_ij_equals_h3ronpy(bounds, res):
    cells = _fill(bounds, res)
    anchor = int(cells[len(cells) // 2])
    ours, theirs = h3ops.local_ij(cells, anchor), h3ops._h3ronpy_local_ij(cells, anchor)
    assert ours is not None and theirs is not None
    assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])


def test_fast_edges_equal_h3_grid_disk_across_base_cells():
    cells = _fill((4.0, 51.3, 6.9, 53.2), 7)
    assert len(np.flatnonzero(h3ops.kernels.base_cells_present(cells))) > 1
    fast = h3ops._edges_local_ij(cells, compiled=True)
    assert fast is not None
    assert _pairs(fast) == _grid_disk_pairs(cells)
    # grouped by source cell, in sorted cell order; the numpy path gives the very same array
    assert np.all(np.diff(fast[0]) >= 0)
    assert np.array_equal(fast, h3ops._edges_local_ij(cells, compiled=False))


@pytest.mark.parametrize("res", [5, 8])
def test_edges_equal_h3_grid_disk_around_a_pentagon(res):
    pentagon = sorted(h3.get_pentagons(res))[3]
    with_pentagon = np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(pentagon, 4)), dtype=np.uint64)
    assert h3ops._edges_local_ij(with_pentagon) is None  # the pentagon itself: grid disk
    assert _pairs(h3ops.neighbour_edges(with_pentagon)) == _grid_disk_pairs(with_pentagon)
    # the same base cell without the pentagon: whatever path is taken, the same graph as h3's
    ring = np.array(sorted(h3.str_to_int(c) for c in set(h3.grid_disk(pentagon, 6)) - set(h3.grid_disk(pentagon, 2))),
                    dtype=np.uint64)
    assert _pairs(h3ops.neighbour_edges(ring)) == _grid_disk_pairs(ring)


@pytest.mark.parametrize("compiled", [True, False])
def test_merge_parents_equals_sort_and_search(compiled):
    children = _fill((4.8, 52.2, 5.0, 52.4), 10)
    own = _fill((4.7, 52.1, 4.9, 52.3), 9)
    cells, parent_pos = h3ops.merge_parents(own, children, 9, compiled=compiled)
    parents = h3ops.parent_cells(children, 9)
    expected = h3ops.sorted_unique(np.concatenate([own, parents]))
    assert np.array_equal(cells, expected)
    assert np.array_equal(parent_pos, h3ops.positions(expected, parents))
    mixed = np.sort(np.concatenate([children[:50], _fill((4.8, 52.2, 4.81, 52.21), 11)]))
    cells, parent_pos = h3ops.merge_parents(own, mixed, 9, compiled=compiled)  # mixed resolutions: sorted instead of merged
    assert np.array_equal(cells[parent_pos], h3ops.parent_cells(mixed, 9))
    with pytest.raises(ValueError, match="not coarser"):
        h3ops.merge_parents(own, children, 10)


@pytest.mark.parametrize("body, message", [
    ('targets = "x"', "'targets' in the top level must be a table"),
    ('sources = "x"', "'sources' in the top level must be a table"),
    ('[targets.t]\npath = "a.toml"\ncolumns = 5', "'columns' must be a non-empty list"),
    ('[targets.t]\npath = "a.toml"\ncolumns = ["c"]\ntransform = "log1p"', "'transform' in \\[targets.t\\] must be a table"),
    ('[sources]\nrasters = ["x.tif"]', "'rasters' in \\[sources\\] must be a table"),
    ('[sources]\ngtfs = 3', "'sources.gtfs' must be a path or a list"),
])
def test_toml_with_wrong_value_types_is_one_clear_error(tmp_path, body, message, study_area_toml):
    from urbanrepml.config import load_study_area

    toml = study_area_toml("custom", [4.89, 52.36, 4.90, 52.37], extra=body + "\n", filename="a.toml")
    with pytest.raises(UrbanReprError, match=message):
        load_study_area(toml)


def test_toml_that_is_not_text_is_one_clear_error(tmp_path):
    from urbanrepml.config import load_study_area

    (tmp_path / "b.toml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UrbanReprError, match="not valid TOML"):
        load_study_area(tmp_path / "b.toml")
