"""Cones over the H3 hierarchy, built vectorised (numpy on ``uint64`` cells, no per-cell loops) and cached.

A cone is a root cell at ``root_resolution`` together with the roots in its
``k``-ring and, at every resolution of the hierarchy, all of their descendants
that the area holds. Cone ``c`` is centred on root ``c``; every cell lies in the
cones of the roots within ``k`` of its own root (7 cones for ``k = 1``) and is
the *centre* of exactly one: the cone of its own root ancestor.

How cell embeddings combine: a cell's embedding is taken from its centre cone
(the one whose root is its ancestor), where it sits in the middle of its
context; the ring of neighbouring roots only provides context. Losses are
likewise counted on centre cells, so each cell counts once per epoch.

Batches are disjoint unions of cones (a block-diagonal :class:`Hierarchy`),
assembled from the cached membership lists with vectorised index arithmetic,
so the training memory is bounded by the batch, not the area.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from urbanrepml.areas import h3ops
from urbanrepml.errors import UrbanReprError
from urbanrepml.models.hierarchy import CellLevels, Hierarchy, hierarchy_from_arrays

CACHE_VERSION = 2


@dataclass
class Cones:
    """The cones over ``levels``, stored as O(roots) arrays (nothing per cell).

    Cells are sorted ``uint64`` and H3 orders descendants of a cell contiguously, so
    the level-``l`` cells under root ``r`` are ``levels.cells[l][start[l][r]:start[l][r+1]]``.
    Cone ``c`` holds the roots ``disk[disk_ptr[c]:disk_ptr[c+1]]`` (``c`` itself and its
    ``k``-ring, sorted) and their descendants.
    """

    levels: CellLevels
    root_resolution: int
    k: int
    roots: np.ndarray
    disk_ptr: np.ndarray
    disk: np.ndarray
    start: list[np.ndarray]

    @property
    def n_cones(self) -> int:
        return len(self.roots)

    def sizes(self, level: int = 0) -> np.ndarray:
        """Cells per cone at ``level``."""
        count = np.diff(self.start[level])
        cone = np.repeat(np.arange(self.n_cones), np.diff(self.disk_ptr))
        return np.bincount(cone, weights=count[self.disk], minlength=self.n_cones).astype(np.int64)

    def members(self, level: int, cone: int) -> np.ndarray:
        """Positions (into ``levels.cells[level]``) of the cells of ``cone`` at ``level``, sorted."""
        roots = self.disk[self.disk_ptr[cone]:self.disk_ptr[cone + 1]]
        st = self.start[level]
        return _expand_ranges(st[roots], st[roots + 1] - st[roots])

    def root_of(self, level: int) -> np.ndarray:
        """Root (= centre cone) of every level-``l`` cell."""
        return np.repeat(np.arange(self.n_cones), np.diff(self.start[level]))


def _expand_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each pair, vectorised."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.cumsum(counts) - counts
    return np.repeat(np.asarray(starts, dtype=np.int64) - offsets, counts) + np.arange(total, dtype=np.int64)


def build_cones(levels: CellLevels, root_resolution: int, k: int = 1, *, cache_dir: str | Path | None = None) -> Cones:
    """Cones of every root at ``root_resolution`` over ``levels``; cached under ``cache_dir`` when given."""
    coarsest = levels.resolutions[-1]
    if root_resolution > coarsest:
        raise UrbanReprError(
            f"cone_root_resolution {root_resolution} must not be finer than the coarsest resolution used ({coarsest}); "
            f"use {coarsest} or coarser"
        )
    if k < 0:
        raise UrbanReprError(f"cone ring k must be >= 0, got {k}")
    n = len(levels.cells)
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256(levels.cells[0].tobytes())
        digest.update(repr((levels.resolutions, root_resolution, k, CACHE_VERSION)).encode())
        path = Path(cache_dir) / f"cones-{digest.hexdigest()[:16]}.npz"
        if path.is_file():
            with np.load(path) as data:
                return Cones(levels, root_resolution, k, data["roots"], data["disk_ptr"], data["disk"],
                             [data[f"start{l}"] for l in range(n)])
    roots = np.unique(h3ops.parent_cells(levels.cells[-1], root_resolution))
    ring = h3ops.neighbour_edges(roots, k) if k > 0 else np.zeros((2, 0), dtype=np.int64)
    own = np.arange(len(roots), dtype=np.int64)
    cone = np.concatenate([own, ring[0]])
    disk = np.concatenate([own, ring[1]])
    order = np.lexsort((disk, cone))
    cone, disk = cone[order], disk[order]
    disk_ptr = np.zeros(len(roots) + 1, dtype=np.int64)
    np.cumsum(np.bincount(cone, minlength=len(roots)), out=disk_ptr[1:])
    start = []
    for cells in levels.cells:
        # parents of sorted cells are sorted, so each root's descendants are one contiguous run
        rof = h3ops.positions(roots, h3ops.parent_cells(cells, root_resolution))
        start.append(np.searchsorted(rof, np.arange(len(roots) + 1)).astype(np.int64))
    cones = Cones(levels, root_resolution, k, roots, disk_ptr, disk, start)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cones-", suffix=".npz", dir=path.parent)
        os.close(fd)
        np.savez(tmp, roots=roots, disk_ptr=disk_ptr, disk=disk, **{f"start{l}": start[l] for l in range(n)})
        os.replace(tmp, path)
    return cones


@dataclass
class ConeBatch:
    """A batch of cones as one block-diagonal hierarchy.

    ``cells0``: position (among the finest cells) of each level-0 node;
    ``centre0``: True where the node lies in its own centre cone.
    """

    cones: np.ndarray
    hierarchy: Hierarchy
    cells0: np.ndarray
    centre0: np.ndarray


class ConeBatcher:
    """Assembles :class:`ConeBatch` es; neighbours and parents are found per batch (memory O(batch))."""

    def __init__(self, cones: Cones):
        self.cones = cones

    def batch(self, cone_ids: Sequence[int] | np.ndarray) -> ConeBatch:
        cones = self.cones
        levels = cones.levels
        ids = np.asarray(cone_ids, dtype=np.int64)
        dcount = cones.disk_ptr[ids + 1] - cones.disk_ptr[ids]
        pair_root = cones.disk[_expand_ranges(cones.disk_ptr[ids], dcount)]
        pair_b = np.repeat(np.arange(len(ids), dtype=np.int64), dcount)
        sizes, edges, parents = [], [], [None]
        prev: tuple[np.ndarray, np.ndarray] | None = None
        centre0 = cells0 = None
        for l, cells in enumerate(levels.cells):
            n = len(cells)
            st = cones.start[l]
            counts = st[pair_root + 1] - st[pair_root]
            g = _expand_ranges(st[pair_root], counts)  # sorted within each cone
            bpos = np.repeat(pair_b, counts)
            keys = bpos * n + g  # sorted: cones in batch order, cells sorted inside
            if l == 0:
                cells0 = g
                centre0 = np.repeat(pair_root, counts) == ids[bpos]
            # induced 1-ring subgraph of each cone
            uniq, inv = np.unique(g, return_inverse=True)
            local = h3ops.neighbour_edges(cells[uniq])  # among the batch's cells; grouped by source
            order = np.argsort(local[0], kind="stable")
            deg = np.bincount(local[0], minlength=len(uniq))
            ptr = np.zeros(len(uniq) + 1, dtype=np.int64)
            np.cumsum(deg, out=ptr[1:])
            mdeg = deg[inv]
            nb = uniq[local[1][order][_expand_ranges(ptr[inv], mdeg)]]
            src = np.repeat(np.arange(len(g), dtype=np.int64), mdeg)
            qkeys = np.repeat(bpos, mdeg) * n + nb
            pos = np.minimum(np.searchsorted(keys, qkeys), max(len(keys) - 1, 0))
            hit = keys[pos] == qkeys
            edges.append(np.stack([src[hit], pos[hit]]))
            if prev is not None:
                child_g, child_b = prev
                res = levels.resolutions[l]
                ppos = h3ops.positions(cells, h3ops.parent_cells(levels.cells[l - 1][child_g], res))
                pkeys = child_b * n + ppos
                at = np.searchsorted(keys, pkeys)
                assert (keys[at] == pkeys).all(), "cones must be closed under parents"
                parents.append(at)
            sizes.append(len(g))
            prev = (g, bpos)
        return ConeBatch(ids, hierarchy_from_arrays(sizes, edges, parents), cells0, centre0)


def iterate_batches(cones: Cones, order: np.ndarray, batch_size: int) -> Iterator[ConeBatch]:
    """Batches of ``batch_size`` cones in ``order``."""
    batcher = ConeBatcher(cones)
    for i in range(0, len(order), batch_size):
        yield batcher.batch(order[i:i + batch_size])
