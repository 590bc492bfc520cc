"""Probes on synthetic data with a known answer, count metrics by hand, and proof that the test fold never leaks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from urbanrepml.analysis.folds import make_folds
from urbanrepml.analysis.metrics import poisson_deviance, r2, roc_auc
from urbanrepml.analysis.probes import cross_validate, fit_on_training_rows, latlon_km
from urbanrepml.datasets import fetch

SIGMA = 0.5  # y = Xw + N(0, σ²) with |w| = 1 and X ~ N(0, I): R² = 1 / (1 + σ²) = 0.8


@pytest.fixture(scope="module")
def synthetic():
    ids = pd.Index(pd.read_csv(fetch("porto_alegre") / "poa_hexgrid.csv")["id"].to_numpy(), name="region_id").sort_values()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(len(ids), 8)) * np.array([1, 2, 0.5, 10, 1, 1, 3, 1])  # scales differ: standardisation matters
    w = rng.normal(size=8)
    signal = (x / np.array([1, 2, 0.5, 10, 1, 1, 3, 1])) @ (w / np.linalg.norm(w))
    y = pd.DataFrame({"y": signal + rng.normal(scale=SIGMA, size=len(ids))}, index=ids)
    folds = make_folds(ids, "spatial", 7, 5, seed=0)
    return x, y, folds


@pytest.mark.parametrize("probe", ["ridge", "ols"])
def test_linear_probe_recovers_the_known_r2(synthetic, probe):
    x, y, folds = synthetic
    result = cross_validate(x, y, folds, probe)
    expected = 1 / (1 + SIGMA**2)
    assert result.metrics["y"]["r2"] == pytest.approx(expected, abs=0.03)
    assert result.metrics["y"]["rmse"] == pytest.approx(SIGMA, rel=0.08)
    assert result.metrics["y"]["mae"] == pytest.approx(SIGMA * np.sqrt(2 / np.pi), rel=0.08)
    assert len(result.per_fold["y"]) == 5 and all(f["r2"] > 0.7 for f in result.per_fold["y"])
    flat = result.flat()
    assert set(flat) == {"r2_y", "rmse_y", "mae_y", "mean_r2", "mean_r2_all", *(f"r2_y_fold{k}" for k in range(5))}
    if probe == "ridge":  # alpha chosen inside the training folds; small for a well-posed problem
        assert all(i["alpha"] <= 10 for i in result.info["y"])


def test_mlp_learns_and_nan_targets_are_skipped(synthetic):
    x, y, folds = synthetic
    y = y.copy()
    y.iloc[::7, 0] = np.nan  # cells without a value are not probed
    result = cross_validate(x, y, folds, "mlp", seed=0)
    assert result.metrics["y"]["r2"] > 0.65
    assert result.predictions["y"].isna().sum() == y["y"].isna().sum()
    assert all(i["epochs"] >= 1 for i in result.info["y"])


def test_mlp_never_sees_the_test_fold(synthetic):
    """Spy on what each fit receives; poison the test fold's labels and features; the fold's model must not change."""
    x, y, folds = synthetic
    fold = folds.fold.reindex(y.index).to_numpy()
    seen: list[np.ndarray] = []
    models = []

    def spy(xt, yt, bt):
        seen.append(xt.copy())
        fitted = fit_on_training_rows("mlp", xt, yt, bt, seed=0)
        models.append(fitted)
        return fitted

    clean = cross_validate(x, y, folds, spy)
    for k, xt in enumerate(seen):  # fold k's fit got exactly the rows of the other folds
        assert np.array_equal(xt, x[fold != k])

    poisoned_x, poisoned_y = x.copy(), y.copy()
    poisoned_x[fold == 0] = 1e9
    poisoned_y.loc[fold == 0, "y"] = 1e9
    seen.clear()
    models.clear()
    dirty = cross_validate(poisoned_x, poisoned_y, folds, spy)
    # fold 0's model is identical: same predictions on the clean fold-0 features
    assert np.array_equal(models[0].predict(x[fold == 0]), clean.predictions["y"].to_numpy()[fold == 0])
    assert seen[0].max() < 1e8  # no poisoned row reached fold 0's fit
    # and the other folds did see the poison (the check above is not vacuous)
    assert any(s.max() >= 1e9 for s in seen[1:])
    assert not np.array_equal(dirty.predictions["y"].to_numpy()[fold == 1], clean.predictions["y"].to_numpy()[fold == 1])


def test_count_metrics_by_hand():
    assert poisson_deviance(np.array([0, 1, 2]), np.array([0.5, 1, 2])) == pytest.approx(1 / 3)
    assert poisson_deviance(np.array([1.0]), np.array([-3.0])) > 20  # negative predictions are floored, not rewarded
    assert roc_auc(np.array([False, True, True]), np.array([0.5, 1, 2])) == 1.0
    assert roc_auc(np.array([False, True]), np.array([1.0, 1.0])) == 0.5
    assert roc_auc(np.array([True, False, True, False]), np.array([0.9, 0.8, 0.1, 0.2])) == pytest.approx(0.5)
    assert np.isnan(roc_auc(np.array([True, True]), np.array([1.0, 2.0])))
    assert r2(np.array([1.0, 2, 3]), np.array([1.0, 2, 3])) == 1.0 and r2(np.array([1.0, 2, 3]), np.array([2.0, 2, 2])) == 0.0


def test_count_targets_get_count_metrics(synthetic):
    x, y, folds = synthetic
    counts = pd.DataFrame({"n": (y["y"] > 1).astype(float)}, index=y.index)
    result = cross_validate(x, counts, folds, "ridge", counts=["n"])
    assert {"poisson_deviance", "auc_any"} <= set(result.metrics["n"])
    assert result.metrics["n"]["auc_any"] > 0.85


def test_latlon_km_spacing():
    import h3

    centre = "89a901291abffff"
    ring = sorted(h3.grid_ring(centre, 1))
    xy = latlon_km([centre, *ring])
    d = np.linalg.norm(xy[1:] - xy[0], axis=1)
    assert len(d) == 6 and 0.3 < d.mean() < 0.4  # res-9 centre spacing ≈ 0.35 km
    assert d == pytest.approx(np.full(6, d.mean()), rel=0.1)


def test_held_out_features_are_clipped_to_the_training_range(synthetic):
    """A feature (nearly) constant in the training folds must not explode on the test fold (e.g. motorway length)."""
    x, y, folds = synthetic
    fold = folds.fold.reindex(y.index).to_numpy()
    rare = np.where(fold == 0, 50.0, 0.0) + np.random.default_rng(1).normal(scale=1e-6, size=len(fold))
    clean = cross_validate(x, y, folds, "ridge")
    spiked = cross_validate(np.column_stack([x, rare]), y, folds, "ridge")
    assert spiked.metrics["y"]["r2"] == pytest.approx(clean.metrics["y"]["r2"], abs=0.02)
