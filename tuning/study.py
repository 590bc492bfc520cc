"""Create or continue an Optuna study, run it (one or several workers) under one parent MLflow run, report.

:func:`run_tuning` is what the ``tune`` entry point calls; any objective with the small interface below
works (the fusion objective is :class:`tuning.objective.FusionObjective`; tests use cheap ones):

- ``signature() -> dict``: search space and fixed settings; stored on the study at creation and
  compared when the study is continued (a different space is a clear error);
- ``setup()``: load data (called once per worker process);
- ``data_signature() -> dict`` (optional): digests of the data the score depends on (inputs, folds);
  also stored and compared, so a continued study is scored on the same folds;
- ``__call__(trial) -> float``: samples, trains, reports intermediate values (``trial.report``; raises
  ``optuna.TrialPruned`` when ``trial.should_prune()``), returns the score; an MLflow run (the trial's)
  is active while it runs;
- ``factory -> (str, dict)``: ``"module:callable"`` and kwargs to rebuild it in a worker process;
- ``parent_metrics() -> dict`` (optional): numbers for the parent run (e.g. baseline scores);
- ``register_best(frozen_trial, run_id) -> str`` (optional): register the best trial's output.

Parent run: params ``tune.*`` (storage redacted), the best trial's parameters as ``best.<name>``,
metrics ``best_score``, ``trials_complete/pruned/failed``, tags ``urbanrepml.best_trial``/``best_run_id``,
and ``figures/optimization_history.html`` / ``figures/param_importances.html`` (Optuna's plotly plots).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from tuning.storage import check_reachable, kind, open_storage, redact, resolve_storage, scrub, study_lock
from tuning.workers import close_stale_run, counts, work
from urbanrepml.errors import UrbanReprError

optuna.logging.set_verbosity(optuna.logging.WARNING)

SIGNATURE_ATTR = "urbanrepml.signature"
DATA_ATTR = "urbanrepml.data_signature"
WORKERS_ATTR = "urbanrepml.workers_joined"
REGISTERED_ATTR = "urbanrepml.registered_trial"
PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "random")
SEED_STRIDE = 7919  # worker k samples with seed + k * stride: no two workers draw the same sequence


def make_sampler(name: str, seed: int):
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                              n_startup_trials=5)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UrbanReprError(f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def make_pruner(name: str, max_resource: int = 20):
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=max(1, max_resource // 4))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, max_resource // 9), max_resource=max(2, max_resource),
                                              reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UrbanReprError(f"pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


def _compare(study, attr: str, current: dict, what: str, study_name: str, url: str) -> None:
    stored = study.user_attrs.get(attr)
    if stored is None:
        study.set_user_attr(attr, current)
        return
    if stored != current:
        if attr == SIGNATURE_ATTR:
            from tuning.space import describe_difference

            diff = describe_difference(stored.get("space", {}), current.get("space", {}))
            other = [k for k in set(stored) | set(current) if k != "space" and stored.get(k) != current.get(k)]
            detail = ", ".join(filter(None, [diff, *(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in sorted(other))]))
        else:
            detail = ", ".join(f"{k} changed" for k in sorted(set(stored) | set(current)) if stored.get(k) != current.get(k))
        raise UrbanReprError(
            f"study {study_name!r} in {redact(url)} exists with a different {what} ({detail}); "
            "use a new study_name, or the settings it was created with"
        )


def open_study(storage: str | None, study_name: str, objective, *, sampler: str = "tpe", pruner: str = "median",
               seed: int = 0, heartbeat_interval: int = 10, grace_period: int | None = None, create: bool = True,
               max_resource: int = 20):
    """Create (or load) the study and check it matches ``objective``; return (study, resolved storage URL).

    Each call joins the study as a new worker: it takes the next worker number (under the study lock)
    and samples with ``seed + number * 7919``, so continuing a study, or a second worker, never replays
    the first worker's random draws; the first worker of a new study samples with ``seed`` itself.
    """
    url = resolve_storage(storage)
    check_reachable(url)
    st = open_storage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period, on_stale=close_stale_run)
    direction = getattr(objective, "direction", "maximize")
    try:
        if create:
            study = optuna.create_study(storage=st, study_name=study_name, direction=direction, load_if_exists=True)
        else:
            study = optuna.load_study(study_name=study_name, storage=st)
    except KeyError:
        raise UrbanReprError(f"no study {study_name!r} in {redact(url)}; start it with the tune entry point first") from None
    except UrbanReprError:
        raise
    except Exception as exc:  # noqa: BLE001 - driver errors: one line, password scrubbed
        raise UrbanReprError(f"optuna storage {redact(url)}: {scrub(str(exc).splitlines()[0], url)}") from None
    if study.direction.name.lower() != direction:
        raise UrbanReprError(f"study {study_name!r} in {redact(url)} is {study.direction.name.lower()}, the objective {direction}")
    with study_lock(st, url, study_name):
        _compare(study, SIGNATURE_ATTR, objective.signature(), "search space", study_name, url)
        index = int(study.user_attrs.get(WORKERS_ATTR, 0))
        study.set_user_attr(WORKERS_ATTR, index + 1)
    study = optuna.load_study(study_name=study_name, storage=st, sampler=make_sampler(sampler, seed + index * SEED_STRIDE),
                              pruner=make_pruner(pruner, max_resource))
    study._urbanrepml_worker_index = index  # noqa: SLF001 - for the tags of this worker's trials
    return study, url


def check_data(study, objective, study_name: str, url: str) -> None:
    if hasattr(objective, "data_signature"):
        with study_lock(study._storage, url, study_name):
            _compare(study, DATA_ATTR, objective.data_signature(), "data (inputs or probe folds)", study_name, url)


@dataclass
class TuneResult:
    study_name: str
    storage: str  # redacted
    parent_run_id: str
    n_finished: int
    n_complete: int
    n_pruned: int
    n_failed: int
    best_trial: int | None
    best_value: float | None
    best_params: dict
    best_run_id: str | None
    registered: str | None
    ran_here: int


def _spawn_worker(args: dict, worker: str) -> subprocess.Popen:
    # without MLFLOW_RUN_ID, else the worker would attach to the parent; the experiment is passed explicitly
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    from urbanrepml.tracking import resolve_tracking_uri

    env["MLFLOW_TRACKING_URI"] = resolve_tracking_uri()
    cmd = [sys.executable, "-m", "tuning.worker", "--worker", worker]
    for k, v in args.items():
        cmd += [f"--{k}", str(v)]
    return subprocess.Popen(cmd, env=env, cwd=os.getcwd(), start_new_session=True,
                            stdin=subprocess.DEVNULL)


def _plots(study) -> list[str]:
    """Log Optuna's optimisation history and parameter importances as plotly HTML; return notes on what was skipped."""
    from urbanrepml.tracking import log_figure

    notes = []
    try:
        log_figure(optuna.visualization.plot_optimization_history(study), "optimization_history")
    except Exception as exc:  # noqa: BLE001
        notes.append(f"optimisation history not plotted ({exc})")
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    try:
        if len(complete) < 2:
            raise ValueError(f"needs 2 complete trials, have {len(complete)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            log_figure(optuna.visualization.plot_param_importances(study), "param_importances")
    except Exception as exc:  # noqa: BLE001
        notes.append(f"parameter importances not plotted ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
    return notes


def _is_area_path(study_area: str) -> bool:
    return str(study_area).endswith(".toml") or os.sep in str(study_area)


def run_tuning(study_area: str, objective, *, n_trials: int, timeout: float = 0, study_name: str | None = None,
               storage: str | None = None, pruner: str = "median", sampler: str = "tpe", seed: int = 0,
               n_workers: int = 1, heartbeat_interval: int = 10, grace_period: int | None = None,
               max_resource: int = 20, register: bool = True, prepare=None) -> TuneResult:
    """Run (or continue) a study until ``n_trials`` more trials have finished, as one parent MLflow run.

    ``prepare()``, when given, runs inside the parent run before the objective loads its data (the
    ``tune`` stage builds missing modality tables there, as nested runs).
    """
    import mlflow

    from urbanrepml.tracking import stage_run, tag

    if n_trials < 1:
        raise UrbanReprError(f"n_trials must be at least 1, got {n_trials}")
    if n_workers < 1:
        raise UrbanReprError(f"n_workers must be at least 1, got {n_workers}")
    if timeout < 0:
        raise UrbanReprError(f"timeout must be 0 (none) or a number of seconds, got {timeout}")
    if pruner not in PRUNERS:
        raise UrbanReprError(f"pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    if sampler not in SAMPLERS:
        raise UrbanReprError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    from urbanrepml.config import load_study_area

    study_area = load_study_area(study_area).name if _is_area_path(study_area) else study_area
    study_name = study_name or f"tune-{study_area}"
    url = resolve_storage(storage)
    check_reachable(url)  # before any run exists
    deadline = time.monotonic() + timeout if timeout > 0 else None

    with stage_run("tune", study_area, tags={"study_name": study_name, "storage_kind": kind(url)},
                   run_name=f"tune-{study_name}") as parent:
        parent_id, experiment_id = parent.info.run_id, parent.info.experiment_id
        mlflow.log_params({"tune.study_name": study_name, "tune.storage": redact(url), "tune.n_trials": n_trials,
                           "tune.timeout": timeout, "tune.pruner": pruner, "tune.sampler": sampler, "tune.seed": seed,
                           "tune.n_workers": n_workers, "tune.heartbeat_interval": heartbeat_interval})
        study, url = open_study(url, study_name, objective, sampler=sampler, pruner=pruner, seed=seed,
                                heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                max_resource=max_resource)
        if prepare is not None:
            prepare()
        if hasattr(objective, "setup"):
            objective.setup()
        check_data(study, objective, study_name, url)
        before = counts(study)
        target = before[TrialState.COMPLETE] + before[TrialState.PRUNED] + n_trials
        continuing = sum(before.values()) > 0
        mlflow.set_tags({tag("study_continued"): str(continuing).lower(), "optuna.study_name": study_name})
        if hasattr(objective, "parent_metrics"):
            mlflow.log_metrics(objective.parent_metrics())
        print(f"tune: study {study_name!r} in {redact(url)}: "
              + (f"continuing from {sum(before.values())} trials; " if continuing else "new; ")
              + f"running until {target} finished trials with {n_workers} worker(s)", flush=True)

        procs = []
        if n_workers > 1:
            factory, kwargs = objective.factory
            wargs = {"storage": url, "study_name": study_name, "target": target, "parent_run_id": parent_id,
                     "experiment_id": experiment_id, "objective": factory, "objective_kwargs": json.dumps(kwargs),
                     "sampler": sampler, "pruner": pruner, "seed": seed, "heartbeat_interval": heartbeat_interval,
                     "grace_period": grace_period or 0, "timeout": max(0.0, deadline - time.monotonic()) if deadline else 0}
            procs = [_spawn_worker(wargs, f"{parent_id[:8]}-{i}") for i in range(1, n_workers)]
        try:
            report = work(study, objective, storage_url=url, study_name=study_name, target=target,
                          parent_run_id=parent_id, experiment_id=experiment_id, worker=f"{parent_id[:8]}-0",
                          deadline=deadline)
        finally:
            for p in procs:
                p.wait()
        bad = [p.returncode for p in procs if p.returncode != 0]

        c = counts(study)
        finished = c[TrialState.COMPLETE] + c[TrialState.PRUNED]
        metrics = {"trials_complete": c[TrialState.COMPLETE], "trials_pruned": c[TrialState.PRUNED],
                   "trials_failed": c[TrialState.FAIL], "trials_finished": finished, "trials_run_here": len(report.trials)}
        best = None
        try:
            best = study.best_trial
        except ValueError:
            pass
        registered = None
        already = False
        best_run = None
        if best is not None:
            best_run = best.user_attrs.get("mlflow_run_id")
            metrics["best_score"] = float(best.value)
            mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
            mlflow.set_tags({tag("best_trial"): str(best.number), tag("best_run_id"): best_run or ""})
            if register and hasattr(objective, "register_best") and best_run:
                with study_lock(study._storage, url, study_name):
                    done = study.user_attrs.get(REGISTERED_ATTR)
                    if done is None or int(done.split(":")[0]) != best.number:
                        registered = objective.register_best(best, best_run)
                        if registered:
                            study.set_user_attr(REGISTERED_ATTR, f"{best.number}:{registered}")
                    else:
                        registered = done.split(":", 1)[1]
                        already = True
                if registered:
                    mlflow.set_tag(tag("registered_version"), registered)
        mlflow.log_metrics(metrics)
        notes = _plots(study)
        lines = [f"study {study_name!r} ({redact(url)}): {finished} finished trials "
                 f"({c[TrialState.COMPLETE]} complete, {c[TrialState.PRUNED]} pruned), {c[TrialState.FAIL]} failed"]
        if best is not None:
            lines.append(f"best trial {best.number}: score {best.value:.4f} params {best.params} (run {best_run})")
        if registered:
            lines.append(f"best trial already registered as {registered}" if already
                         else f"registered {registered} with alias candidate")
        lines += notes
        mlflow.set_tag("mlflow.note.content", "\n".join(lines))
        print("\n".join(f"tune: {line}" for line in lines), flush=True)
        if bad:
            raise UrbanReprError(f"{len(bad)} worker process(es) exited with status {bad}; see their output above")
        if finished < target and deadline is None:
            raise UrbanReprError(f"study {study_name!r} stopped at {finished} of {target} finished trials")
        return TuneResult(study_name, redact(url), parent_id, finished, c[TrialState.COMPLETE], c[TrialState.PRUNED],
                          c[TrialState.FAIL], best.number if best else None, float(best.value) if best else None,
                          dict(best.params) if best else {}, best_run, registered, len(report.trials))
