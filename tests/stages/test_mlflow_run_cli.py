"""Entry points through `mlflow run` (the README's way): values reach the stage intact, failures are one line."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from tests.support.processes import error_lines, mlflow_run


def test_mlflow_run_passes_a_path_with_spaces_and_quotes_intact(tmp_path):
    """MLflow quotes every value itself: a table path with spaces and both quote kinds reaches the stage as typed."""
    path = "/x/dir with spaces/it's a \"t\" table.parquet"
    proc = mlflow_run("probe", {"table": path}, tmp_path, experiment="quoting",
                      env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert proc.returncode != 0
    ours = [line for line in error_lines(proc.stderr) if line.startswith("error: ")]
    assert ours == [f"error: embedding table {path} does not exist"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("quoting").experiment_id])
    assert run.info.status == "FAILED"
