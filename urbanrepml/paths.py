"""Where the project keeps data: bundled demo areas and the derived-data cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / "data" / "demo"


def data_dir() -> Path:
    """Root of derived data (caches, tables): ``$URBANREPML_DATA_DIR`` or ``./data``."""
    return Path(os.environ.get("URBANREPML_DATA_DIR", "data")).resolve()


def cache_dir() -> Path:
    """Cache of derived study-area geometry, under :func:`data_dir`."""
    return data_dir() / "cache"
