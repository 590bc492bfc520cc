"""The README's sections, for tests that check its examples."""

from __future__ import annotations

from tests.support import REPO


def quick_start() -> str:
    """The text of the README's "Quick start" section."""
    readme = (REPO / "README.md").read_text()
    return readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
