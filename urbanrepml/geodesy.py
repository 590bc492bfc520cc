"""Distances and errors on the sphere, shared by every system that predicts a location.

Coordinates are ``(lat, lon)`` in degrees, WGS84, in that order everywhere (numpy arrays,
broadcasting). The sphere has the mean Earth radius :data:`EARTH_RADIUS_KM` (6371.0088 km).

API
---
- ``haversine_km(lat1, lon1, lat2, lon2)``: great-circle distance in km.
- ``pairwise_km(lat1, lon1, lat2, lon2)``: the (n, m) distance matrix.
- ``to_unit(lat, lon)`` -> (n, 3) unit vectors; ``from_unit(xyz)`` -> (lat, lon) of any non-zero vectors.
- ``spherical_mean(lat, lon, weights)``: the weighted mean point on the sphere along the last axis
  (the normalised weighted sum of unit vectors), e.g. of the top-k cell centroids of a prediction.
- ``DEFAULT_KM_THRESHOLDS`` = (1, 25, 200, 750, 2500): the usual geolocation scales (street, city,
  region, country, continent); ``scale_thresholds(lat, lon)`` adds three small scales of the data's
  own extent (1/50, 1/10 and 1/5 of its diameter, rounded to the nearest 1-2-5 step) so a 5 km scene is judged at
  0.1/0.5/1 km as well.
- ``error_summary(errors_km, thresholds)`` -> ``{"mean_km", "median_km", "p90_km", "p95_km",
  "acc_<t>km" ...}``: the metrics every geolocator logs (``acc_<t>km`` is the share with error <= t;
  ``t`` written without a trailing ``.0``, e.g. ``acc_0.1km``, ``acc_25km``).
"""

from __future__ import annotations

import math

import numpy as np

from urbanrepml.errors import UrbanReprError

EARTH_RADIUS_KM = 6371.0088
DEFAULT_KM_THRESHOLDS = (1.0, 25.0, 200.0, 750.0, 2500.0)


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km between points (degrees; arrays broadcast)."""
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def pairwise_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """(n, m) great-circle distances in km between the points of two sets."""
    lat1, lon1 = np.asarray(lat1, dtype=np.float64).reshape(-1, 1), np.asarray(lon1, dtype=np.float64).reshape(-1, 1)
    lat2, lon2 = np.asarray(lat2, dtype=np.float64).reshape(1, -1), np.asarray(lon2, dtype=np.float64).reshape(1, -1)
    return haversine_km(lat1, lon1, lat2, lon2)


def to_unit(lat, lon) -> np.ndarray:
    """Unit vectors (x, y, z) of points in degrees; shape ``(*shape, 3)``."""
    la, lo = np.radians(np.asarray(lat, dtype=np.float64)), np.radians(np.asarray(lon, dtype=np.float64))
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def from_unit(xyz) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) in degrees of vectors ``(..., 3)`` (normalised first; a zero vector is an error)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    norm = np.linalg.norm(xyz, axis=-1, keepdims=True)
    if np.any(norm < 1e-9):
        raise UrbanReprError("a point on the sphere cannot be recovered from a zero vector (weights cancel out)")
    xyz = xyz / norm
    lat = np.degrees(np.arcsin(np.clip(xyz[..., 2], -1.0, 1.0)))
    lon = np.degrees(np.arctan2(xyz[..., 1], xyz[..., 0]))
    return lat, lon


def spherical_mean(lat, lon, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean point on the sphere along the last axis of ``lat``/``lon`` (equal weights by default)."""
    xyz = to_unit(lat, lon)
    w = np.ones(xyz.shape[:-1]) if weights is None else np.asarray(weights, dtype=np.float64)
    return from_unit((xyz * w[..., None]).sum(axis=-2))


def _nice(x: float) -> float:
    """The 1-2-5 step (…, 0.1, 0.2, 0.5, 1, 2, 5, …) nearest to ``x`` on a log scale."""
    exponent = math.floor(math.log10(x))
    steps = [m * 10.0 ** e for e in (exponent, exponent + 1) for m in (1, 2, 5)]
    return round(min(steps, key=lambda c: abs(math.log(c / x))), 10)


def scale_thresholds(lat, lon, base: tuple[float, ...] = DEFAULT_KM_THRESHOLDS) -> tuple[float, ...]:
    """``base`` plus three thresholds at the data's own scale (1/50, 1/10, 1/5 of its diameter in km)."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    if lat.size < 2:
        return tuple(base)
    diameter = float(haversine_km(lat.min(), lon.min(), lat.max(), lon.max()))
    small = {_nice(diameter * f) for f in (0.02, 0.1, 0.2) if diameter * f > 0}
    return tuple(sorted(set(base) | small))


def threshold_name(t: float) -> str:
    """``acc_<t>km`` with ``t`` as short as it goes (``acc_0.1km``, ``acc_25km``)."""
    return f"acc_{t:g}km"


def error_summary(errors_km, thresholds: tuple[float, ...] = DEFAULT_KM_THRESHOLDS) -> dict[str, float]:
    """Mean, median, p90, p95 error (km) and the share within each threshold (see the module docstring)."""
    e = np.asarray(errors_km, dtype=np.float64).reshape(-1)
    if e.size == 0:
        raise UrbanReprError("no predictions to score: the split is empty")
    if not np.all(np.isfinite(e)):
        raise UrbanReprError(f"{int((~np.isfinite(e)).sum())} prediction error(s) are not finite")
    out = {"mean_km": float(e.mean()), "median_km": float(np.median(e)),
           "p90_km": float(np.percentile(e, 90)), "p95_km": float(np.percentile(e, 95))}
    out.update({threshold_name(t): float((e <= t).mean()) for t in thresholds})
    return out
