"""The `tune` entry point and the study logic on a real SQLite store (and the real PostgreSQL server).

Fusion trials run on Porto Alegre under its own name with a stand-in modality table (random Fourier
features of the cell centres, tests/support/tables.py) and tiny epoch budgets; the infrastructure
checks use a cheap objective (tests/support/tune_objectives.py).
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.support import REPO
from tests.support.areas import poa_area
from tests.support.processes import clean_env, entry_main, entry_process
from tests.support.tables import log_modality_table
from tests.support.tune_objectives import SlowQuadratic
from urbanrepml.errors import UrbanReprError


def _children(client: MlflowClient, parent) -> list:
    return client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")


@pytest.mark.e2e
def test_tune_fusion_end_to_end_and_continue(tracking, tmp_path, capsys):
    """`mlflow run . -e tune` on a small area: nested trial runs, best on the parent, plots, candidate registered; continue."""
    area = poa_area(tmp_path, "poa_tune")
    log_modality_table(area)
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "tune", "--env-manager", "local",
           "--experiment-name", "urbanrepml-poa_tune", "-P", f"study_area={area}", "-P", "n_trials=2", "-P", "max_epochs=2",
           "-P", "models=full_unet,ring", "-P", "sampler=random"]
    env = clean_env(URBANREPML_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "registered urbanrepml-poa_tune/1 with alias candidate" in proc.stdout
    # progress: a line when each trial starts and one when it finishes, with the study's count
    lines = proc.stdout.splitlines()
    assert sum(" started" in line and line.startswith("tune[") for line in lines) == 2
    assert any(line.startswith("tune[") and line.endswith("(study: 2 finished)") for line in lines)

    optuna_db = f"sqlite:///{Path(tracking[len('sqlite:///'):]).parent / 'optuna.db'}"  # beside the tracking store
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("urbanrepml-poa_tune")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.`urbanrepml.stage` = 'tune'")
    assert parent.info.status == "FINISHED"
    p, m = parent.data.params, parent.data.metrics
    assert p["tune.study_name"] == "tune-poa_tune" and p["tune.storage"] == optuna_db
    assert m["trials_finished"] == 2 and m["trials_failed"] == 0
    assert -1 < m["baseline_concat_mean_r2"] < 1 and -1 < m["baseline_ring_mean_r2"] < 1
    trials = _children(client, parent)
    assert len(trials) == 2 and all(t.data.tags["urbanrepml.stage"] == "tune_trial" for t in trials)
    scores = {t.info.run_id: t.data.metrics["score"] for t in trials if t.data.tags["optuna.trial_state"] == "COMPLETE"}
    best_run = parent.data.tags["urbanrepml.best_run_id"]
    assert m["best_score"] == pytest.approx(max(scores.values())) == pytest.approx(scores[best_run])
    best = client.get_run(best_run)
    assert best.data.metrics["inner_mean_r2"] == pytest.approx(m["best_score"])  # the objective: inner folds only
    assert {k: v for k, v in p.items() if k.startswith("best.")} == {f"best.{k}": v for k, v in best.data.params.items()
                                                                     if k == "model" or k.startswith(("unet.", "ring.", "cone."))}
    for t in trials:
        if t.data.params["model"] == "full_unet":  # per-epoch validation loss and the pruning signal
            assert [x.step for x in client.get_metric_history(t.info.run_id, "val_reconstruction")] == [1, 2]
            hist = client.get_metric_history(t.info.run_id, "intermediate_value")
            val = client.get_metric_history(t.info.run_id, "val_reconstruction")
            assert [x.value for x in hist] == pytest.approx([-x.value for x in val])
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert "figures/optimization_history.html" in figures
    # the best trial's embeddings: version 1 of urbanrepml-poa_tune, alias candidate, loadable, with its baselines
    mv = client.get_model_version_by_alias("urbanrepml-poa_tune", "candidate")
    assert str(mv.version) == "1" and mv.run_id == best_run
    from urbanrepml.tables import read_table

    fused = read_table(client.download_artifacts(best_run, "tables/fused_res9.parquet", str(tmp_path / "dl")))
    ids = list(fused.frame.index[:3])
    emb = mlflow.pyfunc.load_model("models:/urbanrepml-poa_tune@candidate").predict(pd.DataFrame({"region_id": ids}))
    assert emb[list(fused.frame.columns)].to_numpy(float) == pytest.approx(fused.frame.loc[ids].to_numpy(float))
    baselines = {a.path for a in client.list_artifacts(best_run, "baselines")}
    assert baselines >= {"baselines/concat_res9.parquet", "baselines/ring_res9.parquet"}

    # Same study_name + storage: the study continues (2 -> 3 finished), a new parent run, no duplicate registration.
    code, out, err = entry_main("tune.py", ["--study_area", area, "--n_trials", "1", "--max_epochs", "2", "--models", "full_unet,ring",
                                       "--sampler", "random"], capsys)
    assert code == 0, err[-4000:]
    assert "continuing from 2 trials" in out
    study = optuna.load_study(study_name="tune-poa_tune", storage=optuna_db)
    assert len(study.trials) == 3
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`urbanrepml.stage` = 'tune'")
    assert len(parents) == 2


@pytest.mark.e2e
def test_bad_input_lines(tracking, tmp_path, capsys):
    # n_trials=0
    code, _, err = entry_main("tune.py", ["--study_area", "porto_alegre", "--n_trials", "0"], capsys)
    assert code == 2 and err.strip() == "error: n_trials must be at least 1, got 0"
    # unreachable PostgreSQL URL: named, password hidden, one line, no run left behind
    from tests.support.mlflow_server import free_port

    secret = "s3cr3t-" + secrets.token_hex(4)
    url = f"postgresql://alice:{secret}@127.0.0.1:{free_port()}/optuna"
    code, out, err = entry_main("tune.py", ["--study_area", "porto_alegre", "--n_trials", "2", "--storage", url], capsys)
    assert code == 2, err
    line = err.strip()
    assert len(line.splitlines()) == 1 and secret not in err + out
    # the driver is psycopg 3 (a bare postgresql://) when installed, else psycopg2
    assert re.match(r"error: optuna storage postgresql(\+psycopg2)?://alice:\*\*\*@127\.0\.0\.1:", line), line
    assert "not reachable" in line
    exp = MlflowClient(tracking).get_experiment_by_name("urbanrepml-porto_alegre")
    if exp is not None:
        assert not MlflowClient(tracking).search_runs([exp.experiment_id], filter_string="tags.`urbanrepml.stage` = 'tune'")
    # a storage that is neither a URL nor a known file kind
    code, _, err = entry_main("tune.py", ["--study_area", "porto_alegre", "--storage", "somewhere.txt"], capsys)
    assert code == 2 and "neither a URL nor a .db/.journal file" in err
    # the CLI itself: one line on stderr, exit 2 (one real process)
    proc = entry_process("tune.py", ["--study_area", "porto_alegre", "--n_trials", "0"], tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: n_trials must be at least 1, got 0"


def test_same_name_other_space_is_refused_and_states_are_recorded(tracking, tmp_path):
    from tuning.study import run_tuning

    storage = f"sqlite:///{tmp_path / 'q.db'}"
    res = run_tuning("quad_area", SlowQuadratic(steps=4, step_seconds=0.0, fail_above=2.2), n_trials=8, study_name="q",
                     storage=storage, pruner="median", sampler="random", seed=3, max_resource=4)
    assert res.n_finished == 8 and res.n_complete + res.n_pruned == 8
    study = optuna.load_study(study_name="q", storage=storage)
    client = MlflowClient(tracking)
    parent = client.get_run(res.parent_run_id)
    runs = {int(r.data.tags["optuna.trial_number"]): r for r in _children(client, parent)}
    assert set(runs) == {t.number for t in study.trials}
    for t in study.trials:
        r = runs[t.number]
        assert r.data.tags["optuna.trial_state"] == t.state.name
        assert float(r.data.params["x"]) == pytest.approx(t.params["x"])
        assert r.info.status == ("FAILED" if t.state.name == "FAIL" else "FINISHED")
        if t.state.name == "FAIL":
            assert "above 2.2" in r.data.tags["optuna.fail_reason"]
        if t.state.name == "COMPLETE":
            assert r.data.metrics["score"] == pytest.approx(t.value)
        hist = client.get_metric_history(r.info.run_id, "intermediate_value")
        assert {h.step: h.value for h in hist} == pytest.approx(dict(t.intermediate_values))
    assert parent.data.metrics["best_score"] == pytest.approx(study.best_value)
    assert float(parent.data.params["best.x"]) == pytest.approx(study.best_params["x"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "figures")} == {
        "figures/optimization_history.html", "figures/param_importances.html",
        "figures/optimization_history.png", "figures/param_importances.png"}

    with pytest.raises(UrbanReprError, match=r"study 'q' in sqlite:///.*q\.db exists with a different search space \(x changed\)"):
        run_tuning("quad_area", SlowQuadratic(steps=4, step_seconds=0.0, high=5.0), n_trials=1, study_name="q", storage=storage)
    assert len(optuna.load_study(study_name="q", storage=storage).trials) == len(study.trials)


def test_postgres_storage_password_never_logged(pg_database, tracking, capfd):
    from tuning.study import run_tuning

    secret = "pw-" + secrets.token_hex(6)
    url = pg_database.replace("postgres@", f"postgres:{secret}@")  # trust auth: accepted, and must never be shown
    res = run_tuning("quad_pg", SlowQuadratic(steps=2, step_seconds=0.0), n_trials=3, study_name="pg", storage=url,
                     sampler="random", heartbeat_interval=1)
    assert res.n_finished == 3 and secret not in res.storage and "***" in res.storage
    client = MlflowClient(tracking)
    parent = client.get_run(res.parent_run_id)
    for run in [parent, *_children(client, parent)]:
        for key, value in {**run.data.params, **run.data.tags}.items():
            assert secret not in key and secret not in value, key
    out = capfd.readouterr()
    assert secret not in out.out + out.err
    assert re.match(r"postgresql(\+psycopg2)?://postgres:\*\*\*@127\.0\.0\.1:5432/", parent.data.params["tune.storage"])
