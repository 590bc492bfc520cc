"""Fusion layers, U-Nets and cones: pooling math by hand, shapes, cone membership, loss decrease, determinism."""

from __future__ import annotations

import h3
import numpy as np
import pytest
import torch

from urbanrepml.areas import h3ops
from urbanrepml.models.hierarchy import cell_levels
from urbanrepml.models.layers import GCNConv, broadcast, gcn_operator, mean_pool, mean_pool_operator
from urbanrepml.models.unet import FullAreaUNet, unet_losses
from urbanrepml.tasks.fusion.cones import ConeBatcher, build_cones
from urbanrepml.tasks.fusion.train import TrainConfig, spatial_split, train

torch.set_num_threads(1)

# A res-6 cell near Porto Alegre and the res-9 cells under its 1-ring: 7 * 343 = 2401 cells.
ROOT6 = h3.latlng_to_cell(-30.05, -51.2, 6)


def _cells(res: int = 9, k: int = 1, drop_every: int = 0) -> np.ndarray:
    roots = h3.grid_disk(ROOT6, k)
    cells = np.sort(h3ops.parse_cells([c for r in roots for c in h3.cell_to_children(r, res)]))
    if drop_every:
        cells = np.delete(cells, np.arange(0, len(cells), drop_every))
    return cells


def test_mean_pool_and_broadcast_by_hand():
    parent = np.array([0, 0, 1, 1, 1, 2])
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0], [20.0, 0.0], [30.0, 3.0], [7.0, 7.0]], requires_grad=True)
    pool = mean_pool_operator(parent, 3)
    pooled = mean_pool(x, pool)
    assert torch.allclose(pooled, torch.tensor([[2.0, 3.0], [20.0, 1.0], [7.0, 7.0]]))
    pooled.sum().backward()  # d(mean)/dx = 1/|children|
    assert torch.allclose(x.grad[:, 0], torch.tensor([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3, 1.0]))
    up = broadcast(pooled.detach(), torch.from_numpy(parent))
    assert torch.equal(up, pooled.detach()[[0, 0, 1, 1, 1, 2]])


def test_gcn_operator_matches_dense_and_pyg():
    from torch_geometric.nn import GCNConv as PygGCNConv

    edges = np.array([[0, 1, 1, 2, 2, 3], [1, 0, 2, 1, 3, 2]])  # a path 0-1-2-3
    graph = gcn_operator(edges, 4)
    a = np.eye(4)
    a[edges[0], edges[1]] = 1
    d = np.diag(1 / np.sqrt(a.sum(1)))
    dense = torch.tensor(d @ a @ d, dtype=torch.float32)
    assert torch.allclose(graph.mat.to_dense(), dense, atol=1e-6)
    torch.manual_seed(0)
    ours, ref = GCNConv(3, 5), PygGCNConv(3, 5)
    with torch.no_grad():
        ours.lin.weight.copy_(ref.lin.weight)
        ours.bias.copy_(torch.randn(5))
        ref.bias.copy_(ours.bias)
    x1 = torch.randn(4, 3, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = ours(x1, graph), ref(x2, torch.from_numpy(edges))
    assert torch.allclose(y1, y2, atol=1e-5)
    (y1 ** 2).sum().backward()
    (y2 ** 2).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)


def test_unet_shapes_and_consistency_loss_by_hand():
    cells = _cells(9, k=0)  # the 343 res-9 children of one res-6 cell
    levels = cell_levels(cells, [7, 8, 9])
    assert [len(c) for c in levels.cells] == [343, 49, 7]
    assert levels.resolutions == (9, 8, 7)
    hier = levels.hierarchy()
    model = FullAreaUNet(6, [8, 16, 32], convs_per_level=2, dropout=0.0, embedding_dim=4)
    x = torch.randn(343, 6)
    out = model(x, hier)
    assert [tuple(e.shape) for e in out.embeddings] == [(343, 4), (49, 4), (7, 4)]
    assert out.reconstruction.shape == (343, 6)
    loss = unet_losses(out, x, hier, consistency_weight=0.5)
    z0, z1, z2 = (e.detach().numpy() for e in out.embeddings)
    p1, p2 = levels.parents[1], levels.parents[2]
    pooled1 = np.stack([z0[p1 == i].mean(0) for i in range(49)])
    pooled2 = np.stack([z1[p2 == i].mean(0) for i in range(7)])
    cons = (((pooled1 - z1) ** 2).mean() + ((pooled2 - z2) ** 2).mean()) / 2
    rec = ((out.reconstruction.detach().numpy() - x.numpy()) ** 2).mean()
    assert loss.consistency.item() == pytest.approx(cons, rel=1e-5)
    assert loss.total.item() == pytest.approx(rec + 0.5 * cons, rel=1e-5)


def test_hierarchy_from_cells_matches_h3():
    cells = _cells(9, k=1, drop_every=5)
    levels = cell_levels(cells, [9, 8, 7])
    for level, res in ((1, 8), (2, 7)):
        child = levels.cells[level - 1]
        expected = h3ops.parse_cells([h3.cell_to_parent(c, res) for c in h3ops.cells_to_str(child)])
        assert np.array_equal(levels.cells[level][levels.parents[level]], expected)
    # graph: 1-ring neighbours among present cells, both directions
    e = levels.edges[0]
    strs = h3ops.cells_to_str(cells)
    i = 17
    nb = {strs[j] for j in e[1][e[0] == i]}
    assert nb == set(h3.grid_disk(strs[i], 1)) - {strs[i]} & set(strs)


def test_cones_membership_and_batches():
    cells = _cells(9, k=2, drop_every=7)  # 19 res-6 roots, some cells missing
    levels = cell_levels(cells, [9, 8, 7])
    cones = build_cones(levels, root_resolution=6, k=1)
    assert np.array_equal(cell_levels(cells, [9, 8, 7], with_edges=False).cells[2], levels.cells[2])
    roots = h3ops.cells_to_str(cones.roots)
    assert cones.n_cones == 19
    for level, res in enumerate((9, 8, 7)):
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
    glob = set(zip(*levels.edges[0]))
    assert all((s, d) in glob for s, d in zip(src[:500], dst[:500]))
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
    assert all(np.array_equal(a, b) for a, b in zip(cones.start, again.start))


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
    cfg = dict(model=model, hidden_dims=(16, 16, 16), epochs=12, lr=1e-2, checkpoint_every=100,
               cone_root_resolution=6, cone_batch=3, dropout=0.1)
    a = train(x, cells, TrainConfig(**cfg), progress=False)
    b = train(x, cells, TrainConfig(**cfg), progress=False)
    first, last = a.history[0], a.history[-1]
    assert last["train_loss"] < 0.5 * first["train_loss"]
    assert last["val_loss"] < first["val_loss"]
    assert a.embedding.shape == (len(cells), 16)
    assert np.array_equal(a.embedding, b.embedding)
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]
    c = train(x, cells, TrainConfig(**{**cfg, "seed": 1, "epochs": 2}), progress=False)
    assert not np.allclose(c.embedding, a.embedding)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_reversible_block_matches_plain_autograd(p):
    from urbanrepml.models.layers import GCNBlock

    levels = cell_levels(_cells(9, k=0), [9, 8])
    graph = levels.hierarchy().graphs[0]
    torch.manual_seed(0)
    block = GCNBlock(8, 4, dropout=p)
    for param in block.parameters():
        param.data.normal_()
    x = torch.randn(len(levels.cells[0]), 8)
    results = []
    for fused in (True, False):
        block.fused = fused
        block.zero_grad()
        xx = x.clone().requires_grad_()
        torch.manual_seed(1)  # same dropout masks
        y = block(xx, graph)
        (y * torch.arange(8.0)).sum().backward()
        results.append((y.detach(), xx.grad, [q.grad.clone() for q in block.parameters()]))
    (y1, g1, p1), (y2, g2, p2) = results
    assert torch.equal(y1, y2)
    assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-4 * g2.abs().max().item())
    for a, b in zip(p1, p2):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


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
