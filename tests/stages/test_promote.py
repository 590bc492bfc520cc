"""`promote` on a real SQLite store and registry: probe what lacks a record, move champion only for a real gain."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.support.areas import poa_area
from tests.support.processes import entry_main, entry_process
from tests.support.tables import coords_table, log_modality_table
from urbanrepml.errors import UrbanReprError
from urbanrepml.tracking.promotion import Evidence, decide, evidence_of


def _register(area: str, name: str, tmp_path, values_fn, tag: str) -> str:
    """A fuse-like run (baselines of the coords modality + an embedding model) registered as a new version."""
    from urbanrepml.areas import build_area
    from urbanrepml.tables import EmbeddingTable, TableMeta, to_embedding_frame
    from urbanrepml.tasks.fusion.baselines import baseline_tables
    from urbanrepml.tasks.fusion.inputs import load_fusion_inputs
    from urbanrepml.tracking import stage_run
    from urbanrepml.tracking.fusion import log_baselines
    from urbanrepml.tracking.pyfunc import log_embedding_model
    from urbanrepml.tracking.registry import register_embeddings

    built = build_area(area, [9])
    modality = coords_table(tmp_path / f"coords_{tag}.parquet", area, seed=1)
    with stage_run("fuse", name, run_name=f"fake-fuse-{tag}") as run:
        inputs = load_fusion_inputs(area, 9, tables={"coords": modality.path}, area=built)
        log_baselines(baseline_tables(inputs, built, run_id=run.info.run_id), built.cells(9))
        frame, names = to_embedding_frame(values_fn(inputs.region_ids), inputs.region_ids, "fused")
        log_embedding_model(EmbeddingTable(frame, TableMeta(modality="fused", resolution=9, study_area=name, prefix="fused",
                                                             feature_names=names)))
    return str(register_embeddings(run.info.run_id, name).version)


def _noise(ids):
    return np.random.default_rng(5).normal(size=(len(ids), 6))


def _informed(ids):
    """Noisy copies of the targets (a stand-in for an embedding that really is better than the baselines)."""
    from tests.support.areas import HEXGRID
    from urbanrepml.areas import h3ops

    grid = pd.read_csv(HEXGRID)
    grid.index = h3ops.cells_to_str(h3ops.parse_cells(grid["id"]))
    grid = grid[["jobs", "schools"]].reindex(ids).fillna(0)
    rng = np.random.default_rng(7)
    cols = [np.log1p(grid["jobs"]), grid["schools"]]
    return np.column_stack([c.to_numpy() + rng.normal(scale=0.1, size=len(ids)) for c in cols] + [rng.normal(size=len(ids))])


@pytest.mark.e2e  # probes five versions (ridge on every fold, baselines) on Porto Alegre: ~20 s
def test_promote_flow(tracking, tmp_path):
    from urbanrepml.stages.promote import run_promote_stage

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
    assert ev["best"]["value"] > max(ev["best"]["baselines"].values())
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

    # 5. another fold seed: every record was made on other folds, so every version is re-probed on the new ones
    #    (the champion included) and only scores on the same folds are compared
    d = run_promote_stage(area, seed=3)
    assert sorted(d.probed) == sorted([v1, v2, v3]) and d.decision in ("kept", "rejected", "promoted")
    tags = {v: client.get_model_version(model, v).tags for v in (v1, v2, v3)}
    assert {t["probe.seed"] for t in tags.values()} == {"3"} and len({t["probe.folds_digest"] for t in tags.values()}) == 1
    from urbanrepml.analysis.targets import targets_digest
    from urbanrepml.config import load_study_area

    assert {t["probe.targets_digest"] for t in tags.values()} == {targets_digest(load_study_area(area))}
    assert tags[v1]["probe.folds_digest"] != mv1.tags["probe.folds_digest"]  # other seed, other folds
    assert run_promote_stage(area, seed=3).probed == []  # now recorded on seed 3

    import mlflow

    emb = mlflow.pyfunc.load_model(f"models:/{model}@champion")
    assert emb is not None


def test_decide_rules_and_refusals(tracking):
    e = lambda v, x, c=0.1, r=0.2: Evidence(v, x, {"concat": c, "ring": r}, f"run{v}", "d")  # noqa: E731
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
    # every baseline scored is a bar, ringconcat included: the best of them must be beaten
    g = lambda v, x, rc: Evidence(v, x, {"concat": 0.1, "ring": 0.2, "ringconcat": rc}, f"run{v}", "d")  # noqa: E731
    d = decide({"1": g("1", 0.5, 0.55)}, None, "mean_r2", 0.0)
    assert not d.promote and "ringconcat baseline 0.5500" in d.reason
    d = decide({"1": g("1", 0.6, 0.55)}, None, "mean_r2", 0.0)
    assert d.promote and "ringconcat 0.5500" in d.reason

    # scores on other folds than the champion's are not comparable: never promoted over it
    f = lambda v, x, d: Evidence(v, x, {"concat": 0.1, "ring": 0.2}, f"run{v}", d)  # noqa: E731
    d = decide({"1": f("1", 0.5, "aaa"), "2": f("2", 0.9, "bbb")}, "1", "mean_r2", 0.0)
    assert not d.promote and d.decision == "rejected" and d.best.version == "2" and "not comparable" in d.reason
    d = decide({"1": f("1", 0.5, "aaa"), "2": f("2", 0.3, "bbb"), "3": f("3", 0.6, "aaa")}, "1", "mean_r2", 0.0)
    assert d.promote and d.best.version == "3"  # the incomparable one scores lower: the comparable best wins
    assert decide({"1": f("1", 0.5, "aaa"), "2": f("2", 0.9, "bbb")}, None, "mean_r2", 0.0).best.version == "2"

    # a record counts only on the current settings, the fold seed included (older records without it do not)
    from urbanrepml.tracking.promotion import has_probe_record

    class Rec:
        tags = {"probe.run_id": "r", "probe.folds_digest": "d", "probe.mean_r2": "0.3", "probe.cv": "spatial",
                "probe.block_resolution": "7", "probe.folds": "5", "probe.seed": "12345678"}

    assert has_probe_record(Rec(), seed=12345678) and not has_probe_record(Rec(), seed=0)
    assert not has_probe_record(Rec(), block_resolution=6, seed=12345678)
    Rec.tags = {k: v for k, v in Rec.tags.items() if k != "probe.seed"}
    assert not has_probe_record(Rec())

    class MV:  # a version without probe tags
        name, version, tags, run_id = "urbanrepml-x", "4", {}, "r"

    with pytest.raises(UrbanReprError, match="version 4 has no probe record"):
        evidence_of(MV(), "mean_r2")


def test_promote_without_versions_is_one_clear_line(tracking, tmp_path, capsys):
    area = poa_area(tmp_path, "poa_promote_empty")
    code, _, err = entry_main("promote.py", ["--study_area", area], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1] == ("error: registered model 'urbanrepml-poa_promote_empty' has no versions to promote; run "
                                   "`mlflow run . -e fuse` (or -e tune) with study_area=poa_promote_empty first")
    for bad in ("nan", "-0.1", "inf"):  # a min_gain that is not a finite number >= 0: one line, before anything else
        code, _, err = entry_main("promote.py", ["--study_area", area, "--min_gain", bad], capsys)
        assert code == 2 and err.strip().splitlines()[-1].startswith("error: min_gain must be a finite number >= 0") and bad in err


@pytest.mark.e2e
def test_pipeline_nested_runs_and_summary(tracking, tmp_path):
    """`pipeline` on a small area whose only modality table already exists: reused, fuse -> probe -> promote nested."""
    name = "poa_pipe"
    area = poa_area(tmp_path, name)
    modality_run = log_modality_table(area)
    proc = entry_process("pipeline.py", ["--study_area", area, "--epochs", "2"], tmp_path)
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


def test_pipeline_fails_when_a_named_modality_source_fails(tracking, tmp_path, study_area_toml):
    """A modality whose sources the area names but which fails to build fails the pipeline (no silent fusing without it)."""
    from urbanrepml.datasets import fetch
    from urbanrepml.stages.pipeline import run_pipeline

    pbf = (fetch("amsterdam") / "amsterdam_centre.osm.pbf").read_bytes()
    (tmp_path / "cut.osm.pbf").write_bytes(pbf[: len(pbf) // 2])
    toml = study_area_toml("pipecut", [4.8906, 52.3657, 4.9037, 52.3737], sources={"osm": "cut.osm.pbf"})
    with pytest.raises(UrbanReprError, match=r"modality '\w+' of study area 'pipecut' failed to build .*cut\.osm\.pbf"):
        run_pipeline(str(toml), model="concat", epochs=1)
    client = MlflowClient(tracking)
    assert client.search_registered_models("name = 'urbanrepml-pipecut'") == []
    runs = client.search_runs([client.get_experiment_by_name("urbanrepml-pipecut").experiment_id])
    assert {r.data.tags["urbanrepml.stage"] for r in runs} >= {"pipeline"}
    assert all(r.info.status == "FAILED" for r in runs)
