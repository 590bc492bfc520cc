"""Metrics on known points, top-k prediction, and the kNN / majority baselines."""

from __future__ import annotations

import numpy as np
import pytest

from urbanrepml.geodesy import haversine_km, spherical_mean
from urbanrepml.tasks.geoloc.baselines import cosine_neighbours, knn_scores, majority_scores
from urbanrepml.tasks.geoloc.predict import evaluate_scores, predict_points

C_LAT, C_LON = np.array([0.0, 0.0, 10.0]), np.array([0.0, 1.0, 0.0])


def test_metrics_on_known_points():
    scores = np.array([[0.7, 0.2, 0.1],    # right (true class 0)
                       [0.1, 0.6, 0.3],    # wrong: top-1 class 1, true class 2
                       [0.2, 0.3, 0.5]])   # right (true class 2)
    labels = np.array([0, 2, 2])
    t_lat, t_lon = np.array([0.0, 10.0, 10.0]), np.array([0.0, 0.0, 0.0])
    m, err = evaluate_scores(scores, labels, t_lat, t_lon, C_LAT, C_LON, (1.0, 2000.0), k=1)
    assert m["acc_top1"] == pytest.approx(2 / 3) and m["acc_top5"] == 1.0 and m["acc_top10"] == 1.0
    far = float(haversine_km(10, 0, 0, 1))
    np.testing.assert_allclose(err, [0.0, far, 0.0], atol=1e-9)
    assert m["median_km"] == pytest.approx(0.0, abs=1e-9) and m["mean_km"] == pytest.approx(far / 3)
    assert m["acc_1km"] == pytest.approx(2 / 3) and m["acc_2000km"] == 1.0
    # an image in no class (-1) is a miss for every top-k
    m2, _ = evaluate_scores(scores, np.array([0, -1, 2]), t_lat, t_lon, C_LAT, C_LON, (1.0,), k=1)
    assert m2["acc_top10"] == pytest.approx(2 / 3)


def test_topk_mean_is_the_weighted_spherical_mean():
    probs = np.array([[0.6, 0.3, 0.1]])
    lat, lon, idx, p = predict_points(probs, C_LAT, C_LON, k=2, mode="topk_mean")
    e_lat, e_lon = spherical_mean(C_LAT[[0, 1]], C_LON[[0, 1]], [0.6, 0.3])
    assert (lat[0], lon[0]) == pytest.approx((float(e_lat), float(e_lon)))
    assert idx.tolist() == [[0, 1]] and p[0].tolist() == pytest.approx([0.6, 0.3])
    lat1, lon1, _, _ = predict_points(probs, C_LAT, C_LON, k=2, mode="top1")
    assert (lat1[0], lon1[0]) == (0.0, 0.0)


def test_knn_and_majority_baselines():
    train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.05, 1.0]])
    labels = np.array([0, 0, 1, 1, 1])
    query = np.array([[1.0, 0.05], [0.0, 0.8]])
    idx, sims = cosine_neighbours(train, query, 3)
    assert idx.shape == (2, 3) and (np.diff(sims, axis=1) <= 1e-6).all()
    s1 = knn_scores(labels, 2, idx, sims, 1)
    assert s1.argmax(1).tolist() == [0, 1] and np.allclose(s1.sum(1), 1)
    s3 = knn_scores(labels, 2, idx, sims, 3)
    assert s3.argmax(1).tolist() == [0, 1]
    maj = majority_scores(labels, 2, 4)
    assert maj.shape == (4, 2) and maj.argmax(1).tolist() == [1, 1, 1, 1]
