"""Fixtures of the tracking tests (the SQLite store, the real server and PostgreSQL come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from urbanrepml.areas import build_area


@pytest.fixture
def amsterdam(data_dir):
    return build_area("amsterdam", [9])
