"""A tuning worker as its own command: ``python -m tuning.worker --storage URL --study_name NAME --target N``.

It joins an existing study (created by the ``tune`` entry point), runs trials with
:func:`tuning.workers.work` until the study holds ``target`` finished trials, and prints a
one-line JSON report. ``tune -P n_workers=K`` starts K-1 of these beside itself; on other
machines start them by hand against the same storage and tracking server.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from tuning.study import open_study
from tuning.workers import load_objective, work
from urbanrepml.errors import cli_main


@cli_main
def main(argv=None) -> None:
    """A worker process joining an existing study (see the module docstring)."""
    from urbanrepml.tracking import configure_tracking

    p = argparse.ArgumentParser(prog="python -m tuning.worker", description=__doc__.splitlines()[0])
    p.add_argument("--storage", required=True)
    p.add_argument("--study_name", required=True)
    p.add_argument("--target", type=int, required=True, help="finished trials the study should reach")
    p.add_argument("--parent_run_id", default="")
    p.add_argument("--experiment_id", default="")
    p.add_argument("--objective", default="tuning.objective:FusionObjective")
    p.add_argument("--objective_kwargs", default="{}")
    p.add_argument("--sampler", default="tpe")
    p.add_argument("--pruner", default="median")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heartbeat_interval", type=int, default=10)
    p.add_argument("--grace_period", type=int, default=0)
    p.add_argument("--timeout", type=float, default=0)
    p.add_argument("--worker", default=str(os.getpid()))
    args = p.parse_args(argv)
    configure_tracking()
    objective = load_objective(args.objective, json.loads(args.objective_kwargs))
    study, url = open_study(args.storage, args.study_name, objective, sampler=args.sampler, pruner=args.pruner,
                            seed=args.seed, heartbeat_interval=args.heartbeat_interval,
                            grace_period=args.grace_period or None, create=False)
    if hasattr(objective, "setup"):
        objective.setup()
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    report = work(study, objective, storage_url=url, study_name=args.study_name, target=args.target,
                  parent_run_id=args.parent_run_id or None, experiment_id=args.experiment_id or None,
                  worker=args.worker, deadline=deadline)
    print(json.dumps({"worker": report.worker, "trials": report.trials, "states": report.states}), flush=True)


if __name__ == "__main__":
    main()
