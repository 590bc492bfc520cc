"""Code the tests share (no tests here): one module per topic.

- ``areas``: study-area TOMLs (the function behind the ``study_area_toml`` fixture), bundled boxes, H3 cell sets
- ``tables``: contract tables written for tests (synthetic modality tables, stand-in embeddings)
- ``rasters``: GeoTIFFs built pixel by pixel around known cells
- ``processes``: entry points run as processes or in-process, and their one-line errors
- ``mlflow_server``: a real ``mlflow server`` on a free port
- ``pg``: the local PostgreSQL server and throwaway databases
- ``layers``: the layer check (``python -m tests.support.layers``)
- ``tune_objectives``: cheap Optuna objectives that workers load as ``"module:Class"``
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The data mirror beside the repository (registered datasets without downloads), when it exists.
SHARED_DATA = REPO.parent / "shared" / "data"
# Tiny file fixtures that several tests share, with the script that makes them.
TEST_DATA = REPO / "tests" / "data"
