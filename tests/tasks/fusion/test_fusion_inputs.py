"""Fusion inputs: alignment, zero fill, indicators, z-scores, discovery in a real store, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.areas import AMSTERDAM_BBOX, unique_area_name
from tests.support.processes import one_line_error
from tests.support.tables import write_modality
from urbanrepml.areas import build_area
from urbanrepml.errors import UrbanReprError
from urbanrepml.tables import TableMeta, file_digest
from urbanrepml.tasks.fusion.inputs import ZERO_FILL, load_fusion_inputs, parse_tables_param
from urbanrepml.tracking.fusion import find_modality_tables, log_fusion_inputs, store_tables


def zscore(v):
    v = np.asarray(v, dtype=np.float64)
    s = v.std()
    return np.zeros_like(v) if s == 0 else (v - v.mean()) / s


def test_alignment_zero_fill_indicators_and_zscores(tmp_path, area_setup):
    name, toml, area = area_setup
    ids = area.region_ids(9)
    assert len(ids) == 16
    # raster covers cells 0..11 (inner join), poi covers 4..9 (zero fill), gtfs covers all 16 (no indicator).
    raster_vals = np.stack([np.arange(12.0), np.arange(12.0) ** 2], axis=1)
    raster = write_modality(tmp_path / "raster.parquet", "raster", ids[:12][::-1], raster_vals[::-1], study_area=name,
                            run_id="r-raster", names=["elev_mean", "elev_sq"])
    poi_vals = np.stack([np.arange(1.0, 7.0), np.full(6, 5.0)], axis=1)
    poi = write_modality(tmp_path / "poi.parquet", "poi", ids[4:10], poi_vals, study_area=name, run_id="r-poi")
    gtfs = write_modality(tmp_path / "gtfs.parquet", "gtfs", ids, np.full(16, 3.0), study_area=name)

    inputs = load_fusion_inputs(toml, 9, {"raster": raster, "poi": poi, "gtfs": gtfs}, area=area, join="inner",
                                transform="none")

    assert inputs.study_area == name and inputs.resolution == 9
    assert list(inputs.region_ids) == list(ids[:12]) and inputs.region_ids.name == "region_id"
    assert inputs.n_cells == 12 and list(inputs.area_positions) == list(range(12))
    assert inputs.feature_names == ["gtfs.gtfs_0", "poi.poi_0", "poi.poi_1", "raster.elev_mean", "raster.elev_sq", "has_poi"]
    assert inputs.x.dtype == np.float32 and inputs.x.shape == (12, 6)
    assert list(inputs.blocks) == ["gtfs", "poi", "raster"]
    # gtfs is constant -> zero column; poi_1 is 5 on 6 cells and 0 (filled) on 6 -> +1/-1.
    np.testing.assert_array_equal(inputs.x[:, 0], 0.0)
    poi0 = np.r_[0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 0, 0]
    np.testing.assert_allclose(inputs.x[:, 1], zscore(poi0), atol=1e-6)
    np.testing.assert_allclose(inputs.x[:, 2], np.r_[[-1] * 4, [1] * 6, [-1] * 2], atol=1e-6)
    # raster was written in reverse order; alignment follows the area's order.
    np.testing.assert_allclose(inputs.x[:, 3], zscore(np.arange(12.0)), atol=1e-6)
    np.testing.assert_allclose(inputs.x[:, 4], zscore(np.arange(12.0) ** 2), atol=1e-6)
    np.testing.assert_array_equal(inputs.x[:, 5], np.r_[[0] * 4, [1] * 6, [0] * 2])
    np.testing.assert_allclose(inputs.x[:, :5].mean(0), 0, atol=1e-6)
    assert inputs.coverage == {"gtfs": 1.0, "poi": 0.5, "raster": 1.0}
    assert inputs.sources["raster"]["sha256"] == file_digest(raster)
    assert inputs.sources["raster"]["run_id"] == "r-raster" and inputs.sources["gtfs"]["run_id"] is None
    assert inputs.sources["poi"]["n_cells"] == 6
    # The 1-ring graph among the 12 cells is the area's graph restricted to them.
    edges = inputs.edge_index(area)
    full = area.edge_index(9)
    inside = (full < 12).all(axis=0)
    assert edges.shape == (2, int(inside.sum()))
    assert set(map(tuple, edges.T)) == set(map(tuple, full[:, inside].T))
    frame = inputs.frame()
    assert frame.index.equals(inputs.region_ids) and list(frame.columns) == inputs.feature_names


def test_all_zero_fill_uses_every_area_cell_and_list_of_paths(tmp_path, area_setup):
    name, toml, area = area_setup
    ids = area.region_ids(9)
    poi = write_modality(tmp_path / "a.parquet", "poi", ids[:3], [1.0, 2.0, 3.0], study_area=name)
    roads = write_modality(tmp_path / "b.parquet", "roads", ids[10:], np.arange(6.0), study_area=name)
    inputs = load_fusion_inputs(toml, 9, [roads, poi], transform="none")  # modality from metadata; area built on demand
    assert {"poi", "roads"} <= ZERO_FILL
    assert inputs.n_cells == 16 and list(inputs.region_ids) == list(ids)
    assert inputs.feature_names == ["poi.poi_0", "roads.roads_0", "has_poi", "has_roads"]
    np.testing.assert_array_equal(inputs.x[:, 2], np.r_[[1] * 3, [0] * 13])
    np.testing.assert_array_equal(inputs.x[:, 3], np.r_[[0] * 10, [1] * 6])
    np.testing.assert_allclose(inputs.x[:, 0], zscore(np.r_[1, 2, 3, [0] * 13]), atol=1e-6)


def test_parse_tables_param(tmp_path):
    assert parse_tables_param("") is None and parse_tables_param("  ") is None
    assert parse_tables_param("poi=a.parquet, roads=b.parquet") == {"poi": Path("a.parquet"), "roads": Path("b.parquet")}
    assert parse_tables_param("a.parquet,b.parquet") == [Path("a.parquet"), Path("b.parquet")]
    with pytest.raises(UrbanReprError) as exc:
        parse_tables_param("poi=a.parquet,b.parquet")
    assert "all 'modality=path' or all paths" in one_line_error(exc)


def _raw_parquet_with_nan(path: Path, ids, study_area: str) -> Path:
    frame = pd.DataFrame({"raster_0": np.array([1.0, np.nan, 2.0], dtype=np.float32)},
                         index=pd.Index(list(ids[:3]), name="region_id"))
    meta = TableMeta("raster", 9, study_area, "raster")
    arrow = pa.Table.from_pandas(frame, preserve_index=True)
    arrow = arrow.replace_schema_metadata({**arrow.schema.metadata, b"urbanrepml": json.dumps(meta.__dict__).encode()})
    pq.write_table(arrow, path)
    return path


def test_bad_inputs_each_one_line(tmp_path, area_setup):
    name, toml, area = area_setup
    ids9, ids8 = area.region_ids(9), area.region_ids(8)
    good = write_modality(tmp_path / "raster.parquet", "raster", ids9[:5], np.arange(5.0), study_area=name)

    coarse = write_modality(tmp_path / "poi8.parquet", "poi", ids8, np.arange(7.0), study_area=name, resolution=8)
    with pytest.raises(UrbanReprError) as exc:
        load_fusion_inputs(toml, 9, {"raster": good, "poi": coarse}, area=area)
    assert "different resolutions (poi res 8, raster res 9)" in one_line_error(exc)

    with pytest.raises(UrbanReprError) as exc:
        load_fusion_inputs(toml, 9, {"poi": coarse}, area=area)
    assert "at resolution 8, fusion asked for 9" in one_line_error(exc)

    other = write_modality(tmp_path / "other.parquet", "poi", ids9, np.arange(16.0), study_area="porto_alegre")
    with pytest.raises(UrbanReprError) as exc:
        load_fusion_inputs(toml, 9, {"raster": good, "poi": other}, area=area)
    assert f"belongs to study area 'porto_alegre', not '{name}'" in one_line_error(exc)

    disjoint = write_modality(tmp_path / "ae.parquet", "alphaearth", ids9[5:], np.arange(11.0), study_area=name)
    with pytest.raises(UrbanReprError) as exc:
        load_fusion_inputs(toml, 9, {"raster": good, "alphaearth": disjoint}, area=area, join="inner")
    msg = one_line_error(exc)
    assert "no cell" in msg and "alphaearth (11 cells), raster (5 cells)" in msg

    nan = _raw_parquet_with_nan(tmp_path / "nan.parquet", ids9, name)
    with pytest.raises(UrbanReprError) as exc:
        load_fusion_inputs(toml, 9, {"raster": nan}, area=area)
    assert "NaN or inf in 1 row(s)" in one_line_error(exc)

    far = write_modality(tmp_path / "far.parquet", "poi", ["89a90129dabffff", *ids9[:2]], [1.0, 2.0, 3.0], study_area=name)
    with pytest.raises(UrbanReprError) as exc:
        load_fusion_inputs(toml, 9, {"poi": far}, area=area)
    assert "1 cell(s) of the poi table lie outside study area" in one_line_error(exc)

    with pytest.raises(UrbanReprError) as exc:
        load_fusion_inputs(toml, 9, [good, good], area=area)
    assert "two tables for modality 'raster'" in one_line_error(exc)

    with pytest.raises(UrbanReprError) as exc:
        load_fusion_inputs(toml, 9, {"raster": tmp_path / "missing.parquet"}, area=area)
    assert "does not exist" in one_line_error(exc)

    with pytest.raises(UrbanReprError) as exc:
        load_fusion_inputs(toml, 9, {}, area=area)
    assert "mlflow run . -e poi" in one_line_error(exc)


def _log_modality_run(name: str, modality: str, path: Path, ids, values, stage: str = "modality") -> str:
    from urbanrepml.tracking import log_embedding_table, stage_run

    with stage_run(stage, name, tags={"modality": modality, "resolution": 9}) as run:
        table_path = path / f"{modality}_res9.parquet"
        write_modality(table_path, modality, ids, values, study_area=name, run_id=run.info.run_id)
        from urbanrepml.tables import read_table

        log_embedding_table(read_table(table_path))
        return run.info.run_id


def test_discovery_and_logging_in_real_store(tracking, tmp_path, data_dir, study_area_toml):
    import mlflow
    from mlflow.tracking import MlflowClient

    name = unique_area_name("fi")
    toml = study_area_toml(name, AMSTERDAM_BBOX)
    area = build_area(toml, [9])
    ids = area.region_ids(9)

    with pytest.raises(UrbanReprError) as exc:
        store_tables(name, 9)
    msg = one_line_error(exc)
    assert f"no modality tables for study area '{name}' at resolution 9" in msg and "mlflow run . -e poi" in msg

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    _log_modality_run(name, "poi", tmp_path / "a", ids[:4], np.arange(4.0))
    poi_run = _log_modality_run(name, "poi", tmp_path / "b", ids[:8], np.arange(8.0))  # newer wins
    raster_run = _log_modality_run(name, "raster", tmp_path / "c", ids[2:], np.arange(14.0))
    # A fused table tagged like a modality must never be picked up as an input.
    (tmp_path / "d").mkdir()
    _log_modality_run(name, "fused", tmp_path / "d", ids, np.arange(16.0), stage="fuse")

    found = find_modality_tables(name, 9)
    assert sorted(found) == ["poi", "raster"]
    assert found["poi"][1] == poi_run and found["raster"][1] == raster_run
    assert find_modality_tables(name, 9, ["raster"]).keys() == {"raster"}

    tables, provenance = store_tables(name, 9)
    inputs = load_fusion_inputs(toml, 9, tables, area=area, provenance=provenance, join="inner")
    assert inputs.n_cells == 14 and list(inputs.region_ids) == list(ids[2:])
    assert inputs.coverage["poi"] == pytest.approx(6 / 14)
    assert inputs.sources["poi"]["run_id"] == poi_run
    assert inputs.sources["poi"]["source_uri"] == f"runs:/{poi_run}/tables/poi_res9.parquet"

    mlflow.set_experiment(f"fusion-inputs-{name}")
    with mlflow.start_run() as run:
        log_fusion_inputs(inputs)
    got = MlflowClient().get_run(run.info.run_id)
    datasets = {d.dataset.name: d for d in got.inputs.dataset_inputs}
    assert set(datasets) == {"poi_res9", "raster_res9"}
    assert datasets["poi_res9"].dataset.digest == inputs.sources["poi"]["sha256"][:32]
    assert json.loads(datasets["raster_res9"].dataset.source)["uri"] == f"runs:/{raster_run}/tables/raster_res9.parquet"
    params = got.data.params
    assert params["inputs.modalities"] == "poi,raster" and params["inputs.zero_filled"] == "poi"
    assert params["inputs.n_cells"] == "14" and params["inputs.n_features"] == "3"
    assert params["inputs.raster.run_id"] == raster_run
    assert got.data.metrics["inputs.coverage_poi"] == pytest.approx(6 / 14)
