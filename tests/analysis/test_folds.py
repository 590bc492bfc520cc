"""Spatial block folds on the bundled Porto Alegre cells: whole blocks, disjoint, balanced, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from urbanrepml.analysis.folds import Folds, inner_groups, make_folds
from urbanrepml.areas import h3ops
from urbanrepml.errors import UrbanReprError


def test_blocks_are_whole_and_folds_disjoint(poa_ids):
    folds = make_folds(poa_ids, "spatial", block_resolution=7, k=5, seed=0)
    parents = h3ops.cells_to_str(h3ops.parent_cells(h3ops.parse_cells(folds.fold.index), 7))
    assert (folds.block.to_numpy() == parents).all()
    # no block in two folds
    assert folds.fold.groupby(folds.block).nunique().max() == 1
    # every cell in exactly one fold; test and train of each fold are disjoint and cover everything
    assert set(folds.fold.index) == set(poa_ids) and not folds.fold.index.has_duplicates
    for k in range(5):
        test = set(folds.fold.index[folds.fold == k])
        train = set(folds.fold.index[folds.fold != k])
        assert test and not (test & train) and len(test) + len(train) == len(poa_ids)
        assert not set(folds.block[folds.fold == k]) & set(folds.block[folds.fold != k])


def test_balanced_by_cell_count(poa_ids):
    folds = make_folds(poa_ids, "spatial", block_resolution=7, k=5)
    sizes = folds.sizes()
    assert folds.n_blocks == 44 and sizes.sum() == 1227
    largest_block = folds.block.value_counts().max()
    assert sizes.max() - sizes.min() <= largest_block  # greedy largest-first bound
    assert sizes.tolist() == [246, 245, 245, 246, 245]


def test_deterministic_and_order_independent(poa_ids, tmp_path):
    a = make_folds(poa_ids, "spatial", 7, 5, seed=3)
    b = make_folds(poa_ids[::-1], "spatial", 7, 5, seed=3)
    assert a.digest == b.digest and (a.fold.sort_index() == b.fold.sort_index()).all()
    paths = a.save(tmp_path / "folds")
    assert [p.name for p in paths] == ["folds.parquet", "folds.json"]
    assert Folds.load(tmp_path / "folds").digest == a.digest
    # a finer block resolution gives other folds
    assert make_folds(poa_ids, "spatial", 8, 5, seed=3).digest != a.digest


def test_fewer_blocks_than_folds_says_how_many(poa_ids):
    with pytest.raises(UrbanReprError, match=r"only 3 spatial block\(s\) at block_resolution 4 .* fewer than folds=5; "
                                             r"use a finer block_resolution \(e.g. 5\)"):
        make_folds(poa_ids, "spatial", block_resolution=4, k=5)


def test_random_folds_are_labelled(poa_ids):
    folds = make_folds(poa_ids, "random", k=5, seed=0)
    assert folds.metric_prefix == "random_" and make_folds(poa_ids, "spatial").metric_prefix == ""
    assert sorted(folds.sizes().tolist()) == [245, 245, 245, 246, 246]
    with pytest.raises(UrbanReprError, match="cv must be one of"):
        make_folds(poa_ids, "kfold")


def test_inner_groups_respect_blocks():
    blocks = np.repeat(np.arange(10), 7)
    splits = inner_groups(blocks, 3, seed=0)
    assert len(splits) == 3
    for tr, va in splits:
        assert not set(blocks[tr]) & set(blocks[va])
        assert len(tr) + len(va) == len(blocks)
    # one block only: falls back to a random split of rows
    assert len(inner_groups(np.zeros(9), 3)) == 3
