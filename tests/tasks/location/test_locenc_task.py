"""The location-encoder task on the shared loop: records, block split, retrieval metrics, training, refit, search space."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from urbanrepml.areas import h3ops
from urbanrepml.errors import UrbanReprError
from urbanrepml.tasks.location.data import (
    LocatedEmbeddings,
    block_split,
    from_cells,
    read_points_csv,
    read_query_points,
)
from urbanrepml.tasks.location.metrics import best_similarity, geo_knn, retrieval_metrics
from urbanrepml.tasks.location.task import LocationTask, LocencConfig, refit_location_encoder, train_location_encoder

torch.set_num_threads(1)
POA = (-30.113, -29.988, -51.266, -51.132)


def synthetic(n: int = 500, seed: int = 0) -> LocatedEmbeddings:
    """Points over Porto Alegre whose embeddings are smooth functions of place (plus a little noise)."""
    rng = np.random.default_rng(seed)
    lat, lon = rng.uniform(POA[0], POA[1], n), rng.uniform(POA[2], POA[3], n)
    u, v = (lat - POA[0]) / (POA[1] - POA[0]), (lon - POA[2]) / (POA[3] - POA[2])
    x = np.column_stack([np.sin(6 * u), np.cos(5 * v), u * v, np.sin(9 * (u + v)), rng.normal(0, 0.05, n)])
    return LocatedEmbeddings(np.array([f"p{i}" for i in range(n)], dtype=object), lat, lon, x, "points", "synthetic")


def write_csv(path, lat, lon, dims: np.ndarray, crs: str = "EPSG:4326", ids=True):
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    frame = pd.DataFrame(dims, columns=[f"dim_{i}" for i in range(dims.shape[1])])
    frame["geometry"] = [f"POINT ({a} {b})" for a, b in zip(x, y, strict=True)]
    if ids:
        frame.insert(0, "image_id", [f"img{i}" for i in range(len(frame))])
    frame.to_csv(path, index=False)
    return path


def test_block_split_holds_out_whole_blocks_deterministically():
    d = synthetic(800)
    held = block_split(d.lat, d.lon, 8, 0.2, seed=3)
    blocks = h3ops.latlon_to_cells(d.lat, d.lon, 8)
    for b in np.unique(blocks):
        assert len(np.unique(held[blocks == b])) == 1  # no block is cut
    assert 0 < held.mean() < 0.5
    assert np.array_equal(held, block_split(d.lat, d.lon, 8, 0.2, seed=3))
    assert not np.array_equal(held, block_split(d.lat, d.lon, 8, 0.2, seed=4))
    with pytest.raises(UrbanReprError, match="val_fraction"):
        block_split(d.lat, d.lon, 8, 0.0)


def test_retrieval_metrics_on_a_known_case():
    """Two clusters of stored embeddings; the location embedding points at the query's cluster, its own record excluded."""
    xb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    own = torch.arange(4)
    perfect = retrieval_metrics(xb, xb, xb, xb, own, ks=(1, 2))
    assert perfect["top1"] == 1.0 and perfect["top2"] == 1.0
    assert perfect["top1_cos"] == pytest.approx(perfect["oracle_cos"])
    wrong = retrieval_metrics(xb.flip(1), xb, xb, xb, own, ks=(1, 3))
    assert wrong["top1"] == 0.0 and wrong["top3"] == 1.0  # the right one comes third of three
    assert torch.allclose(best_similarity(xb, xb, own), (xb[[1, 0, 3, 2]] * xb).sum(1))


def test_geo_knn_excludes_the_own_record():
    lat = np.array([0.0, 0.0, 0.0, 1.0])
    lon = np.array([0.0, 0.1, 0.25, 0.0])
    near = geo_knn(lat, lon, lat[:2], lon[:2], 2, np.array([0, 1]))
    assert near.tolist() == [[1, 2], [0, 2]]


def test_training_learns_place_and_keeps_the_best_held_out_epoch():
    d = synthetic()
    cfg = LocencConfig(encoder="space2vec_grid", encoder_config={"hidden": 64, "embedding_dim": 32}, epochs=12,
                       block_resolution=8, val_fraction=0.2, batch_size=64)
    result = train_location_encoder(d, cfg, progress=False)
    hist = result.fit.history
    assert result.fit.monitor == "val_top10" and len(hist) == 12
    assert {"train_loss", "val_loss", "val_top1", "val_top10", "val_top1_cos", "val_oracle_cos", "temperature"} <= set(hist[0])
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    best = max(hist, key=lambda h: h["val_top10"])
    assert result.fit.best_value == best["val_top10"] and result.fit.best_epoch == best["epoch"]
    n_val = int(result.task.held.sum())
    assert best["val_top10"] > 2 * 10 / n_val  # well above chance (10 of the held-out bank)
    assert best["val_top1_cos"] > 0.2
    # the bounds the encoder was built for are the records' extent plus a margin
    b = result.task.bounds
    assert b[0] < d.lat.min() and b[1] > d.lat.max() and b[2] < d.lon.min() and b[3] > d.lon.max()
    # deterministic on the CPU
    again = train_location_encoder(d, cfg, progress=False)
    assert again.fit.best_value == result.fit.best_value


def test_refit_trains_on_every_record_and_keeps_the_last_epoch():
    d = synthetic(300)
    cfg = LocencConfig(encoder="rff", encoder_config={"hidden": 32, "embedding_dim": 16, "sigmas": "1,4"}, epochs=4,
                       block_resolution=8, val_fraction=0.2, batch_size=64)
    first = LocationTask(d, cfg)
    fitted = refit_location_encoder(d, cfg, epochs=3, bounds=first.bounds, progress=False)
    assert len(fitted.task.train_idx) == d.n and fitted.fit.epochs_run == 3 and fitted.fit.best_epoch == 3
    assert fitted.task.bounds == first.bounds


def test_config_checks():
    with pytest.raises(UrbanReprError, match="encoder must be one of"):
        LocencConfig(encoder="geoclip")
    with pytest.raises(UrbanReprError, match="batch_size"):
        LocencConfig(batch_size=1)
    with pytest.raises(UrbanReprError, match="has no setting"):
        LocencConfig(encoder="rff", encoder_config={"legendre_polys": 3})
    with pytest.raises(UrbanReprError, match="split leaves"):
        LocationTask(synthetic(2), LocencConfig(block_resolution=0, val_fraction=0.5))


def test_from_cells_uses_cell_centres():
    cells = h3ops.latlon_to_cells(np.array([-30.05, -30.02]), np.array([-51.2, -51.18]), 9)
    frame = pd.DataFrame([[1.0, 2.0], [3.0, 4.0]], index=h3ops.cells_to_str(cells))
    d = from_cells(frame, "t")
    lat, lon = h3ops.cell_centroids(cells)
    assert np.allclose(d.lat, lat) and np.allclose(d.lon, lon) and d.kind == "cells" and d.resolution == 9
    bad = frame.copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(UrbanReprError, match="NaN or inf"):
        from_cells(bad, "t")


def test_points_csv_in_a_projected_crs_is_reprojected(tmp_path):
    d = synthetic(20)
    path = write_csv(tmp_path / "emb.csv", d.lat, d.lon, d.x, crs="EPSG:31982")  # SIRGAS 2000 / UTM 22S
    got = read_points_csv(path, "EPSG:31982")
    assert np.allclose(got.lat, d.lat, atol=1e-7) and np.allclose(got.lon, d.lon, atol=1e-7)
    assert got.ids[0] == "img0" and got.dim == 5 and got.kind == "points"
    ids, lat, lon = read_query_points(path, "EPSG:31982")
    assert np.allclose(lat, d.lat, atol=1e-7) and ids[1] == "img1"


@pytest.mark.parametrize("case, message", [
    ("no_dims", "no embedding columns named dim_0"),
    ("bad_wkt", "malformed or non-POINT geometry"),
    ("polygon", "malformed or non-POINT geometry"),
    ("out_of_range", "out of range"),
    ("nan", "NaN or inf"),
    ("one_row", "needs at least 2"),
    ("bad_crs", "unknown CRS"),
])
def test_points_csv_bad_input_is_one_clear_line(tmp_path, case, message):
    d = synthetic(5)
    path = write_csv(tmp_path / "emb.csv", d.lat, d.lon, d.x)
    frame = pd.read_csv(path)
    crs = "EPSG:4326"
    if case == "no_dims":
        frame = frame.rename(columns={c: c.replace("dim_", "feat_") for c in frame.columns})
    elif case == "bad_wkt":
        frame.loc[2, "geometry"] = "POINT (-51.2"
    elif case == "polygon":
        frame.loc[1, "geometry"] = "POLYGON ((0 0, 1 0, 1 1, 0 0))"
    elif case == "out_of_range":
        frame.loc[0, "geometry"] = "POINT (-51.2 -95)"
    elif case == "nan":
        frame.loc[3, "dim_1"] = np.nan
    elif case == "one_row":
        frame = frame.iloc[:1]
    elif case == "bad_crs":
        crs = "EPSG:999999"
    frame.to_csv(path, index=False)
    with pytest.raises(UrbanReprError, match=message) as info:
        read_points_csv(path, crs)
    assert "\n" not in str(info.value)


def test_search_space_comes_from_the_registry():
    import optuna

    from urbanrepml.tasks.location.search import parse_families, suggest

    base = LocencConfig(encoder_config={"embedding_dim": 16})
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        cfg, values = suggest(trial, base, parse_families("all"))
        seen.add(cfg.encoder)
        assert cfg.encoder == values["encoder"] and cfg.lr == values["lr"] and cfg.temperature == values["temperature"]
        assert cfg.encoder_config["embedding_dim"] == 16  # the stage's own settings stay
        assert "lr" not in cfg.encoder_config
        study.tell(trial, 0.0)
    assert len(seen) >= 3
    assert parse_families("rff, sh_siren") == ("rff", "sh_siren")
    with pytest.raises(UrbanReprError, match="tune_encoders"):
        parse_families("rff,geoclip")
