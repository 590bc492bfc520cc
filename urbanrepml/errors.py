"""One exception type for bad input, and the CLI guard that turns it into one clear line.

Every check of user input raises :class:`UrbanReprError` with a message that says
what is wrong, where (file, parameter, cell) and how to fix it. Entry points wrap
their ``main`` with :func:`cli_main`, which prints ``error: <message>`` to stderr
and exits with status 2 instead of a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., object])

EXIT_BAD_INPUT = 2


class UrbanReprError(Exception):
    """Bad input or an unusable environment; the message is shown to the user as is."""


def cli_main(func: F) -> F:
    """Run ``func``; on :class:`UrbanReprError` print one line and exit with status 2.

    Set ``URBANREPML_TRACEBACK=1`` to see the full traceback instead.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UrbanReprError as exc:
            if os.environ.get("URBANREPML_TRACEBACK"):
                raise
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper  # type: ignore[return-value]
