"""Stage 3: targets, spatial folds, probes, metrics, clustering and figures.

- :mod:`~urbanrepml.analysis.targets`: study-area targets onto cells (H3 tables, points, polygons).
- :mod:`~urbanrepml.analysis.folds`: spatial block folds (H3 parents), random folds for comparison.
- :mod:`~urbanrepml.analysis.probes`: ridge / OLS / MLP / kNN probes and out-of-fold cross-validation.
- :mod:`~urbanrepml.analysis.metrics`: R², RMSE, MAE, Poisson deviance, ROC AUC.
- :mod:`~urbanrepml.analysis.figures`: plotly maps and bars (no MLflow).
- :mod:`~urbanrepml.analysis.cluster`: k-means over a k range at several resolutions.
- :mod:`~urbanrepml.stages.probe`: the tracked ``probe`` and ``cluster`` stages.
"""
