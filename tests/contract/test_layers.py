"""The layer check passes on the project and catches a planted back-edge."""

from __future__ import annotations

import shutil

from tests.support import REPO
from tests.support.layers import cycles, imports, package_graph, violations


def test_project_imports_point_one_way():
    graph = imports(REPO)
    assert violations(graph) == []
    assert cycles(package_graph(graph)) == []


def test_planted_back_edge_is_caught(tmp_path):
    shutil.copytree(REPO / "urbanrepml", tmp_path / "urbanrepml", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "tuning", tmp_path / "tuning", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "urbanrepml" / "areas" / "planted.py").write_text(
        "def f():\n    from urbanrepml.stages.fuse import run_fuse_stage\n    return run_fuse_stage\n")
    (tmp_path / "urbanrepml" / "tracking" / "planted.py").write_text("from urbanrepml.analysis import folds\n")
    graph = imports(tmp_path)
    assert violations(graph) == [
        "urbanrepml.areas.planted (areas) imports urbanrepml.stages.fuse (stages)",
        "urbanrepml.areas.planted (areas) imports urbanrepml.stages.fuse.run_fuse_stage (stages)",
        "urbanrepml.tracking.planted (tracking) imports urbanrepml.analysis (analysis)",
        "urbanrepml.tracking.planted (tracking) imports urbanrepml.analysis.folds (analysis)",
    ]
    assert any({"urbanrepml.areas", "urbanrepml.stages"} <= set(c) for c in cycles(package_graph(graph)))
