"""Fusion layers, U-Nets and the cell hierarchy: pooling math by hand, shapes, the reversible block against autograd."""

from __future__ import annotations

import h3
import numpy as np
import pytest
import torch

from tests.support.areas import cells_under_root6 as _cells
from urbanrepml.areas import h3ops
from urbanrepml.models.hierarchy import cell_levels
from urbanrepml.models.layers import GCNConv, broadcast, gcn_operator, mean_pool, mean_pool_operator
from urbanrepml.models.unet import FullAreaUNet, unet_losses

torch.set_num_threads(1)


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
    for a, b in zip(p1, p2, strict=False):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
