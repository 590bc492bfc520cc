"""Regression and count metrics on out-of-fold predictions (numpy only).

R² here is ``1 - SS_res / SS_tot`` with ``SS_tot`` around the mean of the
evaluated values: pooled over all out-of-fold predictions for the headline
number, around the fold's own mean for per-fold values.

Count targets (untransformed non-negative integers such as schools) also get the
mean Poisson deviance of the prediction clipped to at least :data:`POISSON_FLOOR`
and the ROC AUC of the prediction as a score for "at least one".
"""

from __future__ import annotations

import numpy as np

POISSON_FLOOR = 1e-6


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot == 0:
        return float("nan")
    return 1.0 - float(((y - pred) ** 2).sum()) / ss_tot


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y, float) - np.asarray(pred, float)) ** 2)))


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y, float) - np.asarray(pred, float))))


def poisson_deviance(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean Poisson deviance ``2·(y·log(y/μ) − (y − μ))`` with ``μ = max(pred, POISSON_FLOOR)``."""
    y = np.asarray(y, float)
    mu = np.maximum(np.asarray(pred, float), POISSON_FLOOR)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float(np.mean(2.0 * (term - (y - mu))))


def roc_auc(labels: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN when one class is absent."""
    labels = np.asarray(labels, bool)
    score = np.asarray(score, float)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), float)
    sorted_scores = score[order]
    # average ranks over ties
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def regression_metrics(y: np.ndarray, pred: np.ndarray, *, count: bool = False) -> dict[str, float]:
    """``r2``, ``rmse``, ``mae`` (and ``poisson_deviance``, ``auc_any`` for counts)."""
    out = {"r2": r2(y, pred), "rmse": rmse(y, pred), "mae": mae(y, pred)}
    if count:
        out["poisson_deviance"] = poisson_deviance(y, pred)
        out["auc_any"] = roc_auc(np.asarray(y) > 0, pred)
    return out
