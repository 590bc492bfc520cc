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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from urbanrepml.areas import h3ops
from urbanrepml.errors import UrbanReprError
from urbanrepml.fusion.hierarchy import CellLevels, Hierarchy, hierarchy_from_arrays

CACHE_VERSION = 1


@dataclass
class Cones:
    """Cone membership per level (finest first) in CSR form.

    ``ptr[l]`` (n_cones + 1) and ``members[l]`` (positions into ``levels.cells[l]``):
    cone ``c`` holds ``members[l][ptr[l][c]:ptr[l][c+1]]``; ``root_of[l]`` is the
    root (= centre cone) of each level-``l`` cell.
    """

    levels: CellLevels
    root_resolution: int
    k: int
    roots: np.ndarray
    ptr: list[np.ndarray]
    members: list[np.ndarray]
    root_of: list[np.ndarray]

    @property
    def n_cones(self) -> int:
        return len(self.roots)

    def sizes(self, level: int = 0) -> np.ndarray:
        return np.diff(self.ptr[level])


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
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256(levels.cells[0].tobytes())
        digest.update(repr((levels.resolutions, root_resolution, k, CACHE_VERSION)).encode())
        path = Path(cache_dir) / f"cones-{digest.hexdigest()[:16]}.npz"
        if path.is_file():
            with np.load(path) as data:
                n = len(levels.cells)
                return Cones(levels, root_resolution, k, data["roots"], [data[f"ptr{l}"] for l in range(n)],
                             [data[f"members{l}"] for l in range(n)], [data[f"root_of{l}"] for l in range(n)])
    roots = np.unique(h3ops.parent_cells(levels.cells[-1], root_resolution))
    ring = h3ops.neighbour_edges(roots, k) if k > 0 else np.zeros((2, 0), dtype=np.int64)
    own = np.arange(len(roots), dtype=np.int64)
    cone = np.concatenate([own, ring[0]])
    disk = np.concatenate([own, ring[1]])
    order = np.lexsort((disk, cone))
    cone, disk = cone[order], disk[order]
    ptrs, members, root_of = [], [], []
    for cells in levels.cells:
        rof = h3ops.positions(roots, h3ops.parent_cells(cells, root_resolution))
        by_root = np.argsort(rof, kind="stable")
        count = np.bincount(rof, minlength=len(roots))
        start = np.cumsum(count) - count
        sizes = np.bincount(cone, weights=count[disk], minlength=len(roots)).astype(np.int64)
        ptr = np.zeros(len(roots) + 1, dtype=np.int64)
        np.cumsum(sizes, out=ptr[1:])
        members.append(by_root[_expand_ranges(start[disk], count[disk])])
        ptrs.append(ptr)
        root_of.append(rof)
    cones = Cones(levels, root_resolution, k, roots, ptrs, members, root_of)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cones-", suffix=".npz", dir=path.parent)
        os.close(fd)
        arrays = {"roots": roots}
        for l in range(len(levels.cells)):
            arrays.update({f"ptr{l}": ptrs[l], f"members{l}": members[l], f"root_of{l}": root_of[l]})
        np.savez(tmp, **arrays)
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


def _csr_of_edges(edges: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(edges[0], kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(edges[0], minlength=n), out=ptr[1:])
    return ptr, edges[1][order]


class ConeBatcher:
    """Assembles :class:`ConeBatch` es from :class:`Cones` (neighbour lists prepared once)."""

    def __init__(self, cones: Cones):
        self.cones = cones
        self._adj = [_csr_of_edges(e, len(c)) for e, c in zip(cones.levels.edges, cones.levels.cells)]

    def batch(self, cone_ids: Sequence[int] | np.ndarray) -> ConeBatch:
        cones = self.cones
        ids = np.asarray(cone_ids, dtype=np.int64)
        sizes, edges, parents = [], [], [None]
        keys_sorted, perm_sorted, globals_ = [], [], []
        for l, cells in enumerate(cones.levels.cells):
            n = len(cells)
            ptr, mem = cones.ptr[l], cones.members[l]
            counts = ptr[ids + 1] - ptr[ids]
            g = mem[_expand_ranges(ptr[ids], counts)]
            bpos = np.repeat(np.arange(len(ids), dtype=np.int64), counts)
            keys = bpos * n + g
            perm = np.argsort(keys, kind="stable")
            skeys = keys[perm]
            # induced subgraph of each cone: neighbours of (cone, u) that are members of the same cone
            aptr, anb = self._adj[l]
            deg = aptr[g + 1] - aptr[g]
            nb = anb[_expand_ranges(aptr[g], deg)]
            src = np.repeat(np.arange(len(g), dtype=np.int64), deg)
            qkeys = np.repeat(bpos, deg) * n + nb
            pos = np.minimum(np.searchsorted(skeys, qkeys), max(len(skeys) - 1, 0))
            hit = skeys[pos] == qkeys
            edges.append(np.stack([src[hit], perm[pos[hit]]]))
            if l > 0:
                child_g, child_b = globals_[-1]
                pkeys = child_b * n + cones.levels.parents[l][child_g]
                ppos = np.searchsorted(skeys, pkeys)
                assert (skeys[ppos] == pkeys).all(), "cones must be closed under parents"
                parents.append(perm[ppos])
            sizes.append(len(g))
            globals_.append((g, bpos))
            keys_sorted.append(skeys)
            perm_sorted.append(perm)
        g0, b0 = globals_[0]
        centre = cones.root_of[0][g0] == ids[b0]
        return ConeBatch(ids, hierarchy_from_arrays(sizes, edges, parents), g0, centre)


def iterate_batches(cones: Cones, order: np.ndarray, batch_size: int) -> Iterator[ConeBatch]:
    """Batches of ``batch_size`` cones in ``order``."""
    batcher = ConeBatcher(cones)
    for i in range(0, len(order), batch_size):
        yield batcher.batch(order[i:i + batch_size])
