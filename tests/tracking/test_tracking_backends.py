"""Tracking stores as the README names them: a plain postgresql:// URI (real PostgreSQL), concurrent SQLite writers."""

from __future__ import annotations

import subprocess
import sys

from mlflow.tracking import MlflowClient

from tests.support.mlflow_server import mlflow_server
from tests.support.processes import REPO, clean_env

# `python -m urbanrepml area ...` with psycopg 3 hidden, as on a machine that has only psycopg2
_WITHOUT_PSYCOPG3 = ("import sys; sys.modules['psycopg'] = None; from urbanrepml.stages.cli import main; "
                     "main(sys.argv[1:])")


def test_plain_postgresql_uri_as_the_readme_writes_it(pg_database, tmp_path):
    """`mlflow server --backend-store-uri postgresql://user@host/db` serves, and stages write to that URI directly."""
    assert pg_database.startswith("postgresql://")
    (tmp_path / "srv").mkdir()
    with mlflow_server(tmp_path / "srv", backend_uri=pg_database) as url:  # creates the schema with psycopg 3
        assert MlflowClient(url).search_experiments()
    for hide, name in ((False, "pg_direct"), (True, "pg_psycopg2")):
        toml = tmp_path / f"{name}.toml"
        toml.write_text(f'name = "{name}"\nboundary = [4.8906, 52.3657, 4.9037, 52.3737]\n')
        args = ["area", "--study_area", str(toml), "--resolutions", "9"]
        cmd = [sys.executable, "-c", _WITHOUT_PSYCOPG3, *args] if hide else [sys.executable, "-m", "urbanrepml", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
                              env=clean_env(MLFLOW_TRACKING_URI=pg_database, PYTHONPATH=str(REPO),
                                            URBANREPML_DATA_DIR=str(tmp_path / "data")))
        assert proc.returncode == 0, proc.stderr[-3000:]
        client = MlflowClient(pg_database.replace("postgresql://", "postgresql+psycopg2://"))
        (run,) = client.search_runs([client.get_experiment_by_name(f"urbanrepml-{name}").experiment_id])
        assert run.info.status == "FINISHED" and run.data.metrics["cells_res9"] == 16


def test_postgresql_uri_normalised_for_the_installed_driver(monkeypatch):
    from urbanrepml.tracking.store import resolve_tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgres://u@h:5432/db")
    assert resolve_tracking_uri() == "postgresql://u@h:5432/db"
    monkeypatch.setitem(sys.modules, "psycopg", None)
    assert resolve_tracking_uri() == "postgresql+psycopg2://u@h:5432/db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql+psycopg2://u@h/db")
    assert resolve_tracking_uri() == "postgresql+psycopg2://u@h/db"
