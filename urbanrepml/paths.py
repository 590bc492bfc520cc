"""Where the project keeps data: bundled demo areas, the derived-data cache and registered datasets."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / "data" / "demo"

MIRROR_ENV = "URBANREPML_DATA_MIRROR"


def data_dir() -> Path:
    """Root of derived data (caches, tables): ``$URBANREPML_DATA_DIR`` or ``./data``."""
    return Path(os.environ.get("URBANREPML_DATA_DIR", "data")).resolve()


def cache_dir() -> Path:
    """Cache of derived study-area geometry, under :func:`data_dir`."""
    return data_dir() / "cache"


def datasets_cache_dir() -> Path:
    """Where fetched datasets are kept, laid out like a mirror (``<root>/<dataset folder>/<file>``).

    ``$URBANREPML_DATA_DIR/datasets`` when ``URBANREPML_DATA_DIR`` is set, else the user cache
    (``$XDG_CACHE_HOME/urbanrepml/datasets``, by default ``~/.cache/urbanrepml/datasets``).
    """
    if os.environ.get("URBANREPML_DATA_DIR"):
        return data_dir() / "datasets"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return (base / "urbanrepml" / "datasets").resolve()


def data_mirror() -> Path | None:
    """A local read-only copy of the datasets (``$URBANREPML_DATA_MIRROR``), or None when unset."""
    value = os.environ.get(MIRROR_ENV)
    return Path(value).expanduser().resolve() if value else None
