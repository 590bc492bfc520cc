"""One declaration of an entry point's parameters: a dataclass whose fields carry type, default and help.

Every stage (and every modality's own settings) declares its parameters once, as a dataclass
built with :func:`param`. From that one declaration come

- the command line (:func:`build_parser`, used by ``entrypoints/<name>.py`` and
  ``python -m urbanrepml <stage>``),
- the MLproject entry (:func:`mlproject_parameters`; a test checks MLproject against it),
- the values logged on the run.

Supported field types: ``int``, ``float``, ``bool``, ``str`` and ``str | None`` (an optional
text; empty means "not given", as MLflow passes it). MLflow Project values arrive as strings and
numbers may come as ``"9.0"``; every parser accepts that and refuses anything else with one line
naming the parameter.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import types
import typing
from typing import Any

from urbanrepml.errors import UrbanReprError

_HELP = "help"
_CHOICES = "choices"


def param(default: Any, help: str = "", *, choices: typing.Sequence[str] | None = None) -> Any:  # noqa: A002
    """A dataclass field with a default, a help text and optional allowed values."""
    return dataclasses.field(default=default, metadata={_HELP: help, _CHOICES: tuple(choices) if choices else None})


def _kind(field: dataclasses.Field, hints: dict) -> str:
    """``int`` | ``float`` | ``bool`` | ``str`` | ``optional``."""
    hint = hints[field.name]
    if hint in (int, float, bool, str):
        return hint.__name__
    args = typing.get_args(hint)
    if (typing.get_origin(hint) in (typing.Union, types.UnionType)) and set(args) == {str, type(None)}:
        return "optional"
    raise TypeError(f"parameter {field.name}: unsupported type {hint!r}")


def fields_of(params_cls: type) -> list[tuple[dataclasses.Field, str]]:
    """``(field, kind)`` of every parameter, in declaration order."""
    hints = typing.get_type_hints(params_cls)
    return [(f, _kind(f, hints)) for f in dataclasses.fields(params_cls)]


def is_empty(value: Any) -> bool:
    """True for the ways a "not given" value arrives: None, an empty string, or a quoted empty one."""
    return value is None or str(value).strip() in ("", "''", '""')


def to_integer(name: str, value: Any) -> int:
    """``9``, ``"9"`` or ``"9.0"`` -> 9; anything else is one clear error naming ``name``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UrbanReprError(f"parameter {name}: expected an integer, got {value!r}") from None
    if not math.isfinite(number) or not number.is_integer():
        raise UrbanReprError(f"parameter {name}: expected an integer, got {value!r}")
    return int(number)


def to_float(name: str, value: Any) -> float:
    """A number (ranges, finiteness included, are the stage's to check), or one clear error naming ``name``."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UrbanReprError(f"parameter {name}: expected a number, got {value!r}") from None


def to_boolean(name: str, value: Any) -> bool:
    """``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case) -> bool."""
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise UrbanReprError(f"parameter {name}: expected true or false, got {value!r}")


def convert(name: str, kind: str, value: Any) -> Any:
    """One raw value (a string from a command line, or a Python value) -> the field's type."""
    if kind == "int":
        return to_integer(name, value)
    if kind == "float":
        return to_float(name, value)
    if kind == "bool":
        return to_boolean(name, value)
    if kind == "optional":
        return None if is_empty(value) else str(value)
    return str(value)


def build_parser(prog: str, description: str, params_cls: type) -> argparse.ArgumentParser:
    """An argparse parser with one ``--<name>`` option per field; usage errors raise :class:`UrbanReprError`."""
    parser = _Parser(prog=prog, description=description, allow_abbrev=False)
    for field, kind in fields_of(params_cls):
        choices = field.metadata.get(_CHOICES)
        extra = f" (one of: {', '.join(choices)})" if choices else ""
        parser.add_argument(f"--{field.name}", default=field.default, metavar=kind.upper() if kind != "optional" else "TEXT",
                            help=f"{field.metadata.get(_HELP, '')}{extra} [default: {_show(field.default)}]")
    return parser


def parse(params_cls: type, argv: typing.Sequence[str] | None, prog: str, description: str = "") -> Any:
    """Parse ``argv`` into ``params_cls`` (types converted and choices checked)."""
    ns = build_parser(prog, description, params_cls).parse_args(argv)
    return make(params_cls, **vars(ns))


def make(params_cls: type, **values: Any) -> Any:
    """``params_cls(**values)`` with every value converted to its field's type and checked against its choices."""
    out = {}
    for field, kind in fields_of(params_cls):
        if field.name not in values:
            continue
        value = values[field.name]
        value = value if value is None and kind == "optional" else convert(field.name, kind, value)
        choices = field.metadata.get(_CHOICES)
        if choices and value not in choices:
            raise UrbanReprError(f"parameter {field.name}: expected one of {', '.join(choices)}, got {value!r}")
        out[field.name] = value
    unknown = set(values) - {f.name for f in dataclasses.fields(params_cls)}
    if unknown:
        raise UrbanReprError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    return params_cls(**out)


def logged(params: Any) -> dict[str, Any]:
    """Field values as logged on a run (``None`` as ``""``)."""
    return {k: ("" if v is None else v) for k, v in dataclasses.asdict(params).items()}


def mlproject_parameters(params_cls: type) -> dict[str, tuple[str, Any]]:
    """``{name: (MLflow type, default)}``: ints and floats are ``float``, everything else ``string``."""
    out = {}
    for field, kind in fields_of(params_cls):
        mtype = "float" if kind in ("int", "float") else "string"
        default = field.default
        if kind == "bool":
            default = "true" if default else "false"
        elif kind == "optional":
            default = "" if default is None else default
        out[field.name] = (mtype, default)
    return out


def unquoted(value: Any) -> Any:
    """A value as the stage received it.

    ``mlflow run`` logs each parameter shell-quoted as it passed it (``'/a b/t.parquet'``, ``''``);
    one quoted word is unquoted, anything else is returned as is.
    """
    if not isinstance(value, str) or not value.strip().startswith(("'", '"')):
        return value
    try:
        words = shlex.split(value)
    except ValueError:
        return value
    return words[0] if len(words) == 1 else ("" if not words else value)


def same_value(a: Any, b: Any) -> bool:
    """Two parameter values equal by meaning.

    For example ``"9" == "9.0"``, ``"true" == "True"``, ``"" == "''" == None``,
    ``"'/a b/t.parquet'" == "/a b/t.parquet"`` (the shell quoting ``mlflow run`` logs).
    """
    a, b = unquoted(a), unquoted(b)
    if is_empty(a) and is_empty(b):
        return True
    if is_empty(a) or is_empty(b):
        return False
    if str(a).strip().lower() == str(b).strip().lower():
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _show(value: Any) -> str:
    return '""' if value is None or value == "" else str(value)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one :class:`UrbanReprError` line (exit 2 through ``cli_main``)."""

    def error(self, message: str) -> typing.NoReturn:  # argparse API
        raise UrbanReprError(f"{self.prog}: {message}")
