"""Fusion cones and the spatial split, and the fusion training on them: cone membership, whole held-out blocks,
loss decrease, determinism."""

from __future__ import annotations

import h3
import numpy as np
import pytest
import torch

from tests.support.areas import cells_under_root6 as _cells
from urbanrepml.areas import h3ops
from urbanrepml.models.hierarchy import cell_levels
from urbanrepml.tasks.fusion.cones import ConeBatcher, build_cones
from urbanrepml.tasks.fusion.train import TrainConfig, spatial_split, train

torch.set_num_threads(1)


def test_cones_membership_and_batches():
    cells = _cells(9, k=2, drop_every=7)  # 19 res-6 roots, some cells missing
    levels = cell_levels(cells, [9, 8, 7])
    cones = build_cones(levels, root_resolution=6, k=1)
    assert np.array_equal(cell_levels(cells, [9, 8, 7], with_edges=False).cells[2], levels.cells[2])
    roots = h3ops.cells_to_str(cones.roots)
    assert cones.n_cones == 19
    for level, _res in enumerate((9, 8, 7)):
        strs = h3ops.cells_to_str(levels.cells[level])
        cover = np.zeros(len(strs), dtype=int)
        for c in range(cones.n_cones):
            got = set(strs[cones.members(level, c)])
            disk = set(h3.grid_disk(roots[c], 1)) & set(roots)
            expected = {s for s in strs if h3.cell_to_parent(s, 6) in disk}
            assert got == expected, (level, c)
            cover[cones.members(level, c)] += 1
        assert (cover >= 1).all()
        assert np.array_equal(cones.sizes(level), [len(cones.members(level, c)) for c in range(cones.n_cones)])
    batcher = ConeBatcher(cones)
    b = batcher.batch([3, 0, 11])
    hier = b.hierarchy
    sizes = [int(cones.sizes(l)[[3, 0, 11]].sum()) for l in range(3)]
    assert hier.sizes == sizes
    # each finest cell is the centre of exactly one cone: centres of all cones partition the cells
    centres = np.concatenate([batcher.batch([c]).cells0[batcher.batch([c]).centre0] for c in range(cones.n_cones)])
    assert np.array_equal(np.sort(centres), np.arange(len(cells)))
    # batch edges are global edges between members of the same cone; parents map to the same cone's parent
    g0 = b.cells0
    ei = hier.graphs[0].mat.to_sparse_coo().indices().numpy()
    off = ei[0] != ei[1]
    src, dst = g0[ei[0][off]], g0[ei[1][off]]
    glob = set(zip(*levels.edges[0], strict=False))
    assert all((s, d) in glob for s, d in zip(src[:500], dst[:500], strict=False))
    n0 = np.cumsum(cones.sizes(0)[[3, 0, 11]])
    cone_of = np.searchsorted(n0, np.arange(len(g0)), side="right")
    assert (cone_of[ei[0][off]] == cone_of[ei[1][off]]).all()


def test_cone_build_is_vectorised_and_cached(tmp_path):
    cells = _cells(9, k=3)  # 37 roots, 12,691 cells
    levels = cell_levels(cells, [9, 8, 7])
    import time

    start = time.perf_counter()
    cones = build_cones(levels, 6, 1, cache_dir=tmp_path)
    assert time.perf_counter() - start < 2.0
    again = build_cones(levels, 6, 1, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("cones-*.npz"))) == 1
    assert all(np.array_equal(a, b) for a, b in zip(cones.start, again.start, strict=False))


def test_spatial_split_holds_out_whole_blocks():
    cells = _cells(9, k=2)
    val = spatial_split(cells, 7, 0.2, seed=0)
    blocks = h3ops.parent_cells(cells, 7)
    for b in np.unique(blocks):
        assert len(set(val[blocks == b])) == 1
    assert 0.05 < val.mean() < 0.4
    assert not np.array_equal(val, spatial_split(cells, 7, 0.2, seed=1))


def _synthetic(cells: np.ndarray, d: int = 8, seed: int = 0) -> np.ndarray:
    """Smooth spatial signal: features are functions of the cell's lat/lon, plus a little noise."""
    lat, lon = h3ops.cell_centroids(cells)
    lat = (lat - lat.mean()) / lat.std()
    lon = (lon - lon.mean()) / lon.std()
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, d))
    base = np.stack([lat, lon, np.sin(2 * lat), np.cos(2 * lon)], 1) @ w
    return (base + 0.1 * rng.standard_normal(base.shape)).astype(np.float32)


@pytest.mark.parametrize("model", ["full_unet", "cone_unet"])
def test_loss_decreases_and_runs_are_deterministic(model):
    cells = _cells(9, k=1)
    x = _synthetic(cells)
    cfg = dict(model=model, resolutions=(9, 8, 7), hidden_dims=(16, 16, 16), epochs=12, lr=1e-2, checkpoint_every=100,
               cone_root_resolution=6, cone_batch=3, dropout=0.1)
    a = train(x, cells, TrainConfig(**cfg), progress=False)
    b = train(x, cells, TrainConfig(**cfg), progress=False)
    first, last = a.history[0], a.history[-1]
    assert last["train_loss"] < 0.7 * first["train_loss"]  # masked prediction: hidden entries stay partly unknowable
    assert last["val_loss"] < first["val_loss"]
    assert a.embedding.shape == (len(cells), 16)  # one member
    assert np.array_equal(a.embedding, b.embedding)
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]
    c = train(x, cells, TrainConfig(**{**cfg, "seed": 1, "epochs": 2}), progress=False)
    assert not np.allclose(c.embedding, a.embedding)


def test_spatial_split_inside_one_block_still_holds_out_and_keeps_cells():
    import h3

    from urbanrepml.tasks.fusion.train import spatial_split

    cells = np.sort(np.array([h3.str_to_int(c) for c in h3.cell_to_children(h3.latlng_to_cell(-30, -51.2, 7), 9)], dtype=np.uint64))
    for seed in range(12):  # a single res-7 block: split at res 8 instead, never all or nothing
        held = spatial_split(cells, 7, 0.15, seed)
        assert 0 < held.sum() < len(cells)
        parents = {h3.cell_to_parent(h3.int_to_str(int(c)), 8) for c in cells[held]}
        kept = {h3.cell_to_parent(h3.int_to_str(int(c)), 8) for c in cells[~held]}
        assert not parents & kept  # whole res-8 blocks
