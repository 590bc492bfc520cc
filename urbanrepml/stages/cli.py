"""Command lines built from each stage's ``Params``: ``entrypoints/<name>.py`` and ``python -m urbanrepml``.

Usage errors, bad values and every :class:`~urbanrepml.errors.UrbanReprError` end in one line
``error: ...`` on stderr and exit status 2 (see :func:`urbanrepml.errors.cli_main`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from urbanrepml.errors import UrbanReprError, cli_main
from urbanrepml.params import parse
from urbanrepml.stages import ENTRY_POINTS, get_stage

# Commands of `python -m urbanrepml` that are not stages: name -> "module:function(argv)".
TOOLS: dict[str, str] = {"datasets": "urbanrepml.datasets.cli:main", "runs": "urbanrepml.tracking.stale:main"}


def run_stage(name: str, argv: Sequence[str] | None = None):
    """Parse ``argv`` with stage ``name``'s parameters and run it; returns what the stage returns."""
    from urbanrepml.areas import cache_on_success

    stage = get_stage(name)
    params = parse(stage.params_cls, argv, prog=name, description=stage.description)
    with cache_on_success():  # a failed run leaves no area cache entry
        return stage.run(params)


def main_for(name: str) -> Callable[[Sequence[str] | None], object]:
    """The ``main(argv=None)`` of ``entrypoints/<name>.py``."""

    @cli_main
    def main(argv: Sequence[str] | None = None):
        return run_stage(name, argv)

    main.__name__ = f"main_{name}"
    return main


def _usage() -> str:
    names = ", ".join(dict.fromkeys([*ENTRY_POINTS, *TOOLS]))
    return f"usage: python -m urbanrepml <command> [--help] [--<parameter> <value> ...]; commands: {names}"


@cli_main
def main(argv: Sequence[str] | None = None):
    """``python -m urbanrepml <stage or tool> ...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return None
    name, rest = args[0], args[1:]
    if name in TOOLS and not (rest and rest[0].startswith("--")):  # `datasets list`; `datasets --command list` is the stage
        import importlib

        module, func = TOOLS[name].split(":")
        return getattr(importlib.import_module(module), func)(rest)
    if name not in ENTRY_POINTS:
        raise UrbanReprError(f"unknown command {name!r}; " + _usage().split("; ", 1)[1])
    return run_stage(name, rest)
