"""Optuna studies over fusion hyperparameters, tracked in MLflow.

- :mod:`tuning.space`: search spaces per fusion model.
- :mod:`tuning.objective`: train a fusion configuration, score it with the spatial-CV probe.
- :mod:`tuning.storage`: where a study lives (SQLite/journal locally, PostgreSQL for several machines).
- :mod:`tuning.study`: create/continue a study, one parent MLflow run, nested trial runs, plots.
- :mod:`tuning.workers`: the worker loop (heartbeats, retry of a dead worker's trial, exact trial count).
"""
