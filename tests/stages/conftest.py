"""Fixtures of the stage tests: a workspace for running entry points as processes, fused once per module."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import REPO, TEST_DATA
from tests.support.processes import clean_env


@dataclass
class EntryPointRig:
    """A working folder with its own SQLite tracking store and data dir, and the tiny study area ``poa_tiny``."""

    cwd: Path
    tracking_uri: str
    study_area: str  # path of tests/data/poa_tiny/study_area.toml
    area_name: str = "poa_tiny"

    @property
    def experiment(self) -> str:
        return f"urbanrepml-{self.area_name}"

    def run(self, name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
        """``python -m urbanrepml <name> args...`` in the rig's folder, against its store and data dir."""
        env = clean_env(MLFLOW_TRACKING_URI=self.tracking_uri, URBANREPML_DATA_DIR=str(self.cwd / "data"),
                        PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
        return subprocess.run([sys.executable, "-m", "urbanrepml", name, *args], capture_output=True, text=True,
                              cwd=self.cwd, env=env, timeout=timeout)

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking_uri)

    def run_ids(self) -> set[str]:
        """Ids of every run in the rig's store (none before its first run)."""
        if not (self.cwd / "mlflow.db").exists():
            return set()
        client = self.client()
        ids = [e.experiment_id for e in client.search_experiments()]
        return {r.info.run_id for r in client.search_runs(ids, max_results=5000)} if ids else set()


@pytest.fixture(scope="module")
def entry_point_rig(tmp_path_factory) -> EntryPointRig:
    """A fresh rig for this module (its store is not the session's ``tracking`` store)."""
    cwd = tmp_path_factory.mktemp("entry-points")
    return EntryPointRig(cwd, f"sqlite:///{cwd / 'mlflow.db'}", str(TEST_DATA / "poa_tiny" / "study_area.toml"))


@pytest.fixture(scope="module")
def fused_rig(entry_point_rig):
    """The rig after ``fuse --epochs 2`` (it builds the area's modality tables as nested runs and registers version 1).

    Yields ``(rig, fuse process, run ids the fuse made)``.
    """
    before = entry_point_rig.run_ids()
    proc = entry_point_rig.run("fuse", "--study_area", entry_point_rig.study_area, "--epochs", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return entry_point_rig, proc, entry_point_rig.run_ids() - before
