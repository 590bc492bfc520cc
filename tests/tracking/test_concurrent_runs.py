"""Two processes on one fresh SQLite store at once: no migration race, no duplicate-dataset failure."""

from __future__ import annotations

import subprocess
import sys

from mlflow.tracking import MlflowClient

from tests.support.processes import REPO, clean_env

ROUNDS = 10

# One worker: for each round, wait until both workers are ready, then run the `area` stage on that
# round's fresh store (imports are paid once; every round is a brand-new store and experiment).
_WORKER = r"""
import os, sys, time
from pathlib import Path
from urbanrepml.stages.cli import main_for
root, me, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
area = main_for("area")
for k in range(rounds):
    (root / f"ready-{k}-{me}").touch()
    while len(list(root.glob(f"ready-{k}-*"))) < 2:
        if (root / "failed").exists():
            sys.exit(3)  # the other worker failed: stop waiting for it
        time.sleep(0.005)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / f'store{k}' / 'mlflow.db'}"
    try:
        area(["--study_area", str(root / "tiny.toml"), "--resolutions", "9"])
    except BaseException as exc:
        (root / "failed").touch()
        print(f"round {k}: {type(exc).__name__} {getattr(exc, 'code', exc)}", file=sys.stderr)
        raise
"""


def test_two_processes_on_a_fresh_store_ten_times(tmp_path):
    (tmp_path / "tiny.toml").write_text('name = "tiny"\nboundary = [4.8906, 52.3657, 4.9037, 52.3737]\n')
    for k in range(ROUNDS):
        (tmp_path / f"store{k}").mkdir()
    env = clean_env(PYTHONPATH=str(REPO), URBANREPML_DATA_DIR=str(tmp_path / "data"), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), me, str(ROUNDS)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for me in ("a", "b")]
    outs = [p.communicate(timeout=300) for p in procs]
    errors = [err[-2500:] for p, (_, err) in zip(procs, outs, strict=False) if p.returncode != 0]
    assert not errors, "\n---\n".join(errors)
    for k in range(ROUNDS):
        client = MlflowClient(f"sqlite:///{tmp_path / f'store{k}' / 'mlflow.db'}")
        runs = client.search_runs([client.get_experiment_by_name("urbanrepml-tiny").experiment_id])
        assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"], k
        names = [{d.dataset.name for d in r.inputs.dataset_inputs} for r in runs]
        assert names[0] == names[1] == {"study_area.toml", "tiny_cells_res9"}
