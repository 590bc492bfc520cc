"""Fuse stage with a real SQLite store: resume after a real SIGKILL, torchrun with 2 processes, bad input."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.support import REPO
from tests.support.processes import fuse_command
from urbanrepml.tables import read_table


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _runs(client: MlflowClient, area: dict, model: str | None = None):
    exp = client.get_experiment_by_name(f"urbanrepml-{area['name']}")
    if exp is None:
        return []
    flt = f"tags.`urbanrepml.model` = '{model}'" if model else ""
    return client.search_runs([exp.experiment_id], filter_string=flt, order_by=["attributes.start_time ASC"])


def _fused(client: MlflowClient, run_id: str, dst: Path):
    return read_table(client.download_artifacts(run_id, "tables/fused_res9.parquet", str(dst))).frame


@pytest.mark.e2e
def test_resume_after_sigkill_matches_uninterrupted_run(tracking, small_area, tmp_path):
    client = MlflowClient(tracking)
    # Enough epochs after the epoch-6 checkpoint that the kill lands mid-training even on a fast machine.
    args = ("--epochs", "60", "--checkpoint_every", "3", "--seed", "7", "--dropout", "0.1")
    victim = subprocess.Popen(fuse_command(small_area, *args, "--register", "false"), env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    twin = None
    run_id = None
    deadline = time.time() + 120
    while time.time() < deadline and victim.poll() is None:
        runs = _runs(client, small_area, "full_unet")
        if runs:
            run_id = runs[0].info.run_id
            if twin is None:  # the uninterrupted twin runs meanwhile (another run, same seed and parameters)
                twin = subprocess.Popen(fuse_command(small_area, *args, "--register", "false"), env=_env(),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            names = [a.path for a in client.list_artifacts(run_id, "checkpoints")]
            if "checkpoints/epoch_0006.pt" in names:
                break
        time.sleep(0.05)
    assert run_id is not None and victim.poll() is None, "the run finished before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert twin.wait(timeout=180) == 0, twin.stderr.read()[-2000:]
    killed = client.get_run(run_id)
    assert killed.info.status == "RUNNING"  # killed: nobody closed it
    assert "tables/fused_res9.parquet" not in [a.path for a in client.list_artifacts(run_id, "tables")]
    done_before = max(m.step for m in client.get_metric_history(run_id, "train_loss"))
    assert 6 <= done_before < 60

    resumed = subprocess.run(fuse_command(small_area, *args, "--resume_run_id", run_id), env=_env(),
                             capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = _runs(client, small_area, "full_unet")
    assert len(runs) == 2  # the resumed run is the killed one, not a new run
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert int(run.data.tags["urbanrepml.resumed_from_epoch"]) >= 6
    for key in ("train_loss", "val_loss", "lr"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == list(range(1, 61)), key  # every epoch once, none twice
    twin_id = next(r.info.run_id for r in runs if r.info.run_id != run_id)
    a = _fused(client, run_id, tmp_path / "a")
    b = _fused(client, twin_id, tmp_path / "b")
    assert a.shape == (small_area["n_cells"], 5 * 32)  # the default ensemble: 5 members x width 32
    assert a.index.equals(b.index)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())  # bit-identical on CPU
    # only the resumed run registered, with alias candidate
    mv = client.get_model_version_by_alias(f"urbanrepml-{small_area['name']}", "candidate")
    assert mv.run_id == run_id
    hist = {m.step: m.value for m in client.get_metric_history(run_id, "val_loss")}
    twin_hist = {m.step: m.value for m in client.get_metric_history(twin_id, "val_loss")}
    assert hist == twin_hist


@pytest.mark.e2e
def test_torchrun_two_processes_cone_unet(tracking, small_area):
    client = MlflowClient(tracking)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        fuse_command(small_area, "--model", "cone_unet", "--cone_root_resolution", "7", "--cone_batch", "4",
                  "--epochs", "2", "--checkpoint_every", "1", "--register", "false", launcher=launcher),
        env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = _runs(client, small_area, "cone_unet")  # rank 0 alone wrote records
    assert run.info.status == "FINISHED"
    assert run.data.tags["urbanrepml.world_size"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")} >= {
        "checkpoints/epoch_0001.pt", "checkpoints/epoch_0002.pt", "checkpoints/best.pt"}
    table = read_table(client.download_artifacts(run.info.run_id, "tables/fused_res9.parquet"))
    assert table.frame.shape == (small_area["n_cells"], 5 * 32)  # the default ensemble: 5 members x width 32
    assert np.isfinite(table.frame.to_numpy()).all()


def _main():
    spec = importlib.util.spec_from_file_location("fuse_entry", REPO / "entrypoints" / "fuse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _bad(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        _main()(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    ours = [l for l in err.splitlines() if " INFO mlflow" not in l]  # MLflow's own store-creation log lines
    assert len(ours) == 1 and ours[0].startswith("error: ") and "Traceback" not in err, err
    return ours[0]


def _fake_fuse_run(client, area, model: str, checkpoint: bytes | None) -> str:
    import mlflow

    mlflow.set_experiment(f"urbanrepml-{area['name']}")
    with mlflow.start_run() as run:
        mlflow.set_tags({"urbanrepml.stage": "fuse", "urbanrepml.model": model, "urbanrepml.study_area": area["name"]})
        if checkpoint is not None:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                f = Path(tmp) / "epoch_0003.pt"
                f.write_bytes(checkpoint)
                mlflow.log_artifact(str(f), "checkpoints")
    client.set_terminated(run.info.run_id, "FAILED")
    return run.info.run_id


def _versions(client, area) -> list:
    try:
        return client.search_model_versions(f"name = 'urbanrepml-{area['name']}'")
    except Exception:  # noqa: BLE001
        return []


def test_bad_input_is_one_line_and_registers_nothing(tracking, small_area, capsys):
    client = MlflowClient(tracking)
    base = ["--study_area", str(small_area["toml"]), "--tables", small_area["tables"], "--epochs", "1"]
    before = len(_versions(client, small_area))

    err = _bad(capsys, [*base, "--resume_run_id", "0123456789abcdef0123456789abcdef"])
    assert "no such run" in err

    other = _fake_fuse_run(client, small_area, "cone_unet", b"")
    err = _bad(capsys, [*base, "--resume_run_id", other])
    assert "trains model 'cone_unet'" in err

    corrupt = _fake_fuse_run(client, small_area, "full_unet", b"PK\x03\x04 this is not a checkpoint")
    err = _bad(capsys, [*base, "--resume_run_id", corrupt])
    assert "corrupt" in err and "epoch_0003.pt" in err

    mixed = f"{small_area['tables']},roads={small_area['roads8']}"
    err = _bad(capsys, ["--study_area", str(small_area["toml"]), "--tables", mixed, "--epochs", "1"])
    assert "different resolutions" in err

    err = _bad(capsys, [*base, "--hidden_dims", "32,64"])
    assert "hidden_dims" in err

    assert len(_versions(client, small_area)) == before  # nothing registered by any failed run
    failed = [r for r in _runs(client, small_area) if r.info.status == "FAILED" and r.data.tags.get("urbanrepml.stage") == "fuse"]
    assert all("tables/fused_res9.parquet" not in [a.path for a in client.list_artifacts(r.info.run_id, "tables")] for r in failed)


def test_resume_uses_and_checks_the_original_input_tables(tracking, tmp_path):
    import mlflow

    from urbanrepml.errors import UrbanReprError
    from urbanrepml.tables import file_digest
    from urbanrepml.tracking.checkpoints import check_resume_inputs, resume_tables

    mlflow.set_experiment("resume-inputs")
    table = tmp_path / "poi_res9.parquet"
    table.write_bytes(b"table v1")
    with mlflow.start_run() as producer:
        mlflow.log_artifact(str(table), artifact_path="tables")
    digest = file_digest(table)
    with mlflow.start_run() as fuse:
        mlflow.log_params({"inputs.modalities": "poi", "inputs.poi.run_id": producer.info.run_id,
                           "inputs.poi.sha256": digest[:16]})
    table.write_bytes(b"table v2: a newer poi run overwrote the local table")
    (got,) = resume_tables(fuse.info.run_id, 9, tmp_path / "dl").values()
    assert got.read_bytes() == b"table v1"  # the producer run's artifact, not the newer local file
    check_resume_inputs(fuse.info.run_id, {"poi": digest})
    with pytest.raises(UrbanReprError, match=r"its input tables changed \(poi\)"):
        check_resume_inputs(fuse.info.run_id, {"poi": file_digest(table)})
    with pytest.raises(UrbanReprError, match=r"changed \(poi, roads\)"):
        check_resume_inputs(fuse.info.run_id, {"poi": "0" * 64, "roads": "1" * 64})


def test_resume_through_mlflow_run_after_killing_the_process_group(small_area, tmp_path, monkeypatch):
    """The README's way: `mlflow run . -e fuse` on the store's tables (tables left empty), `kill -9` of its process
    group after a checkpoint, `runs close-stale` marks the run FAILED, then the same command with
    `-P resume_run_id=<id>` finishes THAT run, with the numbers of an uninterrupted twin."""
    from tests.support.processes import clean_env
    from urbanrepml.tracking import log_embedding_table, stage_run

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    for spec in small_area["tables"].split(","):  # the modality tables, as stage-1 runs in the store
        modality, path = spec.split("=", 1)
        with stage_run("modality", small_area["name"], tags={"modality": modality, "resolution": 9}):
            log_embedding_table(read_table(path))
    client = MlflowClient(store)
    env = clean_env(MLFLOW_TRACKING_URI=store, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO),
                    URBANREPML_DATA_DIR=str(tmp_path / "data"))
    params = {"study_area": str(small_area["toml"]), "resolutions": "7,8,9", "hidden_dims": "32,64,128",
              "epochs": 60, "checkpoint_every": 3, "seed": 7, "dropout": 0.1, "patience": 0}

    def mlflow_run(extra: dict, **kw) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "fuse", "--env-manager", "local",
               "--experiment-name", "resume-via-mlflow-run"]
        for k, v in {**params, **extra}.items():
            cmd += ["-P", f"{k}={v}"]
        return subprocess.Popen(cmd, env=env, cwd=tmp_path, text=True, start_new_session=True, **kw)

    victim = mlflow_run({"register": "false"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    twin = subprocess.Popen(fuse_command(small_area, "--tables", "", *(a for k, v in params.items() if k != "study_area"
                                                                      for a in (f"--{k}", str(v))), "--register", "false"),
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_id, deadline = None, time.time() + 240
    while time.time() < deadline and victim.poll() is None:
        exp = client.get_experiment_by_name("resume-via-mlflow-run")
        runs = client.search_runs([exp.experiment_id], "tags.`urbanrepml.model` = 'full_unet'") if exp else []
        if runs:
            run_id = runs[0].info.run_id
            if "checkpoints/epoch_0006.pt" in [a.path for a in client.list_artifacts(run_id, "checkpoints")]:
                break
        time.sleep(0.05)
    assert run_id is not None and victim.poll() is None, "the run finished before it could be killed"
    os.killpg(victim.pid, signal.SIGKILL)  # the CLI and the entry point it started, as `kill -9 -<pgid>`
    victim.wait()
    assert twin.wait(timeout=300) == 0, twin.stderr.read()[-2000:]
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody could close it

    closed = subprocess.run([sys.executable, "-m", "urbanrepml", "runs", "close-stale"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert closed.returncode == 0, closed.stderr[-2000:]
    assert f"closed run {run_id} " in closed.stdout and "is gone" in closed.stdout
    killed = client.get_run(run_id)
    assert killed.info.status == "FAILED" and "is gone" in killed.data.tags["urbanrepml.closed_stale"]
    assert "closed 1 stale run(s)" in closed.stdout  # the twin and the table runs ended normally

    resumed = mlflow_run({"resume_run_id": run_id}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and int(run.data.tags["urbanrepml.resumed_from_epoch"]) >= 6
    for key in ("train_loss", "val_loss"):
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == list(range(1, 61)), key
    twin_id = next(r.info.run_id for r in _runs(client, small_area, "full_unet"))
    a, b = _fused(client, run_id, tmp_path / "a"), _fused(client, twin_id, tmp_path / "b")
    assert a.index.equals(b.index)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())  # bit-identical on CPU
    assert client.get_model_version_by_alias(f"urbanrepml-{small_area['name']}", "candidate").run_id == run_id


def test_an_unregistered_fuse_run_keeps_the_candidates_local_table(tracking, small_area, tmp_path):
    """`-P register=false` registers nothing and never overwrites the local table that `@candidate` answers with."""
    from urbanrepml.stages.fuse import Params, run_fuse_stage
    from urbanrepml.stages.modality import table_path

    registered = run_fuse_stage(Params(study_area=str(small_area["toml"]), model="concat", tables=small_area["tables"]))
    local = table_path(small_area["name"], "fused", 9)
    assert registered.path == local and read_table(local).meta.producer_run_id == registered.meta.producer_run_id
    before = local.read_bytes()
    other = run_fuse_stage(Params(study_area=str(small_area["toml"]), model="ring", tables=small_area["tables"], register=False))
    assert local.read_bytes() == before  # still the registered version's table
    assert other.path == local.parent / "unregistered" / other.meta.producer_run_id / "fused_res9.parquet"
    assert read_table(other.path).meta.producer_run_id == other.meta.producer_run_id
    mv = MlflowClient(tracking).get_model_version_by_alias(f"urbanrepml-{small_area['name']}", "candidate")
    assert mv.run_id == registered.meta.producer_run_id
