"""Where an Optuna study lives: resolve, check and open the storage, and lock it across workers.

``storage`` (the ``tune`` parameter) may be:

- empty: ``$URBANREPML_TUNE_STORAGE`` if set, else a SQLite file ``optuna.db`` next to the
  tracking store (the folder of ``mlflow.db`` for a SQLite tracking URI, else the working
  directory);
- a SQLAlchemy URL: ``sqlite:///path/optuna.db``, ``postgresql://user@host:5432/db`` (also
  ``postgresql+psycopg2://``), any other RDB Optuna supports;
- ``journal:<path>`` or a path ending in ``.journal``/``.log``: an Optuna journal file (safe for
  several processes on one machine, no database needed).

Passwords: every message and every logged value uses :func:`redact`. Under ``mlflow run``
MLflow itself logs the ``storage`` parameter verbatim, so give a PostgreSQL password through
``PGPASSWORD``/``~/.pgpass`` or put the whole URL in ``$URBANREPML_TUNE_STORAGE`` instead.

RDB storages run with heartbeats (``heartbeat_interval``/``grace_period``) and
:class:`optuna.storages.RetryHeartbeatStaleTrialCallback` (Optuna 5's name for the
``RetryFailedTrialCallback`` of earlier versions): a trial whose worker died is marked FAIL
by the next worker that asks for a trial, and re-queued once with the same parameters.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from urbanrepml.errors import UrbanReprError
from urbanrepml.redact import redact  # noqa: F401 - also used by tuning.study

ENV_STORAGE = "URBANREPML_TUNE_STORAGE"
DEFAULT_FILE = "optuna.db"
JOURNAL_PREFIX = "journal:"


def password_of(url: str) -> str | None:
    """The password in ``url`` (to scrub it from third-party error text), or None."""
    try:
        parts = urlsplit(url)
        pw = parts.password
        if not pw:
            pw = dict((k.lower(), v) for k, v in parse_qsl(parts.query)).get("password")
        return pw or None
    except ValueError:
        return None


def scrub(text: str, url: str) -> str:
    pw = password_of(url)
    text = str(text)
    if pw:
        text = text.replace(pw, "***")
    return text.replace(url, redact(url))


def tracking_dir(tracking_uri: str | None = None) -> Path:
    """Folder of the local tracking store (``mlflow.db``), or the working directory for a server."""
    uri = tracking_uri if tracking_uri is not None else os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent
    return Path.cwd()


def default_storage(tracking_uri: str | None = None) -> str:
    return f"sqlite:///{tracking_dir(tracking_uri) / DEFAULT_FILE}"


def resolve_storage(storage: str | None, tracking_uri: str | None = None) -> str:
    """The storage URL to use for the ``storage`` parameter (see the module docstring)."""
    storage = (storage or "").strip() or os.environ.get(ENV_STORAGE, "").strip()
    if not storage:
        return default_storage(tracking_uri)
    if storage.startswith(JOURNAL_PREFIX):
        return JOURNAL_PREFIX + str(Path(storage[len(JOURNAL_PREFIX):]).expanduser().resolve())
    if "://" not in storage:
        path = Path(storage).expanduser().resolve()
        if path.suffix in (".journal", ".log"):
            return JOURNAL_PREFIX + str(path)
        if path.suffix in (".db", ".sqlite", ".sqlite3"):
            return f"sqlite:///{path}"
        raise UrbanReprError(
            f"storage {storage!r} is neither a URL nor a .db/.journal file; give e.g. sqlite:///optuna.db, "
            "postgresql://user@host:5432/db or journal:optuna.journal"
        )
    return with_driver(storage)


def with_driver(url: str) -> str:
    """``postgresql://`` -> ``postgresql+psycopg2://`` unless psycopg 3 is installed.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; this project ships psycopg2.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            try:
                import psycopg  # noqa: F401
            except ImportError:
                return "postgresql+psycopg2://" + url[len(prefix):]
            return "postgresql://" + url[len(prefix):]
    return url


def kind(url: str) -> str:
    """``journal``, ``sqlite``, ``postgresql`` or the URL scheme's dialect."""
    if url.startswith(JOURNAL_PREFIX):
        return "journal"
    return urlsplit(url).scheme.split("+", 1)[0]


def check_reachable(url: str, timeout: int = 5) -> None:
    """Fail with one line naming the (redacted) URL when the storage cannot be used."""
    k = kind(url)
    if k == "journal" or k == "sqlite":
        path = Path(url[len(JOURNAL_PREFIX):] if k == "journal" else url[len("sqlite:///"):])
        if k == "sqlite" and url in ("sqlite://", "sqlite:///:memory:"):
            return
        if not path.parent.is_dir():
            raise UrbanReprError(f"optuna storage {redact(url)}: folder {path.parent} does not exist; create it or choose another storage")
        if not os.access(path.parent, os.W_OK):
            raise UrbanReprError(f"optuna storage {redact(url)}: folder {path.parent} is not writable")
        return
    try:
        import sqlalchemy
    except ImportError:  # pragma: no cover - optuna depends on it
        return
    try:
        connect_args = {"connect_timeout": timeout} if k in ("postgresql", "mysql") else {}
        engine = sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any driver error means unusable
        reason = scrub(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, url)
        raise UrbanReprError(
            f"optuna storage {redact(url)} is not reachable ({reason}); start the database, fix the URL, "
            "or leave storage empty for a local SQLite file"
        ) from None


def open_storage(
    url: str,
    *,
    heartbeat_interval: int = 10,
    grace_period: int | None = None,
    max_retry: int = 1,
    on_stale: Callable | None = None,
):
    """An Optuna storage object for ``url``: RDB with heartbeats + retry of stale trials, or a journal file.

    ``on_stale(study, frozen_trial)`` runs after the stale trial was re-queued (e.g. to close its MLflow run).
    """
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if kind(url) == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

        path = url[len(JOURNAL_PREFIX):]
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def stale(study, trial):
        retry(study, trial)
        if on_stale is not None:
            on_stale(study, trial)

    kwargs = {}
    if kind(url) == "sqlite":
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period or max(2 * heartbeat_interval, heartbeat_interval + 2),
                heartbeat_stale_trial_callback=stale,
                **kwargs,
            )
        except Exception as exc:  # noqa: BLE001
            raise UrbanReprError(f"optuna storage {redact(url)} could not be opened ({scrub(str(exc).splitlines()[0], url)})") from None


def _lock_key(study_name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"urbanrepml-tune:{study_name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def study_lock(storage, url: str, study_name: str) -> Iterator[None]:
    """Serialise "count trials, then ask for one" across all workers of a study.

    PostgreSQL: a session advisory lock on the storage's own database (workers on several machines).
    SQLite/journal files: an ``fcntl`` lock on a ``.lock`` file beside the storage (one machine).
    """
    k = kind(url)
    if k == "postgresql":
        import sqlalchemy

        engine = getattr(storage, "engine", None)
        if engine is None:
            engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        key = _lock_key(study_name)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    if k in ("sqlite", "journal"):
        import fcntl

        path = Path(url[len(JOURNAL_PREFIX):] if k == "journal" else url[len("sqlite:///"):])
        if str(path) in ("", ":memory:"):
            yield
            return
        lock_path = path.with_name(path.name + f".{_lock_key(study_name) & 0xFFFFFFFF:08x}.lock")
        with open(lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    yield  # other RDBs: best effort (MaxTrials check without a lock)
