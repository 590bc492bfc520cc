"""One exception type for bad input, and the CLI guard that turns it into one clear line.

Every check of user input raises :class:`UrbanReprError` with a message that says
what is wrong, where (file, parameter, cell) and how to fix it. Entry points wrap
their ``main`` with :func:`cli_main`, which prints ``error: <message>`` to stderr
and exits with status 2 instead of a traceback.

:func:`cli_main` is also the one boundary for failures of the environment that no check
can rule out beforehand: an OS error on a file (a folder where a file was expected, no
permission, a full disk), an unreadable raster, a tracking store that cannot be written
(SQLite/SQLAlchemy errors, also wrapped in MLflow's exceptions) and a tracking server that
stopped answering. :func:`describe_failure` turns each into one line naming the resource;
anything else (a bug) keeps its traceback.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

EXIT_BAD_INPUT = 2


class UrbanReprError(Exception):
    """Bad input or an unusable environment; the message is shown to the user as is."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _kinds(exc: BaseException) -> set[str]:
    """``module.Class`` names of the exception's classes (duck typing: this layer imports no third-party errors)."""
    return {f"{c.__module__}.{c.__name__}" for c in type(exc).__mro__}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _tracking_uri() -> str:
    """The tracking URI in use, passwords hidden ("the tracking store" when MLflow is not loaded)."""
    mlflow = sys.modules.get("mlflow")
    try:
        from urbanrepml.redact import redact

        return redact(mlflow.get_tracking_uri()) if mlflow is not None else "the tracking store"
    except Exception:  # noqa: BLE001 - only for the message
        return "the tracking store"


def _os_line(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else ""
    if isinstance(exc, IsADirectoryError):
        return f"{where} is a folder, not a file; point the setting at a file"
    if isinstance(exc, FileNotFoundError):
        return (f"{where} does not exist and cannot be created there; check the path (the study area's files, "
                "URBANREPML_DATA_DIR, MLFLOW_TRACKING_URI)") if where else _first_line(exc)
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return f"{where or 'a file'}: {exc.strerror or 'permission denied'}; write somewhere writable " \
               "(URBANREPML_DATA_DIR, MLFLOW_TRACKING_URI) or fix the permissions"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{(' writing ' + str(where)) if where else ''}; free some space or " \
               "point URBANREPML_DATA_DIR / MLFLOW_TRACKING_URI at another disk"
    return f"{where}: {exc.strerror}" if where and exc.strerror else _first_line(exc)


def describe_failure(exc: BaseException) -> str | None:
    """One line for a failure of a file, raster, tracking store or tracking server (see the module docstring), else None."""
    chain = list(_chain(exc))
    for e in chain:  # the store's database refused (full disk, read-only, missing folder, locked)
        kinds = _kinds(e)
        if "sqlite3.Error" in kinds or "sqlalchemy.exc.DBAPIError" in kinds or "sqlalchemy.exc.OperationalError" in kinds:
            reason = _first_line(getattr(e, "orig", None) or e)
            return f"tracking store {_tracking_uri()} cannot be used: {reason}; check that its folder is writable " \
                   "and its disk has space, or set MLFLOW_TRACKING_URI"
    for e in chain:  # the tracking server stopped answering
        kinds = _kinds(e)
        if kinds & {"requests.exceptions.ConnectionError", "requests.exceptions.Timeout", "urllib3.exceptions.MaxRetryError",
                    "urllib3.exceptions.NewConnectionError"}:
            return f"tracking server {_tracking_uri()} stopped answering ({type(e).__name__}); the run could not be " \
                   "recorded there; restart the server and run again (MLFLOW_HTTP_REQUEST_MAX_RETRIES/TIMEOUT bound the wait)"
    for e in chain:
        if any(k.startswith("rasterio.") for k in _kinds(e)):
            return f"raster could not be read: {_first_line(e)}"
    for e in chain:
        if isinstance(e, OSError) and not isinstance(e, ConnectionError):
            return _os_line(e)
    for e in chain:
        if "mlflow.exceptions.MlflowException" in _kinds(e):
            return f"tracking store {_tracking_uri()}: {_first_line(e)}"
    return None


def cli_main(func: F) -> F:
    """Run ``func``; on :class:`UrbanReprError` (or a failure :func:`describe_failure` knows) print one line, exit 2.

    Set ``URBANREPML_TRACEBACK=1`` to see the full traceback instead.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UrbanReprError as exc:
            if os.environ.get("URBANREPML_TRACEBACK"):
                raise
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        except Exception as exc:
            line = describe_failure(exc)
            if line is None or os.environ.get("URBANREPML_TRACEBACK"):
                raise
            print(f"error: {line}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper  # type: ignore[return-value]
