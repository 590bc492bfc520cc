"""AlphaEarth (local int8 rasters built here, the Earth Engine request, EE unreachable) and aerial (tiles + encoders)."""

from __future__ import annotations

import h3
import numpy as np
import pytest
import torch
from rasterio.transform import from_origin

from tests.support.processes import run_entry_expect_error
from tests.support.rasters import BOX, CELL_A, CELL_B, disc_grid, write_tif
from urbanrepml.areas import build_area
from urbanrepml.config import load_study_area
from urbanrepml.errors import UrbanReprError
from urbanrepml.modalities.aerial import BUILTIN, AerialModality, load_encoder
from urbanrepml.modalities.alphaearth import BANDS, COLLECTION, AlphaEarthModality, dequantise, ee_requests, quantise
from urbanrepml.models.cnn import builtin_cnn
from urbanrepml.sources.tiles import tiles_from_orthophoto
from urbanrepml.stages.modality import run_modality_stage, table_path
from urbanrepml.tables import read_table

# ---------------------------------------------------------------- AlphaEarth


def deq(v: int) -> float:
    return (v / 127.5) ** 2 * (1 if v > 0 else -1 if v < 0 else 0)


def test_dequantise_formula():
    v = np.array([-127, -64, -1, 0, 1, 64, 127], dtype=np.int8)
    np.testing.assert_allclose(dequantise(v), [deq(int(x)) for x in v])
    assert dequantise(np.array([127], np.int8))[0] == pytest.approx((127 / 127.5) ** 2)
    np.testing.assert_array_equal(quantise(dequantise(v)), v)  # the published format round-trips


def test_alphaearth_local_by_hand(tmp_path, data_dir, alphaearth_tif, raster_area):
    path, even_share, _ = alphaearth_tif
    spec = load_study_area(raster_area({"alphaearth": path.name}))
    f = AlphaEarthModality(2024, "local").compute(spec, build_area(spec, [9]), 9).features  # from [sources.rasters]
    assert list(f.columns) == BANDS and set(f.index) == {CELL_A, CELL_B}
    expected_a = [even_share * deq(k - 32) for k in range(64)]
    np.testing.assert_allclose(f.loc[CELL_A].to_numpy(), expected_a, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(f.loc[CELL_B].to_numpy(), np.full(64, (127 / 127.5) ** 2), rtol=1e-12)


def test_alphaearth_float_raster_uses_its_own_nodata(tmp_path, data_dir, raster_area):
    """A float export declaring nodata=-9999: that pixel is masked (not -128), so A's mean ignores it."""
    transform, shape, labels, rr, cc = disc_grid({CELL_A: 25.0})
    in_a = labels == CELL_A
    data = np.full((64, *shape), -9999.0, dtype=np.float32)
    vals = np.where((rr + cc) % 2 == 0, 0.5, -0.25).astype(np.float32)
    data[:, in_a] = vals[in_a]
    hole = tuple(np.argwhere(in_a)[0])
    data[:, hole[0], hole[1]] = -9999.0
    write_tif(tmp_path / "aef.tif", data, transform, nodata=-9999.0)
    spec = load_study_area(raster_area({"alphaearth": "aef.tif"}))
    f = AlphaEarthModality().compute(spec, build_area(spec, [9]), 9).features
    keep = in_a.copy()
    keep[hole] = False
    assert list(f.index) == [CELL_A]
    np.testing.assert_allclose(f.loc[CELL_A].to_numpy(), np.full(64, vals[keep].astype(np.float64).mean()), rtol=1e-12)


def test_alphaearth_end_to_end_on_porto_alegre(tracking, alphaearth_tif):
    from mlflow.tracking import MlflowClient

    path, even_share, _ = alphaearth_tif
    table = run_modality_stage(AlphaEarthModality(2023, "local", str(path)), "porto_alegre", 9)
    back = read_table(table_path("porto_alegre", "alphaearth", 9), resolution=9, study_area="porto_alegre")
    assert back.meta.feature_names == BANDS and list(back.frame.index) == sorted([CELL_A, CELL_B])
    assert back.frame.loc[CELL_B, "alphaearth_63"] == pytest.approx((127 / 127.5) ** 2, rel=1e-6)
    assert back.frame.loc[CELL_A, "alphaearth_0"] == pytest.approx(even_share * deq(-32), rel=1e-6)
    run = MlflowClient().get_run(table.meta.producer_run_id)
    assert run.data.params["alphaearth.year"] == "2023" and run.data.params["alphaearth.source"] == "local"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["ae.tif"]


def test_alphaearth_tiles_folder_and_wrong_band_count(tmp_path, data_dir, alphaearth_tif, raster_area):
    path, _, _ = alphaearth_tif
    spec = load_study_area(raster_area({"x": path.name}))
    area = build_area(spec, [9])
    folder = tmp_path / "tiles"
    folder.mkdir()
    path.rename(folder / "t1.tif")
    assert len(AlphaEarthModality(path=str(folder)).compute(spec, area, 9).features) == 2
    write_tif(folder / "t2.tif", np.zeros((3, 4, 4), np.int8), from_origin(-51.22, -30.03, 1e-4, 1e-4))
    with pytest.raises(UrbanReprError, match="t2.tif has 3 band"):
        AlphaEarthModality(path=str(folder)).compute(spec, area, 9)


def test_ee_request_construction():
    bbox = (-51.266, -30.113, -51.132, -29.988)  # porto_alegre
    requests = ee_requests(bbox, 2023)
    assert len(requests) == 9  # 0.134 x 0.125 deg cut into <= 0.05 deg tiles: 3 x 3
    first = requests[0]
    assert first["collection"] == COLLECTION == "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
    assert first["filter"]["start"] == "2023-01-01" and first["filter"]["end"] == "2024-01-01"
    dl = first["download"]
    assert dl["bands"] == [f"A{i:02d}" for i in range(64)] and dl["scale"] == 10 and dl["crs"] == "EPSG:4326"
    assert dl["format"] == "GEO_TIFF" and dl["region"] == first["filter"]["bounds"]
    # The tiles cover the box exactly, without overlap.
    import shapely
    import shapely.geometry as sg

    polys = [sg.shape(r["download"]["region"]) for r in requests]
    assert sum(p.area for p in polys) == pytest.approx(sg.box(*bbox).area, rel=1e-6)
    assert sg.box(*bbox).symmetric_difference(shapely.union_all(polys)).area < 1e-9
    assert len({r["name"] for r in requests}) == 9
    with pytest.raises(UrbanReprError, match="non-empty"):
        ee_requests((1, 1, 1, 2), 2023)


def test_ee_unreachable_one_line_no_table(tracking, capsys, monkeypatch):
    for key in ("EE_PROJECT", "GOOGLE_CLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(key, raising=False)
    line = run_entry_expect_error("alphaearth", ["--source", "ee", "--year", "2023"], capsys)
    assert "Earth Engine is not reachable or not authenticated" in line and "source=local" in line
    assert not table_path("porto_alegre", "alphaearth", 9).exists()


# ---------------------------------------------------------------- aerial


def test_tiles_cut_from_orthophoto(tmp_path, data_dir, ortho, raster_area):
    spec = load_study_area(raster_area({}, box=BOX))
    area = build_area(spec, [9])
    pos, tiles = tiles_from_orthophoto(ortho, area, 9, 16)
    ids = area.region_ids(9)[pos]
    # Covered cells: A and its ring (the tile is ~350 m wide, the image 1.3 km); far cells are dropped.
    assert CELL_A in ids and set(h3.grid_ring(CELL_A, 1)) <= set(ids) and len(ids) < 30
    a = tiles[list(ids).index(CELL_A)]
    assert a.shape == (3, 16, 16)
    west_cell = min(h3.grid_ring(CELL_A, 1), key=lambda c: h3.cell_to_latlng(c)[1])  # its tile lies in the red half
    np.testing.assert_array_equal(tiles[list(ids).index(west_cell)][0], 1.0)
    np.testing.assert_array_equal(tiles[list(ids).index(west_cell)][1:], 0.0)
    # A's tile: left columns red, right columns blue, split just right of the middle; no green anywhere.
    assert (a[0, :, 0] == 1).all() and (a[2, :, -1] == 1).all() and (a[1] == 0).all()
    assert ((a[0] + a[2]) == 1).all()


def test_aerial_end_to_end_builtin_encoder(tracking, ortho):
    from mlflow.tracking import MlflowClient

    table = run_modality_stage(AerialModality(str(ortho), None, 16), "porto_alegre", 9)
    back = read_table(table_path("porto_alegre", "aerial", 9), resolution=9, study_area="porto_alegre")
    assert back.frame.shape[1] == 64 and CELL_A in back.frame.index
    run = MlflowClient().get_run(table.meta.producer_run_id)
    assert run.data.params["aerial.encoder"] == BUILTIN and run.data.params["resolved.encoder"] == BUILTIN
    assert BUILTIN in run.data.tags["mlflow.note.content"]
    # Fixed weights: the same tiles give the same embedding again, bit for bit.
    again = AerialModality(str(ortho), None, 16).compute(*_porto(), 9).features
    np.testing.assert_array_equal(again.loc[CELL_A].to_numpy(np.float32), back.frame.loc[CELL_A].to_numpy())


def _porto():
    spec = load_study_area("porto_alegre")
    return spec, build_area(spec, [9])


def test_encoders_from_weights(tmp_path):
    x = torch.rand(2, 3, 16, 16)
    state_file = tmp_path / "cnn.pt"
    torch.save(builtin_cnn(seed=1).state_dict(), state_file)
    model, name = load_encoder(str(state_file))
    assert name == "builtin-cnn:cnn.pt"
    with torch.no_grad():
        assert torch.equal(model(x), builtin_cnn(seed=1)(x)) and not torch.equal(model(x), builtin_cnn(seed=0)(x))
    full = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.ReLU())
    torch.save(full, tmp_path / "full.pt")
    from urbanrepml.modalities.aerial import encode

    module, name = load_encoder(str(tmp_path / "full.pt"))
    assert name == "torch-module:full.pt" and encode(module, x.numpy()).shape == (2, 5)  # 4-D output pooled
    hf = tmp_path / "hf-model"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "vit"}')
    with pytest.raises(UrbanReprError, match="cannot load Hugging Face model from .*hf-model"):
        load_encoder(str(hf))  # a config without weights
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UrbanReprError, match="do not match the built-in CNN"):
        load_encoder(str(tmp_path / "other.pt"))


def test_tile_folder(tmp_path, data_dir, raster_area):
    from PIL import Image

    folder = tmp_path / "tiles"
    folder.mkdir()
    Image.new("RGB", (40, 40), (255, 0, 0)).save(folder / f"{CELL_A}.png")
    Image.new("RGB", (40, 40), (255, 0, 0)).save(folder / f"{CELL_B}.png")
    Image.new("RGB", (40, 40), (0, 0, 255)).save(folder / "8928308280fffff.png")  # a cell elsewhere: ignored
    spec = load_study_area(raster_area({}, sources={"images": "tiles"}))
    f = AerialModality(tile_px=16).compute(spec, build_area(spec, [9]), 9).features
    assert set(f.index) == {CELL_A, CELL_B}
    np.testing.assert_array_equal(f.loc[CELL_A].to_numpy(), f.loc[CELL_B].to_numpy())  # same image, same embedding
    files = AerialModality(tile_px=16).source_files(spec)
    (manifest,) = files.values()
    assert len(manifest.read_text().splitlines()) == 3


def test_aerial_no_overlap_one_line_no_table(tracking, tmp_path, capsys):
    far = write_tif(tmp_path / "far.tif", np.zeros((3, 8, 8), np.uint8), from_origin(4.89, 52.37, 1e-4, 1e-4))
    line = run_entry_expect_error("aerial", ["--imagery", str(far), "--tile_px", "16"], capsys)
    assert "does not overlap study area 'porto_alegre'" in line
    assert not table_path("porto_alegre", "aerial", 9).exists()
