"""Cross-validation folds: spatial blocks of H3 parents (the default) or random cells (comparison only).

Spatial: every cell belongs to the block of its H3 parent at ``block_resolution``;
blocks go whole into one of ``k`` folds, largest block first into the fold with
the fewest cells so far (ties between equal-sized blocks broken by a seeded
shuffle, ties between folds by the lowest fold number). The result depends only
on the cells, ``block_resolution``, ``k`` and ``seed``, so every probe of a study
area on the same cells gets the same folds; :attr:`Folds.digest` proves it and
:meth:`Folds.save` writes the artifact (parquet ``region_id -> fold, block`` +
JSON with the parameters and digest).

Random folds ignore space and inflate scores on spatially smooth targets; metric
names carry the ``random_`` prefix (:attr:`Folds.metric_prefix`) so they are never
mistaken for the headline numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.areas import h3ops
from urbanrepml.constants import REGION_ID
from urbanrepml.errors import UrbanReprError

CV_KINDS = ("spatial", "random")


@dataclass
class Folds:
    """``fold``: region_id -> fold number (0..k-1); ``block``: region_id -> block label (H3 parent or the cell)."""

    fold: pd.Series
    block: pd.Series
    k: int
    cv: str
    block_resolution: int | None
    seed: int

    @property
    def digest(self) -> str:
        """SHA-256 of the sorted ``region_id:fold`` assignment (the same folds give the same digest)."""
        s = self.fold.sort_index()
        text = "\n".join(f"{r}:{f}" for r, f in zip(s.index, s.to_numpy(), strict=False))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def metric_prefix(self) -> str:
        """``""`` for spatial folds, ``"random_"`` for random ones."""
        return "" if self.cv == "spatial" else "random_"

    @property
    def n_blocks(self) -> int:
        return int(self.block.nunique())

    def sizes(self) -> np.ndarray:
        return np.bincount(self.fold.to_numpy(), minlength=self.k)

    def subset(self, region_ids) -> Folds:
        """The same assignment restricted to ``region_ids`` (all must be present)."""
        missing = pd.Index(region_ids).difference(self.fold.index)
        if len(missing):
            raise UrbanReprError(f"{len(missing)} cell(s) have no fold, e.g. {list(missing[:3])}")
        return Folds(self.fold.loc[region_ids], self.block.loc[region_ids], self.k, self.cv, self.block_resolution, self.seed)

    def describe(self) -> dict:
        return {"cv": self.cv, "k": self.k, "block_resolution": self.block_resolution, "seed": self.seed,
                "cells": int(len(self.fold)), "blocks": self.n_blocks, "fold_sizes": self.sizes().tolist(),
                "digest": self.digest}

    def save(self, folder: str | Path) -> list[Path]:
        """Write ``folds.parquet`` and ``folds.json`` into ``folder``; return the paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame({"fold": self.fold.astype(np.int32), "block": self.block.astype(str)})
        table.index.name = REGION_ID
        paths = [folder / "folds.parquet", folder / "folds.json"]
        table.to_parquet(paths[0])
        paths[1].write_text(json.dumps(self.describe(), indent=1))
        return paths

    @classmethod
    def load(cls, folder: str | Path) -> Folds:
        folder = Path(folder)
        info = json.loads((folder / "folds.json").read_text())
        table = pd.read_parquet(folder / "folds.parquet")
        folds = cls(table["fold"].astype(int), table["block"], info["k"], info["cv"], info["block_resolution"], info["seed"])
        if folds.digest != info["digest"]:
            raise UrbanReprError(f"{folder}: folds.parquet does not match the digest in folds.json")
        return folds


def _check_k(k: int) -> None:
    if k < 2:
        raise UrbanReprError(f"folds must be at least 2, got {k}")


def spatial_folds(region_ids, block_resolution: int = 7, k: int = 5, seed: int = 0) -> Folds:
    """Folds of whole H3-parent blocks, balanced by cell count (greedy largest-first into the lightest fold)."""
    _check_k(k)
    index = pd.Index(region_ids, name=REGION_ID)
    cells = h3ops.parse_cells(index)
    res = int(h3ops.cell_resolution(cells).min()) if len(cells) else 0
    if not 0 <= block_resolution <= res:
        raise UrbanReprError(f"block_resolution {block_resolution} must be between 0 and the cell resolution {res}")
    parents = h3ops.parent_cells(cells, block_resolution)
    blocks, inverse, sizes = np.unique(parents, return_inverse=True, return_counts=True)
    if len(blocks) < k:
        raise UrbanReprError(
            f"only {len(blocks)} spatial block(s) at block_resolution {block_resolution} hold the {len(cells)} probed "
            f"cells, fewer than folds={k}; use a finer block_resolution (e.g. {min(block_resolution + 1, res)}) or fewer folds"
        )
    block_fold = balanced_groups(sizes, k, np.random.default_rng(seed))
    fold = pd.Series(block_fold[inverse], index=index, name="fold")
    block = pd.Series(h3ops.cells_to_str(blocks)[inverse], index=index, name="block")
    return Folds(fold, block, k, "spatial", block_resolution, seed)


def balanced_groups(sizes: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Assign blocks of the given sizes to ``k`` groups: largest first (seeded among equals) into the lightest group."""
    order = rng.permutation(len(sizes))
    order = order[np.argsort(-sizes[order], kind="stable")]
    load = np.zeros(k, dtype=np.int64)
    group = np.empty(len(sizes), dtype=np.int64)
    for b in order:
        g = int(np.argmin(load))
        group[b] = g
        load[g] += sizes[b]
    return group


def random_folds(region_ids, k: int = 5, seed: int = 0) -> Folds:
    """Cells shuffled into ``k`` equal folds (comparison only; each cell is its own block)."""
    _check_k(k)
    index = pd.Index(region_ids, name=REGION_ID)
    if len(index) < k:
        raise UrbanReprError(f"only {len(index)} cell(s) to probe, fewer than folds={k}")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(index), dtype=np.int64)
    fold[rng.permutation(len(index))] = np.arange(len(index)) % k
    return Folds(pd.Series(fold, index=index, name="fold"), pd.Series(index.to_numpy(), index=index, name="block"), k, "random", None, seed)


def make_folds(region_ids, cv: str = "spatial", block_resolution: int = 7, k: int = 5, seed: int = 0) -> Folds:
    """Spatial or random folds over ``region_ids`` (sorted first, so the order of the input does not matter)."""
    if cv not in CV_KINDS:
        raise UrbanReprError(f"cv must be one of {CV_KINDS}, got {cv!r}")
    index = pd.Index(region_ids, name=REGION_ID).sort_values()
    if index.has_duplicates:
        raise UrbanReprError("duplicate cells given to the fold builder")
    if cv == "spatial":
        return spatial_folds(index, block_resolution, k, seed)
    return random_folds(index, k, seed)


def inner_groups(blocks: np.ndarray, n_splits: int = 3, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner train/validation splits of training rows, grouped by ``blocks`` (spatial where possible).

    With fewer than ``n_splits`` distinct blocks falls back to splitting rows at
    random (there is no spatial structure left to respect).
    """
    blocks = np.asarray(blocks)
    n = len(blocks)
    labels, inverse = np.unique(blocks, return_inverse=True)
    rng = np.random.default_rng(seed)
    if len(labels) >= n_splits:
        assign = balanced_groups(np.bincount(inverse), n_splits, rng)[inverse]
    else:
        assign = np.empty(n, dtype=np.int64)
        assign[rng.permutation(n)] = np.arange(n) % n_splits
    rows = np.arange(n)
    return [(rows[assign != f], rows[assign == f]) for f in range(n_splits) if (assign == f).any() and (assign != f).any()]
