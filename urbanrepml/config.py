"""Study-area definition files (TOML).

A study area file looks like::

    name = "porto_alegre"
    boundary = [-51.266, -30.113, -51.132, -29.988]   # or "boundary.geojson"

    [sources]
    osm = "poa_osm.pbf"
    gtfs = ["poa_eptc.zip", "poa_trensurb.zip"]
    images = "tiles/"                                  # optional
    [sources.rasters]
    elevation = "poa_elevation.tif"

    [targets.hexgrid]                                  # an H3 table
    path = "poa_hexgrid.csv"
    id = "id"
    columns = ["population", "jobs", "schools", "healthcare"]
    transform = { population = "log1p", jobs = "log1p" }

    [targets.listings]                                 # points, aggregated per cell
    path = "listings.csv"
    lat = "latitude"
    lon = "longitude"
    columns = ["price"]
    agg = "mean"                                       # mean | sum | count

    [targets.buurten]                                  # polygons, area-weighted onto cells
    path = "buurten.parquet"
    columns = ["g_woz"]

Relative paths resolve against the TOML file's folder. A value ``"dataset:<name>/<file>"``
names a file of a registered dataset (:mod:`urbanrepml.datasets`) instead: it resolves, when
the file is loaded, to ``fetch_file(<name>, <file>)``, the same file as ``fetch(<name>) / <file>``
(from the local mirror, the cache, or a download, checked by sha256); ``"dataset:<name>"``
alone names the dataset's folder. The bundled study areas name all their data this way,
for example ``osm = "dataset:porto_alegre/poa_osm.pbf"``.

``load_study_area`` takes either a bundled name (a folder under ``data/demo/``) or a path
to such a file.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from urbanrepml.errors import UrbanReprError
from urbanrepml.paths import DEMO_DIR

DEFAULT_STUDY_AREA = "porto_alegre"
TRANSFORMS = ("log1p", "none")
POINT_AGGREGATIONS = ("mean", "sum", "count")
DATASET_PREFIX = "dataset:"
# The keys each table of the file may hold; anything else (a typo such as `osmm` or `[source]`) is refused.
TOP_KEYS = ("name", "boundary", "sources", "targets")
SOURCE_KEYS = ("osm", "gtfs", "rasters", "images")
TARGET_KEYS = ("path", "columns", "id", "lat", "lon", "agg", "transform")

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class TargetSpec:
    """One target source. ``kind`` is ``h3`` (has ``id``), ``points`` (``lat``/``lon``) or ``polygons``."""

    name: str
    path: Path
    columns: tuple[str, ...]
    kind: str
    id: str | None = None
    lat: str | None = None
    lon: str | None = None
    agg: str = "mean"
    transform: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sources:
    osm: Path | None = None
    gtfs: tuple[Path, ...] = ()
    rasters: dict[str, Path] = field(default_factory=dict)
    images: Path | None = None


@dataclass(frozen=True)
class StudyArea:
    """A parsed and checked study-area file."""

    name: str
    boundary: Path | BBox
    sources: Sources
    targets: dict[str, TargetSpec]
    source_file: Path

    @property
    def folder(self) -> Path:
        return self.source_file.parent


def bundled_study_areas() -> list[str]:
    """Names of the study areas shipped under ``data/demo/``."""
    return sorted(p.parent.name for p in DEMO_DIR.glob("*/study_area.toml"))


def resolve_study_area_file(name_or_path: str | Path) -> Path:
    """A bundled name (``porto_alegre``) or a path to a TOML file -> the TOML path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.is_file():
        if not candidate.is_file():
            raise UrbanReprError(f"study area file {candidate} does not exist")
        return candidate.resolve()
    bundled = DEMO_DIR / str(name_or_path) / "study_area.toml"
    if bundled.is_file():
        return bundled
    raise UrbanReprError(
        f"unknown study area {name_or_path!r}: not a TOML file and not one of the bundled areas "
        f"{bundled_study_areas()}"
    )


def load_study_area(name_or_path: str | Path | StudyArea = DEFAULT_STUDY_AREA) -> StudyArea:
    """Read and check a study area definition; every path in it must exist."""
    if isinstance(name_or_path, StudyArea):
        return name_or_path
    path = resolve_study_area_file(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UrbanReprError(f"{path}: not valid TOML ({exc})") from None
    return _parse(raw, path)


def _known_keys(raw: dict, known: tuple[str, ...], where: str, path: Path) -> None:
    """Refuse a key that is not in ``known`` with one line naming it, a close match and the known keys."""
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UrbanReprError(f"{path}: unknown key '{key}' in {where}{hint}; known keys: {', '.join(known)}")


def _require(raw: dict, key: str, where: str, path: Path):
    if key not in raw:
        raise UrbanReprError(f"{path}: missing key '{key}' in {where}")
    return raw[key]


def _table(raw: dict, key: str, where: str, path: Path) -> dict:
    """The sub-table ``key`` of ``raw`` (empty when absent); anything but a table is an error."""
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise UrbanReprError(f"{path}: '{key}' in {where} must be a table ([{key}] or {{ ... }}), got {type(value).__name__}")
    return value


def _dataset_file(value: str, key: str, path: Path) -> Path:
    """``dataset:<name>/<file>`` -> that file, verified and fetched if needed; ``dataset:<name>`` -> its folder."""
    name, _, inner = value[len(DATASET_PREFIX):].partition("/")
    if not name:
        raise UrbanReprError(f"{path}: '{key}' = {value!r} names no dataset; write \"{DATASET_PREFIX}<name>/<file>\" "
                             "(names: `python -m urbanrepml datasets list`)")
    # The one place the contract layer reaches the registry, and only when a file names a dataset.
    from urbanrepml.datasets import fetch, fetch_file

    try:
        return fetch_file(name, inner) if inner else fetch(name)
    except UrbanReprError as exc:
        raise UrbanReprError(f"{path}: '{key}' = {value!r}: {exc}") from None


def _existing(value, key: str, path: Path, *, folder_ok: bool = False) -> Path:
    """The path ``key`` names (relative to the TOML file, or a dataset file).

    It must exist, and be a file unless ``folder_ok``.
    """
    if not isinstance(value, str) or not value:
        raise UrbanReprError(f"{path}: '{key}' must be a path string, got {value!r}")
    if value.startswith(DATASET_PREFIX):
        resolved = _dataset_file(value, key, path)
    else:
        resolved = (path.parent / value).resolve()
        if not resolved.exists():
            raise UrbanReprError(f"{path}: '{key}' points to {resolved}, which does not exist")
    if resolved.is_dir() and not folder_ok:
        raise UrbanReprError(f"{path}: '{key}' points to {resolved}, which is a folder; name the file in it")
    return resolved


def _parse_bbox(value, path: Path) -> BBox:
    if len(value) != 4 or not all(isinstance(v, (int, float)) for v in value):
        raise UrbanReprError(f"{path}: 'boundary' as a list must be [minx, miny, maxx, maxy] in lon/lat")
    minx, miny, maxx, maxy = (float(v) for v in value)
    if not (-180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90):
        raise UrbanReprError(
            f"{path}: 'boundary' {list(value)} is not a lon/lat box with minx < maxx and miny < maxy"
        )
    return (minx, miny, maxx, maxy)


def _parse_target(name: str, raw: dict, path: Path) -> TargetSpec:
    where = f"[targets.{name}]"
    _known_keys(raw, TARGET_KEYS, where, path)
    target_path = _existing(_require(raw, "path", where, path), f"targets.{name}.path", path)
    columns = _require(raw, "columns", where, path)
    if isinstance(columns, str):
        columns = [columns]
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise UrbanReprError(f"{path}: {where} 'columns' must be a non-empty list of column names")
    transform = _table(raw, "transform", where, path)
    for column, how in transform.items():
        if column not in columns:
            raise UrbanReprError(f"{path}: {where} transform names column {column!r}, not in 'columns'")
        if how not in TRANSFORMS:
            raise UrbanReprError(f"{path}: {where} transform {how!r} for {column!r}; use one of {TRANSFORMS}")
    if "id" in raw:
        kind = "h3"
    elif "lat" in raw or "lon" in raw:
        _require(raw, "lat", where, path)
        _require(raw, "lon", where, path)
        kind = "points"
    else:
        kind = "polygons"
    agg = raw.get("agg", "mean")
    if agg not in POINT_AGGREGATIONS:
        raise UrbanReprError(f"{path}: {where} agg {agg!r}; use one of {POINT_AGGREGATIONS}")
    return TargetSpec(
        name=name,
        path=target_path,
        columns=tuple(columns),
        kind=kind,
        id=raw.get("id"),
        lat=raw.get("lat"),
        lon=raw.get("lon"),
        agg=agg,
        transform=transform,
    )


def _parse(raw: dict, path: Path) -> StudyArea:
    _known_keys(raw, TOP_KEYS, "the top level", path)
    name = _require(raw, "name", "the top level", path)
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise UrbanReprError(f"{path}: 'name' must be letters, digits, '_' or '-', got {name!r}")
    boundary_raw = _require(raw, "boundary", "the top level", path)
    if isinstance(boundary_raw, list):
        boundary: Path | BBox = _parse_bbox(boundary_raw, path)
    else:
        boundary = _existing(boundary_raw, "boundary", path, folder_ok=str(boundary_raw).endswith(".gdb"))

    src = _table(raw, "sources", "the top level", path)
    _known_keys(src, SOURCE_KEYS, "[sources]", path)
    gtfs = src.get("gtfs", [])
    if isinstance(gtfs, str):
        gtfs = [gtfs]
    if not isinstance(gtfs, list):
        raise UrbanReprError(f"{path}: 'sources.gtfs' must be a path or a list of paths")
    sources = Sources(
        osm=_existing(src["osm"], "sources.osm", path) if "osm" in src else None,
        gtfs=tuple(_existing(g, "sources.gtfs", path) for g in gtfs),
        rasters={k: _existing(v, f"sources.rasters.{k}", path) for k, v in _table(src, "rasters", "[sources]", path).items()},
        images=_existing(src["images"], "sources.images", path, folder_ok=True) if "images" in src else None,
    )
    targets_raw = _table(raw, "targets", "the top level", path)
    targets = {k: _parse_target(k, _table(targets_raw, k, "[targets]", path), path) for k in targets_raw}
    return StudyArea(name=name, boundary=boundary, sources=sources, targets=targets, source_file=path)
