"""Semantic geocells: per-country K-Means on unit-sphere coordinates.

For each country with ``n`` training samples, ``k = n // min_samples_per_cell`` clusters (one cell for a
country with fewer samples than that) of the samples' unit vectors (:func:`urbanrepml.geodesy.to_unit`);
the centres are normalised back onto the unit sphere. Cells are numbered country by country
(alphabetical), then by K-Means order, and carry their country, sample count and centre (lat, lon).

:meth:`Geocells.assign` puts any point into the nearest cell of its own country (cosine on the unit
sphere), or the nearest cell anywhere when its country has none. :meth:`Geocells.offsets` are the 3-D
Cartesian offsets of points from the centres of their cells (the stage-2 regression target).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from urbanrepml.errors import UrbanReprError
from urbanrepml.geodesy import from_unit, to_unit


@dataclass
class Geocells:
    """Cells: centres (K, 3) on the unit sphere, their country and training-sample count."""

    centres: np.ndarray
    country: np.ndarray
    counts: np.ndarray
    min_samples_per_cell: int

    @property
    def k(self) -> int:
        return len(self.centres)

    def latlon(self) -> tuple[np.ndarray, np.ndarray]:
        return from_unit(self.centres)

    def assign(self, lat, lon, country=None) -> np.ndarray:
        """Cell of each point: the nearest centre of its country (else the nearest anywhere)."""
        xyz = to_unit(lat, lon)
        sim = xyz @ self.centres.T
        if country is not None:
            country = np.asarray(country).astype(str)
            same = country[:, None] == self.country[None, :].astype(str)
            has = same.any(axis=1)
            sim = np.where(same | ~has[:, None], sim, -np.inf)
        return sim.argmax(axis=1).astype(np.int64)

    def offsets(self, lat, lon, cells) -> np.ndarray:
        """(N, 3) unit vector of each point minus its cell's centre."""
        return to_unit(lat, lon) - self.centres[np.asarray(cells, dtype=np.int64)]

    def table(self) -> pd.DataFrame:
        lat, lon = self.latlon()
        return pd.DataFrame({"cell": np.arange(self.k), "country": self.country, "samples": self.counts,
                             "lat": lat, "lon": lon, "x": self.centres[:, 0], "y": self.centres[:, 1],
                             "z": self.centres[:, 2]})

    def to_dict(self) -> dict:
        return {"centres": self.centres.tolist(), "country": [str(c) for c in self.country],
                "counts": [int(c) for c in self.counts], "min_samples_per_cell": int(self.min_samples_per_cell)}

    @classmethod
    def from_dict(cls, d: dict) -> Geocells:
        return cls(np.asarray(d["centres"], dtype=np.float64), np.asarray(d["country"], dtype=object),
                   np.asarray(d["counts"], dtype=np.int64), int(d["min_samples_per_cell"]))


def semantic_geocells(lat, lon, country, min_samples_per_cell: int, *, seed: int = 0,
                      where: str = "concept dataset") -> Geocells:
    """Per-country K-Means geocells of the given (training) points (see the module docstring)."""
    from sklearn.cluster import KMeans

    if int(min_samples_per_cell) <= 0:
        raise UrbanReprError(f"parameter min_samples_per_cell must be >= 1, got {min_samples_per_cell}")
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    country = pd.Series(np.asarray(country, dtype=object))
    if len(lat) == 0:
        raise UrbanReprError(f"{where}: no training samples to build geocells from")
    missing = country.isna() | (country.astype(str).str.strip() == "")
    if missing.any():
        raise UrbanReprError(f"{where}: {int(missing.sum())} sample(s) have no country; label them (the concepts stage "
                             "derives countries from coordinates)")
    xyz = to_unit(lat, lon)
    centres, countries, counts = [], [], []
    names, inverse = np.unique(country.astype(str).to_numpy(), return_inverse=True)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    for c, sel in zip(names, members, strict=True):
        k = max(1, len(sel) // int(min_samples_per_cell))
        pts = xyz[sel]
        if k == 1:
            labels, cc = np.zeros(len(sel), dtype=np.int64), pts.mean(axis=0, keepdims=True)
        else:
            km = KMeans(n_clusters=k, n_init=1, max_iter=100, random_state=seed).fit(pts)
            labels, cc = km.labels_, km.cluster_centers_
        norm = np.linalg.norm(cc, axis=1, keepdims=True)
        cc = cc / np.where(norm > 0, norm, 1.0)
        for j in range(len(cc)):
            n = int((labels == j).sum())
            if n == 0:
                continue
            centres.append(cc[j])
            countries.append(c)
            counts.append(n)
    return Geocells(np.asarray(centres), np.asarray(countries, dtype=object), np.asarray(counts, dtype=np.int64),
                    int(min_samples_per_cell))


def check_countries(frame_countries, expected: list[str] | None, *, where: str) -> None:
    """Refuse a country that has zero samples (``expected`` lists the countries the user named)."""
    if not expected:
        return
    have = set(pd.Series(frame_countries).dropna().astype(str))
    empty = [c for c in expected if c not in have]
    if empty:
        raise UrbanReprError(f"{where}: country {empty[0]!r} has zero samples (the dataset has {', '.join(sorted(have))}); "
                             "drop it from countries or add its images")
