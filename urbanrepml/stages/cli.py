"""Argument helpers shared by the thin scripts in ``entrypoints/``.

MLflow Project parameters arrive as strings; numeric ones may come as ``"9.0"``.
"""

from __future__ import annotations

import argparse

from urbanrepml.config import DEFAULT_STUDY_AREA
from urbanrepml.errors import UrbanReprError


def integer(value: str) -> int:
    """``"9"`` or ``"9.0"`` -> 9; anything else is a clear error."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if not number.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}")
    return int(number)


def boolean(value: str) -> bool:
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def optional(value: str) -> str | None:
    """Empty string (MLflow's way of saying 'not given') -> None."""
    return value or None


def int_list(value: str) -> list[int]:
    try:
        return [integer(v) for v in str(value).split(",") if v.strip()]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {value!r}") from None


class ArgumentParser(argparse.ArgumentParser):
    """argparse with ``--study_area`` built in; usage errors exit 2 with one line, like every other error."""

    def __init__(self, description: str, **kwargs):
        super().__init__(description=description, **kwargs)
        self.add_argument("--study_area", default=DEFAULT_STUDY_AREA, help="bundled area name or path to a study-area TOML")

    def error(self, message):  # noqa: D401 - argparse API
        raise UrbanReprError(f"{self.prog}: {message}")
