"""Masked prediction (no leak, absent entries ignored), outer join, input transforms, ringconcat by hand, headline mean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tests.support.tables import write_modality
from urbanrepml.analysis.probes import CVResult
from urbanrepml.errors import UrbanReprError
from urbanrepml.models.hierarchy import cell_levels
from urbanrepml.models.unet import FusionEnsemble, UNetOutput, draw_hidden, masked_input, masked_losses
from urbanrepml.tasks.fusion.baselines import ringconcat_baseline
from urbanrepml.tasks.fusion.inputs import load_fusion_inputs, transform_block
from urbanrepml.tasks.fusion.train import TrainConfig, train


def _disk_setup(disk, d=5, seed=0):
    cells, _, _ = disk
    hierarchy = cell_levels(cells, [9]).hierarchy()
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((len(cells), d)).astype(np.float32))
    groups = torch.tensor([0, 0, 1, 1, -1])  # two modalities of 2 columns, one indicator column
    return cells, hierarchy, x, groups


def test_hidden_entries_never_reach_the_network(disk):
    cells, hierarchy, x, groups = _disk_setup(disk)
    hidden = torch.zeros((7, 2), dtype=torch.bool)
    hidden[0, 0] = hidden[3, 1] = True
    hidden[5] = True  # a whole cell
    net = FusionEnsemble(2, x.shape[1] + 2, (8,), convs_per_level=2, out_dim=x.shape[1]).eval()

    inp = masked_input(x, hidden, groups)
    assert inp.shape == (7, 5 + 2)
    np.testing.assert_array_equal(inp[:, 5:].numpy(), (~hidden).float().numpy())  # one visibility flag per modality
    assert float(inp[0, 0]) == 0 and float(inp[0, 1]) == 0 and float(inp[3, 2]) == 0 and (inp[5, :4] == 0).all()
    assert float(inp[5, 4]) == float(x[5, 4])  # indicators are never hidden

    # Change every hidden value (to something huge): the input and every output are identical.
    poked = x.clone()
    poked[0, :2] = 1e6
    poked[3, 2:4] = -1e6
    poked[5, :4] = 123.0
    inp2 = masked_input(poked, hidden, groups)
    assert torch.equal(inp, inp2)
    with torch.no_grad():
        a, b = net([inp, inp], hierarchy), net([inp2, inp2], hierarchy)
    for oa, ob in zip(a, b, strict=True):
        assert torch.equal(oa.embeddings[0], ob.embeddings[0]) and torch.equal(oa.reconstruction, ob.reconstruction)
    # A visible value does reach it.
    poked[1, 0] = 50.0
    with torch.no_grad():
        c = net([masked_input(poked, hidden, groups)] * 2, hierarchy)
    assert not torch.equal(c[0].embeddings[0], a[0].embeddings[0])


def test_masked_loss_counts_hidden_present_entries_only(disk):
    cells, hierarchy, x, groups = _disk_setup(disk)
    pred = torch.randn_like(x)
    out = UNetOutput([torch.zeros((7, 3))], pred)
    hidden = torch.zeros((7, 2), dtype=torch.bool)
    hidden[:, 0] = True  # modality 0 hidden everywhere, modality 1 visible
    present = torch.ones((7, 2), dtype=torch.bool)
    present[2, 0] = False  # cell 2 has no value of modality 0 (outer join)
    rows = torch.ones(7, dtype=torch.bool)
    rows[6] = False  # a held-out cell
    loss = masked_losses(out, x, hierarchy, hidden, present, groups, rows, visible_weight=0.0)
    keep = torch.ones(7, dtype=torch.bool)
    keep[2] = keep[6] = False
    want = ((pred[keep, :2] - x[keep, :2]) ** 2).mean()
    assert torch.allclose(loss.hidden, want) and int(loss.hidden_entries) == 2 * 5
    assert torch.allclose(loss.total, want)  # one level: no consistency; visible_weight 0
    # Absent, visible, indicator and non-counted rows' values do not move the loss.
    other = x.clone()
    other[2, :2] = 99.0
    other[:, 2:] = -7.0
    other[6] = 5.0
    again = masked_losses(out, other, hierarchy, hidden, present, groups, rows, visible_weight=0.0)
    assert torch.allclose(again.total, loss.total)
    # visible_weight adds the visible entries' MSE.
    vis = masked_losses(out, x, hierarchy, hidden, present, groups, rows, visible_weight=0.5)
    assert torch.allclose(vis.total, want + 0.5 * ((pred[rows, 2:4] - x[rows, 2:4]) ** 2).mean())


def test_draw_hidden_rates():
    gen = torch.Generator().manual_seed(0)
    h = draw_hidden(20000, 3, 0.3, 0.5, gen)
    whole = h.all(dim=1).float().mean().item()
    assert abs(h.float().mean().item() - (0.5 + 0.5 * 0.3)) < 0.02
    assert abs(whole - (0.5 + 0.5 * 0.3 ** 3)) < 0.02


def test_ringconcat_by_hand_on_the_disk(disk):
    cells, edges, c = disk
    x = np.arange(7.0)[:, None] * np.array([[1.0, 10.0]])  # cell i: (i, 10 i)
    out = ringconcat_baseline(x, edges, 7, k=2)
    assert out.shape == (7, 6) and out.dtype == np.float32
    rim = [i for i in range(7) if i != c]
    # centre: itself, the mean of the 6 rim cells, an empty ring 2 (zeros)
    np.testing.assert_allclose(out[c], [c, 10 * c, np.mean(rim), 10 * np.mean(rim), 0, 0], rtol=1e-6)
    # a rim cell: ring 1 = centre + its 2 rim neighbours, ring 2 = the other 3 rim cells
    adj = {i: set() for i in range(7)}
    for a, b in edges.T:
        adj[int(a)].add(int(b))
    for i in rim:
        ring1 = sorted(adj[i])
        ring2 = sorted(set(range(7)) - set(ring1) - {i})
        assert len(ring1) == 3 and len(ring2) == 3 and c in ring1
        np.testing.assert_allclose(out[i], [i, 10 * i, np.mean(ring1), 10 * np.mean(ring1), np.mean(ring2),
                                            10 * np.mean(ring2)], rtol=1e-6)


def test_transforms():
    raw = np.array([[0.0, -1.0], [1.0, 0.0], [3.0, 2.0], [100.0, 5.0]])
    z = lambda v: (v - v.mean()) / v.std()  # noqa: E731
    none = transform_block(raw, "none", counts=True)
    np.testing.assert_allclose(none, np.stack([z(raw[:, 0]), z(raw[:, 1])], 1), atol=1e-6)
    log = transform_block(raw, "log1p", counts=True)  # only the non-negative column is logged
    np.testing.assert_allclose(log[:, 0], z(np.log1p(raw[:, 0])), atol=1e-6)
    np.testing.assert_allclose(log[:, 1], z(raw[:, 1]), atol=1e-6)
    np.testing.assert_allclose(transform_block(raw, "log1p", counts=False), none, atol=1e-6)  # not a count modality
    np.testing.assert_allclose(transform_block(raw, "asinh"), np.arcsinh(none), atol=1e-6)
    # z-scores over the rows with a value; the others are 0
    rows = np.array([True, True, True, False])
    part = transform_block(raw, "none", rows=rows)
    np.testing.assert_allclose(part[:3, 0], z(raw[:3, 0]), atol=1e-6)
    assert (part[3] == 0).all()
    with pytest.raises(UrbanReprError, match="transform must be one of"):
        transform_block(raw, "sqrt")


def test_outer_join_embeds_every_cell_and_flags_missing_rows(tmp_path, area_setup):
    name, toml, area = area_setup
    ids = area.region_ids(9)
    rng = np.random.default_rng(0)
    raster = write_modality(tmp_path / "raster.parquet", "raster", ids[:12], rng.random((12, 2)) * 100, study_area=name)
    roads = write_modality(tmp_path / "roads.parquet", "roads", ids, rng.poisson(3.0, (16, 3)).astype(float),
                           study_area=name)
    tables = {"raster": raster, "roads": roads}
    inner = load_fusion_inputs(toml, 9, tables, area=area, join="inner")
    outer = load_fusion_inputs(toml, 9, tables, area=area)  # outer is the default
    assert inner.n_cells == 12 and outer.n_cells == 16 and outer.join == "outer"
    assert outer.feature_names[-1] == "has_raster" and "has_raster" not in inner.feature_names
    np.testing.assert_array_equal(outer.x[:, -1], np.r_[[1] * 12, [0] * 4])
    raster_cols = [i for i, f in enumerate(outer.feature_names) if f.startswith("raster.")]
    assert (outer.x[12:, raster_cols] == 0).all()
    # the raster block is z-scored (then asinh) over the 12 cells that hold a value, as the inner join does
    np.testing.assert_allclose(outer.x[:12, raster_cols], inner.x[:, [inner.feature_names.index(outer.feature_names[i])
                                                                       for i in raster_cols]], atol=1e-6)
    assert outer.presence.shape == (16, 2)
    np.testing.assert_array_equal(outer.presence[:, outer.modalities.index("raster")], np.r_[[True] * 12, [False] * 4])
    assert outer.presence[:, outer.modalities.index("roads")].all()  # zero-fill: always present
    np.testing.assert_array_equal(outer.column_groups, [0, 0, 1, 1, 1, -1])

    cfg = TrainConfig(hidden_dims=(8,), epochs=2, checkpoint_every=100, members=2, val_fraction=0.3,
                      val_block_resolution=8)
    res = train(outer.x, outer.cells, cfg, progress=False, groups=outer.column_groups, present=outer.presence)
    assert res.embedding.shape == (16, 16) and np.isfinite(res.embedding).all()  # every cell, 2 members x 8
    assert np.isfinite(res.best_val_loss)


def test_headline_mean_leaves_count_targets_out():
    metrics = {"log1p_population": {"r2": 0.6}, "log1p_jobs": {"r2": 0.7}, "schools": {"r2": 0.0},
               "healthcare": {"r2": -0.2}}
    per_fold = {t: [] for t in metrics}
    res = CVResult(metrics, per_fold, pd.DataFrame(), counts=("schools", "healthcare"))
    assert res.headline_targets == ["log1p_population", "log1p_jobs"]
    assert res.mean_r2 == pytest.approx(0.65) and res.mean_r2_all == pytest.approx(0.275)
    flat = res.flat()
    assert flat["mean_r2"] == pytest.approx(0.65) and flat["mean_r2_all"] == pytest.approx(0.275)
    only_counts = CVResult({"schools": {"r2": 0.1}}, {"schools": []}, pd.DataFrame(), counts=("schools",))
    assert only_counts.mean_r2 == pytest.approx(0.1)  # every target a count: the headline keeps them


def test_each_member_holds_out_its_own_whole_blocks():
    import h3

    from urbanrepml.areas import h3ops
    from urbanrepml.tasks.fusion.task import FusionTask

    centre = h3.latlng_to_cell(-30.03, -51.2, 9)
    cells = np.sort(np.array([h3.str_to_int(c) for c in h3.grid_disk(centre, 30)], dtype=np.uint64))
    x = np.random.default_rng(0).standard_normal((len(cells), 4)).astype(np.float32)
    cfg = TrainConfig(members=3, val_fraction=0.3, val_block_resolution=7, hidden_dims=(8,), convs_per_level=1)
    task = FusionTask(x, cells, cfg, groups=np.array([0, 0, 1, 1]))
    task.build_model(torch.device("cpu"))
    train_mask, val_mask = task.batching.train_mask.numpy(), task.batching.val_mask.numpy()
    assert train_mask.shape == val_mask.shape == (len(cells), 3)
    np.testing.assert_array_equal(train_mask, ~val_mask)
    blocks = h3ops.parent_cells(cells, 7)
    for m in range(3):
        held, kept = set(blocks[val_mask[:, m]]), set(blocks[~val_mask[:, m]])
        assert held and kept and not held & kept  # whole blocks
    assert len({val_mask[:, m].tobytes() for m in range(3)}) == 3  # each member its own draw
    # a member's validation loss counts its own held-out cells only
    net = task.build_model(torch.device("cpu")).eval()
    batch = next(iter(task.val_batches(0, None)))
    with torch.no_grad():
        stats = task.val_step(net, batch)
        outs = net([masked_input(batch.x, batch.val_hidden, task.groups_t)] * 3, batch.hierarchy)
        own = [masked_losses(o, batch.x, batch.hierarchy, batch.val_hidden, batch.present, task.groups_t,
                             batch.val_mask[:, m], cfg.visible_weight, cfg.consistency_weight).hidden.item()
               for m, o in enumerate(outs)]
    assert stats["cells"] == pytest.approx(val_mask.sum() / 3)
    assert stats["reconstruction"] == pytest.approx(sum(own) / 3, rel=1e-6)
