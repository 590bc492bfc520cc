"""Cell classes: merging small cells into parents (recursively), labels, centroids, and the one-class errors."""

from __future__ import annotations

import h3
import numpy as np
import pytest

from urbanrepml.errors import UrbanReprError
from urbanrepml.geodesy import spherical_mean
from urbanrepml.tasks.geoloc.classes import CellClasses, build_classes

BIG = h3.latlng_to_cell(47.0, -99.0, 9)


def _points(cell: str, n: int, jitter: float = 1e-4, seed: int = 0):
    lat, lon = h3.cell_to_latlng(cell)
    rng = np.random.default_rng(seed)
    return lat + rng.uniform(-jitter, jitter, n), lon + rng.uniform(-jitter, jitter, n)


def _far_child_of_other_parent(cell: str) -> str:
    """A res-9 cell whose res-8 parent differs from ``cell``'s."""
    parent = h3.cell_to_parent(cell, 8)
    ring = [c for c in h3.grid_ring(parent, 2)]
    return h3.cell_to_center_child(ring[0], 9)


def test_small_cells_merge_into_parents_and_no_image_is_dropped():
    small = _far_child_of_other_parent(BIG)
    big_lat, big_lon = _points(BIG, 6)
    s_lat, s_lon = _points(small, 2, seed=1)
    lat, lon = np.r_[big_lat, s_lat], np.r_[big_lon, s_lon]
    classes = build_classes(lat, lon, 9, min_cell_samples=3)
    assert classes.n == 2 and classes.merges >= 1
    assert BIG in classes.cells
    merged = [c for c in classes.cells if c != BIG][0]
    assert h3.get_resolution(merged) < 9 and h3.cell_to_parent(small, h3.get_resolution(merged)) == merged
    labels = classes.label(lat, lon)
    assert (labels >= 0).all() and classes.counts.sum() == len(lat)  # every image in a class
    assert set(labels[:6]) == {classes.cells.index(BIG)} and set(labels[6:]) == {classes.cells.index(merged)}
    # centroid of the merged class: spherical mean of its training points, not the H3 centre
    m_lat, m_lon = spherical_mean(s_lat, s_lon)
    i = classes.cells.index(merged)
    assert classes.lat[i] == pytest.approx(float(m_lat)) and classes.lon[i] == pytest.approx(float(m_lon))


def test_merging_is_recursive_and_siblings_keep_their_class():
    sib_a, sib_b = sorted(h3.cell_to_children(h3.cell_to_parent(BIG, 8), 9))[:2]
    far = _far_child_of_other_parent(BIG)
    lat_a, lon_a = _points(sib_a, 5)
    lat_b, lon_b = _points(sib_b, 1, jitter=1e-6)
    lat_f, lon_f = _points(far, 5)
    lat, lon = np.r_[lat_a, lat_b, lat_f], np.r_[lon_a, lon_b, lon_f]
    classes = build_classes(lat, lon, 9, min_cell_samples=2)
    # sib_b (1 image) -> its res-8 parent (still 1) -> res 7 ...: it stops where it has 2, or at res 0
    assert sib_a in classes.cells and far in classes.cells and classes.n == 3
    parent_class = [c for c in classes.cells if c not in (sib_a, far)][0]
    assert h3.get_resolution(parent_class) < 8
    assert classes.label(lat_b, lon_b)[0] == classes.cells.index(parent_class)
    assert classes.label(lat_a, lon_a)[0] == classes.cells.index(sib_a)  # the finest class wins
    again = CellClasses.from_dict(classes.to_dict())
    assert again.cells == classes.cells and (again.label(lat, lon) == classes.label(lat, lon)).all()


def test_one_cell_is_refused():
    lat, lon = _points(BIG, 5)
    with pytest.raises(UrbanReprError, match="leaves 1 cell"):
        build_classes(lat, lon, 9)
    with pytest.raises(UrbanReprError, match="leaves 1 cell"):  # a resolution too coarse for the data
        build_classes(np.r_[lat, 47.01], np.r_[lon, -99.01], 0)


def test_merging_everything_into_one_class_is_refused():
    lat, lon = np.array([47.0, 47.02]), np.array([-99.0, -99.02])
    with pytest.raises(UrbanReprError, match="merges every cell"):
        build_classes(lat, lon, 9, min_cell_samples=5)


def test_center_centroids_and_parents():
    far = _far_child_of_other_parent(BIG)
    lat, lon = np.r_[_points(BIG, 3)[0], _points(far, 3)[0]], np.r_[_points(BIG, 3)[1], _points(far, 3)[1]]
    classes = build_classes(lat, lon, 9, centroid="center")
    assert (classes.lat[classes.cells.index(BIG)], classes.lon[classes.cells.index(BIG)]) == pytest.approx(h3.cell_to_latlng(BIG))
    assert len(classes.parent_cells) == 2 and h3.cell_to_parent(BIG, 8) in classes.parent_cells
