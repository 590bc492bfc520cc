"""The README's command end to end: `mlflow run . -e fuse --env-manager local` on the bundled area, real server."""

from __future__ import annotations

import re

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.support.processes import run_mlflow_project
from urbanrepml.areas import h3ops
from urbanrepml.tables import read_table


@pytest.mark.e2e
def test_fuse_entry_point_builds_modalities_trains_and_registers(tracking_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")  # a short run still samples
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    proc = run_mlflow_project("fuse", {"epochs": 4, "checkpoint_every": 2}, tracking_server, tmp_path, experiment="fuse-e2e")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "INFO mlflow.system_metrics" not in proc.stderr  # the monitor's start/stop lines are silenced
    client = MlflowClient(tracking_server)
    exp = client.get_experiment_by_name("fuse-e2e")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`urbanrepml.stage` = 'fuse'")
    (run,) = runs
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["urbanrepml.model"] == "full_unet"
    # stage-1 tables were built first, as nested runs of the fuse run
    nested = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
    built = {r.data.tags["urbanrepml.modality"] for r in nested}
    assert {"poi", "roads", "gtfs", "raster"} <= built
    assert "skipping modality aerial" in proc.stdout
    # epochs, checkpoints, baselines, inputs, system metrics
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [1, 2, 3, 4]
    arts = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert {"checkpoints/epoch_0002.pt", "checkpoints/epoch_0004.pt", "checkpoints/best.pt"} <= arts
    assert {a.path for a in client.list_artifacts(run_id, "baselines")} == {
        "baselines/concat_res9.parquet", "baselines/ring_res9.parquet", "baselines/ringconcat_res9.parquet"}
    assert any(k.startswith("system/") for k in run.data.metrics)
    assert {d.dataset.name for d in run.inputs.dataset_inputs} >= {"poi_res9", "raster_res9"}
    # the fused table and the registered model answer the same numbers
    table = read_table(client.download_artifacts(run_id, "tables/fused_res9.parquet", str(tmp_path)))
    assert table.meta.modality == "fused" and table.meta.producer_run_id == run_id
    assert table.frame.shape[1] == 640 and len(table.frame) > 1000  # 5 members x 128, every cell of the area
    mv = client.get_model_version_by_alias("urbanrepml-porto_alegre", "candidate")
    assert mv.run_id == run_id
    # the embedding's composition is recorded on the version (and the run)
    assert mv.tags["embedding_kind"] == "code" and mv.tags["embedding"].startswith("code: 5 x full_unet")
    assert run.data.tags["urbanrepml.join"] == "outer" and run.data.tags["urbanrepml.transform"] == "asinh"
    mlflow.set_tracking_uri(tracking_server)
    model = mlflow.pyfunc.load_model("models:/urbanrepml-porto_alegre@candidate")
    ids = list(table.frame.index[:5])
    got = model.predict(pd.DataFrame({"region_id": ids}))
    np.testing.assert_allclose(got[table.frame.columns].to_numpy(), table.frame.loc[ids].to_numpy())
    # the README's predict example answers real numbers (a cell inside the area, with data)
    from tests.support.readme import quick_start as _quick_start

    (readme_cell,) = re.findall(r'"region_id": \["([0-9a-f]{15})"\]', _quick_start())
    answer = model.predict(pd.DataFrame({"region_id": [readme_cell]}))[table.frame.columns].to_numpy(float)
    assert np.isfinite(answer).all() and np.abs(answer).sum() > 0
    lat, lon = h3ops.cell_centroids(h3ops.parse_cells(ids[:2]))
    by_point = model.predict(pd.DataFrame({"lat": lat, "lon": lon}))
    assert list(by_point["region_id"]) == ids[:2]


def test_fuse_fails_on_a_corrupt_source_and_registers_nothing(tracking, tmp_path, study_area_toml):
    from urbanrepml.datasets import fetch
    from urbanrepml.errors import UrbanReprError
    from urbanrepml.stages.fuse import Params as FuseParams
    from urbanrepml.stages.fuse import run_fuse_stage

    pbf = (fetch("amsterdam") / "amsterdam_centre.osm.pbf").read_bytes()
    (tmp_path / "cut.osm.pbf").write_bytes(pbf[: len(pbf) // 2])
    toml = study_area_toml("cut", [4.8906, 52.3657, 4.9037, 52.3737], sources={"osm": "cut.osm.pbf"})
    with pytest.raises(UrbanReprError, match="cut.osm.pbf"):
        run_fuse_stage(FuseParams(study_area=str(toml), model="concat"))
    client = MlflowClient(tracking)
    assert client.search_registered_models("name = 'urbanrepml-cut'") == []
    runs = client.search_runs([client.get_experiment_by_name("urbanrepml-cut").experiment_id])
    assert runs and all(r.info.status == "FAILED" for r in runs)  # the fuse run and its nested poi run
