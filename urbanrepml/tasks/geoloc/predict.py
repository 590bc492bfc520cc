"""From class scores to places, and the metrics every geolocator logs.

- :func:`predict_points`: top-k classes; the predicted point is the top class's centroid
  (``mode="top1"``) or the probability-weighted spherical mean of the top-k centroids (``mode="topk_mean"``).
- :func:`evaluate_scores`: top-1/5/10 cell accuracy (the true cell = the finest class containing
  the image, :meth:`CellClasses.label`; an image in no class counts as a miss), then the km errors
  (:func:`urbanrepml.geodesy.error_summary`: mean/median/p90/p95 km and accuracy within each threshold).
"""

from __future__ import annotations

import numpy as np

from urbanrepml.errors import UrbanReprError
from urbanrepml.geodesy import error_summary, haversine_km, spherical_mean

PREDICT_MODES = ("top1", "topk_mean")


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n, k)`` class indices by decreasing score and their scores."""
    k = min(int(k), scores.shape[1])
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(scores, idx, axis=1)


def predict_points(probs: np.ndarray, c_lat: np.ndarray, c_lon: np.ndarray, k: int = 5, mode: str = "top1"):
    """``(lat, lon, top-k classes, their probabilities)`` of each row of ``probs`` (see the module docstring)."""
    if mode not in PREDICT_MODES:
        raise UrbanReprError(f"predict must be one of {', '.join(PREDICT_MODES)}, got {mode!r}")
    idx, p = topk(probs, max(1, k))
    if mode == "top1" or idx.shape[1] == 1:
        return c_lat[idx[:, 0]], c_lon[idx[:, 0]], idx, p
    w = np.clip(p, 1e-12, None)
    lat, lon = spherical_mean(c_lat[idx], c_lon[idx], w)
    return lat, lon, idx, p


def evaluate_scores(scores: np.ndarray, labels: np.ndarray, true_lat, true_lon, c_lat, c_lon, thresholds, *, k: int = 5,
                    mode: str = "top1", points: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[dict, np.ndarray]:
    """Metrics (``acc_top1``, ``acc_top5``, ``acc_top10``, km errors) and the per-image errors in km.

    ``points`` overrides the predicted points (e.g. a kNN-1 neighbour's own location).
    """
    if len(labels) == 0:
        raise UrbanReprError("no images to evaluate: the split is empty")
    order, _ = topk(scores, 10)
    out = {}
    for t in (1, 5, 10):
        out[f"acc_top{t}"] = float((order[:, :t] == np.asarray(labels)[:, None]).any(axis=1).mean())
    if points is None:
        lat, lon, _, _ = predict_points(scores, c_lat, c_lon, k, mode)
    else:
        lat, lon = points
    err = haversine_km(true_lat, true_lon, lat, lon)
    out.update(error_summary(err, thresholds))
    return out, err
