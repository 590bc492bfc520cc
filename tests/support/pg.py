"""The real PostgreSQL server on 127.0.0.1:5432 (trust auth, user postgres) for tests.

``pg_database`` yields the URL of a throwaway database ``urbanrepml_test_<pid>_<rand>``,
dropped afterwards. If PostgreSQL does not answer, it is started once with
``pg_ctlcluster``; if it still does not answer the test is skipped locally and FAILS
when ``CI=true`` (a distributed-tuning test must not pass silently without its database).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


def connect(dbname: str = "postgres"):
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, connect_timeout=3)
    conn.autocommit = True
    return conn


def _reachable() -> str | None:
    try:
        connect().close()
        return None
    except Exception as exc:  # noqa: BLE001
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def ensure_postgres() -> None:
    reason = _reachable()
    if reason is None:
        return
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").is_dir() else []
    if versions:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
                       capture_output=True, timeout=60, check=False)
        reason = _reachable()
        if reason is None:
            return
    message = f"PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}) is not reachable: {reason}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " -- CI requires it for the team-tracking and distributed-tuning tests", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def pg_database():
    """URL (no password) of a fresh PostgreSQL database, dropped after the test."""
    ensure_postgres()
    name = f"urbanrepml_test_{os.getpid()}_{secrets.token_hex(4)}"
    conn = connect()
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        cur = conn.cursor()
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.close()
