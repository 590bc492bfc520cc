"""H3 cell ids at the project's edges: strings <-> ``uint64``, validation, resolution.

The table contract validates every ``region_id`` with these; :mod:`urbanrepml.areas.h3ops`
builds its vectorised operations on them.
"""

from __future__ import annotations

from collections.abc import Iterable

import h3ronpy
import numpy as np
import pandas as pd
import pyarrow as pa

from urbanrepml.errors import UrbanReprError

_RES_SHIFT = np.uint64(52)
_RES_MASK = np.uint64(0xF) << _RES_SHIFT


def _to_numpy_u64(arr) -> np.ndarray:
    return np.asarray(pa.array(arr).to_numpy(zero_copy_only=False), dtype=np.uint64)


def cells_to_str(cells: np.ndarray) -> np.ndarray:
    """uint64 cells -> object array of H3 strings."""
    if len(cells) == 0:
        return np.array([], dtype=object)
    return np.asarray(pa.array(h3ronpy.cells_to_string(pa.array(cells, pa.uint64()))).to_numpy(zero_copy_only=False), dtype=object)


def parse_cells(ids: Iterable[str] | pd.Index | np.ndarray, *, what: str = "region_id") -> np.ndarray:
    """H3 strings -> uint64 cells; any invalid id raises :class:`UrbanReprError` naming examples."""
    values = pd.Index(ids)
    if len(values) == 0:
        return np.array([], dtype=np.uint64)
    if values.dtype.kind in "ui":
        cells = values.to_numpy(dtype=np.uint64)
        valid = pa.array(h3ronpy.cells_valid(pa.array(cells, pa.uint64()), booleanarray=True)).to_numpy(zero_copy_only=False)
    else:
        strings = pa.array(values.astype(str).to_numpy(), pa.string())
        parsed = pa.array(h3ronpy.cells_parse(strings, set_failing_to_invalid=True))
        valid = ~np.asarray(parsed.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        cells = np.asarray(parsed.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.uint64)
        if valid.all():
            # h3ronpy accepts some malformed strings; a round trip catches them.
            valid = cells_to_str(cells) == np.char.lower(values.astype(str).to_numpy().astype(str)).astype(object)
    if not valid.all():
        bad = list(values[~valid][:3])
        raise UrbanReprError(f"{(~valid).sum()} invalid H3 cell id(s) in {what}, e.g. {bad}")
    return cells


def cell_resolution(cells: np.ndarray) -> np.ndarray:
    """Resolution of each cell (int8)."""
    return ((np.asarray(cells, dtype=np.uint64) & _RES_MASK) >> _RES_SHIFT).astype(np.int8)
