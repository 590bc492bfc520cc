"""Probes and out-of-fold cross-validation.

A probe is fitted by :func:`fit_on_training_rows`, which receives *only* the
training rows of one outer fold (features, labels and their spatial block
labels). Feature standardisation (statistics and clipping range from the training rows), ridge's alpha search and the MLP's early
stopping all happen inside that call, on inner splits of those rows grouped by
block (:func:`urbanrepml.analysis.folds.inner_groups`), so nothing about the test
fold can leak into the model. :func:`cross_validate` then predicts the held-out
fold with the fitted model and scores the pooled out-of-fold predictions.

Probes:

- ``ridge``: alpha from :data:`RIDGE_ALPHAS` by inner block CV (mean squared error), then refitted on all training rows.
- ``ols``: least squares (minimum-norm), no tuning.
- ``mlp``: scikit-learn ``MLPRegressor`` trained epoch by epoch on an inner
  training part; the epoch with the lowest loss on the inner validation blocks wins.
- ``knn``: k nearest neighbours (``KNeighborsRegressor``), used on cell-centre
  coordinates in km as the "coordinates only" reference (no standardisation).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from urbanrepml.analysis.folds import Folds, inner_groups
from urbanrepml.analysis.metrics import r2 as r2_score
from urbanrepml.analysis.metrics import regression_metrics
from urbanrepml.errors import UrbanReprError

RIDGE_ALPHAS = np.logspace(-2, 5, 22)
PROBES = ("ridge", "ols", "mlp", "knn")


# ---------------------------------------------------------------------------------------------- models


class Fitted:
    """A fitted probe: ``predict(x)`` on raw (unstandardised) features."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], info: dict | None = None):
        self._predict = predict
        self.info = info or {}

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._predict(np.asarray(x, dtype=np.float64))


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 1e-12, std, 1.0)


def _ridge_path(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Validation predictions (n_va, n_alphas) of ridge (with intercept) for every alpha, from one SVD."""
    xm, ym = x_tr.mean(axis=0), y_tr.mean()
    u, s, vt = np.linalg.svd(x_tr - xm, full_matrices=False)
    uty = u.T @ (y_tr - ym)
    d = s[None, :] / (s[None, :] ** 2 + alphas[:, None])  # (A, r)
    coefs = (d * uty[None, :]) @ vt  # (A, p)
    return (x_va - xm) @ coefs.T + ym


def ridge_fit(x: np.ndarray, y: np.ndarray, blocks: np.ndarray, *, alphas=RIDGE_ALPHAS, inner_splits: int = 3, seed: int = 0) -> Fitted:
    """Ridge on standardised training rows; alpha by inner block CV on those rows only."""
    alphas = np.asarray(alphas, float)
    splits = inner_groups(blocks, inner_splits, seed)
    errors = np.zeros(len(alphas))
    for tr, va in splits:
        pred = _ridge_path(x[tr], y[tr], x[va], alphas)
        errors += ((pred - y[va, None]) ** 2).sum(axis=0)
    alpha = float(alphas[int(np.argmin(errors))]) if splits else 1.0
    xm, ym = x.mean(axis=0), y.mean()
    u, s, vt = np.linalg.svd(x - xm, full_matrices=False)
    coef = vt.T @ ((s / (s ** 2 + alpha)) * (u.T @ (y - ym)))
    return Fitted(lambda q: (q - xm) @ coef + ym, {"alpha": alpha})


def ols_fit(x: np.ndarray, y: np.ndarray, blocks: np.ndarray, *, seed: int = 0) -> Fitted:
    xm, ym = x.mean(axis=0), y.mean()
    coef, *_ = np.linalg.lstsq(x - xm, y - ym, rcond=None)
    return Fitted(lambda q: (q - xm) @ coef + ym)


def mlp_fit(
    x: np.ndarray,
    y: np.ndarray,
    blocks: np.ndarray,
    *,
    hidden: tuple[int, ...] = (64, 32),
    max_epochs: int = 200,
    patience: int = 15,
    inner_splits: int = 5,
    seed: int = 0,
) -> Fitted:
    """Small MLP; early stopping on one inner split of the *training* blocks (about 1/``inner_splits`` held out)."""
    from sklearn.neural_network import MLPRegressor

    splits = inner_groups(blocks, inner_splits, seed)
    if not splits:
        raise UrbanReprError(f"too few training rows ({len(y)}) for the MLP's inner validation split")
    tr, va = splits[0]
    ym, ys = y[tr].mean(), y[tr].std() or 1.0
    yt = (y - ym) / ys
    model = MLPRegressor(hidden_layer_sizes=hidden, alpha=1e-3, learning_rate_init=1e-3,
                         batch_size=min(64, len(tr)), random_state=seed, shuffle=True)
    best, best_loss, best_epoch, waited = None, np.inf, 0, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(max_epochs):
            model.partial_fit(x[tr], yt[tr])
            loss = float(np.mean((model.predict(x[va]) - yt[va]) ** 2))
            if loss < best_loss - 1e-6:
                best, best_loss, best_epoch, waited = copy.deepcopy(model), loss, epoch + 1, 0
            else:
                waited += 1
                if waited >= patience:
                    break
    return Fitted(lambda q: best.predict(q) * ys + ym, {"epochs": best_epoch, "inner_val_rows": int(len(va))})


def knn_fit(x: np.ndarray, y: np.ndarray, blocks: np.ndarray, *, k: int = 10, seed: int = 0) -> Fitted:
    from sklearn.neighbors import KNeighborsRegressor

    model = KNeighborsRegressor(n_neighbors=min(k, len(y))).fit(x, y)
    return Fitted(model.predict, {"k": min(k, len(y))})


FITTERS: dict[str, Callable[..., Fitted]] = {"ridge": ridge_fit, "ols": ols_fit, "mlp": mlp_fit, "knn": knn_fit}


def fit_on_training_rows(probe: str, x: np.ndarray, y: np.ndarray, blocks: np.ndarray, *, seed: int = 0,
                         standardise: bool = True) -> Fitted:
    """Fit ``probe`` on training rows only; standardisation statistics come from these rows too."""
    if probe not in FITTERS:
        raise UrbanReprError(f"probe must be one of {PROBES}, got {probe!r}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if standardise:
        mean, std = _standardiser(x)
        z = (x - mean) / std
        lo, hi = z.min(axis=0), z.max(axis=0)
        inner = FITTERS[probe](z, y, np.asarray(blocks), seed=seed)
        # Held-out features are clipped to the training range: a feature that is (nearly) constant in the
        # training folds (e.g. motorway length where no training block has a motorway) would otherwise be
        # blown up by a tiny std and extrapolate wildly; the model knows nothing outside that range anyway.
        return Fitted(lambda q: inner.predict(np.clip((q - mean) / std, lo, hi)), inner.info)
    return FITTERS[probe](x, y, np.asarray(blocks), seed=seed)


# ---------------------------------------------------------------------------------------------- cross-validation


@dataclass
class CVResult:
    """Out-of-fold scores of one probe on one feature set.

    ``metrics``: target -> {r2, rmse, mae[, poisson_deviance, auc_any]} on pooled out-of-fold predictions.
    ``per_fold``: target -> list over folds of {r2, rmse, mae, n, fold}.
    ``predictions``: index ``region_id``, columns ``<target>`` (out-of-fold prediction).
    ``info``: target -> list over folds of what the fit chose (alpha, epochs).
    ``counts``: the count targets; the headline :attr:`mean_r2` leaves them out (their R² near zero
    says little; their count metrics report them), :attr:`mean_r2_all` does not.
    """

    metrics: dict[str, dict[str, float]]
    per_fold: dict[str, list[dict[str, float]]]
    predictions: pd.DataFrame
    info: dict[str, list[dict]] = field(default_factory=dict)
    counts: tuple[str, ...] = ()

    @property
    def headline_targets(self) -> list[str]:
        """Targets in the headline mean: every non-count target (all targets when every one is a count)."""
        main = [t for t in self.metrics if t not in self.counts]
        return main or list(self.metrics)

    @property
    def mean_r2(self) -> float:
        """Headline: mean R² over :attr:`headline_targets`."""
        return float(np.mean([self.metrics[t]["r2"] for t in self.headline_targets]))

    @property
    def mean_r2_all(self) -> float:
        """Mean R² over every target, count targets included."""
        return float(np.mean([m["r2"] for m in self.metrics.values()]))

    def flat(self, prefix: str = "") -> dict[str, float]:
        """``{prefix}r2_<target>``, ``..._fold<k>``, ``{prefix}mean_r2`` (headline), ``{prefix}mean_r2_all``; NaN dropped."""
        out: dict[str, float] = {}
        for target, m in self.metrics.items():
            for key, value in m.items():
                out[f"{prefix}{key}_{target}"] = value
            for fold in self.per_fold[target]:
                out[f"{prefix}r2_{target}_fold{fold['fold']}"] = fold["r2"]
        out[f"{prefix}mean_r2"] = self.mean_r2
        out[f"{prefix}mean_r2_all"] = self.mean_r2_all
        return {k: float(v) for k, v in out.items() if np.isfinite(v)}


FitFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], Fitted]


def constant_targets(targets: pd.DataFrame) -> dict[str, int]:
    """``{target: distinct values}`` for every column with fewer than 2 distinct finite values (R² undefined)."""
    out = {}
    for target in targets.columns:
        values = targets[target].to_numpy(dtype=np.float64)
        n = int(np.unique(values[np.isfinite(values)]).size)
        if n < 2:
            out[target] = n
    return out


def cross_validate(
    x: np.ndarray | pd.DataFrame,
    targets: pd.DataFrame,
    folds: Folds,
    probe: str | FitFunction = "ridge",
    *,
    counts: list[str] | tuple[str, ...] = (),
    seed: int = 0,
    standardise: bool = True,
) -> CVResult:
    """Out-of-fold predictions and metrics of ``probe`` for every column of ``targets``.

    ``x`` rows, ``targets`` rows and ``folds`` are aligned on ``targets.index``
    (``x`` as a DataFrame is reindexed to it). For each target only its rows with
    a value are used. ``probe`` is a name from :data:`PROBES` or a function
    ``fit(x_train, y_train, blocks_train) -> Fitted`` (tests use this to spy).
    """
    index = targets.index
    if isinstance(x, pd.DataFrame):
        missing = index.difference(x.index)
        if len(missing):
            raise UrbanReprError(f"{len(missing)} target cell(s) have no features, e.g. {list(missing[:3])}")
        x = x.loc[index].to_numpy(dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if len(x) != len(index):
        raise ValueError("x and targets must have the same rows")
    fold_all = folds.fold.reindex(index).to_numpy()
    block_all = folds.block.reindex(index).to_numpy()
    if pd.isna(fold_all).any():
        raise UrbanReprError("some target cells have no fold; build the folds on the probed cells")
    fold_all = fold_all.astype(int)
    if callable(probe):
        fit = probe
    else:
        def fit(xt, yt, bt):
            return fit_on_training_rows(probe, xt, yt, bt, seed=seed, standardise=standardise)

    metrics, per_fold, info = {}, {}, {}
    preds = pd.DataFrame(index=index, columns=list(targets.columns), dtype=float)
    for target in targets.columns:
        y_all = targets[target].to_numpy(dtype=np.float64)
        rows = np.flatnonzero(np.isfinite(y_all))
        oof = np.full(len(index), np.nan)
        per_fold[target], info[target] = [], []
        for k in range(folds.k):
            test = rows[fold_all[rows] == k]
            train = rows[fold_all[rows] != k]
            if len(test) == 0:
                continue
            if len(train) < 2:
                raise UrbanReprError(f"target {target!r}: fold {k} leaves {len(train)} training cell(s)")
            fitted = fit(x[train], y_all[train], block_all[train])
            oof[test] = fitted.predict(x[test])
            yt, pt = y_all[test], oof[test]
            per_fold[target].append({"r2": r2_score(yt, pt) if len(test) > 1 else float("nan"),
                                     "rmse": float(np.sqrt(np.mean((yt - pt) ** 2))),
                                     "mae": float(np.mean(np.abs(yt - pt))), "n": int(len(test)), "fold": k})
            info[target].append(fitted.info)
        metrics[target] = regression_metrics(y_all[rows], oof[rows], count=target in counts)
        preds[target] = oof
    return CVResult(metrics, per_fold, preds, info, tuple(t for t in targets.columns if t in counts))


def latlon_km(region_ids) -> np.ndarray:
    """Cell centres as (x, y) km on a local equirectangular plane (for the coordinates-only reference)."""
    from urbanrepml.areas import h3ops

    lat, lon = h3ops.cell_centroids(h3ops.parse_cells(region_ids))
    lat0 = np.deg2rad(np.mean(lat)) if len(lat) else 0.0
    return np.column_stack([np.deg2rad(lon) * np.cos(lat0) * 6371.0, np.deg2rad(lat) * 6371.0])
