"""Baselines every geolocator run logs beside its model, on the same split and classes.

- ``knn1``: the training image whose frozen-encoder feature is most similar (cosine) to the query's;
  the prediction is that image's own location, its class the class scores.
- ``knn<k>``: the k most similar training images vote for their classes, weighted by
  similarity (shifted to be positive); the prediction is the winning class's centroid.
- ``majority``: every query gets the class with the most training images.

All return ``(scores (n, C), points or None)`` for :func:`~urbanrepml.tasks.geoloc.predict.evaluate_scores`.
"""

from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_neighbours(train_x: np.ndarray, query_x: np.ndarray, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """``(n, k)`` indices into ``train_x`` of each query's k most similar rows, and the similarities (centred cosine)."""
    mu = np.asarray(train_x, dtype=np.float32).mean(axis=0, keepdims=True)
    t, q = _unit(train_x - mu), _unit(query_x - mu)
    k = min(k, len(train_x))
    idx, sims = [], []
    for s in range(0, len(q), chunk):
        sim = q[s:s + chunk] @ t.T
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(sim, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        idx.append(np.take_along_axis(part, order, axis=1))
        sims.append(np.take_along_axis(ps, order, axis=1))
    return np.concatenate(idx), np.concatenate(sims)


def knn_scores(train_labels: np.ndarray, n_classes: int, idx: np.ndarray, sims: np.ndarray, k: int) -> np.ndarray:
    """Class votes of the neighbours, rows summing to 1.

    ``k`` > 1: the first ``k`` neighbours, weighted by similarity + 1. ``k`` = 1: every neighbour given,
    weighted 2^-rank, so the nearest one's class always wins and the others only rank the rest (top-5/10).
    """
    if k > 1:
        idx, sims = idx[:, :k], sims[:, :k]
        w = np.clip(sims + 1.0, 1e-6, None)
    else:
        w = np.broadcast_to(0.5 ** np.arange(idx.shape[1], dtype=np.float64), idx.shape)
    scores = np.zeros((len(idx), n_classes))
    np.add.at(scores, (np.repeat(np.arange(len(idx)), idx.shape[1]), train_labels[idx].ravel()), w.ravel())
    return scores / scores.sum(axis=1, keepdims=True)


def majority_scores(train_labels: np.ndarray, n_classes: int, n: int) -> np.ndarray:
    counts = np.bincount(train_labels, minlength=n_classes).astype(np.float64)
    return np.tile(counts / counts.sum(), (n, 1))
