"""The H3 hierarchy a U-Net runs on, as tensors: one graph per resolution and the child->parent maps.

Data plumbing lives here, outside the models. A :class:`Hierarchy` is built from
the finest-resolution cells that have inputs (sorted ``uint64``), with numpy and
the vectorised helpers of :mod:`urbanrepml.areas.h3ops`: level 0 is the finest
resolution, level ``l + 1`` holds the parents of level ``l``'s cells, each
level's graph is its 1-ring neighbourhood among those cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from urbanrepml.areas import h3ops
from urbanrepml.models.layers import SparseOp, gcn_operator, mean_pool_operator


@dataclass
class Hierarchy:
    """Graphs and parent maps of ``L`` levels, finest first.

    ``sizes[l]``: nodes at level ``l``; ``graphs[l]``: GCN operator of level ``l``;
    ``parents[l]``: for ``l >= 1``, position of each level ``l-1`` node's parent
    among level ``l`` (``parents[0]`` is ``None``); ``pools[l]``: mean pooling
    level ``l-1`` -> ``l``.
    """

    sizes: list[int]
    graphs: list[SparseOp]
    parents: list[Tensor | None]
    pools: list[SparseOp | None]

    @property
    def levels(self) -> int:
        return len(self.sizes)

    def to(self, device) -> Hierarchy:
        return Hierarchy(
            list(self.sizes),
            [g.to(device) for g in self.graphs],
            [None if p is None else p.to(device) for p in self.parents],
            [None if p is None else p.to(device) for p in self.pools],
        )


def hierarchy_from_arrays(sizes: Sequence[int], edges: Sequence[np.ndarray], parents: Sequence[np.ndarray | None]) -> Hierarchy:
    """From per-level node counts, (2, E) edge arrays and parent position arrays (``parents[0] = None``)."""
    graphs = [gcn_operator(e, n) for e, n in zip(edges, sizes, strict=False)]
    pools: list[SparseOp | None] = [None]
    par: list[Tensor | None] = [None]
    for level in range(1, len(sizes)):
        p = np.asarray(parents[level], dtype=np.int64)
        pools.append(mean_pool_operator(p, sizes[level]))
        par.append(torch.from_numpy(p))
    return Hierarchy(list(sizes), graphs, par, pools)


@dataclass
class CellLevels:
    """Cells per level (finest first) with their edges and parent positions, in numpy."""

    resolutions: tuple[int, ...]  # finest first
    cells: list[np.ndarray]
    edges: list[np.ndarray]
    parents: list[np.ndarray | None]

    def hierarchy(self) -> Hierarchy:
        return hierarchy_from_arrays([len(c) for c in self.cells], self.edges, self.parents)


def cell_levels(cells: np.ndarray, resolutions: Sequence[int], with_edges: bool = True) -> CellLevels:
    """Finest cells (sorted unique ``uint64``) -> cells, 1-ring edges and parent maps of every resolution.

    ``resolutions`` in any order; the finest must be the cells' resolution.
    ``with_edges=False`` leaves ``edges`` empty (cones find neighbours per batch).
    """
    res = sorted(set(int(r) for r in resolutions), reverse=True)
    cells = np.asarray(cells, dtype=np.uint64)
    if len(cells) and int(h3ops.cell_resolution(cells[:1])[0]) != res[0]:
        raise ValueError(f"cells are at resolution {int(h3ops.cell_resolution(cells[:1])[0])}, not the finest requested {res[0]}")
    levels = [cells]
    parents: list[np.ndarray | None] = [None]
    for r in res[1:]:
        up = h3ops.parent_cells(levels[-1], r)
        coarse = np.unique(up)
        parents.append(h3ops.positions(coarse, up))
        levels.append(coarse)
    edges = [h3ops.neighbour_edges(c) for c in levels] if with_edges else []
    return CellLevels(tuple(res), levels, edges, parents)
