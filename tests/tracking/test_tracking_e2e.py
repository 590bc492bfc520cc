"""Entry points against a real `mlflow server`, read back through the client."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.support import REPO
from tests.support.processes import run_mlflow_project

pytestmark = pytest.mark.e2e


def test_area_entry_point_end_to_end(tracking_server, tmp_path):
    proc = run_mlflow_project("area", {"study_area": "amsterdam", "resolutions": "8,9"}, tracking_server, tmp_path, experiment="area-e2e")
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(tracking_server)
    exp = client.get_experiment_by_name("area-e2e")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["urbanrepml.stage"] == "area"
    assert run.data.params["resolutions"] == "8,9"
    assert run.data.metrics["cells_res9"] == 16 and run.data.metrics["cells_res8"] == 7
    assert run.data.metrics["edges_res9"] == 32  # undirected 1-ring edges among the 16 cells
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "area")}
    assert {"area/boundary.geojson", "area/cells_res8.parquet", "area/cells_res9.parquet"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "figures")] == ["figures/cells_res9.html", "figures/cells_res9.png"]
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert "study_area.toml" in inputs and "amsterdam_cells_res9" in inputs
    assert len(inputs["study_area.toml"].dataset.digest) == 32


def test_area_failure_marks_run_failed(tracking_server, tmp_path):
    proc = run_mlflow_project("area", {"study_area": "porto_alegre", "resolutions": "9", "max_cells": 100}, tracking_server, tmp_path,
                              experiment="area-fail")
    assert proc.returncode != 0
    assert "over the limit of 100" in proc.stderr
    client = MlflowClient(tracking_server)
    (run,) = client.search_runs([client.get_experiment_by_name("area-fail").experiment_id])
    assert run.info.status == "FAILED"
    assert "cells_res9" not in run.data.metrics


def test_server_down_is_one_clear_line(tmp_path):
    from tests.support.mlflow_server import free_port

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}", "URBANREPML_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(REPO / "entrypoints" / "area.py")], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: tracking server http://127.0.0.1:") and "not reachable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
