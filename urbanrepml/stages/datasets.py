"""The ``datasets`` entry point: list the registered datasets, or fetch one by name (mirror, cache or source)."""

from __future__ import annotations

from dataclasses import dataclass

from urbanrepml.datasets.cli import main as datasets_main
from urbanrepml.errors import UrbanReprError
from urbanrepml.params import param
from urbanrepml.stages.base import Stage


@dataclass
class Params:
    """Parameters of the ``datasets`` entry point."""

    command: str = param("list", "list the registered datasets, or fetch one", choices=("list", "fetch"))
    name: str | None = param(None, "the dataset to fetch (see list)")


def run(p: Params) -> int:
    """The same as ``python -m urbanrepml datasets list`` / ``... fetch NAME``."""
    if p.command == "fetch" and not p.name:
        raise UrbanReprError("datasets: fetch needs a dataset name, e.g. -P name=porto_alegre")
    return datasets_main([p.command, *([p.name] if p.command == "fetch" else [])])


STAGES = {"datasets": Stage("datasets", "list the registered datasets, or fetch one by name and checksum", Params, run)}
