"""The worker loop: several processes (on one machine or many) share one study until it has enough trials.

Every worker repeats, holding the study lock (:func:`tuning.storage.study_lock`: a PostgreSQL
advisory lock, or a file lock for SQLite/journal files):

1. fail stale trials (heartbeat older than ``grace_period``: the worker died); each is re-queued once
   with the same parameters (:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`) and its MLflow
   run is closed FAILED;
2. count finished (COMPLETE + PRUNED) and RUNNING trials; stop when ``finished >= target``; wait when
   ``finished + running >= target`` (a running trial may still fail and need a retry);
3. otherwise ``study.ask()`` (a re-queued WAITING trial first) and record a first heartbeat.

Because "count, then ask" happens under the lock, the study ends with exactly ``target`` finished
trials however many workers there are, and a trial's parameters are only run again when its first
run died. Each trial runs in its own MLflow run, nested under the tune run (``parent_run_id``), with
its parameters, intermediate values (``intermediate_value`` by step), final score and state.

Run a worker by hand (a second machine joining a study)::

    python -m tuning.workers --storage postgresql://user@db/optuna --study_name my-study \
        --target 40 --parent_run_id <tune run id> --objective tuning.objective:FusionObjective \
        --objective_kwargs '{"study_area": "porto_alegre"}'

(``tune`` with the same ``storage`` and ``study_name`` does this for you, with its own parent run.)
"""

from __future__ import annotations

import importlib
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from tuning.storage import study_lock
from urbanrepml.errors import UrbanReprError

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_CONSECUTIVE_FAILURES = 3
TRIAL_RUN_ATTR = "mlflow_run_id"


def load_objective(factory: str, kwargs: dict):
    """``"module:callable"`` + kwargs -> objective (workers in other processes rebuild it this way)."""
    module, _, name = factory.partition(":")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj(**kwargs)


class Heartbeat:
    """Records the trial's heartbeat every ``interval`` seconds in a thread (RDB storages only)."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self.interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        if self.interval:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def _beat(self):
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # noqa: BLE001 - a missed beat is retried next interval
                pass

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def fail_stale(study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def counts(study) -> dict[TrialState, int]:
    out = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state] += 1
    return out


def finished_count(study) -> int:
    c = counts(study)
    return c[TrialState.COMPLETE] + c[TrialState.PRUNED]


def close_stale_run(study, trial) -> None:
    """Heartbeat-stale callback: the dead worker's MLflow run is closed FAILED (its trial was re-queued)."""
    run_id = trial.user_attrs.get(TRIAL_RUN_ATTR)
    if not run_id:
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        client.set_tag(run_id, "optuna.trial_state", "FAIL")
        client.set_tag(run_id, "optuna.fail_reason", "heartbeat stale: the worker stopped; trial re-queued")
        client.set_terminated(run_id, status="FAILED")
    except Exception:  # noqa: BLE001 - tracking trouble must not stop the study
        pass


@dataclass
class WorkerReport:
    worker: str
    trials: list[int] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)


def _log_trial_run(frozen, state: TrialState, value, error: str | None) -> None:
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from urbanrepml.tracking.runs import log_new_params

    run = mlflow.active_run()
    log_new_params(frozen.params)
    now = int(time.time() * 1000)
    metrics = [Metric("intermediate_value", float(v), now, int(step)) for step, v in sorted(frozen.intermediate_values.items())]
    if value is not None:
        metrics.append(Metric("score", float(value), now, 0))
    if metrics:
        MlflowClient().log_batch(run.info.run_id, metrics=metrics)
    tags = {"optuna.trial_state": state.name, "optuna.trial_number": str(frozen.number)}
    if error:
        tags["optuna.fail_reason"] = error[:4000]
    mlflow.set_tags(tags)


def run_one_trial(study, trial, objective, *, parent_run_id: str | None, experiment_id: str | None, worker: str,
                  study_name: str) -> TrialState:
    """Run ``trial`` inside a nested MLflow run; tell the study; return the trial's state."""
    import mlflow

    from urbanrepml.tracking.stale import process_tags

    frozen0 = study._storage.get_trial(trial._trial_id)
    retried = frozen0.system_attrs.get("failed_trial")
    tags = {"optuna.study_name": study_name, "optuna.trial_number": str(trial.number), "urbanrepml.stage": "tune_trial",
            "urbanrepml.worker": worker, **process_tags()}
    if retried is not None:
        tags["optuna.retry_of_trial"] = str(retried)
    run = mlflow.start_run(experiment_id=experiment_id, run_name=f"trial-{trial.number}", nested=True,
                           parent_run_id=parent_run_id, tags=tags)
    value, error, state = None, None, TrialState.COMPLETE
    start = time.monotonic()
    print(f"tune[{worker}]: trial {trial.number} started", flush=True)
    try:  # from here on, anything that escapes (a storage failure included) ends the trial's run FAILED
        trial.set_user_attr(TRIAL_RUN_ATTR, run.info.run_id)
        trial.set_user_attr("worker", worker)
        with Heartbeat(study._storage, trial._trial_id):
            try:
                value = float(objective(trial))
            except optuna.TrialPruned as exc:
                state, error = TrialState.PRUNED, str(exc) or "pruned"
            except Exception as exc:  # noqa: BLE001 - one failed trial is a FAIL, not the end of the study
                state, error = TrialState.FAIL, f"{type(exc).__name__}: {exc}"
                traceback.print_exc(file=sys.stderr)
        if state == TrialState.COMPLETE and not (value == value and abs(value) != float("inf")):
            state, error = TrialState.FAIL, f"objective returned {value}"
            value = None
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
        frozen = study._storage.get_trial(trial._trial_id)
        _log_trial_run(frozen, state, value, error)
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FAILED" if state == TrialState.FAIL else "FINISHED")
    label = f"{value:.4f}" if value is not None else error
    c = counts(study)
    print(f"tune[{worker}]: trial {trial.number} {state.name} {label} after {time.monotonic() - start:.0f} s "
          f"(study: {c[TrialState.COMPLETE] + c[TrialState.PRUNED]} finished)", flush=True)
    return state


def work(study, objective, *, storage_url: str, study_name: str, target: int, parent_run_id: str | None,
         experiment_id: str | None, worker: str = "0", deadline: float | None = None, poll: float | None = None) -> WorkerReport:
    """Run trials of ``study`` until it holds ``target`` finished trials (or ``deadline``, a monotonic time)."""
    report = WorkerReport(worker)
    storage = study._storage
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    poll = poll or (interval or 1.0)
    failures = 0
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            print(f"tune[{worker}]: timeout reached; stopping", flush=True)
            break
        trial = None
        with study_lock(storage, storage_url, study_name):
            fail_stale(study)
            c = counts(study)
            finished = c[TrialState.COMPLETE] + c[TrialState.PRUNED]
            if finished >= target:
                break
            if finished + c[TrialState.RUNNING] < target:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "heartbeat ... used with Study.optimize": we beat ourselves
                    trial = study.ask()
                if interval:
                    storage.record_heartbeat(trial._trial_id)
        if trial is None:
            time.sleep(poll)
            continue
        state = run_one_trial(study, trial, objective, parent_run_id=parent_run_id, experiment_id=experiment_id,
                              worker=worker, study_name=study_name)
        report.trials.append(trial.number)
        report.states[state.name] = report.states.get(state.name, 0) + 1
        failures = failures + 1 if state == TrialState.FAIL else 0
        if failures >= MAX_CONSECUTIVE_FAILURES:
            last = study._storage.get_trial(trial._trial_id)
            raise UrbanReprError(
                f"{failures} trials in a row failed in worker {worker} (last: trial {last.number}, params {last.params}); "
                "see the trial runs' optuna.fail_reason tag"
            )
    return report

