"""The geolocate and geolocate_eval entry points end to end on generated scene series and on the Lund photos.

A tiny scene series (six yearly 4-band GeoTIFFs of one 480 m square, the same texture under another
gain, offset and noise each year) is cut into 12 px chips by the ``images`` stage, split by time
(2014-2016 train, 2017 val, 2018-2019 test); ``geolocate`` trains two epochs, evaluates, logs the
baselines, the error map and the report, and registers; the pyfunc model answers paths and arrays
exactly as the training code scores them; ``geolocate_eval`` scores it. Bad input ends in one line,
exit 2, and no registry version.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.data.images import make
from tests.support.processes import error_lines, load_entry
from urbanrepml.constants import image_experiment_name
from urbanrepml.stages.cli import run_stage

YEARS = ("20140701", "20150702", "20160703", "20170704", "20180705", "20190706")
NAME = "series"
SMALL = ["--dataset", NAME, "--train_until", "2016", "--val_until", "2017", "--epochs", "2", "--encoder", "small_cnn",
         "--encoder_input_size", "32", "--jitter_px", "2", "--context", "4", "--input_px", "12", "--width", "8", "--knn_k", "3",
         "--batch_size", "16"]


def write_series(folder, years=YEARS, side: int = 48):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, side // 4, side // 4)).repeat(4, axis=1).repeat(4, axis=2)
    for i, year in enumerate(years):
        noise = np.random.default_rng(i + 1).normal(scale=0.2, size=base.shape)
        pixels = np.clip(120 + (30 + 5 * i) * (base + noise), 1, 255).astype(np.uint8)
        make.write_scene(folder / f"s_{year}.tif", pixels, origin=(500000.0, 5800000.0), pixel=10.0)
    return folder


def versions(name: str = NAME):
    return MlflowClient().search_model_versions(f"name = 'urbanrepml-geoloc-{name}'")


def expect_error(capsys, entry: str, args: list[str], message: str) -> str:
    capsys.readouterr()  # what earlier calls printed is not this call's
    with pytest.raises(SystemExit) as exit_info:
        load_entry(entry).main(args)
    assert exit_info.value.code == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    return lines[0]


@pytest.fixture
def series(tracking, tmp_path):
    run_stage("images", ["--dataset", str(write_series(tmp_path / NAME)), "--kind", "chips", "--chip_px", "12"])
    return tmp_path / NAME


def test_geolocate_train_evaluate_register_serve(series, capsys):
    metrics, version = run_stage("geolocate", SMALL)
    client = MlflowClient()
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert m["images_train"] == 48 and m["images_val"] == 16 and m["images_test"] == 32 and m["classes"] >= 2
    for prefix in ("val", "test", "knn1_test", "knn3_test", "pixels_knn1_test", "majority_test", "knn1_val"):
        for key in ("acc_top1", "acc_top5", "acc_top10", "mean_km", "median_km", "p90_km", "p95_km", "acc_1km",
                    "acc_2500km"):
            assert f"{prefix}_{key}" in m, f"{prefix}_{key}"
    assert any(k.startswith("test_acc_0.") for k in m)  # the data's own small scales
    history = client.get_metric_history(run.info.run_id, "val_median_km")  # two epochs, then the kept one again
    assert len(history) == 3 and m["val_median_km"] == pytest.approx(m["best_val_median_km"])
    arts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"REPORT.md", "figures/geoloc_errors.html", "figures/geoloc_errors.png"} <= arts
    html = client.download_artifacts(run.info.run_id, "figures/geoloc_errors.html")
    assert "cdn.plot.ly" not in open(html).read()[:5000] and "<script" in open(html).read()
    # registry: family metric = the checkpoint criterion (validation), test metrics as tags
    tags = version.tags
    assert float(tags["urbanrepml.geoloc.val_median_km"]) == pytest.approx(m["best_val_median_km"], rel=1e-5)
    assert float(tags["urbanrepml.geoloc.test_median_km"]) == pytest.approx(m["test_median_km"], rel=1e-5)
    assert client.get_model_version_by_alias(version.name, "champion").version == version.version

    # the pyfunc answers paths (with windows) and arrays, as the task scores them
    import mlflow

    from urbanrepml.images import read_index
    from urbanrepml.stages.embed_images import resolve_index
    from urbanrepml.tasks.geoloc.data import load_pixels

    model = mlflow.pyfunc.load_model(f"models:/{version.name}@champion")
    index = read_index(resolve_index(NAME))
    rows = np.arange(6)
    query = pd.DataFrame({"path": index.image_paths()[rows], "window": index.frame["window"].to_numpy()[rows]})
    out = model.predict(query, params={"k": 3})
    assert {"lat", "lon", "cell", "prob", "cell_1", "cell_3", "prob_3"} <= set(out.columns) and len(out) == 6
    pixels = load_pixels(index, 12, 4, "chip", context=4)
    # a window with context is the chip plus 4 px of its scene on each side (zeros beyond the scene's edge)
    plain = load_pixels(index, 12, 4, "chip")
    assert torch.equal(pixels.raw(rows)[:, :, 4:-4, 4:-4], plain.raw(rows))
    edge = pixels.raw(rows[:1])[0]  # the first chip sits in the scene's top-left corner
    assert (edge[:, :4, :] == 0).all() and (edge[:, :, :4] == 0).all() and (edge[:, 4:, 4:] > 0).all()
    assert m["pixels_knn1_test_acc_place"] >= 0.9  # the same texture every year: pixels find the place
    arrays = pixels.raw(rows).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    out2 = model.predict(arrays, params={"k": 3})
    np.testing.assert_allclose(out2["prob_1"], out["prob_1"], rtol=1e-5)
    ckpt = torch.load(client.download_artifacts(version.run_id, "model/geoloc.pt"), weights_only=False)
    from urbanrepml.models.registry import get_model

    net = get_model("geoloc_cnn", in_channels=4, n_classes=len(ckpt["classes"]["cells"]), input_px=12, width=8)
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    with torch.no_grad():
        p = torch.softmax(net(pixels.batch(rows)), dim=1).numpy()
    np.testing.assert_allclose(np.sort(p, axis=1)[:, ::-1][:, 0], out["prob_1"].to_numpy(), rtol=1e-4)
    assert list(out["cell_1"]) == [ckpt["classes"]["cells"][i] for i in p.argmax(1)]

    # geolocate_eval scores the champion on the test split; a second version on the same split
    # does not take champion without beating it by the margin
    ev = run_stage("geolocate_eval", ["--dataset", NAME, "--train_until", "2016", "--val_until", "2017"])
    assert ev["images"] == 32 and ev["test_median_km"] == pytest.approx(m["test_median_km"], rel=1e-6, abs=1e-9)
    _, second = run_stage("geolocate", [*SMALL, "--min_gain_km", "1000"])
    second = MlflowClient().get_model_version(second.name, second.version)
    assert second.tags["promote.decision"] == "kept"
    assert MlflowClient().get_model_version_by_alias(version.name, "champion").version == version.version

    # a model that is not a geolocator is refused before anything is computed
    from urbanrepml.tracking.locenc import FAMILY as LOCENC

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="m", python_model=Echo(), metadata={"urbanrepml": {"family": LOCENC.name}})
    expect_error(capsys, "geolocate_eval", ["--dataset", NAME, "--model_uri", info.model_uri], "not a geoloc model")


def test_bad_inputs_one_line_no_version(series, tmp_path, capsys):
    before = len(versions())
    client = MlflowClient()
    exp = client.get_experiment_by_name(image_experiment_name(NAME))
    runs_before = {r.info.run_id for r in client.search_runs([exp.experiment_id])}
    expect_error(capsys, "geolocate", [*SMALL, "--tau_km", "0"], "tau_km must be a positive")
    expect_error(capsys, "geolocate", [*SMALL, "--resolution", "3"], "leaves 1 cell")
    expect_error(capsys, "geolocate", [*SMALL, "--min_cell_samples", "1000"], "merges every cell")
    expect_error(capsys, "geolocate", [*SMALL, "--train_until", "2013", "--val_until", "2013"], "leaves no train")
    # images that do not decode: a scene cut short after the index was built
    scene = series / f"s_{YEARS[0]}.tif"
    scene.write_bytes(scene.read_bytes()[:300])
    expect_error(capsys, "geolocate", SMALL, "does not decode")
    assert len(versions()) == before
    runs = [r for r in client.search_runs([exp.experiment_id], "tags.`urbanrepml.stage` = 'geolocate'")
            if r.info.run_id not in runs_before]
    assert all(r.info.status == "FAILED" for r in runs)  # refused before a run, or the run FAILED


def test_lund_photos_exif_sequence_path(tracking):
    """The OpenSfM Lund photos: EXIF positions and times, one Mapillary sequence cut into segments, a head model."""
    metrics, version = run_stage("geolocate", [
        "--dataset", "opensfm_lund", "--kind", "photos", "--split", "segments", "--segment_size", "4",
        "--ratios", "0.5,0.25,0.25", "--resolution", "12", "--model", "geoloc_head", "--encoder", "small_cnn",
        "--encoder_input_size", "32", "--hidden", "0", "--epochs", "2", "--knn_k", "3"])
    logged = MlflowClient().get_run(version.run_id).data.metrics
    assert logged["images_train"] + logged["images_val"] + logged["images_test"] == 29
    assert metrics["classes"] >= 2 and np.isfinite(metrics["test_median_km"]) and metrics["test_median_km"] < 5
    assert version.name == "urbanrepml-geoloc-opensfm_lund"
