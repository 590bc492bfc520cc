"""The difficulty and placeemb entry points on three generated yearly scenes of the same place (chips share identities)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.data.images.make import write_scene
from tests.support.processes import REPO, clean_env
from urbanrepml.errors import UrbanReprError
from urbanrepml.params import make

SMALL = {"epochs": 2, "size": 8, "width": 8, "out_dim": 16, "batch_size": 16, "n_bands": 3, "neighbours": 9,
         "split": "identity", "k": 2, "baseline": False}


def scenes(root: Path) -> Path:
    """Three 4-band scenes (2018-2020) of 32 x 32 px: one landscape, per-year gain and noise -> 16 chips of 8 px each."""
    rng = np.random.default_rng(0)
    base = rng.uniform(30, 220, size=(4, 32, 32))
    for year in (2018, 2019, 2020):
        data = np.clip(base * rng.uniform(0.8, 1.2) + rng.normal(0, 12, base.shape), 1, 255).astype(np.uint8)
        write_scene(root / f"s_{year}0701.tif", data)
    return root


@pytest.fixture
def chips_index(tracking, tmp_path):
    from urbanrepml.stages.images import Params, run_images_stage

    index = run_images_stage(make(Params, dataset=str(scenes(tmp_path / "scenes")), kind="chips", chip_px=8,
                                  name="tinyscenes"))
    return index.path


def test_difficulty_logs_fingerprints_duplicates_and_bands(chips_index, tracking):
    from urbanrepml.stages.difficulty import Params, run_difficulty_stage

    m = run_difficulty_stage(make(Params, dataset="tinyscenes", n_bands=3, neighbours=9))
    assert m["views"] == 48 and m["identities"] == 16 and m["excluded_single"] == 0
    assert m["band_0_distance"] < m["band_2_distance"]
    run = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("urbanrepml-images-tinyscenes").experiment_id],
                                     filter_string="tags.`urbanrepml.stage` = 'difficulty'")[0]
    bands = pd.read_parquet(MlflowClient().download_artifacts(run.info.run_id, "difficulty/bands.parquet"))
    assert len(bands) == 48 * 9 and set(bands["band"]) == {0, 1, 2}


def test_placeemb_trains_registers_and_serves(chips_index, tracking):
    import mlflow

    from urbanrepml.stages.placeemb import Params, run_placeemb_stage, search_gallery
    from urbanrepml.tasks.place.task import embed

    metrics, version = run_placeemb_stage(make(Params, dataset="tinyscenes", **SMALL))
    assert version is not None and version.name == "urbanrepml-placeemb-tinyscenes"
    assert {"test_recall_1", "test_map", "baseline_pixels_recall_1", "band_0_pulls_total"} <= set(metrics)
    run = MlflowClient().get_run(version.run_id)
    assert run.info.status == "FINISHED" and "val_recall_1" in run.data.metrics and "band_1_reward" in run.data.metrics
    uri = f"models:/{version.name}@champion"
    index = pd.read_parquet(chips_index)
    frame = index.reset_index()[["image_id", "path", "window"]]
    frame["path"] = [str((Path(chips_index).parent / p).resolve()) if not Path(p).is_absolute() else p for p in frame["path"]]
    emb = mlflow.pyfunc.load_model(uri).predict(frame.iloc[:4])
    assert emb.shape == (4, 16) and np.allclose(np.linalg.norm(emb.to_numpy(), axis=1), 1, atol=1e-5)
    hits = search_gallery(uri, frame.iloc[:16], frame.iloc[32:34], k=3)
    assert len(hits) == 6 and list(hits["rank"][:3]) == [1, 2, 3]
    with pytest.raises(UrbanReprError, match="cannot answer top-20"):
        search_gallery(uri, frame.iloc[:16], frame.iloc[32:34], k=20)
    del embed


def test_bad_inputs_fail_with_one_line_and_register_nothing(chips_index, tracking, tmp_path):
    from urbanrepml.stages.placeemb import Params, run_placeemb_stage, search_gallery

    def versions():  # the session's store may hold versions of other tests
        return len(MlflowClient().search_model_versions("name = 'urbanrepml-placeemb-tinyscenes'"))

    before = versions()
    with pytest.raises(UrbanReprError, match="more bands"):
        run_placeemb_stage(make(Params, dataset="tinyscenes", **{**SMALL, "n_bands": 12}))
    with pytest.raises(UrbanReprError, match="gallery holds"):
        run_placeemb_stage(make(Params, dataset="tinyscenes", **{**SMALL, "k": 50}))
    ids = pd.read_parquet(chips_index).index
    feats = pd.DataFrame(np.ones((len(ids), 4), dtype=np.float32), index=ids, columns=[f"dim_{i}" for i in range(4)])
    feats.iloc[3, 1] = np.nan
    feats.to_parquet(tmp_path / "nan.parquet")
    with pytest.raises(UrbanReprError, match="NaN"):
        run_placeemb_stage(make(Params, dataset="tinyscenes", input="features", features=str(tmp_path / "nan.parquet"), **SMALL))
    from urbanrepml.images import read_index, write_index

    solo = read_index(chips_index)
    solo.frame["identity"] = [f"only_{i}" for i in range(len(solo.frame))]
    write_index(solo, tmp_path / "solo.parquet")
    with pytest.raises(UrbanReprError, match="no identity has two or more views"):
        run_placeemb_stage(make(Params, dataset=str(tmp_path / "solo.parquet"), **SMALL))
    assert versions() == before
    import mlflow

    with mlflow.start_run():  # a model of another family
        info = mlflow.pyfunc.log_model(name="m", python_model=_Echo(), metadata={"urbanrepml": {"family": "locenc"}})
    with pytest.raises(UrbanReprError, match="not a placeemb model"):
        search_gallery(info.model_uri, pd.DataFrame({"image_id": ["a"]}), pd.DataFrame({"image_id": ["a"]}), k=1)


def test_cli_prints_one_error_line_and_exits_2(tmp_path):
    env = clean_env(PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'm.db'}",
                    URBANREPML_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.run([sys.executable, "-m", "urbanrepml", "placeemb", "--n_bands", "9", "--neighbours", "4"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: more bands (9) than neighbours per anchor (4); lower n_bands or raise neighbours"]


import mlflow.pyfunc  # noqa: E402


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input
