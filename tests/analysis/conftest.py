"""Fixtures of the analysis tests: the Porto Alegre hexgrid cells, a small area and study areas naming targets."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.support.areas import AMSTERDAM_BBOX
from urbanrepml.areas import build_area
from urbanrepml.datasets import fetch


@pytest.fixture(scope="module")
def poa_ids():
    ids = pd.read_csv(fetch("porto_alegre") / "poa_hexgrid.csv")["id"]
    return pd.Index(ids.to_numpy(), name="region_id")


@pytest.fixture
def targets_area(study_area_toml):
    """``targets_area({name: {field: value}})``: ``area.toml`` of area ``tiny`` (the bundled Amsterdam box, 16 res-9 cells)."""

    def make(targets: dict) -> str:
        return str(study_area_toml("tiny", AMSTERDAM_BBOX, targets=targets, filename="area.toml"))

    return make


@pytest.fixture
def cells(data_dir, targets_area):
    toml = targets_area({})
    area = build_area(toml, [9, 10])
    return area
