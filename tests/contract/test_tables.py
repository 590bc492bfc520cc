"""The embedding-table contract: one writer, one reader/validator, atomic writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from urbanrepml.areas import build_area
from urbanrepml.errors import UrbanReprError
from urbanrepml.tables import EmbeddingTable, TableMeta, read_table, to_embedding_frame, write_table


def make_table(area, res=9, prefix="poi", values=None):
    ids = area.region_ids(res)
    values = np.arange(len(ids) * 2, dtype=float).reshape(-1, 2) if values is None else values
    frame, names = to_embedding_frame(pd.DataFrame(values, columns=["shop_bakery", "amenity_cafe"]), ids, prefix)
    return EmbeddingTable(frame, TableMeta(prefix, res, "amsterdam", prefix, producer_run_id="abc", input_digests={"osm": "d1"},
                                           feature_names=names))


def test_round_trip_keeps_values_and_metadata(area, tmp_path):
    table = make_table(area)
    write_table(table, tmp_path / "t.parquet", area_cells=area.cells(9))
    back = read_table(tmp_path / "t.parquet", resolution=9, study_area="amsterdam", area_cells=area.cells(9))
    assert back.frame.index.name == "region_id"
    assert list(back.frame.columns) == ["poi_0", "poi_1"]
    assert (back.frame.dtypes == np.float32).all()
    assert back.meta.feature_names == ["shop_bakery", "amenity_cafe"]
    assert back.meta.input_digests == {"osm": "d1"} and back.meta.producer_run_id == "abc"
    np.testing.assert_array_equal(back.frame.to_numpy(), table.frame.to_numpy())


def broken(area, how):
    t = make_table(area)
    f = t.frame
    if how == "nan":
        f.iloc[3, 1] = np.nan
    elif how == "inf":
        f.iloc[0, 0] = np.inf
    elif how == "dup":
        t.frame = pd.concat([f, f.iloc[:1]])
    elif how == "index":
        t.frame = f.rename_axis("h3_index")
    elif how == "dtype":
        t.frame = f.astype(np.float64)
    elif how == "mixed":
        other = area.region_ids(10)[:1]
        t.frame = pd.concat([f, pd.DataFrame([[0.0, 0.0]], index=pd.Index(other, name="region_id"), columns=f.columns, dtype=np.float32)])
    elif how == "badid":
        t.frame = f.rename(index={f.index[0]: "not-a-cell"})
    elif how == "columns":
        t.frame = f.rename(columns={"poi_0": "bakery"})
    return t


@pytest.mark.parametrize("how, message", [
    ("nan", "NaN or inf in 1 row"), ("inf", "NaN or inf"), ("dup", "duplicate cells"),
    ("index", "index must be named 'region_id'"), ("dtype", "must be float32"),
    ("mixed", r"mixed H3 resolutions \[9, 10\]"), ("badid", "invalid H3 cell id"), ("columns", "must be named 'poi_<i>'"),
])
def test_writer_refuses_broken_tables_and_writes_nothing(area, tmp_path, how, message):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UrbanReprError, match=message):
        write_table(broken(area, how), out / "t.parquet")
    assert list(out.iterdir()) == []


def test_reader_names_the_file_and_problem(area, tmp_path):
    good = tmp_path / "good.parquet"
    write_table(make_table(area), good)
    with pytest.raises(UrbanReprError, match=f"{good}: table is at resolution 9, expected 10"):
        read_table(good, resolution=10)
    with pytest.raises(UrbanReprError, match="belongs to study area 'amsterdam', expected 'porto_alegre'"):
        read_table(good, study_area="porto_alegre")
    other = build_area("porto_alegre", [9])
    with pytest.raises(UrbanReprError, match="16 cell\\(s\\) lie outside study area"):
        read_table(good, area_cells=other.cells(9))
    # a parquet written behind the contract's back is still checked on read
    t = make_table(area)
    arrow = pa.Table.from_pandas(t.frame.astype(np.float64))
    raw = tmp_path / "raw.parquet"
    metadata = {**arrow.schema.metadata, b"urbanrepml": pq.read_schema(good).metadata[b"urbanrepml"]}
    pq.write_table(arrow.replace_schema_metadata(metadata), raw)
    with pytest.raises(UrbanReprError, match=f"{raw}: columns must be float32"):
        read_table(raw)
    plain = tmp_path / "plain.parquet"
    t.frame.to_parquet(plain)
    with pytest.raises(UrbanReprError, match="no 'urbanrepml' metadata"):
        read_table(plain)
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(UrbanReprError, match="not a readable parquet file"):
        read_table(tmp_path / "junk.parquet")
    with pytest.raises(UrbanReprError, match="does not exist"):
        read_table(tmp_path / "missing.parquet")


def test_area_stage_on_a_user_written_toml(tracking, tmp_path, study_area_toml):
    import geopandas as gpd
    import mlflow
    from shapely.geometry import box

    from urbanrepml.stages.area import run_area_stage

    gpd.GeoDataFrame(geometry=[box(4.89, 52.36, 4.90, 52.37)], crs=4326).to_crs(3857).to_file(tmp_path / "mine.geojson")
    toml = study_area_toml("mine", "mine.geojson")
    area = run_area_stage(str(toml), "8,9")
    run = mlflow.search_runs(experiment_names=["urbanrepml-mine"], output_format="list")[0]
    assert run.data.metrics["cells_res9"] == len(area.cells(9)) > 0
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"study_area.toml", "boundary", "mine_cells_res9"}


def test_publish_on_success_keeps_the_old_table_when_the_body_fails(area, tmp_path):
    from urbanrepml.tables import publish_on_success

    target = tmp_path / "out" / "poi_res9.parquet"
    with publish_on_success(make_table(area), target) as table:
        assert table.path != target and table.path.is_file()  # staged beside the target until the body succeeds
    assert table.path == target
    before = target.read_bytes()
    new = make_table(area, values=np.ones((16, 2)))
    with pytest.raises(RuntimeError):
        with publish_on_success(new, target):
            raise RuntimeError("logging failed")
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["poi_res9.parquet"]  # no staging leftovers
