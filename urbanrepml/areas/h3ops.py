"""Vectorised H3 operations on ``uint64`` cell arrays (numpy, h3ronpy and compiled kernels; no per-cell Python loops).

Cells are handled as sorted ``np.uint64`` arrays internally and as lowercase hex
strings (``region_id``) at the edges of the system.
"""

from __future__ import annotations

import h3
import h3ronpy
import numpy as np
import pyarrow as pa

from urbanrepml.areas import kernels
from urbanrepml.cells import (  # noqa: F401 - re-exported: h3ops is the areas' API
    _RES_MASK,
    _RES_SHIFT,
    _to_numpy_u64,
    cell_resolution,
    cells_to_str,
    parse_cells,
)

# Below this many cells numpy paths are used: the compiled kernels' one-off start-up
# in a process (~0.3 s) would cost more than they save.
COMPILED_MIN_CELLS = 200_000

def sorted_unique(cells: np.ndarray) -> np.ndarray:
    """Sorted unique uint64 cells (sort + neighbour compare; much faster than np.unique's hashing here).

    Input that is already strictly increasing (as H3 fills return it) is only
    copied where it is read-only.
    """
    arr = np.asarray(cells, dtype=np.uint64)
    if len(arr) < 2 or bool(np.all(arr[1:] > arr[:-1])):
        return _writable(arr)
    arr = np.sort(arr, kind="stable")
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


def use_compiled(n_cells: int) -> bool:
    """Whether work on ``n_cells`` cells goes to the compiled kernels (below, numpy is as fast as their start-up)."""
    return n_cells >= COMPILED_MIN_CELLS


def merge_parents(own: np.ndarray, children: np.ndarray, parent_res: int, *, compiled: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Close a coarser cell set under a finer one.

    Args:
        own: sorted unique cells at ``parent_res``.
        children: sorted unique cells at one resolution finer than ``parent_res``.
        parent_res: resolution of ``own``.
        compiled: merge with the compiled kernel (True) or sort with numpy (False);
            None decides by size (:func:`use_compiled`). Both give the same result.

    Returns:
        ``(cells, parent_pos)``: the sorted union of ``own`` and the children's
        parents, and for each child the position of its parent in ``cells``.
    """
    own = _writable(np.asarray(own, dtype=np.uint64))
    children = _writable(np.asarray(children, dtype=np.uint64))
    if len(children) and cell_resolution(children[:1])[0] <= parent_res:
        raise ValueError(f"parent resolution {parent_res} is not coarser than the children")
    ok = False
    if use_compiled(len(children)) if compiled is None else compiled:
        cells, parent_pos, ok = kernels.merge_parents(own, children, parent_res)
    if not ok:  # small, or children of mixed resolutions: sort instead of merging
        parents = parent_cells(children, parent_res)
        cells = sorted_unique(np.concatenate([own, parents]))
        parent_pos = positions(cells, parents)
    return cells, parent_pos


def _writable(arr: np.ndarray) -> np.ndarray:
    """``arr``, copied where it is read-only (the kernels are compiled for writable arrays only)."""
    return arr if arr.flags.writeable and arr.flags.c_contiguous else np.array(arr, order="C")


def positions(sorted_cells: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of each ``query`` cell in ``sorted_cells``, -1 where absent."""
    pos = np.searchsorted(sorted_cells, query)
    pos = np.minimum(pos, max(len(sorted_cells) - 1, 0))
    found = len(sorted_cells) > 0
    hit = found & (sorted_cells[pos] == query) if found else np.zeros(len(query), dtype=bool)
    return np.where(hit, pos, -1).astype(np.int64)


_MAX_GRID_PER_CELL = 8  # dense IJ lookup grid may be at most this many times the cell count
_PENTAGON_BASE_CELLS = frozenset(h3.get_base_cell_number(p) for p in h3.get_pentagons(0))
_K_UNIT = (-1, -1)  # IJ vector of H3 digit 1 (K axis)


def _base_cell_descendant(base: int, res: int, digit: int = 0) -> int:
    """The cell at ``res`` below base cell ``base`` whose digits are all 0 but the last, which is ``digit``."""
    unused = (1 << (3 * (15 - res))) - 1
    return (1 << 59) | (res << 52) | (base << 45) | (digit << (3 * (15 - res))) | unused


def _h3ronpy_local_ij(cells: np.ndarray, anchor: int) -> tuple[np.ndarray, np.ndarray] | None:
    table = pa.table(h3ronpy.cells_to_localij(pa.array(cells, pa.uint64()), anchor, set_failing_to_invalid=True))
    i_col, j_col = table.column("i"), table.column("j")
    if i_col.null_count or j_col.null_count:
        return None
    return i_col.to_numpy().astype(np.int64), j_col.to_numpy().astype(np.int64)


def local_ij(sorted_cells: np.ndarray, anchor: int) -> tuple[np.ndarray, np.ndarray] | None:
    """H3 local IJ coordinates of each cell relative to ``anchor``; None where some cell has none.

    Within a hexagonal base cell, IJ coordinates follow from the cell's digits;
    each base cell's frame differs from the anchor's by a rotation and a shift,
    which are read off two of its cells. Base cells holding a pentagon are left
    to h3ronpy's ``cells_to_localij`` as a whole.
    """
    sorted_cells = _writable(sorted_cells)
    first, last = cell_resolution(sorted_cells[[0, -1]])  # sorted cells of one resolution share first and last
    bases = np.flatnonzero(kernels.base_cells_present(sorted_cells))
    if first != last or _PENTAGON_BASE_CELLS.intersection(bases.tolist()):
        return _h3ronpy_local_ij(sorted_cells, anchor)
    res = int(first)
    samples = np.array([_base_cell_descendant(int(b), res, d) for b in bases for d in (0, 1)], dtype=np.uint64)
    ij = _h3ronpy_local_ij(samples, anchor)
    if ij is None:
        return None
    turns = np.zeros(kernels.N_BASE_CELLS, dtype=np.int64)
    offset_i = np.zeros(kernels.N_BASE_CELLS, dtype=np.int64)
    offset_j = np.zeros(kernels.N_BASE_CELLS, dtype=np.int64)
    for n, base in enumerate(bases):
        i0, j0, i1, j1 = (int(v) for v in (ij[0][2 * n], ij[1][2 * n], ij[0][2 * n + 1], ij[1][2 * n + 1]))
        step = (i1 - i0, j1 - j0)
        found = [t for t in range(6) if kernels.rotate60ccw(*_K_UNIT, t) == step]
        if len(found) != 1:  # not a rotation of the base-cell frame: let h3ronpy place every cell
            return _h3ronpy_local_ij(sorted_cells, anchor)
        turns[base], offset_i[base], offset_j[base] = found[0], i0, j0
    return kernels.local_ij(sorted_cells, res, turns, offset_i, offset_j)


def _edges_local_ij(sorted_cells: np.ndarray, compiled: bool | None = None) -> np.ndarray | None:
    """1-ring edges through local IJ coordinates and a dense lookup grid; None where that does not apply.

    IJ coordinates are exact away from pentagons; areas with a pentagon, cells
    that have no IJ coordinates from the anchor, or a too sparse grid fall back.
    ``compiled`` picks the compiled kernels (which release the GIL) or numpy;
    None decides by size (:func:`use_compiled`). Both give the same edges.
    """
    res = int(cell_resolution(sorted_cells[:1])[0])
    pentagons = np.array([h3.str_to_int(p) for p in h3.get_pentagons(res)], dtype=np.uint64)
    if (positions(sorted_cells, np.sort(pentagons)) >= 0).any():  # (np.isin is slow on millions of cells)
        return None
    compiled = use_compiled(len(sorted_cells)) if compiled is None else compiled
    anchor = int(sorted_cells[len(sorted_cells) // 2])
    ij = local_ij(sorted_cells, anchor) if compiled else _h3ronpy_local_ij(sorted_cells, anchor)
    if ij is None:
        return None
    max_grid = _MAX_GRID_PER_CELL * len(sorted_cells) + 1024
    if compiled:
        edges, ok = kernels.ij_ring_edges(ij[0], ij[1], max_grid)
        return edges if ok else None
    return _ij_ring_edges_numpy(ij[0], ij[1], max_grid)


def _ij_ring_edges_numpy(i: np.ndarray, j: np.ndarray, max_grid: int) -> np.ndarray | None:
    """Numpy twin of :func:`kernels.ij_ring_edges` (same edges, same order); None where the grid would be too large."""
    i = i - (i.min() - 1)  # one cell of margin, so neighbour lookups never index out of range
    j = j - (j.min() - 1)
    shape = (int(i.max()) + 2, int(j.max()) + 2)
    if shape[0] * shape[1] > max_grid:
        return None
    n = len(i)
    grid = np.full(shape, -1, dtype=np.int64)
    grid[i, j] = np.arange(n, dtype=np.int64)
    dst = np.empty((n, len(kernels.IJ_NEIGHBOURS)), dtype=np.int64)  # row = source cell, so edges come src-major
    for col, (di, dj) in enumerate(kernels.IJ_NEIGHBOURS):
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
