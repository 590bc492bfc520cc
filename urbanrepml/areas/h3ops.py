"""Vectorised H3 operations on ``uint64`` cell arrays (numpy + h3ronpy, no per-cell Python loops).

Cells are handled as sorted ``np.uint64`` arrays internally and as lowercase hex
strings (``region_id``) at the edges of the system.
"""

from __future__ import annotations


import h3ronpy
import numpy as np
import pyarrow as pa

from urbanrepml.cells import (  # noqa: F401 - re-exported: h3ops is the areas' API
    _RES_MASK,
    _RES_SHIFT,
    _to_numpy_u64,
    cell_resolution,
    cells_to_str,
    parse_cells,
)

def sorted_unique(cells: np.ndarray) -> np.ndarray:
    """Sorted unique uint64 cells (sort + neighbour compare; much faster than np.unique's hashing here)."""
    arr = np.sort(np.asarray(cells, dtype=np.uint64), kind="stable")
    if len(arr) < 2:
        return arr
    keep = np.empty(len(arr), dtype=bool)
    keep[0] = True
    np.not_equal(arr[1:], arr[:-1], out=keep[1:])
    return arr[keep]


def parent_cells(cells: np.ndarray, parent_res: int) -> np.ndarray:
    """Parent of each cell at ``parent_res`` (pure bit arithmetic on the H3 index)."""
    cells = np.asarray(cells, dtype=np.uint64)
    if len(cells) and cell_resolution(cells).min() < parent_res:
        raise ValueError(f"parent resolution {parent_res} is finer than some cells")
    digits_below = np.uint64((1 << (3 * (15 - parent_res))) - 1)
    return (cells & ~_RES_MASK) | (np.uint64(parent_res) << _RES_SHIFT) | digits_below


def positions(sorted_cells: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of each ``query`` cell in ``sorted_cells``, -1 where absent."""
    pos = np.searchsorted(sorted_cells, query)
    pos = np.minimum(pos, max(len(sorted_cells) - 1, 0))
    found = len(sorted_cells) > 0
    hit = found & (sorted_cells[pos] == query) if found else np.zeros(len(query), dtype=bool)
    return np.where(hit, pos, -1).astype(np.int64)


# The six 1-ring neighbours in H3's local IJ coordinates.
_IJ_NEIGHBOURS = ((1, 0), (1, 1), (0, 1), (-1, 0), (-1, -1), (0, -1))
_MAX_GRID_PER_CELL = 8  # dense IJ lookup grid may be at most this many times the cell count


def _edges_local_ij(sorted_cells: np.ndarray) -> np.ndarray | None:
    """1-ring edges through local IJ coordinates and a dense lookup grid; None where that does not apply.

    IJ coordinates are exact away from pentagons; areas with a pentagon, cells
    that have no IJ coordinates from the anchor, or a too sparse grid fall back.
    """
    res = int(cell_resolution(sorted_cells[:1])[0])
    import h3

    pentagons = np.array([h3.str_to_int(p) for p in h3.get_pentagons(res)], dtype=np.uint64)
    if (positions(sorted_cells, np.sort(pentagons)) >= 0).any():  # (np.isin is slow on millions of cells)
        return None
    anchor = int(sorted_cells[len(sorted_cells) // 2])
    table = pa.table(h3ronpy.cells_to_localij(pa.array(sorted_cells, pa.uint64()), anchor, set_failing_to_invalid=True))
    i_col, j_col = table.column("i"), table.column("j")
    if i_col.null_count or j_col.null_count:
        return None
    i = i_col.to_numpy().astype(np.int64)
    j = j_col.to_numpy().astype(np.int64)
    i -= i.min() - 1  # one cell of margin, so neighbour lookups never index out of range
    j -= j.min() - 1
    shape = (int(i.max()) + 2, int(j.max()) + 2)
    if shape[0] * shape[1] > _MAX_GRID_PER_CELL * len(sorted_cells) + 1024:
        return None
    grid = np.full(shape, -1, dtype=np.int64)
    grid[i, j] = np.arange(len(sorted_cells), dtype=np.int64)
    n = len(sorted_cells)
    dst = np.empty((n, len(_IJ_NEIGHBOURS)), dtype=np.int64)  # row = source cell, so edges come src-major
    for col, (di, dj) in enumerate(_IJ_NEIGHBOURS):
        dst[:, col] = grid[i + di, j + dj]
    keep = dst >= 0
    edges = np.empty((2, int(keep.sum())), dtype=np.int64)
    edges[0] = np.repeat(np.arange(n, dtype=np.int64), keep.sum(axis=1))
    edges[1] = dst[keep]
    return edges


def _edges_grid_disk(sorted_cells: np.ndarray, k: int) -> np.ndarray:
    disks = pa.array(h3ronpy.grid_disk(pa.array(sorted_cells, pa.uint64()), k))
    offsets = np.asarray(disks.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    flat = np.asarray(disks.flatten().to_numpy(zero_copy_only=False), dtype=np.uint64)
    src = np.repeat(np.arange(len(sorted_cells), dtype=np.int64), np.diff(offsets))
    dst = positions(sorted_cells, flat)
    keep = (dst >= 0) & (dst != src)
    return np.stack([src[keep], dst[keep]])


def neighbour_edges(sorted_cells: np.ndarray, k: int = 1) -> np.ndarray:
    """Directed edges (2, E) between cells of ``sorted_cells`` within grid distance ``k`` (no self loops).

    Both directions are present, as PyTorch Geometric expects for an undirected
    graph; edges are grouped by source cell. For ``k == 1`` a dense local-IJ
    lookup is used where it is exact (no pentagon in the set), else H3's grid disk.
    """
    if len(sorted_cells) == 0:
        return np.zeros((2, 0), dtype=np.int64)
    if k == 1:
        edges = _edges_local_ij(sorted_cells)
        if edges is not None:
            return edges
    return _edges_grid_disk(sorted_cells, k)


def cell_centroids(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) in degrees of each cell centre."""
    from h3ronpy.vector import cells_to_coordinates

    batch = cells_to_coordinates(pa.array(cells, pa.uint64()))
    table = pa.table(batch)
    return table.column("lat").to_numpy(), table.column("lng").to_numpy()


def latlon_to_cells(lat: np.ndarray, lon: np.ndarray, resolution: int) -> np.ndarray:
    """Cell containing each (lat, lon) point at ``resolution``."""
    from h3ronpy.vector import coordinates_to_cells

    res = np.full(len(lat), resolution, dtype=np.uint8)
    return _to_numpy_u64(coordinates_to_cells(np.asarray(lat, float), np.asarray(lon, float), res))


def cells_to_polygons_wkb(cells: np.ndarray) -> np.ndarray:
    """WKB polygon of each cell."""
    from h3ronpy.vector import cells_to_wkb_polygons

    return np.asarray(pa.array(cells_to_wkb_polygons(pa.array(cells, pa.uint64()))).to_numpy(zero_copy_only=False), dtype=object)


def polyfill(geometry_wkb: list[bytes], resolution: int) -> np.ndarray:
    """Sorted unique cells that intersect the geometry (SRAI ``H3Regionalizer(buffer=True)``'s set)."""
    from h3ronpy import ContainmentMode
    from h3ronpy.vector import wkb_to_cells

    cells = wkb_to_cells(
        pa.array(geometry_wkb, pa.binary()),
        resolution=resolution,
        containment_mode=ContainmentMode.Covers,
        flatten=True,
    )
    return sorted_unique(_to_numpy_u64(cells))
