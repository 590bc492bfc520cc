"""Study areas for tests: the study-area TOML writer, the bundled boxes, H3 cell sets near Porto Alegre.

:func:`write_study_area` is what the ``study_area_toml`` fixture calls; tests that need a TOML outside
a test function (module-scoped fixtures, ``tests/data/make_fixtures.py``) call it directly. Tests that
deliberately write broken TOML text keep writing text.
"""

from __future__ import annotations

import json
import numbers
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import h3
import numpy as np

from urbanrepml.areas import h3ops

AMSTERDAM_BBOX = [4.8906, 52.3657, 4.9037, 52.3737]  # the bundled amsterdam boundary: 16 res-9 cells
POA_BBOX = [-51.266, -30.113, -51.132, -29.988]  # the bundled porto_alegre boundary: 2093 res-9 cells
# A res-6 cell near Porto Alegre (the res-9 cells under its 1-ring: 7 * 343 = 2401 cells).
ROOT6 = h3.latlng_to_cell(-30.05, -51.2, 6)


def hexgrid_path() -> Path:
    """The Porto Alegre hexgrid (census and opportunity counts per res-9 cell) from the dataset registry."""
    from urbanrepml.datasets import fetch

    return fetch("porto_alegre") / "poa_hexgrid.csv"


def __getattr__(name: str):
    # ``HEXGRID`` is fetched when a test module imports it, not when conftest imports this module.
    if name == "HEXGRID":
        return hexgrid_path()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def toml_value(value) -> str:
    """A Python value as a TOML value: strings and paths quoted, lists as arrays, mappings as inline tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))  # a JSON string is a TOML basic string
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def study_area_text(name: str, boundary, *, sources: Mapping | None = None, targets: Mapping | None = None,
                    extra: str = "") -> str:
    """The text of a study-area TOML.

    Args:
        name: The area's name (``name = ...``).
        boundary: A lon/lat box ``[west, south, east, north]`` or a boundary file (relative to the TOML).
        sources: ``[sources]``: values that are mappings become sub-tables (``rasters`` -> ``[sources.rasters]``,
            written even when empty).
        targets: ``{target name: {field: value}}`` -> ``[targets.<name>]`` tables.
        extra: Raw text put right after ``boundary`` (top-level keys, or whole tables written by hand).
    """
    box = str(boundary) if isinstance(boundary, (str, Path)) else [*boundary]
    lines = [f"name = {toml_value(name)}", f"boundary = {toml_value(box)}"]
    if extra:
        lines.append(extra.rstrip("\n"))
    sources = dict(sources or {})
    plain = {k: v for k, v in sources.items() if not isinstance(v, Mapping)}
    if plain:
        lines += ["", "[sources]", *(f"{k} = {toml_value(v)}" for k, v in plain.items())]
    for key, table in sources.items():
        if isinstance(table, Mapping):
            lines += ["", f"[sources.{key}]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    for key, table in (targets or {}).items():
        lines += ["", f"[targets.{key}]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def write_study_area(path: Path, name: str, boundary, *, sources: Mapping | None = None, targets: Mapping | None = None,
                     extra: str = "") -> Path:
    """Write a study-area TOML at ``path`` (see :func:`study_area_text`); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(study_area_text(name, boundary, sources=sources, targets=targets, extra=extra))
    return path


def unique_area_name(prefix: str) -> str:
    """``<prefix>_<8 hex>``: an area name no other test uses (the session's tracking store is shared)."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def hexgrid_targets(columns=("jobs", "schools"), transform=None) -> dict:
    """``[targets.hexgrid]`` of the Porto Alegre hexgrid (default: log1p jobs and schools, two of the four)."""
    return {"hexgrid": {"path": hexgrid_path(), "id": "id", "columns": list(columns),
                        "transform": {"jobs": "log1p"} if transform is None else transform}}


def poa_area(folder: Path, name: str, targets: Mapping | None = None) -> str:
    """Porto Alegre under its own name (the session's tracking store is shared; names keep tests apart).

    Written to ``folder/<name>.toml``. Default targets: log1p jobs and schools from the bundled hexgrid
    (two of the four, to keep the tests short).
    """
    path = write_study_area(Path(folder) / f"{name}.toml", name, POA_BBOX,
                            targets=hexgrid_targets() if targets is None else targets)
    return str(path)


def cells_under_root6(res: int = 9, k: int = 1, drop_every: int = 0) -> np.ndarray:
    """The sorted res-``res`` cells under the ``k``-disk of :data:`ROOT6`, every ``drop_every``-th one left out."""
    roots = h3.grid_disk(ROOT6, k)
    cells = np.sort(h3ops.parse_cells([c for r in roots for c in h3.cell_to_children(r, res)]))
    if drop_every:
        cells = np.delete(cells, np.arange(0, len(cells), drop_every))
    return cells
