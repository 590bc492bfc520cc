"""Two real worker processes share one study on the real PostgreSQL server; one is SIGKILLed mid-trial.

The killed trial must end FAIL through the heartbeat, be retried once with the same parameters, and the
study must end with exactly the asked number of finished trials, none run twice. Cheap objective: the
point is the storage/worker logic (fusion trials are exercised in test_tuning.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.support import REPO
from tests.support.processes import clean_env
from tests.support.tune_objectives import SlowQuadratic

pytestmark = pytest.mark.e2e

TARGET = 6


def _worker(url: str, study: str, parent: str, experiment: str, name: str, objective: SlowQuadratic) -> subprocess.Popen:
    factory, kwargs = objective.factory
    cmd = [sys.executable, "-m", "tuning.worker", "--storage", url, "--study_name", study, "--target", str(TARGET),
           "--parent_run_id", parent, "--experiment_id", experiment, "--objective", factory,
           "--objective_kwargs", json.dumps(kwargs), "--sampler", "random", "--pruner", "none",
           "--heartbeat_interval", "1", "--grace_period", "3", "--worker", name]
    env = clean_env(PYTHONPATH=str(REPO))
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_two_workers_one_killed(pg_database, tracking, tmp_path):
    from tuning.study import open_study

    objective = SlowQuadratic(steps=6, step_seconds=0.5)
    study_name = "workers-pg"
    study, url = open_study(pg_database, study_name, objective, sampler="random", pruner="none", heartbeat_interval=1, grace_period=3)
    assert url.startswith(("postgresql://", "postgresql+psycopg2://"))  # psycopg 3 when installed, else psycopg2
    client = MlflowClient()
    experiment = client.create_experiment("workers-pg")
    parent = client.create_run(experiment, run_name="tune-parent").info.run_id

    a = _worker(url, study_name, parent, experiment, "A", objective)
    b = _worker(url, study_name, parent, experiment, "B", objective)
    try:
        # Wait until A is in the middle of a trial (it has reported at least one step), then kill it.
        deadline = time.monotonic() + 120
        victim = None
        while time.monotonic() < deadline and victim is None:
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.user_attrs.get("worker") == "A" and len(t.intermediate_values) >= 1:
                    victim = t
                    break
            else:
                time.sleep(0.2)
        assert victim is not None, "worker A never ran a trial: " + (a.stdout.read() if a.poll() is not None else "")
        os.killpg(a.pid, signal.SIGKILL)
        a.wait(timeout=10)
        out_b, _ = b.communicate(timeout=150)
    finally:
        for p in (a, b):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert a.returncode == -signal.SIGKILL
    assert b.returncode == 0, out_b[-3000:]

    trials = optuna.load_study(study_name=study_name, storage=url).get_trials()
    by_state = {s: [t for t in trials if t.state == s] for s in TrialState}
    finished = by_state[TrialState.COMPLETE] + by_state[TrialState.PRUNED]
    assert len(finished) == TARGET  # exactly what was asked, with two workers and a death
    assert not by_state[TrialState.RUNNING] and not by_state[TrialState.WAITING]

    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL  # failed by B's heartbeat check, not by anyone finishing it
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params and retries[0].user_attrs["worker"] == "B"

    # No parameters run to completion twice; the only repeat of any trial is the retry of the killed one.
    keys = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(keys)) == len(keys)
    assert [t.state for t in trials].count(TrialState.FAIL) == 1

    # MLflow: one nested run per trial under the parent; the dead one closed FAILED, the rest FINISHED.
    runs = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs}
    assert set(by_number) == {t.number for t in trials}
    dead = by_number[killed.number]
    assert dead.info.status == "FAILED" and dead.data.tags["optuna.trial_state"] == "FAIL"
    assert "heartbeat" in dead.data.tags["optuna.fail_reason"]
    retry_run = by_number[retries[0].number]
    assert retry_run.info.status == "FINISHED" and retry_run.data.tags["optuna.retry_of_trial"] == str(killed.number)
    assert float(retry_run.data.params["x"]) == pytest.approx(killed.params["x"])
    for t in finished:
        r = by_number[t.number]
        assert r.data.tags["optuna.trial_state"] == "COMPLETE"
        assert r.data.metrics["score"] == pytest.approx(t.value)
        steps = client.get_metric_history(r.info.run_id, "intermediate_value")
        assert [m.step for m in sorted(steps, key=lambda m: m.step)] == list(range(6))
