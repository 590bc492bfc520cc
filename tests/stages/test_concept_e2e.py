"""Concept-aware geolocation end to end on a tiny generated dataset, in process: build, three stages, registry,
pyfunc; and the bad inputs that must end in one ``error:`` line, exit 2 and no registry version."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.support.concept_images import write_concept_csv

FAST = ["--encoder", "small_cnn", "--input_size", "32", "--trainable_blocks", "1", "--location_encoder", "rff",
        "--min_samples_per_cell", "10"]


def _cli(name, *args):
    from urbanrepml.stages.cli import main_for

    return main_for(name)(list(args))


def _fails(capsys, name, *args) -> str:
    with pytest.raises(SystemExit) as exc:
        _cli(name, *args)
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if " INFO mlflow" not in line]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture(scope="module")
def concept_rig(tmp_path_factory):
    """A store and data dir of its own, the tiny dataset built and the pipeline run once."""
    root = tmp_path_factory.mktemp("concept")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    mp.setenv("URBANREPML_DATA_DIR", str(root / "data"))
    mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    csv = write_concept_csv(root / "images")
    _cli("concepts", "--name", "tiny", "--naip", "", "--photos", str(csv))
    _cli("concept_pipeline", "--dataset", "tiny", *FAST, "--epochs0", "1", "--epochs1", "2", "--epochs2", "2")
    yield root, csv
    mp.undo()


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _versions() -> int:
    return len(_client().search_model_versions("name = 'urbanrepml-conceptgeo-tiny'"))


def _runs(stage: str):
    import mlflow

    return mlflow.search_runs(experiment_names=["urbanrepml-images-tiny"], filter_string=f"tags.`urbanrepml.stage` = '{stage}'")


def test_pipeline_chains_three_stages_and_registers(concept_rig):
    root, csv = concept_rig
    s0, s1, s2 = (_runs(f"concept_stage{k}") for k in range(3))
    assert (s0["status"] == "FINISHED").all() and len(s2) == 1
    tags = s2.iloc[0]
    assert tags["tags.urbanrepml.parent_model_uri"] == f"runs:/{s1.iloc[0]['run_id']}/model"
    assert s1.iloc[0]["tags.urbanrepml.parent_model_uri"] == f"runs:/{s0.iloc[0]['run_id']}/model"
    for mode in ("both", "concept_only", "image_only"):
        for metric in ("cell_top1", "median_km", "acc_25km", "acc_2500km"):
            assert f"metrics.{mode}_test_{metric}" in s2.columns
    assert {"metrics.test_meta_top1", "metrics.test_parent_top5", "metrics.test_meta_macro_recall"} <= set(s1.columns)
    run_id = s2.iloc[0]["run_id"]
    arts = {a.path for a in _client().list_artifacts(run_id, "figures")}
    assert {"figures/attention_both.png", "figures/geocells.png", "figures/geocells.html"} <= arts
    assert _versions() == 1
    import mlflow

    model = mlflow.pyfunc.load_model("models:/urbanrepml-conceptgeo-tiny@champion")
    out = model.predict(pd.DataFrame({"path": [str(root / "images" / "se_000.png"), str(root / "images" / "us_001.png")]}))
    assert {"lat", "lon", "geocell", "meta_1", "meta_prob_1", "parent", "attention"} <= set(out.columns)
    assert out["meta_1"].isin(["red_roof", "grey_road", "green_park"]).all()
    assert len(eval(out["attention"].iloc[0])) == 2  # the 2 x 2 patch grid of small_cnn at 32 px


def test_meta_under_two_parents_is_refused(concept_rig, capsys, tmp_path):
    def clash(rows):
        rows[0][3] = "green"  # a red_roof under green as well as built
        return rows

    csv = write_concept_csv(tmp_path / "bad", per_country=6, rows_override=clash)
    line = _fails(capsys, "concepts", "--name", "bad", "--naip", "", "--photos", str(csv))
    assert "red_roof" in line and "parents" in line


def test_missing_image_is_refused(concept_rig, capsys, tmp_path):
    def missing(rows):
        rows[1][1] = "nowhere.png"
        return rows

    csv = write_concept_csv(tmp_path / "bad", per_country=6, rows_override=missing)
    line = _fails(capsys, "concepts", "--name", "bad2", "--naip", "", "--photos", str(csv))
    assert "nowhere.png" in line and "missing" in line


def test_country_with_zero_samples_is_refused(concept_rig, capsys):
    line = _fails(capsys, "concept_stage0", "--dataset", "tiny", *FAST, "--countries", "SE,FR", "--epochs", "1")
    assert "'FR' has zero samples" in line
    assert _versions() == 1


@pytest.mark.parametrize(("stage", "args"), [("concept_stage0", [*FAST[:-2], "--min_samples_per_cell", "0"]),
                                             ("concept_stage2", ["--stage1", "x", "--min_samples_per_cell", "-1"])])
def test_min_samples_per_cell_must_be_positive(concept_rig, capsys, stage, args):
    line = _fails(capsys, stage, "--dataset", "tiny", *args)
    assert "min_samples_per_cell" in line
    assert _versions() == 1


def test_stage1_refuses_a_model_that_is_not_stage0(concept_rig, capsys):
    stage1_run = _runs("concept_stage1").iloc[0]["run_id"]
    failed_before = len(_runs("concept_stage1"))
    line = _fails(capsys, "concept_stage1", "--dataset", "tiny", "--stage0", stage1_run, "--min_samples_per_cell", "10")
    assert "conceptgeo1" in line and "not a conceptgeo0 model" in line
    runs = _runs("concept_stage1")
    assert len(runs) == failed_before + 1 and (runs["status"] == "FAILED").sum() == 1
    assert _versions() == 1


def test_stage0_aligns_with_a_registered_location_encoder(concept_rig, capsys, tmp_path):
    """A location encoder of the project (family locenc, logged with its pyfunc) serves stage 0's GPS side."""
    import mlflow
    import numpy as np
    import torch

    from urbanrepml.models.location import LocationService
    from urbanrepml.models.registry import get_model
    from urbanrepml.stages.concept import gps_embeddings
    from urbanrepml.tracking.locenc_pyfunc import log_locenc_model

    encoder = get_model("rff", sigmas="4,16", encoded_size=16, hidden=32, embedding_dim=24).eval()
    torch.jit.script(LocationService(encoder)).save(str(tmp_path / "service.pt"))
    mlflow.set_experiment("locenc-for-concepts")
    with mlflow.start_run() as run:
        log_locenc_model(tmp_path / "service.pt", {"study_area": "tiny", "encoder": "rff", "dim": 24, "bank_dim": 0,
                                                   "bank_records": 0})
    uri = f"runs:/{run.info.run_id}/locenc_model"
    lat, lon = np.array([55.7, 40.7]), np.array([13.2, -74.0])
    with torch.no_grad():
        expected = encoder(torch.tensor(np.column_stack([lat, lon]), dtype=torch.float32)).numpy()
    np.testing.assert_allclose(gps_embeddings(lat, lon, uri), expected, rtol=1e-5, atol=1e-6)

    _cli("concept_stage0", "--dataset", "tiny", *FAST[:-4], "--min_samples_per_cell", "10", "--location_encoder", uri,
         "--epochs", "1")
    s0 = _runs("concept_stage0").sort_values("start_time").iloc[-1]
    assert s0["status"] == "FINISHED" and s0["params.location_encoder"] == uri
    # a model of another family, or a name that is neither an encoder nor a URI, is one line before any run
    n = len(_runs("concept_stage0"))
    stage1 = f"runs:/{s0['run_id']}/model"
    assert "not a locenc model" in _fails(capsys, "concept_stage0", "--dataset", "tiny", *FAST[:-4],
                                          "--location_encoder", stage1)
    assert "location_encoder must be" in _fails(capsys, "concept_stage0", "--dataset", "tiny", "--location_encoder", "satclip")
    assert len(_runs("concept_stage0")) == n


def test_bigearthnet_patches_join_the_photos(concept_rig, capsys):
    """The six BigEarthNet patches beside hand-labelled photos: one index, one hierarchy, countries by coordinates."""
    from urbanrepml.images import read_index
    from urbanrepml.stages.images import index_path

    root, csv = concept_rig
    _cli("concepts", "--name", "mixed", "--naip", "", "--photos", str(csv), "--bigearthnet", "true")
    frame = read_index(index_path("mixed")).frame
    ben = frame[frame.index.str.startswith("S2")]
    assert len(frame) == 48 + 6 and len(ben) == 6
    assert sorted(ben["country"].unique()) == ["AT", "FI", "IE", "PT"]
    assert set(ben["parent_concept"]) == {"agricultural_areas", "forest_and_semi_natural_areas"}
    assert frame["split"].notna().all()
    import mlflow

    run = mlflow.search_runs(experiment_names=["urbanrepml-images-mixed"]).iloc[0]
    assert run["params.bigearthnet"] == "True" and run["metrics.images"] == 54


def test_concepts_without_a_source_is_refused(concept_rig, capsys):
    line = _fails(capsys, "concepts", "--name", "empty", "--naip", "", "--photos", "")
    assert "give naip, photos or bigearthnet" in line


def test_bands_the_images_lack_are_refused(concept_rig, capsys):
    before = len(_runs("concept_stage0"))
    line = _fails(capsys, "concept_stage0", "--dataset", "tiny", *FAST, "--bands", "4,1,2", "--epochs", "1")
    assert "the image has 3 band(s); bands asks for band 4" in line
    runs = _runs("concept_stage0")
    assert len(runs) == before + 1 and runs.sort_values("start_time").iloc[-1]["status"] == "FAILED"
    line = _fails(capsys, "concept_stage0", "--dataset", "tiny", *FAST, "--bands", "1,2", "--epochs", "1")
    assert "bands must be three 1-based band numbers" in line
    assert _versions() == 1
