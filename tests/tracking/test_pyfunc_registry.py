"""The embedding pyfunc model and the registry, for real: SQLite store, and once through `mlflow server`."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from urbanrepml.areas import h3ops
from urbanrepml.errors import UrbanReprError
from urbanrepml.tables import EmbeddingTable, TableMeta, to_embedding_frame


def fused_table(study_area: str, area, run_id: str | None = None) -> EmbeddingTable:
    """fused_j of cell i = 10 * i + j, on the 16 res-9 cells of the bundled amsterdam box."""
    ids = area.region_ids(9)
    values = (10 * np.arange(16)[:, None] + np.arange(4)[None, :]).astype(np.float32)
    frame, names = to_embedding_frame(values, ids, "fused")
    meta = TableMeta("fused", 9, study_area, "fused", producer_run_id=run_id, feature_names=names)
    return EmbeddingTable(frame, meta)


def log_and_register(study_area: str, area, alias="candidate"):
    import mlflow

    from urbanrepml.tracking.pyfunc import log_embedding_model
    from urbanrepml.tracking.registry import register_embeddings

    mlflow.set_experiment(f"pyfunc-{study_area}")
    with mlflow.start_run() as run:
        info = log_embedding_model(fused_table(study_area, area, run.info.run_id))
    mv = register_embeddings(run.info.run_id, study_area, alias=alias)
    return run.info.run_id, info, mv


def check_predictions(model, area):
    ids = list(area.region_ids(9))
    # By region_id: input order kept, unknown / other-resolution / invalid / missing ids -> NaN rows.
    query = pd.DataFrame({"region_id": [ids[5], "89a90129dabffff", ids[0].upper(), "nonsense", None, ids[15]]})
    out = model.predict(query)
    assert list(out.columns) == ["region_id", "fused_0", "fused_1", "fused_2", "fused_3"]
    assert len(out) == 6
    np.testing.assert_array_equal(out.iloc[0, 1:].to_numpy(float), [50, 51, 52, 53])
    np.testing.assert_array_equal(out.iloc[2, 1:].to_numpy(float), [0, 1, 2, 3])
    np.testing.assert_array_equal(out.iloc[5, 1:].to_numpy(float), [150, 151, 152, 153])
    assert out.iloc[[1, 3, 4], 1:].isna().all().all()
    assert out["region_id"].iloc[0] == ids[5] and out["region_id"].iloc[2] == ids[0]
    # By lat/lon: each point -> its cell at the table's resolution.
    lat, lon = h3ops.cell_centroids(area.cells(9))
    by_point = model.predict(pd.DataFrame({"lat": [lat[3], -30.03, lat[7], np.nan], "lon": [lon[3], -51.2, lon[7], 4.9]}))
    assert list(by_point["region_id"][[0, 2]]) == [ids[3], ids[7]]
    np.testing.assert_array_equal(by_point.iloc[[0, 2], 1:].to_numpy(float), [[30, 31, 32, 33], [70, 71, 72, 73]])
    assert by_point.iloc[[1, 3], 1:].isna().all().all()
    # Integer coordinates are fine (outside the table here -> NaN), and rows without a region_id fall back to lat/lon.
    assert model.predict(pd.DataFrame({"lat": [52], "lon": [5]})).iloc[0, 1:].isna().all()
    mixed = model.predict(pd.DataFrame({"region_id": [ids[1], None], "lat": [0.0, lat[2]], "lon": [0.0, lon[2]]}))
    assert list(mixed["region_id"]) == [ids[1], ids[2]]
    np.testing.assert_array_equal(mixed.iloc[:, 1:].to_numpy(float), [[10, 11, 12, 13], [20, 21, 22, 23]])
    # Neither region_id nor lat/lon.
    with pytest.raises(Exception, match="needs a 'region_id' column"):
        model.predict(pd.DataFrame({"cell": ["x"]}))


def test_log_register_load_predict(tracking, amsterdam):
    import mlflow
    from mlflow.tracking import MlflowClient

    from urbanrepml.tracking.pyfunc import load_embedding_table
    from urbanrepml.tracking.registry import (
        get_version_by_alias,
        record_probe,
        registered_model_name,
        resolve_model_uri,
        set_alias,
    )

    area_name = f"pf_{uuid.uuid4().hex[:8]}"
    name = registered_model_name(area_name)
    assert name == f"urbanrepml-{area_name}"
    with pytest.raises(UrbanReprError, match=f"no registered model '{name}'"):
        resolve_model_uri(area_name)

    run_id, info, mv = log_and_register(area_name, amsterdam)
    assert str(mv.version) == "1" and mv.status == "READY" and mv.aliases == ["candidate"]
    assert mv.tags["urbanrepml.study_area"] == area_name and mv.tags["urbanrepml.resolution"] == "9"
    assert mv.tags["urbanrepml.producer_run_id"] == run_id and mv.tags["urbanrepml.dim"] == "4"
    assert mv.run_id == run_id
    assert info.signature.inputs.input_names() == ["region_id", "lat", "lon"]
    assert info.metadata["urbanrepml"]["n_cells"] == 16

    uri, note = resolve_model_uri(area_name)
    assert uri == f"models:/{name}@candidate" and note == f"no @champion for {name} yet; using @candidate (version 1)"

    model = mlflow.pyfunc.load_model(f"models:/{name}@candidate")
    check_predictions(model, amsterdam)

    table = load_embedding_table(uri)
    expected = fused_table(area_name, amsterdam).frame
    pd.testing.assert_frame_equal(table.frame, expected)
    assert table.meta.study_area == area_name and table.meta.producer_run_id == run_id

    # A second version takes the candidate alias; champion stays wherever it was put.
    _, _, mv2 = log_and_register(area_name, amsterdam)
    assert str(mv2.version) == "2" and str(get_version_by_alias(name, "candidate").version) == "2"
    set_alias(name, "champion", 1)
    assert resolve_model_uri(area_name) == (f"models:/{name}@champion", f"using models:/{name}@champion (version 1)")
    assert resolve_model_uri(area_name, f"models:/{name}/2")[1] == f"using models:/{name}/2 ({name} version 2)"
    assert resolve_model_uri(area_name, "runs:/abc/embedding_model") == ("runs:/abc/embedding_model", "using runs:/abc/embedding_model")
    assert get_version_by_alias(name, "nope") is None and get_version_by_alias("urbanrepml-nothing", "champion") is None

    recorded = record_probe(f"models:/{name}@champion", {"mean_r2": 0.4123456789, "r2_population": 0.5, "rmse_population": 1.25},
                            run_id="probe-run", folds_digest="f" * 64)
    assert str(recorded.version) == "1"
    assert recorded.tags["probe.mean_r2"] == "0.412346" and recorded.tags["probe.r2_population"] == "0.5"
    assert recorded.tags["probe.run_id"] == "probe-run" and recorded.tags["probe.folds_digest"] == "f" * 64
    assert MlflowClient().get_model_version(name, "2").tags.get("probe.mean_r2") is None
    assert record_probe((name, 2), {"mean_r2": 0.1}, "r", "d").tags["probe.mean_r2"] == "0.1"


def test_registry_bad_input(tracking, amsterdam):
    import mlflow

    from urbanrepml.tracking.pyfunc import load_embedding_table
    from urbanrepml.tracking.registry import record_probe, register_embeddings, resolve_model_uri

    area_name = f"pf_{uuid.uuid4().hex[:8]}"
    name = f"urbanrepml-{area_name}"
    with pytest.raises(UrbanReprError, match="not found in the tracking store; nothing registered"):
        register_embeddings("0" * 32, area_name)
    mlflow.set_experiment(f"pyfunc-bad-{area_name}")
    with mlflow.start_run() as bare:
        pass
    with pytest.raises(UrbanReprError, match=f"run {bare.info.run_id} has no model named 'embedding_model'"):
        register_embeddings(bare.info.run_id, area_name)
    # A failed run never registers, even when it logged a model.
    from urbanrepml.tracking.pyfunc import log_embedding_model

    with pytest.raises(RuntimeError):
        with mlflow.start_run() as failed:
            log_embedding_model(fused_table(area_name, amsterdam))
            raise RuntimeError("training crashed")
    assert mlflow.get_run(failed.info.run_id).info.status == "FAILED"
    with pytest.raises(UrbanReprError, match="is FAILED, not FINISHED"):
        register_embeddings(failed.info.run_id, area_name)
    # Nor does a run that is still RUNNING (e.g. one killed by SIGKILL, which nobody closed).
    with mlflow.start_run() as running:
        log_embedding_model(fused_table(area_name, amsterdam))
        with pytest.raises(UrbanReprError, match="is RUNNING, not FINISHED"):
            register_embeddings(running.info.run_id, area_name)
    # Embeddings of one study area never go into another's registered model.
    with mlflow.start_run() as ok:
        log_embedding_model(fused_table(area_name, amsterdam))
    with pytest.raises(UrbanReprError, match=f"embeddings are of study area '{area_name}', not 'porto_alegre'"):
        register_embeddings(ok.info.run_id, "porto_alegre")
    with pytest.raises(UrbanReprError, match=f"no registered model '{name}'"):
        resolve_model_uri(area_name)
    mv = register_embeddings(ok.info.run_id, area_name, alias=None)
    assert mv.aliases == []
    with pytest.raises(UrbanReprError, match="has neither a @champion nor a @candidate alias"):
        resolve_model_uri(area_name)
    with pytest.raises(UrbanReprError, match=f"registered model '{name}' has no alias 'champion'"):
        resolve_model_uri(area_name, f"models:/{name}@champion")
    with pytest.raises(UrbanReprError, match=f"registered model '{name}' has no version 7"):
        record_probe((name, 7), {"mean_r2": 0.1}, "r", "d")
    with pytest.raises(UrbanReprError, match="is not a registered model version"):
        record_probe("runs:/abc/embedding_model", {"mean_r2": 0.1}, "r", "d")
    with pytest.raises(UrbanReprError, match="cannot load embedding model"):
        load_embedding_table(f"models:/{name}@nope")


def test_register_and_load_through_mlflow_server(tracking_server, amsterdam, monkeypatch):
    import mlflow

    from urbanrepml.tracking.pyfunc import load_embedding_table
    from urbanrepml.tracking.registry import resolve_model_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server)
    mlflow.set_tracking_uri(tracking_server)
    area_name = f"srv_{uuid.uuid4().hex[:8]}"
    run_id, info, mv = log_and_register(area_name, amsterdam)
    assert mv.status == "READY" and mv.aliases == ["candidate"]
    uri, note = resolve_model_uri(area_name)
    assert note.startswith("no @champion")
    model = mlflow.pyfunc.load_model(uri)
    check_predictions(model, amsterdam)
    assert load_embedding_table(uri).frame.shape == (16, 4)
