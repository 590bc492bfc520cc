"""The shape of the test suite itself: folders mirror the package, module names are unique, no test imports a test."""

from __future__ import annotations

import ast
from collections import Counter

from tests.support import REPO

TESTS = REPO / "tests"
NOT_TEST_FOLDERS = {"support", "data", "__pycache__"}


def _test_modules():
    return sorted(TESTS.rglob("test_*.py"))


def test_test_module_names_are_unique():
    names = Counter(p.name for p in _test_modules())
    assert not [n for n, c in names.items() if c > 1], "rename: test module names must be unique across folders"


def test_no_test_module_imports_another():
    offenders = []
    for path in [*_test_modules(), *TESTS.rglob("conftest.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(REPO)} imports {n}" for n in names
                          if n.startswith("tests.") and any(part.startswith("test_") for part in n.split("."))]
    assert not offenders, "move shared code to tests/support: " + "; ".join(offenders)


def test_every_test_folder_has_init_and_conftest():
    folders = {p.parent for p in _test_modules()} - {TESTS}
    missing = [f"{f.relative_to(REPO)}/{n}" for f in sorted(folders) for n in ("__init__.py", "conftest.py")
               if not (f / n).is_file()]
    assert not missing, missing
    assert not [f for f in folders if NOT_TEST_FOLDERS & set(f.relative_to(TESTS).parts)]
