"""Baselines: ring aggregation numbers by hand (7-cell H3 disk, a line), concat, logging and loading back."""

from __future__ import annotations

import h3
import numpy as np
import pytest

from urbanrepml.areas import h3ops
from urbanrepml.errors import UrbanReprError
from urbanrepml.tasks.fusion.baselines import (
    baseline_tables,
    concat_baseline,
    ring_baseline,
    ring_memberships,
    ring_operator,
    ring_weights,
)
from urbanrepml.tracking.fusion import load_baseline_tables, log_baselines

E = np.e


# (w0, w1, w2) with K = 2, before renormalising.
WEIGHTS = {
    "exponential": (1.0, E ** -1, E ** -2),
    "logarithmic": (1.0, 1 / np.log2(3), 0.5),
    "linear": (1.0, 2 / 3, 1 / 3),
    "flat": (1.0, 1.0, 1.0),
}


@pytest.mark.parametrize("weighting", list(WEIGHTS))
def test_ring_on_seven_cell_disk(disk, weighting):
    cells, edges, c = disk
    assert edges.shape == (2, 24)  # 6 spokes + 6 rim edges, both directions
    w0, w1, w2 = WEIGHTS[weighting]
    np.testing.assert_allclose(ring_weights(2, weighting), WEIGHTS[weighting])
    # Column 0 marks the centre; column 1 is 1 everywhere (any weighting keeps constants constant).
    x = np.zeros((7, 2))
    x[c, 0] = 1.0
    x[:, 1] = 1.0
    out = ring_baseline(x, edges, 7, k=2, weighting=weighting)
    assert out.shape == (7, 2) and out.dtype == np.float32
    # Centre: ring 0 = itself (1), ring 1 = six rim cells (0), ring 2 empty -> renormalise over w0, w1.
    assert out[c, 0] == pytest.approx(w0 / (w0 + w1), rel=1e-6)
    # A rim cell: ring 0 = itself (0), ring 1 = centre + 2 rim neighbours (mean 1/3), ring 2 = other 3 rim cells (0).
    rim = [i for i in range(7) if i != c]
    np.testing.assert_allclose(out[rim, 0], (w1 / 3) / (w0 + w1 + w2), rtol=1e-6)
    np.testing.assert_allclose(out[:, 1], 1.0, rtol=1e-6)


def test_ring_numbers_written_out(disk):
    cells, edges, c = disk
    x = np.zeros((7, 1))
    x[c] = 1.0
    linear = ring_baseline(x, edges, 7, k=2, weighting="linear").ravel()
    flat = ring_baseline(x, edges, 7, k=2, weighting="flat").ravel()
    assert linear[c] == pytest.approx(0.6) and flat[c] == pytest.approx(0.5)
    rim = [i for i in range(7) if i != c]
    np.testing.assert_allclose(linear[rim], 1 / 9, rtol=1e-6)  # (2/3 * 1/3) / 2
    np.testing.assert_allclose(flat[rim], 1 / 9, rtol=1e-6)    # (1/3) / 3
    exp1 = ring_baseline(x, edges, 7, k=1, weighting="exponential").ravel()
    assert exp1[c] == pytest.approx(1 / (1 + E ** -1), rel=1e-6)
    np.testing.assert_allclose(exp1[rim], (E ** -1 / 3) / (1 + E ** -1), rtol=1e-6)
    # K = 0 is the identity.
    np.testing.assert_allclose(ring_baseline(x, edges, 7, k=0), x)


def test_ring_matches_h3_grid_distance(disk):
    """Against an independent oracle: H3's own grid distance on the disk (no border effects inside it)."""
    cells, edges, _ = disk
    ids = h3ops.cells_to_str(cells)
    dist = np.array([[h3.grid_distance(a, b) for b in ids] for a in ids])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3))
    w = ring_weights(2, "logarithmic")
    expected = np.zeros_like(x)
    for i in range(7):
        terms = [(w[k], x[dist[i] == k].mean(axis=0)) for k in range(3) if (dist[i] == k).any()]
        expected[i] = sum(wk * m for wk, m in terms) / sum(wk for wk, _ in terms)
    np.testing.assert_allclose(ring_baseline(x, edges, 7, 2, "logarithmic"), expected, rtol=1e-5)
    rings = ring_memberships(edges, 7, 2)
    for k in range(3):
        np.testing.assert_array_equal(rings[k].toarray(), (dist == k).astype(float))


def test_ring_on_a_line_with_border_and_isolated_node():
    # 0 - 1 - 2 - 3 - 4, node 5 isolated; only one direction given (the operator symmetrises).
    edges = np.array([[0, 1, 2, 3], [1, 2, 3, 4]])
    x = np.arange(6.0)[:, None]
    flat = ring_baseline(x, edges, 6, k=2, weighting="flat").ravel()
    # node 0: rings {0},{1},{2} -> (0+1+2)/3; node 1: {1},{0,2},{3} -> (1+1+3)/3; node 2: 2,2,2; node 5: itself.
    np.testing.assert_allclose(flat, [1.0, 5 / 3, 2.0, 7 / 3, 3.0, 5.0], rtol=1e-6)
    linear = ring_baseline(x, edges, 6, k=1, weighting="linear").ravel()
    # weights 1, 1/2: node 0 -> (0 + 0.5*1)/1.5; node 1 -> (1 + 0.5*1)/1.5 = 1.
    np.testing.assert_allclose(linear[:2], [1 / 3, 1.0], rtol=1e-6)
    op = ring_operator(edges, 6, 2, "exponential")
    np.testing.assert_allclose(np.asarray(op.sum(axis=1)).ravel(), 1.0)  # rows are convex weights


def test_ring_bad_input():
    edges = np.array([[0], [1]])
    with pytest.raises(UrbanReprError, match="ring_weighting must be one of exponential, logarithmic, linear, flat"):
        ring_baseline(np.zeros((2, 1)), edges, 2, 1, "gaussian")
    with pytest.raises(UrbanReprError, match="ring_k must be a whole number >= 0"):
        ring_baseline(np.zeros((2, 1)), edges, 2, -1)
    with pytest.raises(UrbanReprError, match="outside 0..1"):
        ring_baseline(np.zeros((2, 1)), np.array([[0], [2]]), 2, 1)
    with pytest.raises(UrbanReprError, match="n = 3 rows"):
        ring_baseline(np.zeros((2, 1)), edges, 3, 1)


def test_log_and_load_baselines(tracking, tmp_path, study_area_toml):
    import mlflow
    from mlflow.tracking import MlflowClient

    from tests.support.areas import AMSTERDAM_BBOX, unique_area_name
    from tests.support.tables import write_modality
    from urbanrepml.areas import build_area
    from urbanrepml.tasks.fusion.inputs import load_fusion_inputs

    name = unique_area_name("fi")
    toml = study_area_toml(name, AMSTERDAM_BBOX)
    area = build_area(toml, [9])
    ids = area.region_ids(9)
    raster = write_modality(tmp_path / "r.parquet", "raster", ids[:10], np.arange(10.0), study_area=name)
    poi = write_modality(tmp_path / "p.parquet", "poi", ids[:3], [1.0, 2.0, 3.0], study_area=name)
    inputs = load_fusion_inputs(toml, 9, {"raster": raster, "poi": poi}, area=area)
    np.testing.assert_array_equal(concat_baseline(inputs), inputs.x)

    with pytest.raises(UrbanReprError, match="needs an active MLflow run"):
        log_baselines(baseline_tables(inputs, area))
    mlflow.set_experiment(f"baselines-{name}")
    with mlflow.start_run() as run:
        tables = log_baselines(baseline_tables(inputs, area, ring_k=1, ring_weighting="flat", run_id=run.info.run_id),
                               area.cells(9))
    run_id = run.info.run_id
    listed = sorted(a.path for a in MlflowClient().list_artifacts(run_id, "baselines"))
    assert listed == ["baselines/concat_res9.parquet", "baselines/ring_res9.parquet", "baselines/ringconcat_res9.parquet"]
    got = MlflowClient().get_run(run_id).data
    assert got.params["baseline.ring_k"] == "1" and got.params["baseline.ring_weighting"] == "flat"
    assert got.tags["urbanrepml.baseline_ring"] == "baselines/ring_res9.parquet"

    loaded = load_baseline_tables(run_id)
    assert set(loaded) == {"concat", "ring", "ringconcat"}
    assert loaded["ringconcat"].frame.shape == (inputs.n_cells, 3 * inputs.x.shape[1])
    concat, ring = loaded["concat"], loaded["ring"]
    assert concat.meta.modality == "baseline_concat" and ring.meta.modality == "baseline_ring"
    assert concat.meta.producer_run_id == run_id and concat.meta.study_area == name and ring.meta.resolution == 9
    assert concat.meta.input_digests == inputs.digests and ring.meta.extra == {"ring_k": "1", "ring_weighting": "flat"}
    assert list(concat.frame.columns) == [f"concat_{i}" for i in range(inputs.x.shape[1])]
    assert concat.frame.index.equals(inputs.region_ids) and ring.frame.index.equals(inputs.region_ids)
    np.testing.assert_array_equal(concat.frame.to_numpy(), inputs.x)
    expected = ring_baseline(inputs.x, inputs.edge_index(area), inputs.n_cells, 1, "flat")
    np.testing.assert_allclose(ring.frame.to_numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(tables["ring"].frame.to_numpy(), expected, rtol=1e-6)
    # By hand for one cell: flat K=1 -> (x_i + mean of its in-set neighbours) / 2.
    edges = inputs.edge_index(area)
    nb = edges[1][edges[0] == 0]
    np.testing.assert_allclose(expected[0], (inputs.x[0] + inputs.x[nb].mean(axis=0)) / 2, rtol=1e-5)

    with pytest.raises(UrbanReprError, match="not found in the tracking store"):
        load_baseline_tables("0" * 32)
    with mlflow.start_run() as empty:
        pass
    with pytest.raises(UrbanReprError, match="has no baselines/concat_res<r>.parquet artifact"):
        load_baseline_tables(empty.info.run_id)
