"""Distances and error metrics on the sphere, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from urbanrepml.errors import UrbanReprError
from urbanrepml.geodesy import EARTH_RADIUS_KM, error_summary, haversine_km, pairwise_km, scale_thresholds, spherical_mean, threshold_name


def test_haversine_known_distances():
    # A quarter of the equator, a degree of latitude, and the same point.
    assert haversine_km(0, 0, 0, 90) == pytest.approx(math.pi / 2 * EARTH_RADIUS_KM)
    assert haversine_km(10, 20, 11, 20) == pytest.approx(EARTH_RADIUS_KM * math.pi / 180)
    assert haversine_km(52.37, 4.89, 52.37, 4.89) == 0.0
    # Across the antimeridian: 179.5 E to 179.5 W on the equator is one degree, not 359.
    assert haversine_km(0, 179.5, 0, -179.5) == pytest.approx(EARTH_RADIUS_KM * math.pi / 180)
    d = pairwise_km([0, 10], [0, 20], [0, 11, 0], [90, 20, 0])
    assert d.shape == (2, 3) and d[1, 1] == pytest.approx(111.195, abs=1e-3) and d[0, 2] == 0.0


def test_spherical_mean_of_two_points_is_their_midpoint_and_weights_pull():
    lat, lon = spherical_mean(np.array([0.0, 0.0]), np.array([0.0, 90.0]))
    assert float(lat) == pytest.approx(0.0, abs=1e-12) and float(lon) == pytest.approx(45.0)
    lat, lon = spherical_mean(np.array([[0.0, 0.0]]), np.array([[0.0, 90.0]]), np.array([[3.0, 1.0]]))
    # atan2(1, 3) in degrees: the weighted sum of (1,0,0)*3 and (0,1,0)*1.
    assert float(lon[0]) == pytest.approx(math.degrees(math.atan2(1, 3))) and float(lat[0]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(UrbanReprError, match="zero vector"):
        spherical_mean(np.array([0.0, 0.0]), np.array([0.0, 180.0]))


def test_error_summary_by_hand():
    errors = [0.05, 0.4, 2.0, 30.0, 1000.0]
    s = error_summary(errors, thresholds=(0.1, 1, 25, 750, 2500))
    assert s["mean_km"] == pytest.approx(206.49) and s["median_km"] == 2.0
    assert s["acc_0.1km"] == 0.2 and s["acc_1km"] == 0.4 and s["acc_25km"] == 0.6 and s["acc_750km"] == 0.8
    assert s["acc_2500km"] == 1.0
    assert s["p90_km"] == pytest.approx(30.0 + 0.6 * 970.0)  # numpy's linear interpolation between 30 and 1000
    with pytest.raises(UrbanReprError, match="split is empty"):
        error_summary([])
    with pytest.raises(UrbanReprError, match="not finite"):
        error_summary([1.0, float("nan")])


def test_scale_thresholds_add_the_data_scale():
    # A 5 km scene (diagonal ~5 km) gets 0.1, 0.5 and 1 km besides the usual scales.
    lat = np.array([47.0, 47.0 + 3.0 / 111.2])
    lon = np.array([-99.0, -99.0 + 4.0 / (111.2 * math.cos(math.radians(47.0)))])
    t = scale_thresholds(lat, lon)
    assert {0.1, 0.5, 1.0} <= set(t) and {25.0, 200.0, 750.0, 2500.0} <= set(t)
    assert threshold_name(0.1) == "acc_0.1km" and threshold_name(25.0) == "acc_25km"
