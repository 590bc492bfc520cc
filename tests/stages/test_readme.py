"""The README's examples do what it says: the quick start names its experiment, the predict example is a real cell."""

from __future__ import annotations

import re

from tests.support.readme import quick_start as _quick_start


def test_quick_start_runs_land_in_a_named_experiment():
    """`mlflow run` without --experiment-name (or MLFLOW_EXPERIMENT_NAME) files runs under MLflow's `Default`."""
    section = _quick_start()
    runs = [line for line in section.splitlines() if "mlflow run ." in line]
    assert runs
    named_by_env = section.find("export MLFLOW_EXPERIMENT_NAME=")
    for line in runs:
        if "--experiment-name urbanrepml-porto_alegre" in line:
            continue
        assert 0 <= named_by_env < section.find(line), line


def test_predict_example_cell_lies_in_the_bundled_area():
    from urbanrepml.areas import build_area, h3ops

    (cell,) = re.findall(r'"region_id": \["([0-9a-f]{15})"\]', _quick_start())
    area = build_area("porto_alegre", [9], use_cache=False)
    assert h3ops.parse_cells([cell])[0] in set(area.cells(9).tolist())
