"""OSM modalities (poi, roads): numbers on a hand-built .osm file, end-to-end runs, bad input."""

from __future__ import annotations

import math

import h3
import numpy as np
import pandas as pd
import pytest
import shapely
from mlflow.tracking import MlflowClient

from tests.support import REPO
from urbanrepml.areas import build_area, h3ops
from urbanrepml.config import load_study_area
from urbanrepml.datasets import fetch
from urbanrepml.errors import UrbanReprError
from urbanrepml.modalities import MODALITIES
from urbanrepml.modalities.poi import PoiModality, count_per_cell, default_filter
from urbanrepml.modalities.roads import ROAD_CLASSES, RoadsModality, road_stats
from urbanrepml.sources.osm import haversine_m, read_highways, read_tagged_features
from urbanrepml.tables import read_table

AMSTERDAM_PBF = fetch("amsterdam") / "amsterdam_centre.osm.pbf"
RES = 9
LAT0, LON0 = 52.0, 5.0


def _offset(lat: float, lon: float, east_m: float = 0.0, north_m: float = 0.0) -> tuple[float, float]:
    dlat = math.degrees(north_m / 6_371_008.8)
    dlon = math.degrees(east_m / (6_371_008.8 * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


class Tiny:
    """A hand-built OSM file around cell C (at 52.0 N, 5.0 E, res 9) and its neighbour N."""

    def __init__(self):
        self.c = h3.latlng_to_cell(LAT0, LON0, RES)
        self.n = sorted(h3.grid_ring(self.c, 1))[0]
        c_lat, c_lon = h3.cell_to_latlng(self.c)
        n_lat, n_lon = h3.cell_to_latlng(self.n)
        self.nodes: dict[int, tuple[float, float, dict]] = {}
        add = self._node
        # POIs: points
        add(1, c_lat, c_lon, {"amenity": "restaurant"})
        add(2, *_offset(c_lat, c_lon, 10, 10), {"amenity": "cafe", "shop": "bakery", "name": "Two tags"})
        add(3, n_lat, n_lon, {"amenity": "restaurant"})
        add(4, *_offset(c_lat, c_lon, -10, 5), {"amenity": "not_a_hex2vec_value"})
        add(5, *_offset(c_lat, c_lon, 5, -10), {"name": "untagged for the filter"})
        # a 20 m building square around C's centre (inside C only) and a park across C and N
        sq = [_offset(c_lat, c_lon, e, n) for e, n in ((-10, -10), (10, -10), (10, 10), (-10, 10))]
        for i, (la, lo) in enumerate(sq):
            add(10 + i, la, lo, {})
        self.ways = [(100, [10, 11, 12, 13, 10], {"building": "house"})]
        mid_lat, mid_lon = (c_lat + n_lat) / 2, (c_lon + n_lon) / 2
        park = [_offset(mid_lat, mid_lon, e, n) for e, n in ((-60, -60), (60, -60), (60, 60), (-60, 60))]
        for i, (la, lo) in enumerate(park):
            add(20 + i, la, lo, {})
        self.ways.append((101, [20, 21, 22, 23, 20], {"leisure": "park"}))
        self.park = shapely.Polygon([(lo, la) for la, lo in park])
        # roads: a star at X = C's centre (node 30): residential 50 m east, primary to N's centre,
        # footway 40 m west through a shape point; plus excluded/folded classes
        add(30, c_lat, c_lon, {"highway": "traffic_signals"})
        add(31, *_offset(c_lat, c_lon, 50, 0), {})
        add(32, n_lat, n_lon, {})
        add(33, *_offset(c_lat, c_lon, -20, 0), {})
        add(34, *_offset(c_lat, c_lon, -40, 0), {})
        add(35, *_offset(c_lat, c_lon, 0, 30), {})
        add(36, *_offset(c_lat, c_lon, 0, 60), {})
        self.ways += [
            (200, [30, 31], {"highway": "residential", "oneway": "yes", "lanes": "2", "maxspeed": "30"}),
            (201, [30, 32], {"highway": "primary"}),
            (202, [30, 33, 34], {"highway": "footway"}),
            (203, [35, 36], {"highway": "proposed"}),  # not a road class: ignored
        ]
        self.len_res = haversine_m(c_lon, c_lat, *_offset(c_lat, c_lon, 50, 0)[::-1])
        self.len_primary = haversine_m(c_lon, c_lat, n_lon, n_lat)
        self.len_foot = haversine_m(c_lon, c_lat, *_offset(c_lat, c_lon, -40, 0)[::-1])

    def _node(self, nid, lat, lon, tags):
        self.nodes[nid] = (lat, lon, tags)

    def xml(self) -> str:
        def tags(t):
            return "".join(f'<tag k="{k}" v="{v}"/>' for k, v in t.items())

        lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<osm version="0.6" generator="test">']
        for nid, (lat, lon, t) in self.nodes.items():
            lines.append(f'<node id="{nid}" version="1" lat="{lat:.7f}" lon="{lon:.7f}">{tags(t)}</node>')
        for wid, refs, t in self.ways:
            lines.append(f'<way id="{wid}" version="1">' + "".join(f'<nd ref="{r}"/>' for r in refs) + tags(t) + "</way>")
        lines.append("</osm>")
        return "\n".join(lines)

    def write(self, folder) -> Path:  # noqa: F821
        """The .osm XML converted to a PBF with pyosmium's writer (the format the modalities read)."""
        import osmium

        xml = folder / "tiny.osm"
        xml.write_text(self.xml())
        pbf = folder / "tiny.osm.pbf"
        with osmium.SimpleWriter(str(pbf)) as writer:
            for obj in osmium.FileProcessor(str(xml)):
                writer.add(obj)
        return pbf

    def area_cells(self) -> np.ndarray:
        return np.sort(np.array([h3.str_to_int(c) for c in h3.grid_disk(self.c, 2)], dtype=np.uint64))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    t = Tiny()
    t.pbf = t.write(tmp_path_factory.mktemp("osm"))
    return t


def test_registry_lists_osm_modalities():
    assert MODALITIES["poi"] is PoiModality and MODALITIES["roads"] is RoadsModality


def test_poi_counts_by_hand(tiny):
    features = read_tagged_features(tiny.pbf, default_filter())
    # nodes 1, 2, 3 (node 4's value and node 5's key are outside the filter) + building + park
    assert sorted(features.ids) == ["node/1", "node/2", "node/3", "way/100", "way/101"]
    counts, used = count_per_cell(features, tiny.area_cells(), RES)
    park_cells = [c for c in h3.grid_disk(tiny.c, 2)
                  if shapely.Polygon([(lo, la) for la, lo in h3.cell_to_boundary(c)]).intersects(tiny.park)]
    assert tiny.c in park_cells and tiny.n in park_cells and len(park_cells) >= 2
    assert sorted(counts.index) == sorted(park_cells)
    c, n = counts.loc[tiny.c], counts.loc[tiny.n]
    assert (c["amenity_restaurant"], c["amenity_cafe"], c["shop_bakery"], c["building_house"], c["leisure_park"]) == (1, 1, 1, 1, 1)
    assert (n["amenity_restaurant"], n["amenity_cafe"], n["building_house"], n["leisure_park"]) == (1, 0, 0, 1)
    assert counts["leisure_park"].sum() == len(park_cells)  # a polygon counts in every cell it intersects
    assert counts.to_numpy().sum() == 4 + 1 + len(park_cells)  # 4 point tags, the building, the park
    assert list(counts.columns) == ["amenity_cafe", "amenity_restaurant", "building_house", "leisure_park", "shop_bakery"]


def test_poi_counts_match_srai_intersection_joiner_and_count_embedder(tiny):
    import geopandas as gpd
    from srai.embedders import CountEmbedder
    from srai.joiners import IntersectionJoiner

    features = read_tagged_features(tiny.pbf, default_filter())
    cells = tiny.area_cells()
    ours, _ = count_per_cell(features, cells, RES)
    regions = gpd.GeoDataFrame(index=pd.Index(h3ops.cells_to_str(cells), name="region_id"),
                               geometry=shapely.from_wkb(h3ops.cells_to_polygons_wkb(cells)), crs="EPSG:4326")
    features_gdf = features.to_srai_gdf()
    joint = IntersectionJoiner().transform(regions, features_gdf)
    srai = CountEmbedder(expected_output_features=list(ours.columns)).transform(regions, features_gdf, joint)
    srai = srai.loc[(srai.to_numpy().sum(1) > 0)]
    pd.testing.assert_frame_equal(ours.sort_index(), srai.sort_index().astype(np.float32), check_names=False)


def test_roads_lengths_and_graph_by_hand(tiny):
    ways = read_highways(tiny.pbf, ROAD_CLASSES)
    assert sorted(ways.way_id) == [200, 201, 202]  # the proposed road is not a road class
    stats, metrics = road_stats(ways, tiny.area_cells(), RES)
    step = metrics["step_m"]
    assert 9 < step < 11
    assert sorted(stats.index) == sorted([tiny.c, tiny.n])
    c, n = stats.loc[tiny.c], stats.loc[tiny.n]
    assert c["length_residential_m"] == pytest.approx(tiny.len_res, abs=0.05)  # fully inside C
    assert c["length_footway_m"] == pytest.approx(tiny.len_foot, abs=0.05)
    assert tiny.len_res == pytest.approx(50, abs=0.01) and tiny.len_primary > 250
    # the primary road runs centre to centre: half in each cell, within half a piece
    assert c["length_primary_m"] == pytest.approx(tiny.len_primary / 2, abs=step / 2)
    assert n["length_primary_m"] == pytest.approx(tiny.len_primary / 2, abs=step / 2)
    assert c["length_primary_m"] + n["length_primary_m"] == pytest.approx(tiny.len_primary, abs=0.05)
    # (coordinates are stored to 1e-7 degrees, ~1 cm: hence the centimetre tolerances)
    assert c["length_total_m"] == pytest.approx(tiny.len_res + tiny.len_foot + c["length_primary_m"], abs=0.05)
    # X (degree 3) is the intersection; the residential and footway ends are dead ends in C, N's centre in N
    assert (c["intersections"], c["dead_ends"]) == (1, 2)
    assert c["connectivity"] == pytest.approx(1 / 3) and c["mean_degree"] == pytest.approx(5 / 3)
    assert (n["intersections"], n["dead_ends"], n["connectivity"], n["mean_degree"]) == (0, 1, 0, 1)
    assert metrics["length_in_area_km"] == pytest.approx((tiny.len_res + tiny.len_foot + tiny.len_primary) / 1000, abs=1e-4)


def test_roads_step_bounds_the_border_error(tiny):
    ways = read_highways(tiny.pbf, ROAD_CLASSES)
    coarse, _ = road_stats(ways, tiny.area_cells(), RES, step_m=1000.0)  # one piece per segment
    assert coarse.loc[tiny.c, "length_primary_m"] + coarse.loc[tiny.n, "length_primary_m"] == pytest.approx(tiny.len_primary, abs=0.05)
    fine, _ = road_stats(ways, tiny.area_cells(), RES, step_m=1.0)
    assert fine.loc[tiny.c, "length_primary_m"] == pytest.approx(tiny.len_primary / 2, abs=0.5)


def test_learned_embedders_on_tiny_and_amsterdam(tiny, tmp_path, data_dir, study_area_toml):
    spec = load_study_area(study_area_toml("osm_test", (4.99, 51.99, 5.01, 52.01), sources={"osm": tiny.pbf}, filename="study_area.toml"))
    area = build_area(spec, [RES])
    roads = RoadsModality("highway2vec", embedding_size=4, epochs=1).compute(spec, area, RES)
    assert roads.features.shape == (2, 4) and np.isfinite(roads.features.to_numpy()).all()
    ams = load_study_area("amsterdam")
    poi = PoiModality("hex2vec", embedding_size=3, epochs=1).compute(ams, build_area(ams, [RES]), RES)
    assert poi.features.shape == (16, 3) and np.isfinite(poi.features.to_numpy()).all()
    assert any("Hex2VecEmbedder" in note for note in poi.notes)


def _runs(experiment="urbanrepml-amsterdam"):
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])


@pytest.mark.parametrize("entry, n_min", [("poi", 100), ("roads", 10)])
def test_entry_point_end_to_end_on_amsterdam(tracking, entry, n_min):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"ep_{entry}", REPO / "entrypoints" / f"{entry}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--study_area", "amsterdam", "--resolution", "9.0"])
    client, runs = _runs()
    run = runs[0]
    assert run.info.status == "FINISHED"
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    assert tags["urbanrepml.modality"] == entry and tags["urbanrepml.resolution"] == "9"
    assert params[f"{entry}.embedder"] == ("counts" if entry == "poi" else "stats")
    assert metrics["cells_in_area"] == 16 and metrics["n_features"] >= n_min
    assert metrics["coverage"] == pytest.approx(metrics["cells_with_data"] / 16)
    table_file = client.download_artifacts(run.info.run_id, f"tables/{entry}_res9.parquet", ".")
    table = read_table(table_file, resolution=9, study_area="amsterdam")
    assert table.meta.modality == entry and table.meta.producer_run_id == run.info.run_id
    assert list(table.frame.columns[:2]) == [f"{entry}_0", f"{entry}_1"]
    names = table.meta.feature_names
    frame = table.frame.set_axis(names, axis=1)
    if entry == "poi":
        assert metrics["osm_features_in_area"] == 3497 and metrics["cells_with_data"] == 16
        assert frame["amenity_restaurant"].sum() >= 150 and (frame.to_numpy() >= 0).all()
        assert frame.to_numpy().sum() == metrics["poi_tag_total"]
    else:
        assert {"length_total_m", "intersections", "dead_ends", "connectivity", "mean_degree"} <= set(names)
        assert frame["length_total_m"].sum() / 1000 == pytest.approx(metrics["length_in_area_km"], rel=1e-4)
        assert frame["intersections"].sum() == metrics["intersections_total"] > 100
        assert ((frame["connectivity"] >= 0) & (frame["connectivity"] <= 1)).all()
    inputs = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert "amsterdam_centre.osm.pbf" in inputs
    assert {a.path for a in client.list_artifacts(run.info.run_id, "figures")} == {f"figures/{entry}_pc1.html", f"figures/{entry}_pc1.png"}


def _bad_pbf_run(study_area_toml, tmp_path, capsys, content: bytes, entry_cls):
    bad = tmp_path / "bad.osm.pbf"
    bad.write_bytes(content)
    toml = study_area_toml("bad_osm", (4.8906, 52.3657, 4.9037, 52.3737), sources={"osm": bad}, filename="study_area.toml")
    from urbanrepml.errors import cli_main
    from urbanrepml.stages.modality import run_modality_stage, table_path

    with pytest.raises(SystemExit) as exit_info:
        cli_main(run_modality_stage)(entry_cls(), str(toml), RES)
    assert exit_info.value.code == 2
    # (MLflow's own INFO log lines may precede it on stderr)
    (err,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert str(bad) in err and "corrupt or truncated" in err
    print(err)
    assert not table_path("bad_osm", entry_cls.name, RES).exists()
    _, runs = _runs("urbanrepml-bad_osm")
    assert runs[0].info.status == "FAILED"
    return err


@pytest.mark.parametrize("entry_cls", [PoiModality, RoadsModality])
def test_truncated_pbf_is_one_clear_line(tracking, tmp_path, capsys, entry_cls, study_area_toml):
    data = AMSTERDAM_PBF.read_bytes()
    _bad_pbf_run(study_area_toml, tmp_path, capsys, data[: len(data) // 2], entry_cls)


def test_garbage_pbf_is_one_clear_line(tracking, tmp_path, capsys, study_area_toml):
    rng = np.random.default_rng(0)
    _bad_pbf_run(study_area_toml, tmp_path, capsys, rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), RoadsModality)


@pytest.mark.parametrize("entry_cls", [PoiModality, RoadsModality])
def test_area_without_osm_data_fails_clearly(tracking, tmp_path, entry_cls, study_area_toml):
    from urbanrepml.stages.modality import run_modality_stage, table_path

    # North Sea west of the Amsterdam extract: the PBF has nothing there
    toml = study_area_toml("north_sea", (4.30, 52.40, 4.31, 52.405), sources={"osm": AMSTERDAM_PBF}, filename="study_area.toml")
    with pytest.raises(UrbanReprError, match=f"{entry_cls.name}: found no data inside study area 'north_sea'"):
        run_modality_stage(entry_cls(), str(toml), RES)
    assert not table_path("north_sea", entry_cls.name, RES).exists()


def test_bad_parameters_and_missing_file(tmp_path):
    with pytest.raises(UrbanReprError, match="unknown embedder 'word2vec'"):
        PoiModality("word2vec")
    with pytest.raises(UrbanReprError, match="roads: embedding_size must be >= 1"):
        RoadsModality("highway2vec", 0)
    with pytest.raises(UrbanReprError, match="does not exist"):
        read_highways(tmp_path / "missing.pbf", ROAD_CLASSES)
