"""The ``images`` and ``embed_images`` stages end to end on a real SQLite tracking store, and their bad inputs.

Every bad input ends in one ``error: ...`` line and exit status 2, with no index or embedding table
published and no run left RUNNING.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.data.images import make
from tests.support.processes import error_lines, load_entry, run_script
from urbanrepml.constants import image_experiment_name
from urbanrepml.images import read_embeddings, read_index
from urbanrepml.stages.cli import run_stage


@pytest.fixture
def fx(tmp_path):
    return make.build_all(tmp_path / "fx")


def runs_of(name):
    client = MlflowClient()
    exp = client.get_experiment_by_name(image_experiment_name(name))
    return [] if exp is None else client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def expect_error(capsys, entry: str, args: list[str], message: str) -> str:
    """Run ``entrypoints/<entry>.py``'s main in-process: exit 2 and exactly one ``error:`` line matching ``message``."""
    main = load_entry(entry).main
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert message in lines[0], lines[0]
    return lines[0]


def test_images_then_embed_images(tracking, fx, data_dir):
    index = run_stage("images", ["--dataset", str(fx / "scenes"), "--kind", "chips", "--chip_px", "10",
                                 "--split", "time", "--train_until", "2019", "--val_until", "2020"])
    path = data_dir / "images" / "scenes" / "index.parquet"
    back = read_index(path)
    assert len(back.frame) == 23 and back.meta.dataset == "scenes" and back.meta.source_kind == "chips"
    assert back.frame.groupby("group")["split"].first().to_dict() == {"s_20190815": "train", "s_20200901": "val"}
    (run,) = runs_of("scenes")
    assert run.info.status == "FINISHED" and back.meta.producer_run_id == run.info.run_id == index.meta.producer_run_id
    m = run.data.metrics
    assert (m["images"], m["groups"], m["images_train"], m["images_val"], m["images_test"]) == (23, 2, 11, 12, 0)
    assert m["group_images.s_20190815"] == 11 and m["chips_dropped_nodata"] == 1 and m["identities"] == 12
    assert run.data.tags["urbanrepml.stage"] == "images" and run.data.tags["urbanrepml.dataset"] == "scenes"
    assert run.data.params["chip_px"] == "10" and run.data.params["kind"] == "chips"
    client = MlflowClient()
    assert [a.path for a in client.list_artifacts(run.info.run_id, "images")] == ["images/index.parquet"]
    inputs = {d.dataset.name for d in client.get_run(run.info.run_id).inputs.dataset_inputs}
    assert "scenes-index" in inputs

    table = run_stage("embed_images", ["--dataset", "scenes", "--encoder", "small_cnn", "--batch_size", "8", "--workers", "2"])
    out = data_dir / "images" / "scenes" / "embeddings_small_cnn.parquet"
    emb = read_embeddings(out)
    assert emb.frame.shape == (23, 64) and list(emb.frame.index) == list(back.frame.index)
    from urbanrepml.models.encoders import get_encoder

    assert emb.meta.weights_digest == get_encoder("small_cnn").weights_digest and emb.meta.encoder == "small_cnn"
    csv = pd.read_csv(data_dir / "images" / "scenes" / "embeddings_small_cnn.csv")
    assert list(csv.columns) == [*(f"dim_{i}" for i in range(64)), "geometry"] and len(csv) == 23
    lon, lat = back.frame.iloc[0][["lon", "lat"]]
    assert csv["geometry"].iloc[0] == f"POINT ({float(lon)!r} {float(lat)!r})"
    np.testing.assert_allclose(csv.iloc[:, :64].to_numpy(), emb.frame.to_numpy(), rtol=1e-6)
    # by hand: the first kept chip, decoded and encoded alone, gives the same vector
    import torch

    from urbanrepml.models.encoders.preprocess import prepare
    from urbanrepml.sources.imagery.decode import ImageLoader

    first = back.frame.iloc[0]
    pixels = ImageLoader().load(str(back.image_paths()[0]), back.windows()[0])
    assert pixels.shape == (10, 10, 4)
    enc = get_encoder("small_cnn")
    with torch.inference_mode():
        alone = enc(prepare(pixels, enc.input_size, enc.mean, enc.std)[None])[0][0].numpy()
    np.testing.assert_allclose(emb.frame.loc[first.name].to_numpy(), alone, rtol=1e-5, atol=1e-6)

    first_embed, = [r for r in runs_of("scenes") if r.data.tags.get("urbanrepml.stage") == "embed_images"]
    assert first_embed.info.status == "FINISHED" and first_embed.data.metrics["cache_hit"] == 0
    assert first_embed.data.tags["urbanrepml.weights_digest"] == emb.meta.weights_digest
    names = {d.dataset.name for d in client.get_run(first_embed.info.run_id).inputs.dataset_inputs}
    assert names == {"scenes-index", f"scenes-small_cnn-{emb.meta.weights_digest[:12]}"}
    # a second run reads the feature cache and writes the same table
    again = run_stage("embed_images", ["--dataset", "scenes", "--encoder", "small_cnn"])
    pd.testing.assert_frame_equal(again.frame, table.frame)
    latest = runs_of("scenes")[-1]
    assert latest.data.metrics["cache_hit"] == 1 and latest.info.status == "FINISHED"


def test_photos_with_efficientnet(tracking, fx, data_dir):
    run_stage("images", ["--dataset", str(fx / "photos"), "--kind", "photos", "--sequences", "sequences.json",
                         "--name", "street"])
    index = read_index(data_dir / "images" / "street" / "index.parquet")
    assert len(index.frame) == 5
    (run,) = runs_of("street")
    assert run.data.metrics["photos_skipped_no_gps"] == 1
    table = run_stage("embed_images", ["--dataset", "street", "--batch_size", "2"])
    assert table.frame.shape == (5, 1280) and table.meta.encoder == "efficientnet_lite0"
    # differently coloured photos get different vectors
    assert np.linalg.norm(table.frame.loc["a/01"] - table.frame.loc["b/01"]) > 1e-3


@pytest.mark.parametrize("kind", ["mapillary", "concepts", "buildings", "satclip"])
def test_metadata_kinds(tracking, fx, data_dir, kind):
    file = {"mapillary": "mapillary.jsonl", "concepts": "concepts.csv", "buildings": "buildings.jsonl",
            "satclip": "satclip.csv"}[kind]
    index = run_stage("images", ["--dataset", str(fx), "--kind", kind, "--file", file, "--name", kind, "--split", "none"])
    assert read_index(data_dir / "images" / kind / "index.parquet").frame["split"].isna().all()
    assert index.meta.source_kind == kind
    if kind == "satclip":
        emb = read_embeddings(data_dir / "images" / "satclip" / "embeddings_satclip_csv.parquet")
        assert emb.frame.shape == (3, 3) and emb.frame.loc["p1", "dim_2"] == np.float32(0.6)


def test_bad_inputs_one_line_nothing_written(tracking, fx, data_dir, tmp_path, capsys):
    images_dir = data_dir / "images"
    # a chip size larger than the scene
    expect_error(capsys, "images", ["--dataset", str(fx / "scenes"), "--chip_px", "64"],
                 "chip_px 64 is larger than scene s_20190815.tif (40x30 px); use chip_px <= 30")
    # a scene that is all nodata
    make.write_scene(tmp_path / "blank" / "b_20200101.tif", np.zeros((4, 30, 40), np.uint8))
    expect_error(capsys, "images", ["--dataset", str(tmp_path / "blank"), "--chip_px", "10"], "holds only nodata pixels")
    # photos: none has GPS
    make.write_photo(tmp_path / "nogps" / "1.jpg")
    expect_error(capsys, "images", ["--dataset", str(tmp_path / "nogps"), "--kind", "photos"],
                 "none of the 1 photo(s)")
    # a CSV whose WKT is malformed, and one whose lat/lon are swapped
    (tmp_path / "wkt.csv").write_text("dim_0,geometry\n1,POINT (13.4 52.5)\n2,POINT 13.4 52.5\n")
    expect_error(capsys, "images", ["--dataset", str(tmp_path / "wkt.csv"), "--kind", "satclip"],
                 "row 2: geometry 'POINT 13.4 52.5' is not a WKT point")
    (tmp_path / "swapped.csv").write_text("dim_0,geometry\n1,POINT (-33.86 151.21)\n")
    expect_error(capsys, "images", ["--dataset", str(tmp_path / "swapped.csv"), "--kind", "satclip"], "lat and lon look swapped")
    # duplicate image ids
    (tmp_path / "photos").symlink_to(fx / "photos")
    (tmp_path / "dups.csv").write_text("id,lat,lon,sequence_id,path\nx,52.5,13.4,s,photos/a/01.jpg\nx,52.5,13.4,s,photos/a/02.jpg\n")
    expect_error(capsys, "images", ["--dataset", str(tmp_path / "dups.csv"), "--kind", "mapillary"],
                 "duplicate image ids, e.g. ['x']; give every image its own id")
    # a local DINOv2 folder that is not a model (the index exists, so only the encoder is wrong)
    run_stage("images", ["--dataset", str(fx / "photos"), "--kind", "photos", "--name", "ok"])
    (tmp_path / "notamodel").mkdir()
    expect_error(capsys, "embed_images", ["--dataset", "ok", "--encoder", "dinov2", "--weights", str(tmp_path / "notamodel")],
                 "is not a model folder (no config.json)")
    assert not list(images_dir.glob("ok/embeddings_*"))
    # an index that is not there
    expect_error(capsys, "embed_images", ["--dataset", "nosuch"], "no image index 'nosuch'")
    # nothing half-written: only the good index exists, no staging or temporary file anywhere
    written = sorted(str(p.relative_to(images_dir)) for p in images_dir.rglob("*"))
    assert written == ["ok", "ok/index.parquet"]
    # runs that started and failed are FAILED, none RUNNING
    client = MlflowClient()
    statuses = [r.info.status for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert "RUNNING" not in statuses and statuses.count("FAILED") >= 4


def test_an_image_that_does_not_decode(tracking, fx, data_dir, tmp_path, capsys):
    folder = tmp_path / "truncated"
    make.write_photo(folder / "1.jpg", 52.5, 13.4, color=(1, 2, 3))
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    with Image.open(folder / "1.jpg") as im:
        exif = im.getexif()
    Image.fromarray(noise).save(folder / "2.jpg", exif=exif)
    data = (folder / "2.jpg").read_bytes()
    (folder / "2.jpg").write_bytes(data[: len(data) // 2])  # header and GPS intact, pixels cut off
    run_stage("images", ["--dataset", str(folder), "--kind", "photos"])
    line = expect_error(capsys, "embed_images", ["--dataset", "truncated", "--encoder", "small_cnn", "--workers", "2"],
                        "image '2' (")
    assert "does not decode" in line and "remove it from the index or replace the file" in line
    assert sorted(p.name for p in (data_dir / "images" / "truncated").iterdir()) == ["index.parquet"]
    assert not (data_dir / "cache" / "image_features").exists() or not any((data_dir / "cache" / "image_features").iterdir())
    assert runs_of("truncated")[-1].info.status == "FAILED"


def test_entry_point_process_exit_status(tracking, fx, tmp_path):
    """As a real process: exit status 2 and one line on stderr."""
    out = run_script("images.py", ["--dataset", str(fx / "scenes"), "--chip_px", "64"], cwd=tmp_path, timeout=300)
    assert out.returncode == 2
    assert error_lines(out.stderr) == ["error: chip_px 64 is larger than scene s_20190815.tif (40x30 px); use chip_px <= 30"]
