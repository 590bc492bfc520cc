"""Runs left RUNNING by a process that died (``kill -9``, a lost machine, a tracking server that went away).

Every stage run is tagged with the process that runs it (:func:`process_tags`: ``urbanrepml.host``,
``urbanrepml.pid``, ``urbanrepml.pid_started``, the process start time so a reused PID is not
taken for the original). ``python -m urbanrepml runs close-stale`` marks a RUNNING run FAILED when

- its process ran on this host and is gone (the PID is not alive, or now belongs to a later process), or
- nothing was logged on it for ``--max_age_hours`` (default 24; 0 turns the age rule off): the newest
  of its start time and its latest metric timestamps is older than that. This is the rule for runs
  started on other hosts (a fuse run logs metrics at least every epoch).

Closed runs get the tag ``urbanrepml.closed_stale`` with the reason; ``--dry_run`` only lists them.
Resuming a killed fuse run (``-P resume_run_id=<id>``) re-opens that run instead, so it needs no closing.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from urbanrepml.constants import tag
from urbanrepml.errors import UrbanReprError, cli_main

HOST, PID, PID_STARTED, CLOSED = "host", "pid", "pid_started", "closed_stale"
DEFAULT_MAX_AGE_HOURS = 24.0


def _started(pid: int) -> float | None:
    """Start time (epoch seconds) of process ``pid``, or None when it does not exist."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def process_tags() -> dict[str, str]:
    """Tags naming the current process, set on every stage run (see the module docstring)."""
    started = _started(os.getpid())
    return {tag(HOST): socket.gethostname(), tag(PID): str(os.getpid()),
            tag(PID_STARTED): f"{started:.2f}" if started is not None else ""}


@dataclass
class StaleRun:
    run_id: str
    experiment_id: str
    name: str
    reason: str


def _process_gone(tags: dict[str, str]) -> str | None:
    """Why the run's process is gone, when it ran on this host and is; else None."""
    if tags.get(tag(HOST)) != socket.gethostname() or not tags.get(tag(PID), "").isdigit():
        return None
    pid = int(tags[tag(PID)])
    started = _started(pid)
    if started is None:
        return f"its process {pid} on {socket.gethostname()} is gone"
    recorded = tags.get(tag(PID_STARTED))
    if recorded and abs(float(recorded) - started) > 1.0:
        return f"its process {pid} on {socket.gethostname()} is gone (the PID now belongs to another process)"
    return None


def _last_update_ms(run) -> int:
    """The newest of the run's start time and its latest metric timestamps (milliseconds)."""
    stamps = [m.timestamp for m in getattr(run.data, "_metric_objs", []) or []]
    return max([run.info.start_time or 0, *stamps])


def find_stale_runs(max_age_hours: float = DEFAULT_MAX_AGE_HOURS, now: float | None = None) -> list[StaleRun]:
    """RUNNING runs of every experiment whose process is gone or that had no update for ``max_age_hours``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    now_ms = int((now if now is not None else time.time()) * 1000)
    experiments = [e.experiment_id for e in client.search_experiments()]
    out: list[StaleRun] = []
    if not experiments:
        return out
    page_token = None
    while True:
        page = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'", max_results=1000,
                                  page_token=page_token)
        for run in page:
            tags = run.data.tags
            reason = _process_gone(tags)
            if reason is None and max_age_hours > 0:
                age_h = (now_ms - _last_update_ms(run)) / 3_600_000
                if age_h > max_age_hours:
                    reason = f"nothing logged for {age_h:.1f} h (more than {max_age_hours:g} h)"
            if reason is not None:
                out.append(StaleRun(run.info.run_id, run.info.experiment_id, run.info.run_name or "", reason))
        page_token = page.token
        if not page_token:
            break
    return out


def close_stale_runs(max_age_hours: float = DEFAULT_MAX_AGE_HOURS, *, dry_run: bool = False) -> list[StaleRun]:
    """Mark every stale run FAILED (tag ``urbanrepml.closed_stale`` = reason); return them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    stale = find_stale_runs(max_age_hours)
    if not dry_run:
        for run in stale:
            client.set_tag(run.run_id, tag(CLOSED), run.reason)
            client.set_terminated(run.run_id, status="FAILED")
    return stale


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="urbanrepml runs", description="Housekeeping of the tracking store's runs.")
    sub = parser.add_subparsers(dest="command", required=True)
    close = sub.add_parser("close-stale", help="mark runs FAILED whose process died or that stopped logging")
    close.add_argument("--max_age_hours", type=float, default=DEFAULT_MAX_AGE_HOURS,
                       help=f"also close runs with nothing logged for this long (0: off) [default: {DEFAULT_MAX_AGE_HOURS:g}]")
    close.add_argument("--dry_run", action="store_true", help="list the stale runs, change nothing")
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m urbanrepml runs close-stale [--max_age_hours H] [--dry_run]``; returns 0."""
    from urbanrepml.tracking.runs import configure_tracking

    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code:
            raise UrbanReprError("usage: python -m urbanrepml runs close-stale [--max_age_hours H] [--dry_run]") from None
        raise
    if args.max_age_hours < 0:
        raise UrbanReprError(f"--max_age_hours must be >= 0 (0: off), got {args.max_age_hours}")
    uri = configure_tracking()
    stale = close_stale_runs(args.max_age_hours, dry_run=args.dry_run)
    verb = "would close" if args.dry_run else "closed"
    for run in stale:
        print(f"{verb} run {run.run_id} ({run.name or 'unnamed'}, experiment {run.experiment_id}): {run.reason}")
    from urbanrepml.redact import redact

    print(f"runs close-stale: {verb} {len(stale)} stale run(s) in {redact(uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
