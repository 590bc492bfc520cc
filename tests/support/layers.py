"""The layer check: imports inside ``urbanrepml`` and ``tuning`` point one way.

Layers, bottom to top (a module may import its own layer and the layers below)::

    contract    urbanrepml.{constants,errors,paths,params,redact,cells,geodesy,images,datasets,config,tables}
    areas       pure H3
    sources     readers
    models      nn.Modules
    modalities  per-cell tables
    training    the generic loop
    tasks       what each family trains
    analysis    targets, folds, probes, metrics, figures
    tracking    MLflow glue: may import the contract layer only
    tuning      studies, workers, objectives (beside stages)
    stages      one module per entry point
    main        urbanrepml.__main__

Every ``import`` counts, also inside functions. Run ``python -m tests.support.layers`` to print the
package-level import graph and the violations (exit 1 when there are any).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

LAYERS = (
    ("contract", ("urbanrepml", "urbanrepml.constants", "urbanrepml.errors", "urbanrepml.paths", "urbanrepml.params",
                  "urbanrepml.redact", "urbanrepml.cells", "urbanrepml.datasets", "urbanrepml.config", "urbanrepml.tables")),
    ("areas", ("urbanrepml.areas",)),
    ("sources", ("urbanrepml.sources",)),
    ("models", ("urbanrepml.models",)),
    ("modalities", ("urbanrepml.modalities",)),
    ("training", ("urbanrepml.training",)),
    ("tasks", ("urbanrepml.tasks",)),
    ("analysis", ("urbanrepml.analysis",)),
    ("tracking", ("urbanrepml.tracking",)),
    ("tuning", ("tuning",)),
    ("stages", ("urbanrepml.stages",)),
    ("main", ("urbanrepml.__main__",)),
)
ONLY_CONTRACT = ("tracking",)


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to (the longest matching prefix), or None outside the project."""
    best, best_len = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = name, len(prefix)
    return best


def package_of(module: str) -> str:
    """``urbanrepml.tasks.fusion.train`` -> ``urbanrepml.tasks``; ``tuning.study`` -> ``tuning``."""
    parts = module.split(".")
    return parts[0] if parts[0] == "tuning" else ".".join(parts[:2])


def imports(root: Path) -> dict[str, set[str]]:
    """``{module: modules it imports}`` for every project module under ``root``."""
    out: dict[str, set[str]] = {}
    for path in sorted([*root.glob("urbanrepml/**/*.py"), *root.glob("tuning/**/*.py")]):
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        out[module] = {m for m in found if layer_of(m) is not None}
    return out


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that points up the layers (or out of the contract layer from tracking)."""
    order = {name: i for i, (name, _) in enumerate(LAYERS)}
    bad = []
    for module, targets in sorted(graph.items()):
        src = layer_of(module)
        for target in sorted(targets):
            dst = layer_of(target)
            if src is None or dst is None or package_of(target) == package_of(module):
                continue
            if order[dst] > order[src] or (src in ONLY_CONTRACT and dst not in ("contract", src)):
                bad.append(f"{module} ({src}) imports {target} ({dst})")
    return bad


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Package-level edges (``urbanrepml.x`` -> ``urbanrepml.y``)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for module, targets in graph.items():
        for target in targets:
            if package_of(target) != package_of(module):
                edges[package_of(module)].add(package_of(target))
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def main(root: Path) -> int:
    graph = imports(root)
    edges = package_graph(graph)
    for src in sorted(edges):
        print(f"{src} -> {', '.join(sorted(edges[src]))}")
    found = cycles(edges)
    print("package cycles:", found or "none")
    bad = violations(graph)
    for line in bad:
        print("layer violation:", line)
    print(f"{len(bad)} layer violation(s)")
    return 1 if bad or found else 0


if __name__ == "__main__":
    sys.exit(main(Path(__file__).resolve().parents[2]))
