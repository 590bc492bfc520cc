"""Compiled loops of the area build (numba).

Each kernel makes a single pass or two over its arrays without Python-level work,
releases the GIL (``nogil=True``) so that several resolutions can be built side by
side in threads, and is cached on disk after its first compilation
(``cache=True``).
"""

from __future__ import annotations

import numba
import numpy as np

# The six 1-ring neighbours in H3's local IJ coordinates, in the order edges list them.
IJ_NEIGHBOURS = ((1, 0), (1, 1), (0, 1), (-1, 0), (-1, -1), (0, -1))
_DI = np.array([d[0] for d in IJ_NEIGHBOURS], dtype=np.int64)
_DJ = np.array([d[1] for d in IJ_NEIGHBOURS], dtype=np.int64)

N_BASE_CELLS = 122
_BASE_SHIFT = np.uint64(45)
_BASE_MASK = np.uint64(0x7F)
# Unit vector of each H3 digit (0 centre, 1 K, 2 J, 3 JK, 4 I, 5 IK, 6 IJ) in IJ coordinates (i - k, j - k).
_DIGIT_I = np.array([0, -1, 0, -1, 1, 0, 1], dtype=np.int64)
_DIGIT_J = np.array([0, -1, 1, 0, 0, -1, 1], dtype=np.int64)


@numba.njit(nogil=True, cache=True)
def base_cells_present(cells):
    """Which of the 122 base cells hold at least one of ``cells`` (bool array indexed by base cell)."""
    present = np.zeros(N_BASE_CELLS, dtype=np.bool_)
    for k in range(cells.shape[0]):
        present[np.int64((cells[k] >> _BASE_SHIFT) & _BASE_MASK)] = True
    return present


@numba.njit(nogil=True, cache=True)
def rotate60ccw(i, j, turns):
    """IJ vector ``(i, j)`` rotated ``turns`` times by 60 degrees counter-clockwise."""
    for _ in range(turns % 6):
        i, j = i - j, i
    return i, j


@numba.njit(nogil=True, cache=True)
def ij_in_base_cell(cell, res):
    """IJ coordinates of ``cell`` (at ``res``) in its base cell's frame, with the base cell's centre child at 0.

    The digits are walked from resolution 1 down, as H3 does: scale by the
    aperture-7 step of each resolution (counter-clockwise on class III,
    clockwise on class II), then add the digit's unit vector.
    """
    i = np.int64(0)
    j = np.int64(0)
    for r in range(1, res + 1):
        if r % 2 == 1:
            i, j = 2 * i + j, 3 * j - i
        else:
            i, j = 3 * i - j, i + 2 * j
        digit = np.int64((cell >> np.uint64(3 * (15 - r))) & np.uint64(7))
        i += _DIGIT_I[digit]
        j += _DIGIT_J[digit]
    return i, j


@numba.njit(nogil=True, cache=True)
def local_ij(cells, res, turns, offset_i, offset_j):
    """IJ coordinates of each cell in one frame: its base-cell frame, rotated and shifted per base cell.

    Args:
        cells: ``uint64`` cells, all at ``res``.
        res: their resolution.
        turns: 60-degree counter-clockwise turns per base cell (length 122).
        offset_i: I of each base cell's origin in the common frame (length 122).
        offset_j: J of each base cell's origin in the common frame (length 122).

    Returns:
        ``(i, j)`` int64 arrays.
    """
    n = cells.shape[0]
    out_i = np.empty(n, dtype=np.int64)
    out_j = np.empty(n, dtype=np.int64)
    for k in range(n):
        base = np.int64((cells[k] >> _BASE_SHIFT) & _BASE_MASK)
        i, j = ij_in_base_cell(cells[k], res)
        i, j = rotate60ccw(i, j, turns[base])
        out_i[k] = i + offset_i[base]
        out_j[k] = j + offset_j[base]
    return out_i, out_j


@numba.njit(nogil=True, cache=True)
def ij_ring_edges(i, j, max_grid_cells):
    """1-ring edges of cells given their local IJ coordinates, through a dense lookup grid.

    Args:
        i: I coordinate of each cell (integer array).
        j: J coordinate of each cell, same length as ``i``.
        max_grid_cells: largest lookup grid (rows x columns) to allocate.

    Returns:
        ``(edges, ok)``: ``edges`` is an int64 ``(2, E)`` array of positions, grouped
        by source cell and, within a source, in :data:`IJ_NEIGHBOURS` order; ``ok``
        is False (and ``edges`` empty) when the grid would exceed ``max_grid_cells``.
        Where two cells share coordinates, the later one owns the grid slot.
    """
    n = i.shape[0]
    if n == 0:
        return np.zeros((2, 0), dtype=np.int64), True
    imin = imax = np.int64(i[0])
    jmin = jmax = np.int64(j[0])
    for k in range(1, n):
        a, b = np.int64(i[k]), np.int64(j[k])
        imin, imax = min(imin, a), max(imax, a)
        jmin, jmax = min(jmin, b), max(jmax, b)
    # one slot of margin on each side, so neighbour lookups never leave the grid
    rows, cols = imax - imin + 3, jmax - jmin + 3
    if rows * cols > max_grid_cells:
        return np.zeros((2, 0), dtype=np.int64), False
    grid = np.full(rows * cols, -1, dtype=np.int64)
    slot = np.empty(n, dtype=np.int64)
    for k in range(n):
        slot[k] = (np.int64(i[k]) - imin + 1) * cols + (np.int64(j[k]) - jmin + 1)
        grid[slot[k]] = k
    step = _DI * cols + _DJ
    total = 0
    for k in range(n):
        for d in range(6):
            if grid[slot[k] + step[d]] >= 0:
                total += 1
    edges = np.empty((2, total), dtype=np.int64)
    e = 0
    for k in range(n):
        for d in range(6):
            other = grid[slot[k] + step[d]]
            if other >= 0:
                edges[0, e] = k
                edges[1, e] = other
                e += 1
    return edges, True


_RES_SHIFT = np.uint64(52)
_RES_MASK = np.uint64(0xF) << _RES_SHIFT


@numba.njit(nogil=True, cache=True)
def merge_parents(own, children, parent_res):
    """Union of ``own`` and the parents of ``children``, and the position of each child's parent in it.

    Args:
        own: sorted unique ``uint64`` cells at ``parent_res``.
        children: sorted unique ``uint64`` cells, all at one resolution finer than
            ``parent_res``; their parents are then non-decreasing.
        parent_res: resolution of the parents.

    Returns:
        ``(cells, parent_pos, ok)``: the sorted union, for each child the index of its
        parent in ``cells``, and False (with empty arrays) where the children are
        not all at one resolution or their parents turned out not to be sorted.
    """
    shift = np.uint64(3 * (15 - parent_res))
    below = (np.uint64(1) << shift) - np.uint64(1)
    res_bits = np.uint64(parent_res) << _RES_SHIFT
    n = children.shape[0]
    unique = np.empty(n, dtype=np.uint64)
    child_unique = np.empty(n, dtype=np.int64)
    m = 0
    for k in range(n):
        if (children[k] & _RES_MASK) != (children[0] & _RES_MASK):
            return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64), False
        parent = (children[k] & ~_RES_MASK) | res_bits | below
        if m == 0 or parent != unique[m - 1]:
            if m > 0 and parent < unique[m - 1]:
                return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64), False
            unique[m] = parent
            m += 1
        child_unique[k] = m - 1
    cells = np.empty(own.shape[0] + m, dtype=np.uint64)
    unique_pos = np.empty(m, dtype=np.int64)
    a = b = c = 0
    while a < own.shape[0] or b < m:
        if b == m or (a < own.shape[0] and own[a] < unique[b]):
            cells[c] = own[a]
            a += 1
        else:
            if a < own.shape[0] and own[a] == unique[b]:
                a += 1
            cells[c] = unique[b]
            unique_pos[b] = c
            b += 1
        c += 1
    parent_pos = np.empty(n, dtype=np.int64)
    for k in range(n):
        parent_pos[k] = unique_pos[child_unique[k]]
    return cells[:c].copy(), parent_pos, True


def warm_up() -> None:
    """Compile the kernels, or load them from the on-disk cache, on tiny inputs of the types the area build uses.

    The first call into numba in a process costs a fraction of a second even
    with a warm cache; calling this while other work runs hides that cost.
    """
    cells = np.array([0x8A1FB46622DFFFF, 0x8A1FB46622D7FFF], dtype=np.uint64)
    coords = np.zeros(2, dtype=np.int64)
    base_cells_present(cells)
    rotate60ccw(1, 0, 1)
    local_ij(cells, 10, np.zeros(N_BASE_CELLS, dtype=np.int64), np.zeros(N_BASE_CELLS, dtype=np.int64),
             np.zeros(N_BASE_CELLS, dtype=np.int64))
    ij_ring_edges(coords, coords, 1024)
    merge_parents(cells[:0], cells, 9)
