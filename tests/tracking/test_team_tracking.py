"""Tracking at team scale, for real: `mlflow server` on PostgreSQL with served artifacts, and basic-auth.

Both run an entry point through `mlflow run` against the server and read the run back.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from tests.support import REPO
from tests.support.mlflow_server import mlflow_server
from tests.support.pg import connect
from tests.support.processes import clean_env

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def run_entry(entry: str, params: dict, env_extra: dict, cwd, experiment: str):
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", entry, "--env-manager", "local", "--experiment-name", experiment]
    for k, v in params.items():
        cmd += ["-P", f"{k}={v}"]
    env = clean_env(URBANREPML_DATA_DIR=str(cwd / "data"), **env_extra)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def _request(url: str, auth: tuple[str, str] | None = None) -> int:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=90) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _no_secret_in_run(run, secret: str) -> None:
    for key, value in {**run.data.params, **run.data.tags}.items():
        assert secret not in key and secret not in str(value), f"password leaked into {key}"


def test_postgres_backend_with_served_artifacts(pg_database, tmp_path):
    db_name = pg_database.rsplit("/", 1)[1]
    # A password in the backend URL stays on the server (trust auth ignores it; it must not reach any client record).
    secret = "pg-" + secrets.token_hex(6)
    backend = pg_database.replace("postgresql://postgres@", f"postgresql+psycopg2://postgres:{secret}@")
    workdir = tmp_path / "server"
    workdir.mkdir()
    with mlflow_server(workdir, backend_uri=backend) as url:
        proc = run_entry("area", {"study_area": "amsterdam", "resolutions": "8,9"}, {"MLFLOW_TRACKING_URI": url}, tmp_path, "team-pg")
        assert proc.returncode == 0, proc.stderr[-3000:]
        client = MlflowClient(url)
        (run,) = client.search_runs([client.get_experiment_by_name("team-pg").experiment_id])
        assert run.info.status == "FINISHED"
        assert run.data.metrics["cells_res9"] == 16 and run.data.metrics["cells_res8"] == 7
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served through the server
        arts = {a.path for a in client.list_artifacts(run.info.run_id, "area")}
        assert "area/cells_res9.parquet" in arts
        local = client.download_artifacts(run.info.run_id, "area/cells_res9.parquet", str(tmp_path))
        assert os.path.getsize(local) > 0
        assert list((workdir / "artifacts").rglob("cells_res9.parquet")), "artifact not stored by the server"
        _no_secret_in_run(run, secret)
        assert secret not in proc.stdout + proc.stderr
    # The run really lives in PostgreSQL.
    conn = connect(db_name)
    cur = conn.cursor()
    cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
    assert cur.fetchone() == ("FINISHED",)
    cur.execute("SELECT value FROM metrics WHERE run_uuid = %s AND key = 'cells_res9'", (run.info.run_id,))
    assert cur.fetchone()[0] == 16
    conn.close()


def test_basic_auth_server(tmp_path):
    admin_pw = "adm-" + secrets.token_hex(8)
    user_pw = "usr-" + secrets.token_hex(8)
    workdir = tmp_path / "server"
    workdir.mkdir()
    ini = workdir / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{workdir / 'basic_auth.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
    )
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_pw,
    }
    with mlflow_server(workdir, extra_args=["--app-name", "basic-auth"], env=env) as url:
        api = url + "/api/2.0/mlflow/experiments/search?max_results=10"
        assert _request(api) == 401  # no credentials
        assert _request(api, ("admin", "wrong")) == 401
        assert _request(api, ("admin", admin_pw)) == 200
        # The admin creates a user; that user's runs authenticate through the environment.
        req = urllib.request.Request(
            url + "/api/2.0/mlflow/users/create", method="POST",
            data=json.dumps({"username": "alice", "password": user_pw}).encode(),
            headers={"Content-Type": "application/json",
                     "Authorization": "Basic " + base64.b64encode(f"admin:{admin_pw}".encode()).decode()},
        )
        with urllib.request.urlopen(req, timeout=90) as resp:
            assert resp.status == 200
        creds = {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": user_pw}
        proc = run_entry("area", {"study_area": "amsterdam", "resolutions": "9"}, creds, tmp_path, "team-auth")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert user_pw not in proc.stdout + proc.stderr and admin_pw not in proc.stdout + proc.stderr

        # Unauthenticated: refused. The same call with alice's credentials reads the run back.
        env_backup = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
        try:
            with pytest.raises(Exception, match="401|Unauthorized|UNAUTHENTICATED"):
                MlflowClient(url).search_experiments()
            os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "alice", user_pw
            client = MlflowClient(url)
            exp = client.get_experiment_by_name("team-auth")
            (run,) = client.search_runs([exp.experiment_id])
        finally:
            for k, v in env_backup.items():
                os.environ.pop(k, None)
                if v is not None:
                    os.environ[k] = v
        assert run.info.status == "FINISHED"
        assert run.data.metrics["cells_res9"] == 16
        _no_secret_in_run(run, user_pw)
        _no_secret_in_run(run, admin_pw)
    log = "".join(p.read_text() for p in workdir.glob("server-*.log"))
    assert user_pw not in log
