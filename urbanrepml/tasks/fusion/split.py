"""The fusion trainer's validation split: whole spatial blocks of cells, chosen by a seeded hash."""

from __future__ import annotations

import numpy as np

from urbanrepml.areas import h3ops
from urbanrepml.errors import UrbanReprError


def spatial_split(cells: np.ndarray, block_resolution: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Bool mask of held-out cells: whole blocks (parents at ``block_resolution``) chosen by a seeded hash.

    At least one block is held out and one kept. An area inside fewer than two
    blocks at ``block_resolution`` is split at the next finer resolution that has two.

    Args:
        cells: sorted ``uint64`` H3 cells of one resolution.
        block_resolution: resolution of the blocks (coarser than the cells).
        fraction: share of blocks to hold out; 0 holds out nothing.
        seed: seed of the hash.

    Returns:
        ``(len(cells),)`` bool array, True for held-out cells.
    """
    if fraction <= 0 or len(cells) == 0:
        return np.zeros(len(cells), dtype=bool)
    finest = int(h3ops.cell_resolution(cells[:1])[0])
    for res in range(min(block_resolution, finest), finest + 1):
        uniq, inv = np.unique(h3ops.parent_cells(cells, res), return_inverse=True)
        if len(uniq) >= 2:
            break
    else:
        raise UrbanReprError(f"{len(cells)} cell(s) cannot be split into training and validation blocks; use a larger area")
    with np.errstate(over="ignore"):
        z = uniq ^ np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    held = u < fraction
    if not held.any():
        held[np.argmin(u)] = True
    if held.all():
        held[np.argmax(u)] = False
    return held[inv]
