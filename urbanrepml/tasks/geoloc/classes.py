"""Classes of a geolocator: H3 cells over the training images, small cells merged into their parents.

:func:`build_classes` starts from every training image's cell at ``resolution``; while a class holds
fewer than ``min_cell_samples`` training images (and is coarser than resolution 0 allows), its images
move to the parent cell, recursively. A merged parent class holds only the images of its small
children: an image belongs to the finest class that contains its cell (:meth:`CellClasses.label`),
so a parent class and a sibling that kept its own class never overlap. No training image is dropped.

Centroids (the point a class predicts) are the spherical mean of the class's training points
(:func:`urbanrepml.geodesy.spherical_mean`), not the H3 cell centre: the images of a class need not
fill its cell (a merged parent, or a cell at the data's edge), and their mean is nearer to them.
``centroid="center"`` uses the H3 cell centre instead.

Hierarchy: each class also has a parent class at ``resolution - 1`` (the parent cell of its cell,
or its own cell when it is already that coarse), for the optional parent-cell loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import h3
import numpy as np

from urbanrepml.errors import UrbanReprError
from urbanrepml.geodesy import spherical_mean

CENTROIDS = ("mean", "center")


@dataclass
class CellClasses:
    """The classes of a geolocator.

    Attributes:
        resolution: the finest resolution (classes are cells at it or, merged, coarser).
        cells: the class cells (H3 ids), class ``i`` is ``cells[i]``.
        lat, lon: each class's centroid (degrees).
        counts: training images per class.
        parent: each class's parent class index (into ``parent_cells``).
        parent_cells: the parent classes' cells.
        merges: how many cells were merged into their parent.
        centroid: ``mean`` or ``center`` (see the module docstring).
    """

    resolution: int
    cells: list[str]
    lat: np.ndarray
    lon: np.ndarray
    counts: np.ndarray
    parent: np.ndarray
    parent_cells: list[str]
    merges: int = 0
    centroid: str = "mean"
    _lookup: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._lookup = {c: i for i, c in enumerate(self.cells)}

    @property
    def n(self) -> int:
        return len(self.cells)

    def label(self, lat, lon) -> np.ndarray:
        """The class of each point: the finest class containing its cell at ``resolution``; -1 when none does."""
        lat, lon = np.atleast_1d(np.asarray(lat, dtype=np.float64)), np.atleast_1d(np.asarray(lon, dtype=np.float64))
        out = np.full(len(lat), -1, dtype=np.int64)
        for i, (a, b) in enumerate(zip(lat, lon, strict=True)):
            cell = h3.latlng_to_cell(float(a), float(b), self.resolution)
            while True:
                hit = self._lookup.get(cell)
                if hit is not None:
                    out[i] = hit
                    break
                if h3.get_resolution(cell) == 0:
                    break
                cell = h3.cell_to_parent(cell, h3.get_resolution(cell) - 1)
        return out

    def to_dict(self) -> dict:
        return {"resolution": self.resolution, "cells": list(self.cells), "lat": self.lat.tolist(), "lon": self.lon.tolist(),
                "counts": self.counts.tolist(), "parent": self.parent.tolist(), "parent_cells": list(self.parent_cells),
                "merges": self.merges, "centroid": self.centroid}

    @classmethod
    def from_dict(cls, d: dict) -> CellClasses:
        return cls(int(d["resolution"]), list(d["cells"]), np.asarray(d["lat"], float), np.asarray(d["lon"], float),
                   np.asarray(d["counts"], np.int64), np.asarray(d["parent"], np.int64), list(d["parent_cells"]),
                   int(d.get("merges", 0)), d.get("centroid", "mean"))


def build_classes(lat, lon, resolution: int, min_cell_samples: int = 1, centroid: str = "mean") -> CellClasses:
    """Classes over the training points (see the module docstring); one clear error when fewer than two remain."""
    if not 0 <= int(resolution) <= 15:
        raise UrbanReprError(f"resolution must be an H3 resolution (0-15), got {resolution}")
    if min_cell_samples < 1:
        raise UrbanReprError(f"min_cell_samples must be >= 1, got {min_cell_samples}")
    if centroid not in CENTROIDS:
        raise UrbanReprError(f"centroid must be one of {', '.join(CENTROIDS)}, got {centroid!r}")
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    if lat.size == 0:
        raise UrbanReprError("no training images: the training split is empty")
    assign = np.array([h3.latlng_to_cell(float(a), float(b), resolution) for a, b in zip(lat, lon, strict=True)], dtype=object)
    raw = len(set(assign))
    if raw < 2:
        raise UrbanReprError(f"resolution {resolution} leaves {raw} cell over the {lat.size} training image(s): a geolocator "
                             "needs at least two classes; use a finer resolution (or images from more than one place)")
    merges = 0
    while True:
        cells, counts = np.unique(assign, return_counts=True)
        small = {c for c, k in zip(cells, counts, strict=True) if k < min_cell_samples and h3.get_resolution(c) > 0}
        if not small:
            break
        merges += len(small)
        moved = np.array([c in small for c in assign])
        assign[moved] = [h3.cell_to_parent(c, h3.get_resolution(c) - 1) for c in assign[moved]]
    cells, inverse, counts = np.unique(assign, return_inverse=True, return_counts=True)
    if len(cells) < 2:
        raise UrbanReprError(f"min_cell_samples {min_cell_samples} merges every cell of resolution {resolution} into one class; "
                             "lower min_cell_samples or use a finer resolution")
    if centroid == "mean":
        clat, clon = np.empty(len(cells)), np.empty(len(cells))
        for i in range(len(cells)):
            m = inverse == i
            a, b = spherical_mean(lat[m], lon[m])
            clat[i], clon[i] = float(a), float(b)
    else:
        clat, clon = (np.array(v) for v in zip(*(h3.cell_to_latlng(c) for c in cells), strict=True))
    parent_res = max(0, resolution - 1)
    parents = [c if h3.get_resolution(c) <= parent_res else h3.cell_to_parent(c, parent_res) for c in cells]
    parent_cells = sorted(set(parents))
    pidx = {c: i for i, c in enumerate(parent_cells)}
    return CellClasses(int(resolution), [str(c) for c in cells], clat, clon, counts.astype(np.int64),
                       np.array([pidx[c] for c in parents], dtype=np.int64), parent_cells, merges, centroid)
