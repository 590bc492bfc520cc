"""TrialHooks: one Optuna trial's training reports its metric per epoch, logs to the trial's run, prunes on request."""

from __future__ import annotations

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

from urbanrepml.tracking.checkpoints import TrialHooks


def test_reports_logs_and_prunes_when_the_pruner_says_so(tracking):
    study = optuna.create_study(direction="minimize", pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    trial = study.ask()
    with mlflow.start_run() as run:
        hooks = TrialHooks(trial, run.info.run_id, "val_km")
        hooks.epoch_end(1, {"val_km": 0.5, "train_loss": 2.0})
        with pytest.raises(optuna.TrialPruned, match="pruned at epoch 2"):
            hooks.epoch_end(2, {"val_km": 1.5, "train_loss": 1.0})
    assert study.trials[0].intermediate_values == {1: 0.5, 2: 1.5}
    # metrics were flushed to the trial's run before the pruning exception
    history = MlflowClient().get_metric_history(run.info.run_id, "val_km")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 1.5)]
