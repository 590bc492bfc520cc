"""The probe and cluster stages end to end on a real SQLite store, on Porto Alegre's real targets.

The embeddings are a contract table written by ``tests.support.tables.coords_table``: random
Fourier features of the cell centres (a learnable but imperfect function of space). A stand-in modality
table of the same kind is logged as a stage-1 run, so the probe computes the
concat/ring baselines from the tracking store like it does for real tables.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.support import REPO
from tests.support.areas import HEXGRID, poa_area
from tests.support.processes import clean_env, run_script
from tests.support.tables import coords_table, log_modality_table
from urbanrepml.areas import build_area, h3ops
from urbanrepml.errors import UrbanReprError
from urbanrepml.tables import EmbeddingTable, write_table

TARGETS = ["log1p_jobs", "schools"]


def only_run(client: MlflowClient, area_name: str, stage: str):
    exp = client.get_experiment_by_name(f"urbanrepml-{area_name}")
    (run,) = client.search_runs([exp.experiment_id], filter_string=f"tags.`urbanrepml.stage` = '{stage}'")
    return run


@pytest.mark.e2e
def test_probe_entry_point_logs_metrics_baselines_folds_and_figures(tracking, tmp_path):
    area = poa_area(tmp_path, "poa_e2e_table")
    log_modality_table(area)
    coords_table(tmp_path / "emb.parquet", area, seed=0)
    proc = run_script("probe.py", ["--study_area", area, "--table", str(tmp_path / "emb.parquet")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "baselines computed from modality tables coords" in proc.stdout, proc.stdout
    client = MlflowClient(tracking)
    run = only_run(client, "poa_e2e_table", "probe")
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for prefix in ("", "baseline_concat_", "baseline_ring_", "baseline_ringconcat_", "reference_knn_latlon_"):
        assert {f"{prefix}mean_r2", *(f"{prefix}{k}_{t}" for k in ("r2", "rmse", "mae") for t in TARGETS)} <= set(m), prefix
        assert {f"{prefix}r2_{t}_fold{k}" for t in TARGETS for k in range(5)} <= set(m)
        # the count target gets count metrics too
        assert f"{prefix}poisson_deviance_schools" in m and 0 <= m[f"{prefix}auc_any_schools"] <= 1
        assert f"{prefix}poisson_deviance_log1p_jobs" not in m
        # the headline leaves the count target out; mean_r2_all keeps it
        assert m[f"{prefix}mean_r2"] == pytest.approx(m[f"{prefix}r2_log1p_jobs"])
        assert m[f"{prefix}mean_r2_all"] == pytest.approx(np.mean([m[f"{prefix}r2_{t}"] for t in TARGETS]))
    # coordinate features carry real signal for jobs; school counts stay near zero
    assert 0.1 < m["r2_log1p_jobs"] < 0.9 and abs(m["r2_schools"]) < 0.1
    assert 0.25 < m["reference_knn_latlon_r2_log1p_jobs"] < 0.5
    assert m["cells_probed"] == 1227 and m["cells_in_area"] == 2093 and m["blocks"] == 44
    assert m["coverage_log1p_jobs"] == pytest.approx(1222 / 2093) and m["cells_schools"] == 1227
    assert m["delta_concat_mean_r2"] == pytest.approx(m["mean_r2"] - m["baseline_concat_mean_r2"])
    p = run.data.params
    assert p["probe"] == "ridge" and p["cv"] == "spatial" and p["block_resolution"] == "7"
    artifacts = {a.path for d in ("folds", "probe", "figures") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"folds/folds.parquet", "folds/folds.json", "probe/oof_predictions.parquet", "probe/metrics_by_target.csv",
            "probe/probe_info.json", "figures/r2_by_target.html", "figures/folds.html"} <= artifacts
    assert {f"figures/{kind}_{t}.html" for kind in ("target", "oof_prediction", "residual") for t in TARGETS} <= artifacts
    # the folds artifact is the assignment the digest names, over the probed cells
    from urbanrepml.analysis.folds import Folds, make_folds

    local = client.download_artifacts(run.info.run_id, "folds", str(tmp_path / "dl"))
    folds = Folds.load(local)
    assert folds.digest[:16] == p["folds_digest"] and len(folds.fold) == 1227
    assert folds.digest == make_folds(folds.fold.index, "spatial", 7, 5, 0).digest
    oof = pd.read_parquet(client.download_artifacts(run.info.run_id, "probe/oof_predictions.parquet", str(tmp_path / "dl")))
    assert {"fold", "y_log1p_jobs", "model_log1p_jobs", "baseline_ring_schools", "reference_knn_latlon_schools"} <= set(oof.columns)
    inputs = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert {"embeddings", "target.hexgrid"} <= inputs


@pytest.mark.e2e  # a fuse-like run with baselines, then the probe stage twice on Porto Alegre
def test_registered_model_probe_records_on_version(tracking, tmp_path):
    """A registered version: champion missing -> candidate (said so); baselines from the fuse run; tags on the version."""
    from urbanrepml.stages.probe import run_probe_stage
    from urbanrepml.tasks.fusion.baselines import baseline_tables
    from urbanrepml.tasks.fusion.inputs import load_fusion_inputs
    from urbanrepml.tracking import stage_run
    from urbanrepml.tracking.fusion import log_baselines
    from urbanrepml.tracking.pyfunc import log_embedding_model
    from urbanrepml.tracking.registry import register_embeddings

    area = poa_area(tmp_path, "poa_e2e_model")
    built = build_area(area, [9])
    modality = coords_table(tmp_path / "coords_res9.parquet", area, seed=1)
    with stage_run("fuse", "poa_e2e_model") as run:
        inputs = load_fusion_inputs(area, 9, tables={"coords": modality.path}, area=built)
        log_baselines(baseline_tables(inputs, built, run_id=run.info.run_id), built.cells(9))
        log_embedding_model(coords_table(tmp_path / "fused.parquet", area, modality="fused", seed=2))
    mv = register_embeddings(run.info.run_id, "poa_e2e_model")
    metrics = run_probe_stage(area, probe="ridge", figures=False)
    assert {"mean_r2", "baseline_concat_mean_r2", "baseline_ring_mean_r2", "baseline_ringconcat_mean_r2",
            "reference_knn_latlon_mean_r2", "best_baseline_mean_r2"} <= set(metrics)
    client = MlflowClient(tracking)
    mv = client.get_model_version(mv.name, mv.version)
    assert float(mv.tags["probe.mean_r2"]) == pytest.approx(metrics["mean_r2"], rel=1e-5)
    assert float(mv.tags["probe.baseline_ring_mean_r2"]) == pytest.approx(metrics["baseline_ring_mean_r2"], rel=1e-5)
    probe_run = only_run(client, "poa_e2e_model", "probe")
    assert mv.tags["probe.run_id"] == probe_run.info.run_id
    assert probe_run.data.tags["urbanrepml.model_version"] == f"urbanrepml-poa_e2e_model/{mv.version}"
    note = probe_run.data.tags["mlflow.note.content"]
    assert "no @champion" in note and f"baselines from run {run.info.run_id}" in note
    assert metrics["cells_probed"] == 1227
    # inside another stage's run (promote, pipeline) the probe is a nested child run
    with stage_run("promote", "poa_e2e_model") as parent:
        again = run_probe_stage(area, model_uri=f"models:/{mv.name}/{mv.version}", figures=False)
    assert again["mean_r2"] == pytest.approx(metrics["mean_r2"])  # deterministic
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert [c.data.tags["urbanrepml.stage"] for c in children] == ["probe"]


@pytest.mark.e2e
def test_bad_inputs_are_one_clear_line(tracking, tmp_path):
    from urbanrepml.stages.probe import run_probe_stage

    area = poa_area(tmp_path, "poa_e2e_bad")
    emb = tmp_path / "emb.parquet"
    coords_table(emb, area)
    # fewer spatial blocks than folds: through the entry point, exit 2 and one line
    proc = run_script("probe.py", ["--study_area", area, "--table", str(emb), "--block_resolution", "4"], tmp_path)
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.strip().splitlines() if " INFO mlflow." not in ln] == [  # a fresh store logs its creation
        "error: only 3 spatial block(s) at block_resolution 4 hold the 1227 probed cells, fewer than folds=5; "
        "use a finer block_resolution (e.g. 5) or fewer folds"]
    # a target file that does not overlap the area
    pd.DataFrame({"la": [52.37, 52.371], "lo": [4.89, 4.891], "v": [1.0, 2.0]}).to_csv(tmp_path / "far.csv", index=False)
    far = poa_area(tmp_path, "poa_e2e_bad", {"far": {"path": "far.csv", "lat": "la", "lon": "lo", "columns": ["v"]}})
    with pytest.raises(UrbanReprError, match=r"\[targets.far\] far.csv has no values on any of the 2093 cells"):
        run_probe_stage(far, table=str(emb))
    # a constant target
    pd.DataFrame({"id": pd.read_csv(HEXGRID)["id"], "c": 1.0}).to_csv(tmp_path / "const.csv", index=False)
    const = poa_area(tmp_path, "poa_e2e_bad", {"k": {"path": "const.csv", "id": "id", "columns": ["c"]}})
    with pytest.raises(UrbanReprError, match=r"target 'c' .* is constant \(1\) on its 1227 cell\(s\); R² is undefined"):
        run_probe_stage(const, table=str(emb))
    # a target that varies on the area's cells but is constant on the probed ones (the embedding covers only part)
    from urbanrepml.tables import read_table

    full = read_table(emb)
    part = full.frame.index[: len(full.frame) // 2]
    half = tmp_path / "half.parquet"
    write_table(EmbeddingTable(full.frame.loc[part], full.meta), half)
    ids = pd.read_csv(HEXGRID)["id"]
    canon = h3ops.cells_to_str(h3ops.parse_cells(ids))
    pd.DataFrame({"id": ids, "v": np.random.default_rng(0).normal(size=len(ids)),
                  "d": np.where(pd.Index(canon).isin(part), 1.0, 2.0)}).to_csv(tmp_path / "part.csv", index=False)
    partly = poa_area(tmp_path, "poa_e2e_bad", {"p": {"path": "part.csv", "id": "id", "columns": ["v", "d"]}})
    with pytest.raises(UrbanReprError, match=r"^target\(s\) 'd' \(1 distinct value\(s\)\) are constant on the \d+ probed cells"):
        run_probe_stage(partly, table=str(half))
    # a model URI that does not exist; no registered model at all
    with pytest.raises(UrbanReprError, match="registered model 'urbanrepml-nowhere' does not exist"):
        run_probe_stage(area, model_uri="models:/urbanrepml-nowhere/3")
    with pytest.raises(UrbanReprError, match="no registered model 'urbanrepml-poa_e2e_bad'"):
        run_probe_stage(area)
    # embeddings of another study area
    other = tmp_path / "ams.parquet"
    coords_table(other, "amsterdam", res=10)
    with pytest.raises(UrbanReprError, match="embeddings belong to study area 'amsterdam', not 'poa_e2e_bad'"):
        run_probe_stage(area, table=str(other))
    # none of these left a probe run behind
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("urbanrepml-poa_e2e_bad")
    assert exp is None or not client.search_runs([exp.experiment_id], filter_string="tags.`urbanrepml.stage` = 'probe'")


@pytest.mark.e2e
def test_cluster_entry_point(tracking, tmp_path):
    area = poa_area(tmp_path, "poa_e2e_cluster")
    coords_table(tmp_path / "emb.parquet", area)
    # through `mlflow run`, which logs the entry point's params itself (empty ones as "''"): no clash
    cmd = [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "cluster", "--env-manager", "local",
           "--experiment-name", "urbanrepml-poa_e2e_cluster"]
    for k, v in {"study_area": area, "table": str(tmp_path / "emb.parquet"), "k_min": 2, "k_max": 4}.items():
        cmd += ["-P", f"{k}={v}"]
    env = clean_env(URBANREPML_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking)
    run = only_run(client, "poa_e2e_cluster", "cluster")
    history = client.get_metric_history(run.info.run_id, "silhouette_res9")
    assert sorted(h.step for h in history) == [2, 3, 4] and all(-1 <= h.value <= 1 for h in history)
    assert {"best_k_res9", "best_k_res8", "best_k_res7", "calinski_harabasz_res7"} <= set(run.data.metrics)
    assert run.data.metrics["cells_res9"] == 2093
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/cluster_scores.html", "figures/clusters_res9.html", "figures/clusters_res7.html"} <= figures
    labels = {a.path for a in client.list_artifacts(run.info.run_id, "cluster")}
    assert {"cluster/scores.csv", "cluster/labels_res9.parquet", "cluster/labels_res8.parquet"} <= labels
