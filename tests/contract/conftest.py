"""Fixtures of the contract tests (tables, the layer check)."""

from __future__ import annotations

import pytest

from urbanrepml.areas import build_area


@pytest.fixture
def area(data_dir):
    return build_area("amsterdam", [9, 10])
