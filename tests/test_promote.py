"""`promote` on a real SQLite store and registry: probe what lacks a record, move champion only for a real gain."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.test_probe_e2e import coords_table, log_modality_table, poa_area
from tests.test_tuning import _entry, _main
from urbanrepml.errors import UrbanReprError
from urbanrepml.tracking.promotion import Evidence, decide, evidence_of


def _register(area: str, name: str, tmp_path, values_fn, tag: str) -> str:
    """A fuse-like run (baselines of the coords modality + an embedding model) registered as a new version."""
    from urbanrepml.areas import build_area
    from urbanrepml.fusion.baselines import log_baselines
    from urbanrepml.fusion.inputs import load_fusion_inputs
    from urbanrepml.tables import EmbeddingTable, TableMeta, to_embedding_frame
    from urbanrepml.tracking import stage_run
    from urbanrepml.tracking.pyfunc import log_embedding_model
    from urbanrepml.tracking.registry import register_embeddings

    built = build_area(area, [9])
    modality = coords_table(tmp_path / f"coords_{tag}.parquet", area, seed=1)
    with stage_run("fuse", name, run_name=f"fake-fuse-{tag}") as run:
        inputs = load_fusion_inputs(area, 9, tables={"coords": modality.path}, area=built)
        log_baselines(inputs, built)
        frame, names = to_embedding_frame(values_fn(inputs.region_ids), inputs.region_ids, "fused")
        log_embedding_model(EmbeddingTable(frame, TableMeta(modality="fused", resolution=9, study_area=name, prefix="fused",
                                                             feature_names=names)))
    return str(register_embeddings(run.info.run_id, name).version)


def _noise(ids):
    return np.random.default_rng(5).normal(size=(len(ids), 6))


def _informed(ids):
    """Noisy copies of the targets (a stand-in for an embedding that really is better than the baselines)."""
    from tests.test_probe_e2e import HEXGRID
    from urbanrepml.areas import h3ops

    grid = pd.read_csv(HEXGRID)
    grid.index = h3ops.cells_to_str(h3ops.parse_cells(grid["id"]))
    grid = grid[["jobs", "schools"]].reindex(ids).fillna(0)
    rng = np.random.default_rng(7)
    cols = [np.log1p(grid["jobs"]), grid["schools"]]
    return np.column_stack([c.to_numpy() + rng.normal(scale=0.1, size=len(ids)) for c in cols] + [rng.normal(size=len(ids))])


def test_promote_flow(tracking, tmp_path):
    from urbanrepml.tracking.promotion import run_promote_stage

    name = "poa_promote"
    area = poa_area(tmp_path, name)
    log_modality_table(area)
    client = MlflowClient(tracking)
    model = f"urbanrepml-{name}"

    # 1. one version, no better than the baselines: probed, rejected, no champion
    v1 = _register(area, name, tmp_path, _noise, "noise")
    d = run_promote_stage(area)
    assert d.decision == "rejected" and d.probed == ["1"] and "baseline" in d.reason
    mv1 = client.get_model_version(model, v1)
    assert mv1.tags["promote.decision"] == "rejected" and "probe.mean_r2" in mv1.tags
    assert not client.get_registered_model(model).aliases.get("champion")

    # 2. a better version: only it is probed; it beats both baselines -> champion, evidence on the version
    v2 = _register(area, name, tmp_path, _informed, "informed")
    d = run_promote_stage(area)
    assert d.decision == "promoted" and d.probed == [v2] and d.best.version == v2
    assert client.get_model_version_by_alias(model, "champion").version in (2, "2")
    mv2 = client.get_model_version(model, v2)
    ev = __import__("json").loads(mv2.tags["promote.evidence"])
    assert ev["best"]["value"] == pytest.approx(float(mv2.tags["probe.mean_r2"]), rel=1e-5)
    assert ev["best"]["value"] > max(ev["best"]["baseline_concat"], ev["best"]["baseline_ring"])
    assert ev["best"]["probe_run_id"] == mv2.tags["probe.run_id"] and mv2.tags["promote.previous_champion"] == "none"
    probe_run = client.get_run(mv2.tags["probe.run_id"])
    assert probe_run.data.metrics["mean_r2"] == pytest.approx(ev["best"]["value"])
    promote_run = client.get_run(mv2.tags["promote.run_id"])
    assert probe_run.data.tags["mlflow.parentRunId"] == promote_run.info.run_id  # probed as a nested run
    assert promote_run.data.tags["urbanrepml.decision"] == "promoted"

    # 3. again: idempotent (nothing probed, champion unchanged)
    d = run_promote_stage(area)
    assert d.decision == "kept" and d.probed == [] and d.best.version == v2
    assert str(client.get_model_version_by_alias(model, "champion").version) == v2

    # 4. a min_gain nobody reaches keeps the champion where it is
    v3 = _register(area, name, tmp_path, _informed, "informed-again")  # the same embeddings: no gain
    d = run_promote_stage(area, min_gain=0.01)
    assert d.decision in ("rejected", "kept") and str(client.get_model_version_by_alias(model, "champion").version) == v2
    assert client.get_model_version(model, v3).tags.get("probe.mean_r2")

    import mlflow

    emb = mlflow.pyfunc.load_model(f"models:/{model}@champion")
    assert emb is not None


def test_decide_rules_and_refusals(tracking):
    e = lambda v, x, c=0.1, r=0.2: Evidence(v, x, c, r, f"run{v}", "d")  # noqa: E731
    assert decide({"1": e("1", 0.5)}, None, "mean_r2", 0.0).promote
    assert not decide({"1": e("1", 0.25)}, None, "mean_r2", 0.1).promote  # beats ring by 0.05 < 0.1
    assert not decide({"1": e("1", 0.2, r=0.2)}, None, "mean_r2", 0.0).promote  # a tie is no gain
    d = decide({"1": e("1", 0.5), "2": e("2", 0.52)}, "1", "mean_r2", 0.05)
    assert not d.promote and "does not beat champion version 1" in d.reason
    assert decide({"1": e("1", 0.5), "2": e("2", 0.6)}, "1", "mean_r2", 0.05).promote
    # lower is better for error metrics
    assert decide({"1": e("1", 0.3, c=0.5, r=0.4)}, None, "rmse_log1p_jobs", 0.0).promote
    assert not decide({"1": e("1", 0.6, c=0.5, r=0.4)}, None, "rmse_log1p_jobs", 0.0).promote
    # no record, no promotion
    with pytest.raises(UrbanReprError, match="refusing to promote: no version has a probe record"):
        decide({}, None, "mean_r2", 0.0)
    assert not decide({"2": e("2", 0.9, c=None)}, None, "mean_r2", 0.0).promote

    class MV:  # a version without probe tags
        name, version, tags, run_id = "urbanrepml-x", "4", {}, "r"

    with pytest.raises(UrbanReprError, match="version 4 has no probe record"):
        evidence_of(MV(), "mean_r2")


def test_promote_without_versions_is_one_clear_line(tracking, tmp_path, capsys):
    area = poa_area(tmp_path, "poa_promote_empty")
    code, _, err = _main("promote.py", ["--study_area", area], capsys)
    assert code == 2
    assert err.strip() == ("error: registered model 'urbanrepml-poa_promote_empty' has no versions to promote; run "
                                   "`mlflow run . -e fuse` (or -e tune) with study_area=poa_promote_empty first")


def test_pipeline_nested_runs_and_summary(tracking, tmp_path):
    """`pipeline` on a small area whose only modality table already exists: reused, fuse -> probe -> promote nested."""
    name = "poa_pipe"
    area = poa_area(tmp_path, name)
    modality_run = log_modality_table(area)
    proc = _entry("pipeline.py", ["--study_area", area, "--epochs", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "# Pipeline summary: poa_pipe" in proc.stdout and "| coords | reused |" in proc.stdout
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name(f"urbanrepml-{name}")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.`urbanrepml.stage` = 'pipeline'")
    assert parent.info.status == "FINISHED"
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    stages = sorted(r.data.tags["urbanrepml.stage"] for r in children)
    assert stages == ["fuse", "probe", "promote"]
    by_stage = {r.data.tags["urbanrepml.stage"]: r for r in children}
    assert by_stage["fuse"].data.params["inputs.modalities"] == "coords"
    assert by_stage["fuse"].data.params["inputs.coords.run_id"] == modality_run
    version = parent.data.tags["urbanrepml.registered_version"]
    mv = client.get_model_version(f"urbanrepml-{name}", version)
    assert mv.tags["probe.run_id"] == by_stage["probe"].info.run_id
    assert mv.tags["promote.decision"] == parent.data.tags["urbanrepml.decision"] in ("promoted", "rejected")
    m = parent.data.metrics
    assert m["fused_mean_r2"] == pytest.approx(by_stage["probe"].data.metrics["mean_r2"])
    assert m["baseline_ring_mean_r2"] == pytest.approx(by_stage["probe"].data.metrics["baseline_ring_mean_r2"])
    assert m["fusion_best_val_loss"] == pytest.approx(by_stage["fuse"].data.metrics["best_val_loss"])
    md = client.download_artifacts(parent.info.run_id, "summary/pipeline_summary.md", str(tmp_path / "dl"))
    text = open(md).read()
    assert "| baseline concat |" in text and "| lat/lon 10-NN |" in text and "| full_unet |" in text
    csv = pd.read_csv(client.download_artifacts(parent.info.run_id, "summary/pipeline_summary.csv", str(tmp_path / "dl")))
    assert set(csv["section"]) == {"modality", "fusion", "probe", "promote"}
