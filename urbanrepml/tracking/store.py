"""The tracking store behind a URI: resolved, checked and made ready before a stage writes to it.

- :func:`resolve_tracking_uri`: ``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<cwd>/mlflow.db``;
  a bare ``postgresql://`` (or ``postgres://``) is kept for the psycopg 3 driver SQLAlchemy picks
  for it, or rewritten to ``postgresql+psycopg2://`` when only psycopg2 is installed.
- :func:`check_tracking_uri`: one clear line for a scheme MLflow has no store for, an SQLite
  file in a missing or read-only folder, or a server that does not answer.
- :func:`prepare_store`: creates or migrates a SQLite store once, under a file lock beside it, so
  processes starting together on a fresh store do not race on MLflow's schema migration.
- :func:`http_defaults`: bounded retries and timeout for requests to a tracking server
  (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=3``, ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1``,
  ``MLFLOW_HTTP_REQUEST_TIMEOUT=30``), each only when the user has not set it: a server that
  dies mid-run fails the stage within about a minute instead of stalling each call for minutes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote

from urbanrepml.errors import UrbanReprError
from urbanrepml.redact import redact

# MLflow's own defaults are 7 retries with a backoff factor of 2 and a 120 s timeout: minutes per call.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
OTHER_SCHEMES = ("", "file", "http", "https", "databricks", "databricks-uc", "uc")
_PREPARED: set[str] = set()


def http_defaults() -> None:
    """Set MLflow's HTTP retry and timeout variables to the project's bounded values where they are unset."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def normalise_tracking_uri(uri: str) -> str:
    """``postgres://`` -> ``postgresql://``; a bare ``postgresql://`` -> ``postgresql+psycopg2://`` without psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if uri.startswith(prefix):
            rest = uri[len(prefix):]
            if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
                return "postgresql+psycopg2://" + rest
            return "postgresql://" + rest
    return uri


def resolve_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` (normalised) if set, else the SQLite store ``mlflow.db`` in the working directory."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return normalise_tracking_uri(uri.strip())
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def scheme_of(uri: str) -> str:
    """The store kind of a URI: ``sqlite``, ``postgresql`` (driver dropped), ``http``, ``file``, ``""`` for a path."""
    if uri in ("databricks", "databricks-uc", "uc"):
        return uri
    scheme, sep, _ = uri.partition(":")
    if not sep or len(scheme) == 1 or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return ""  # a path (a Windows drive letter too)
    return scheme.lower().split("+", 1)[0]


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for an in-memory database or another scheme).

    ``sqlite:///rel/mlflow.db`` is relative to the working directory, ``sqlite:////abs/mlflow.db`` absolute.
    """
    if scheme_of(uri) != "sqlite":
        return None
    rest = uri.split("://", 1)[1].split("?", 1)[0]
    path = unquote(rest[1:]) if rest.startswith("/") else ""
    if not path or path == ":memory:":
        return None
    return Path(path)


def _known_schemes() -> set[str]:
    known = {*DATABASE_SCHEMES, *OTHER_SCHEMES}
    with contextlib.suppress(Exception):  # stores added by MLflow plugins count too (private API: the list above is enough)
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        known |= {s.split("+", 1)[0] for s in _tracking_store_registry._registry}
    return known


def check_server(uri: str, timeout: float = 5.0) -> None:
    """For http(s) tracking URIs, fail clearly when the server does not answer."""
    if scheme_of(uri) not in ("http", "https"):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout)  # the user-given URI
    except urllib.error.HTTPError:
        return  # it answered (e.g. 401 behind auth): reachable
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UrbanReprError(
            f"tracking server {redact(uri)} is not reachable ({reason}); start it (mlflow server ...) "
            "or unset MLFLOW_TRACKING_URI to use the local SQLite store"
        ) from None


def _unwritable(folder: Path, path: Path) -> str | None:
    """Why a SQLite store at ``path`` could not be written (tried, not guessed from permission bits), or None."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".urbanrepml-probe-"):
            pass
    except OSError as exc:
        return f"cannot create files in folder {folder} ({exc.strerror or type(exc).__name__})"
    try:
        if path.exists():
            with open(path, "r+b"):
                pass
    except OSError as exc:
        return f"{path} is not writable ({exc.strerror or type(exc).__name__})"
    return None


def check_tracking_uri(uri: str) -> None:
    """One clear line for a tracking URI no stage could write to (see the module docstring)."""
    scheme = scheme_of(uri)
    if scheme not in _known_schemes():
        raise UrbanReprError(
            f"tracking URI {redact(uri)}: unknown scheme {scheme!r}; use sqlite:///path/mlflow.db, "
            "postgresql://user@host/db, http(s)://server:port or a folder path (MLFLOW_TRACKING_URI)")
    path = sqlite_path(uri)
    if path is not None:
        folder = path.parent
        if not folder.is_dir():
            raise UrbanReprError(f"tracking store {redact(uri)}: folder {folder} does not exist; "
                                 "create it or point MLFLOW_TRACKING_URI at a writable place")
        problem = _unwritable(folder, path)
        if problem:
            raise UrbanReprError(f"tracking store {redact(uri)}: {problem}; point MLFLOW_TRACKING_URI at a writable place")
    check_server(uri)


def prepare_store(uri: str) -> None:
    """Create or migrate a SQLite store once per process, under ``<db>.lock`` (other stores: nothing to do)."""
    path = sqlite_path(uri)
    if path is None or uri in _PREPARED:
        return
    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    with FileLock(str(path) + ".lock", timeout=600):
        client = MlflowClient(uri)
        client._tracking_client.store  # noqa: B018 - building the store creates or migrates the tables
        client._get_registry_client().store  # noqa: B018 - the registry's tables, same database
    _PREPARED.add(uri)
