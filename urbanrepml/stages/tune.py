"""The ``tune`` stage: an Optuna study over fusion hyperparameters, scored by the spatial-CV probe.

The modality tables the objective needs are built first (nested runs, as ``fuse`` does); then
:func:`tuning.study.run_tuning` runs the study as one parent run with one nested run per trial.
Trials train with the same training configuration as ``fuse`` (early stopping included) for the
epoch budget each trial draws.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuning.space import DEFAULT_MAX_EPOCHS, MODELS
from urbanrepml.config import DEFAULT_STUDY_AREA, load_study_area
from urbanrepml.params import param
from urbanrepml.stages.base import Stage
from urbanrepml.stages.fuse import ensure_modality_tables


@dataclass
class Params:
    """Parameters of the ``tune`` entry point."""

    study_area: str = param(DEFAULT_STUDY_AREA, "bundled area name or path to a study-area TOML")
    n_trials: int = param(10, "trials to add to the study in this run")
    timeout: float = param(0.0, "seconds after which no new trial starts (0: none)")
    study_name: str | None = param(None, "default tune-<study_area>; the same name continues")
    storage: str | None = param(None, "sqlite:///..., postgresql://..., journal:<file>; default optuna.db beside the tracking store")
    pruner: str = param("median", "trial pruner", choices=("median", "hyperband", "none"))
    sampler: str = param("tpe", "trial sampler", choices=("tpe", "random"))
    seed: int = param(0, "sampler and fold seed")
    n_workers: int = param(1, "worker processes sharing the study")
    max_epochs: int = param(DEFAULT_MAX_EPOCHS, "largest epoch budget a trial may draw")
    models: str = param(",".join(MODELS), "fusion models to search over, comma-separated")
    heartbeat_interval: int = param(10, "seconds between trial heartbeats (RDB storages)")


def run(p: Params):
    """Build missing modality tables, then run (or continue) the study."""
    from tuning.objective import FusionObjective
    from tuning.study import run_tuning

    spec = load_study_area(p.study_area)
    objective = FusionObjective(p.study_area, models=p.models, max_epochs=p.max_epochs, seed=p.seed)

    def prepare() -> None:
        built = ensure_modality_tables(spec, objective.resolution)
        if built:
            print(f"tune: built modality tables {', '.join(built)} (nested runs)", flush=True)

    return run_tuning(p.study_area, objective, n_trials=p.n_trials, timeout=p.timeout, study_name=p.study_name,
                      storage=p.storage, pruner=p.pruner, sampler=p.sampler, seed=p.seed, n_workers=p.n_workers,
                      heartbeat_interval=p.heartbeat_interval, max_resource=p.max_epochs, prepare=prepare)


STAGES = {"tune": Stage("tune", "an Optuna study over fusion hyperparameters, scored by the spatial-CV probe, tracked in MLflow",
                        Params, run)}
