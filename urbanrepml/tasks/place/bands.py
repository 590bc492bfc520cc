"""Difficulty bands: for each anchor, its visual neighbours of other identities in percentile bands.

A BallTree over the fingerprint (or feature) vectors gives each anchor its ``neighbours`` nearest
images of *other* identities, nearest first; their ranks are cut into ``n_bands`` bands of (almost)
equal size: band 0 holds the hardest (most similar) negatives, band ``n_bands - 1`` the easiest of
the neighbourhood. :func:`bands_frame` is the long table logged as an artifact;
:func:`brute_force_neighbours` is the exhaustive reference (benchmarks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from urbanrepml.errors import UrbanReprError


@dataclass
class Bands:
    """``neighbours`` ``(N, M)`` int64 positions (nearest first), ``distances`` ``(N, M)``, ``band_of_rank`` ``(M,)``."""

    neighbours: np.ndarray
    distances: np.ndarray
    band_of_rank: np.ndarray
    n_bands: int

    def members(self, anchor: np.ndarray, band: int) -> np.ndarray:
        """``(len(anchor), per_band)`` neighbours of ``anchor`` in ``band``."""
        return self.neighbours[np.asarray(anchor)][:, self.band_of_rank == band]


def _check(n_bands: int, neighbours: int, available: int) -> None:
    if n_bands < 1:
        raise UrbanReprError(f"n_bands must be >= 1, got {n_bands}")
    if n_bands > neighbours:
        raise UrbanReprError(f"more bands ({n_bands}) than neighbours per anchor ({neighbours}); "
                             "lower n_bands or raise neighbours")
    if neighbours > available:
        raise UrbanReprError(f"{neighbours} neighbours per anchor asked for, but an anchor has only {available} image(s) "
                             "of other identities; lower neighbours")


def difficulty_bands(x: np.ndarray, identity: np.ndarray, n_bands: int = 7, neighbours: int = 70,
                     leaf_size: int = 40) -> Bands:
    """Bands of every row of ``x`` among the rows of other identities (see the module docstring)."""
    from sklearn.neighbors import BallTree

    x = np.asarray(x, dtype=np.float64)
    codes = np.unique(np.asarray(identity).astype(str), return_inverse=True)[1]
    if not np.isfinite(x).all():
        raise UrbanReprError("fingerprints or features hold NaN or inf; difficulty bands need finite vectors")
    largest = int(np.bincount(codes).max())
    _check(n_bands, neighbours, len(x) - largest)
    k = min(len(x), neighbours + largest)
    dist, ind = BallTree(x, leaf_size=leaf_size).query(x, k=k)
    other = codes[ind] != codes[:, None]
    # stable: keep the first `neighbours` of other identities per row, nearest first
    rank = np.cumsum(other, axis=1) - 1
    keep = other & (rank < neighbours)
    rows = np.nonzero(keep)
    nb = np.full((len(x), neighbours), -1, dtype=np.int64)
    dd = np.full((len(x), neighbours), np.inf)
    nb[rows[0], rank[rows]] = ind[rows]
    dd[rows[0], rank[rows]] = dist[rows]
    if (nb < 0).any():  # only when ties at the edge of the query leave too few: fall back to exhaustive rows
        for r in np.flatnonzero((nb < 0).any(1)):
            d = np.linalg.norm(x - x[r], axis=1)
            d[codes == codes[r]] = np.inf
            o = np.argsort(d, kind="stable")[:neighbours]
            nb[r], dd[r] = o, d[o]
    band_of_rank = np.concatenate([np.full(len(c), b) for b, c in enumerate(np.array_split(np.arange(neighbours), n_bands))])
    return Bands(nb, dd.astype(np.float32), band_of_rank.astype(np.int64), n_bands)


def brute_force_neighbours(x: np.ndarray, identity: np.ndarray, neighbours: int, block: int = 512) -> np.ndarray:
    """``(N, neighbours)`` nearest rows of other identities by exhaustive distances (the reference)."""
    x = np.asarray(x, dtype=np.float64)
    codes = np.unique(np.asarray(identity).astype(str), return_inverse=True)[1]
    sq = (x ** 2).sum(1)
    out = np.empty((len(x), neighbours), dtype=np.int64)
    for s in range(0, len(x), block):
        d = sq[s:s + block, None] - 2 * x[s:s + block] @ x.T + sq[None]
        d[codes[s:s + block, None] == codes[None]] = np.inf
        part = np.argpartition(d, neighbours - 1, axis=1)[:, :neighbours]
        order = np.argsort(np.take_along_axis(d, part, axis=1), axis=1, kind="stable")
        out[s:s + block] = np.take_along_axis(part, order, axis=1)
    return out


def bands_frame(bands: Bands, ids: np.ndarray) -> pd.DataFrame:
    """Long table: ``anchor``, ``band``, ``rank``, ``neighbour``, ``distance`` (one row per anchor and neighbour)."""
    ids = np.asarray(ids, dtype=object)
    n, m = bands.neighbours.shape
    return pd.DataFrame({"anchor": np.repeat(ids, m), "band": np.tile(bands.band_of_rank, n),
                         "rank": np.tile(np.arange(m), n), "neighbour": ids[bands.neighbours.ravel()],
                         "distance": bands.distances.ravel()})


def band_summary(bands: Bands) -> dict[str, float]:
    """Median distance per band (``band_<b>_distance``): how much harder the near bands are."""
    return {f"band_{b}_distance": float(np.median(bands.distances[:, bands.band_of_rank == b]))
            for b in range(bands.n_bands)}
