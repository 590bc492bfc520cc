"""Study area on the H3 hierarchy: cells per resolution, child->parent maps, neighbour graphs.

``build_area`` is the one way to get an :class:`Area`. The cell set of the finest
requested resolution is exactly SRAI's ``H3Regionalizer(resolution, buffer=True)``
set (every cell that intersects the boundary). Each coarser resolution holds its
own intersecting cells plus the parents of the next finer resolution's cells, so
every child has its parent and the hierarchy is closed.

Results are cached under ``<data dir>/cache/areas/<name>-<key>/`` where ``key``
hashes the boundary geometry and the resolutions; a changed boundary or request
builds anew. Inside :func:`cache_on_success` (every stage's run) the cache entry is
written only when the run succeeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import h3
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from urbanrepml.areas import h3ops, kernels
from urbanrepml.areas.boundary import geodesic_area_km2, polygon_parts_wkb, read_boundary
from urbanrepml.config import StudyArea, load_study_area
from urbanrepml.constants import REGION_ID
from urbanrepml.errors import UrbanReprError
from urbanrepml.paths import cache_dir

DEFAULT_RESOLUTIONS = (7, 8, 9, 10)
DEFAULT_MAX_CELLS = 5_000_000
CACHE_VERSION = 1


@dataclass(frozen=True)
class Area:
    """Cells, parent maps and 1-ring graphs of a study area at several resolutions.

    All arrays are numpy; cells are sorted ``uint64``, positions index into them.
    """

    name: str
    boundary: BaseGeometry
    resolutions: tuple[int, ...]
    _cells: dict[int, np.ndarray]
    _edges: dict[int, np.ndarray]
    _parents: dict[int, np.ndarray]
    cache_path: Path | None = None

    def _check(self, res: int) -> None:
        if res not in self._cells:
            raise UrbanReprError(f"resolution {res} was not built for area {self.name!r} (built: {list(self.resolutions)})")

    def cells(self, res: int) -> np.ndarray:
        """Sorted ``uint64`` cells at ``res``."""
        self._check(res)
        return self._cells[res]

    def region_ids(self, res: int) -> pd.Index:
        """Cells at ``res`` as an index of H3 strings named ``region_id`` (same order as :meth:`cells`)."""
        return pd.Index(h3ops.cells_to_str(self.cells(res)), name=REGION_ID)

    def edge_index(self, res: int) -> np.ndarray:
        """1-ring neighbour edges at ``res`` as an int64 (2, E) array of positions, both directions."""
        self._check(res)
        return self._edges[res]

    def parent_index(self, child_res: int, parent_res: int | None = None) -> np.ndarray:
        """For each cell at ``child_res``, the position of its parent among ``cells(parent_res)``.

        ``parent_res`` defaults to the next coarser built resolution.
        """
        self._check(child_res)
        coarser = [r for r in self.resolutions if r < child_res]
        if parent_res is None:
            if not coarser:
                raise UrbanReprError(f"resolution {child_res} is the coarsest built for {self.name!r}")
            parent_res = coarser[-1]
        self._check(parent_res)
        if parent_res >= child_res:
            raise UrbanReprError(f"parent resolution {parent_res} must be coarser than {child_res}")
        # Chain the stored next-coarser maps: child -> ... -> parent_res.
        idx = np.arange(len(self._cells[child_res]), dtype=np.int64)
        for res in reversed([r for r in self.resolutions if parent_res < r <= child_res]):
            idx = self._parents[res][idx]
        return idx

    def regions_gdf(self, res: int):
        """GeoDataFrame of cell polygons indexed by ``region_id`` (EPSG:4326), as SRAI returns."""
        import geopandas as gpd

        cells = self.cells(res)
        geometry = shapely.from_wkb(h3ops.cells_to_polygons_wkb(cells))
        return gpd.GeoDataFrame(index=self.region_ids(res), geometry=geometry, crs="EPSG:4326")

    @cached_property
    def counts(self) -> dict[int, dict[str, int]]:
        """Cells and undirected edges per resolution."""
        return {r: {"cells": int(len(self._cells[r])), "edges": int(self._edges[r].shape[1] // 2)} for r in self.resolutions}


def parse_resolutions(value: str | int | Sequence[int]) -> tuple[int, ...]:
    """``"7,8,9"`` / ``9`` / ``[7, 9]`` -> sorted unique resolutions, each within 0..15."""
    if isinstance(value, str):
        try:
            items = [int(v) for v in value.replace(" ", "").split(",") if v != ""]
        except ValueError:
            raise UrbanReprError(f"resolutions must be integers separated by commas, got {value!r}") from None
    elif isinstance(value, int):
        items = [value]
    else:
        items = [int(v) for v in value]
    if not items:
        raise UrbanReprError("no resolution given")
    bad = [r for r in items if not 0 <= r <= 15]
    if bad:
        raise UrbanReprError(f"H3 resolution must be between 0 and 15, got {bad}")
    return tuple(sorted(set(items)))


def estimate_cells(boundary: BaseGeometry, resolutions: Sequence[int]) -> int:
    """Rough cell count: area / mean hexagon area, plus a ring of border cells per resolution."""
    area = geodesic_area_km2(boundary)
    total = 0
    for res in resolutions:
        hex_area = h3.average_hexagon_area(res, unit="km^2")
        edge = h3.average_hexagon_edge_length(res, unit="km")
        perimeter_km = np.sqrt(area) * 4  # coarse perimeter guess; fine for a limit check
        total += int(area / hex_area + perimeter_km / (edge * 1.5) + 1)
    return total


def _cache_key(boundary: BaseGeometry, resolutions: Sequence[int]) -> str:
    digest = hashlib.sha256()
    digest.update(shapely.to_wkb(shapely.normalize(boundary), output_dimension=2))
    digest.update(json.dumps({"resolutions": list(resolutions), "version": CACHE_VERSION}).encode())
    return digest.hexdigest()[:16]


def _workers(resolutions: Sequence[int]) -> int:
    """Threads for the build: one per resolution, at most one per usable CPU core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        cores = os.cpu_count() or 1
    return max(1, min(len(resolutions), cores))


def _compute(boundary: BaseGeometry, resolutions: tuple[int, ...]) -> tuple[dict, dict, dict]:
    """Cells, 1-ring edges and next-coarser parent positions of every resolution.

    The work splits by resolution and runs in a thread pool, one thread per
    core (the H3 fills and the compiled kernels release the GIL): the fills are
    queued first, finest first; each resolution's cell set is closed under the
    next finer one as soon as both are known, and its graph is queued at once,
    built while coarser sets are still being filled or closed.
    """
    wkb = polygon_parts_wkb(boundary)
    finest_first = sorted(resolutions, reverse=True)
    cells: dict[int, np.ndarray] = {}
    parents: dict[int, np.ndarray] = {}
    with ThreadPoolExecutor(max_workers=_workers(resolutions), thread_name_prefix="area") as pool:
        filled = {res: pool.submit(h3ops.polyfill, wkb, res) for res in finest_first}
        if h3ops.use_compiled(estimate_cells(boundary, finest_first[:1])):
            kernels.warm_up()  # the compiled kernels' start-up, while the fills run
        pending = {}
        for finer, res in zip([None, *finest_first], finest_first, strict=False):
            own = filled[res].result()
            if finer is None:
                cells[res] = own
            else:  # add the parents of the next finer resolution's cells, so every child has its parent
                cells[res], parents[finer] = h3ops.merge_parents(own, cells[finer], res)
            pending[res] = pool.submit(h3ops.neighbour_edges, cells[res])
        edges = {res: pending[res].result() for res in resolutions}
    return cells, edges, parents


def _save(path: Path, area: Area) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
    try:
        arrays = {}
        for res in area.resolutions:
            arrays[f"cells_{res}"] = area._cells[res]
            arrays[f"edges_{res}"] = area._edges[res]
            if res in area._parents:
                arrays[f"parents_{res}"] = area._parents[res]
        np.savez(tmp / "area.npz", **arrays)
        (tmp / "boundary.wkt").write_text(area.boundary.wkt)
        meta = {"name": area.name, "resolutions": list(area.resolutions), "counts": area.counts}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.replace(tmp, path)  # atomic: readers never see a half-written cache
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load(path: Path, name: str, boundary: BaseGeometry, resolutions: tuple[int, ...]) -> Area:
    with np.load(path / "area.npz") as data:
        cells = {r: data[f"cells_{r}"] for r in resolutions}
        edges = {r: data[f"edges_{r}"] for r in resolutions}
        parents = {r: data[f"parents_{r}"] for r in resolutions if f"parents_{r}" in data}
    return Area(name, boundary, resolutions, cells, edges, parents, cache_path=path)


def build_area(
    study_area: str | Path | StudyArea,
    resolutions: str | int | Sequence[int] = DEFAULT_RESOLUTIONS,
    *,
    max_cells: int | None = None,
    use_cache: bool = True,
) -> Area:
    """Build (or load from cache) the H3 cells, parent maps and graphs of a study area.

    Args:
        study_area: bundled name, path to a study-area TOML, or a parsed :class:`StudyArea`.
        resolutions: resolutions to build (``"7,8,9,10"``, ``9`` or a list).
        max_cells: refuse requests whose estimated total cell count exceeds this
            (default ``$URBANREPML_MAX_CELLS`` or 5,000,000).
        use_cache: read/write the on-disk cache.
    """
    spec = load_study_area(study_area)
    res = parse_resolutions(resolutions)
    boundary = read_boundary(spec.boundary)
    limit = int(max_cells if max_cells is not None else os.environ.get("URBANREPML_MAX_CELLS", DEFAULT_MAX_CELLS))
    estimate = estimate_cells(boundary, res)
    if estimate > limit:
        raise UrbanReprError(
            f"area {spec.name!r} at resolutions {list(res)} would hold about {estimate:,} cells, over the limit "
            f"of {limit:,}; use coarser resolutions or raise the limit (max_cells / URBANREPML_MAX_CELLS)"
        )
    path = cache_dir() / "areas" / f"{spec.name}-{_cache_key(boundary, res)}"
    if use_cache and (path / "area.npz").is_file():
        return _load(path, spec.name, boundary, res)
    if use_cache and _PENDING:
        for pending_path, pending in _PENDING[-1]:
            if pending_path == path:
                return pending
    cells, edges, parents = _compute(boundary, res)
    empty = [r for r in res if len(cells[r]) == 0]
    if empty:
        raise UrbanReprError(f"area {spec.name!r} has no H3 cells at resolution(s) {empty}")
    area = Area(spec.name, boundary, res, cells, edges, parents)
    if use_cache:
        if _PENDING:  # inside cache_on_success(): written when the whole block succeeds
            _PENDING[-1].append((path, area))
            return area
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(path, area)
        area = Area(spec.name, boundary, res, cells, edges, parents, cache_path=path)
    return area


_PENDING: list[list[tuple[Path, Area]]] = []


@contextlib.contextmanager
def cache_on_success() -> Iterator[None]:
    """Areas built inside the block are cached only when the block succeeds (a failed run leaves no cache entry).

    Nested blocks join the outermost one.
    """
    if _PENDING:
        yield
        return
    _PENDING.append([])
    try:
        yield
        pending = _PENDING[-1]
    finally:
        _PENDING.pop()
    for path, area in pending:
        if (path / "area.npz").is_file():
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _save(path, area)
        except OSError as exc:  # the run succeeded; only the cache is missing (the next run builds it again)
            print(f"warning: area {area.name!r} not cached in {path.parent} ({exc.strerror or exc})", file=sys.stderr)
