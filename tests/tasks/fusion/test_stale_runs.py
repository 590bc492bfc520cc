"""Runs whose process died: `runs close-stale` marks them FAILED; a server killed mid-run fails the stage in bounded time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from mlflow.tracking import MlflowClient

from tests.support.mlflow_server import mlflow_server
from tests.support.processes import REPO, clean_env, fuse_command

HOUR_MS = 3_600_000


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_close_stale_by_dead_process_or_age(tracking, capsys):
    import psutil

    from urbanrepml.tracking.stale import main

    client = MlflowClient(tracking)
    exp = client.create_experiment(f"stale-{os.getpid()}-{time.time_ns()}")
    host, now = socket.gethostname(), int(time.time() * 1000)
    me = f"{psutil.Process().create_time():.2f}"

    def run(name, start=now, **tags):
        return client.create_run(exp, start_time=start, run_name=name,
                                 tags={f"urbanrepml.{k}": v for k, v in tags.items()}).info.run_id

    dead = run("dead", host=host, pid=str(_dead_pid()))
    reused = run("reused", host=host, pid=str(os.getpid()), pid_started="12.00")  # the PID now names another process
    alive = run("alive", host=host, pid=str(os.getpid()), pid_started=me)
    old_elsewhere = run("old-elsewhere", start=now - 30 * HOUR_MS, host="elsewhere", pid="1")
    busy_elsewhere = run("busy-elsewhere", start=now - 30 * HOUR_MS, host="elsewhere", pid="1")
    client.log_metric(busy_elsewhere, "train_loss", 1.0, timestamp=now - HOUR_MS)  # logged an hour ago
    recent_elsewhere = run("recent-elsewhere", host="elsewhere", pid="1")

    main(["close-stale", "--dry_run"])
    out = capsys.readouterr().out
    assert {dead, reused, old_elsewhere} <= {line.split()[3] for line in out.splitlines() if line.startswith("would close run ")}
    assert client.get_run(dead).info.status == "RUNNING"  # a dry run changes nothing

    main(["close-stale"])
    out = capsys.readouterr().out
    status = {r: client.get_run(r).info.status for r in (dead, reused, alive, old_elsewhere, busy_elsewhere, recent_elsewhere)}
    assert status == {dead: "FAILED", reused: "FAILED", alive: "RUNNING", old_elsewhere: "FAILED",
                      busy_elsewhere: "RUNNING", recent_elsewhere: "RUNNING"}
    assert "is gone" in client.get_run(dead).data.tags["urbanrepml.closed_stale"]
    assert "nothing logged for 30.0 h" in client.get_run(old_elsewhere).data.tags["urbanrepml.closed_stale"]
    main(["close-stale", "--max_age_hours", "0.5"])  # busy-elsewhere's last metric is an hour old
    assert client.get_run(busy_elsewhere).info.status == "FAILED"
    assert client.get_run(recent_elsewhere).info.status == "RUNNING"
    for r in (alive, recent_elsewhere):
        client.set_terminated(r, "FINISHED")


def test_a_server_killed_mid_run_fails_the_stage_in_bounded_time(small_area, tmp_path):  # noqa: F811
    """The client gives up after MLflow's retries as the project bounds them: one line, exit 2, within a minute or so;
    with the server back, `runs close-stale` marks the orphaned run FAILED."""
    (tmp_path / "srv").mkdir()
    backend = f"sqlite:///{tmp_path / 'srv' / 'server.db'}"
    server = mlflow_server(tmp_path / "srv", backend_uri=backend)
    url = server.__enter__()
    try:
        env = clean_env(MLFLOW_TRACKING_URI=url, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO),
                        URBANREPML_DATA_DIR=str(tmp_path / "data"))
        for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
            env.pop(key, None)  # the project's bounds, not a test's
        client = MlflowClient(url)
        proc = subprocess.Popen(fuse_command(small_area, "--epochs", "400", "--checkpoint_every", "1", "--register", "false"),
                                env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        run_id, deadline = None, time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            exp = client.get_experiment_by_name(f"urbanrepml-{small_area['name']}")
            runs = client.search_runs([exp.experiment_id], "tags.`urbanrepml.model` = 'full_unet'") if exp else []
            if runs and client.list_artifacts(runs[0].info.run_id, "checkpoints"):
                run_id = runs[0].info.run_id
                break
            time.sleep(0.2)
        assert run_id is not None and proc.poll() is None, proc.stderr.read()[-2000:] if proc.poll() is not None else ""
    finally:
        server.__exit__(None, None, None)  # the server dies mid-run
    killed_at = time.monotonic()
    err = proc.communicate(timeout=300)[1]
    waited = time.monotonic() - killed_at
    ours = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(ours) == 1, err[-3000:]
    assert ours[0].startswith(f"error: tracking server {url} stopped answering"), ours[0]
    assert "Traceback" not in err
    assert waited < 150, f"the client stalled {waited:.0f} s after the server died"

    with mlflow_server(tmp_path / "srv", backend_uri=backend) as again:  # the server is back, the run orphaned
        client = MlflowClient(again)
        assert client.get_run(run_id).info.status == "RUNNING"
        closed = subprocess.run([sys.executable, "-m", "urbanrepml", "runs", "close-stale"], env={**env, "MLFLOW_TRACKING_URI": again},
                                cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
        assert closed.returncode == 0, closed.stderr[-2000:]
        assert client.get_run(run_id).info.status == "FAILED"
