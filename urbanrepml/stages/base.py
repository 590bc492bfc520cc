"""What every stage is: a name, a one-line description, a ``Params`` dataclass and ``run(params)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    """One entry point: ``run(params)`` with ``params`` an instance of ``params_cls``."""

    name: str
    description: str
    params_cls: type
    run: Callable[[Any], Any]
