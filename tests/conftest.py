"""Session-wide fixtures: real tracking stores (SQLite, a real `mlflow server`, PostgreSQL), isolated data dirs,
study-area TOMLs, and the data mirror. Fixtures of one folder live in that folder's conftest.py."""

from __future__ import annotations

import os

import pytest

from tests.support import SHARED_DATA
from tests.support.areas import write_study_area
from tests.support.mlflow_server import mlflow_server
from tests.support.pg import pg_database  # noqa: F401 - fixture: a throwaway PostgreSQL database
from tests.support.processes import MLFLOW_RUN_ENV

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
_MIRROR_WAS_SET = "URBANREPML_DATA_MIRROR" in os.environ


def pytest_configure(config):
    """Registered datasets come from the sibling mirror ``../shared/data`` when it exists and no mirror is set.

    A hook, not a fixture, because test modules fetch at import (collection runs before any fixture);
    child processes inherit it. Without a mirror, datasets are fetched normally (cache, then download).
    """
    if not _MIRROR_WAS_SET and SHARED_DATA.is_dir():
        os.environ["URBANREPML_DATA_MIRROR"] = str(SHARED_DATA)


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    """Tests against a real `mlflow server` (the ``tracking_server`` fixture) are ``e2e`` without saying so."""
    for item in items:
        if "tracking_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


def pytest_unconfigure(config):
    if not _MIRROR_WAS_SET:
        os.environ.pop("URBANREPML_DATA_MIRROR", None)


@pytest.fixture(autouse=True)
def _no_leaked_mlflow_run_env():
    saved = {k: os.environ.pop(k) for k in MLFLOW_RUN_ENV if k in os.environ}
    yield
    for k in MLFLOW_RUN_ENV:
        os.environ.pop(k, None)
    os.environ.update(saved)


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory):
    """URL of a real `mlflow server` (SQLite backend, served artifacts) shared by the session."""
    workdir = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(workdir) as url:
        yield url


@pytest.fixture(scope="session")
def _sqlite_store(tmp_path_factory):
    return tmp_path_factory.mktemp("tracking") / "mlflow.db"


@pytest.fixture
def tracking(monkeypatch, _sqlite_store, tmp_path):
    """A real SQLite tracking store (shared by the session, so migrations run once), in a fresh cwd and data dir."""
    import mlflow

    uri = f"sqlite:///{_sqlite_store}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("URBANREPML_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture
def data_dir(monkeypatch, tmp_path):
    """An empty data dir (cache) for the test."""
    path = tmp_path / "data"
    monkeypatch.setenv("URBANREPML_DATA_DIR", str(path))
    return path


@pytest.fixture
def study_area_toml(tmp_path):
    """Write a study-area TOML: ``study_area_toml(name, boundary, sources=..., targets=..., extra=...) -> Path``.

    ``boundary`` is a lon/lat box or a boundary file; ``sources`` maps keys to values (a mapping value
    becomes a sub-table, e.g. ``{"rasters": {"dem": "dem.tif"}}``); ``targets`` maps target names to
    their fields; ``extra`` is raw text after ``boundary``. The file is ``folder/filename`` (default:
    the test's ``tmp_path`` and ``<name>.toml``); relative paths in it resolve against that folder.
    See :func:`tests.support.areas.study_area_text`.
    """

    def make(name: str, boundary, *, sources=None, targets=None, extra: str = "", filename: str | None = None,
             folder=None):
        path = (folder or tmp_path) / (filename or f"{name}.toml")
        return write_study_area(path, name, boundary, sources=sources, targets=targets, extra=extra)

    return make
