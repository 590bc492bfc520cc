"""Targets of a study area -> one DataFrame indexed by ``region_id`` at one resolution.

Three kinds of source (``[targets.<name>]`` in the study-area TOML, see :mod:`urbanrepml.config`):

- ``h3``: a CSV/parquet table with an H3 id column. Cells at the probe resolution
  are used as they are. Cells at a *finer* resolution are aggregated to their
  parents with the source's ``agg`` (mean / sum / count of child cells). Cells at
  a *coarser* resolution are an error: spreading a value over children needs an
  assumption the platform will not make silently.
- ``points``: lat/lon rows aggregated per cell with ``agg``. ``mean`` leaves cells
  without points missing; ``sum`` and ``count`` give 0 to the area's cells without
  points (the point layer is taken as complete over the area).
- ``polygons``: parquet with a WKB/GeoParquet ``geometry`` (EPSG:4326 unless a CRS
  is stored) or any file geopandas reads. Overlaid onto cell polygons in the local
  UTM CRS. ``agg = "mean"`` (default; intensive values such as ``g_woz``): the
  area-weighted mean over the covered part of the cell, for cells at least
  :data:`MIN_POLYGON_COVER` covered. ``agg = "sum"`` (extensive values such as
  counts): each polygon's value is shared out by the fraction of the polygon's
  area inside the cell.

Transforms (``log1p``) are applied after aggregation. A target is named
``<transform>_<column>`` (``log1p_population``) or just ``<column>``; when two
sources share a column name the source name is put in front.

Only cells with a value are probed for a target; :attr:`Targets.coverage` says
how many that is. Bad input (no overlap with the area, a constant target, a
missing column, log1p of negatives) raises :class:`UrbanReprError` with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.areas import Area, build_area, h3ops
from urbanrepml.config import StudyArea, TargetSpec, load_study_area
from urbanrepml.constants import REGION_ID
from urbanrepml.errors import UrbanReprError
from urbanrepml.tables import combined_digest, file_digest

#: polygon targets: a cell needs at least this fraction of its area covered by polygons with values
MIN_POLYGON_COVER = 0.5


@dataclass
class Targets:
    """``frame``: index ``region_id`` (the area's cells with at least one value), float64 columns, NaN = no value.

    ``specs``: target name -> (source name, column, transform, agg).
    ``coverage``: target name -> cells with a value; ``cells_in_area``: cells of the area at ``resolution``.
    ``counts``: targets that are untransformed non-negative integer counts (count metrics apply).
    """

    frame: pd.DataFrame
    resolution: int
    cells_in_area: int
    specs: dict[str, dict[str, str]] = field(default_factory=dict)
    coverage: dict[str, int] = field(default_factory=dict)
    counts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return list(self.frame.columns)


# ---------------------------------------------------------------------------------------------- readers


def targets_digest(spec: StudyArea) -> str:
    """One SHA-256 over the study area's target files (names ``target.<name>``, as the probe logs them).

    Probe records are keyed by it, so evidence on other target files is never compared.
    """
    return combined_digest({f"target.{name}": file_digest(t.path) for name, t in spec.targets.items()})


def _read_table_file(path: Path, what: str) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path)
        if suffix in (".tsv",):
            return pd.read_csv(path, sep="\t")
    except Exception as exc:  # corrupt file
        raise UrbanReprError(f"{what}: cannot read {path} ({type(exc).__name__}: {exc})") from None
    raise UrbanReprError(f"{what}: {path} is not a CSV or parquet file")


def _check_columns(df: pd.DataFrame, needed: list[str], path: Path, what: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise UrbanReprError(f"{what}: column(s) {missing} not in {path} (it has {list(df.columns)[:12]})")


def _numeric(df: pd.DataFrame, columns: tuple[str, ...], path: Path, what: str) -> pd.DataFrame:
    out = {}
    for c in columns:
        values = pd.to_numeric(df[c], errors="coerce")
        bad = values.isna() & df[c].notna()
        if bad.any():
            raise UrbanReprError(f"{what}: column {c!r} of {path} is not numeric, e.g. {list(df.loc[bad, c][:3])}")
        out[c] = values.astype(float)
    return pd.DataFrame(out, index=df.index)


def _aggregate(values: pd.DataFrame, keys: np.ndarray, agg: str) -> pd.DataFrame:
    """Group rows by ``keys`` (uint64 cells) with mean / sum / count (count = rows with a value)."""
    grouped = values.groupby(keys)
    if agg == "mean":
        out = grouped.mean()
    elif agg == "sum":
        out = grouped.sum(min_count=1)
    else:
        out = grouped.count().astype(float)
    out.index = out.index.astype(np.uint64)
    return out


def h3_values(spec: TargetSpec, resolution: int) -> tuple[pd.DataFrame, list[str]]:
    """An H3 table -> values per cell (uint64 index) at ``resolution``, with notes."""
    what = f"[targets.{spec.name}]"
    df = _read_table_file(spec.path, what)
    _check_columns(df, [spec.id, *spec.columns], spec.path, what)
    df = df[df[spec.id].notna()]
    cells = h3ops.parse_cells(df[spec.id].astype(str).str.lower().to_numpy(), what=f"{spec.path} column {spec.id!r}")
    values = _numeric(df, spec.columns, spec.path, what).reset_index(drop=True)
    res = np.unique(h3ops.cell_resolution(cells))
    notes = []
    if res.min() < resolution:
        raise UrbanReprError(
            f"{what}: {spec.path} has cells at resolution {int(res.min())}, coarser than the probe resolution "
            f"{resolution}; probe at resolution {int(res.min())} or give the targets at a finer resolution"
        )
    if res.max() > resolution or len(res) > 1:
        notes.append(f"{spec.name}: cells at resolution(s) {res.tolist()} aggregated to {resolution} by {spec.agg}")
        cells = h3ops.parent_cells(cells, resolution)
    return _aggregate(values, cells, spec.agg if len(notes) else "mean"), notes


def points_values(spec: TargetSpec, resolution: int, area_cells: np.ndarray) -> tuple[pd.DataFrame, list[str]]:
    """Lat/lon rows -> ``agg`` per cell (uint64 index); sum/count fill 0 on the area's cells without points."""
    what = f"[targets.{spec.name}]"
    df = _read_table_file(spec.path, what)
    _check_columns(df, [spec.lat, spec.lon, *spec.columns], spec.path, what)
    lat = pd.to_numeric(df[spec.lat], errors="coerce").to_numpy(float)
    lon = pd.to_numeric(df[spec.lon], errors="coerce").to_numpy(float)
    ok = np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    if not ok.any():
        raise UrbanReprError(f"{what}: no valid coordinates in columns {spec.lat!r}/{spec.lon!r} of {spec.path}")
    values = _numeric(df.loc[ok], spec.columns, spec.path, what).reset_index(drop=True)
    cells = h3ops.latlon_to_cells(lat[ok], lon[ok], resolution)
    out = _aggregate(values, cells, spec.agg)
    notes = [f"{spec.name}: {int(ok.sum())} points aggregated per cell by {spec.agg}"]
    if spec.agg in ("sum", "count"):
        inside = out.index[np.isin(out.index.to_numpy(np.uint64), area_cells)]
        if len(inside):  # only when the layer reaches the area at all; no overlap stays an error
            out = out.reindex(np.union1d(out.index.to_numpy(np.uint64), area_cells))
            out = out.fillna(0.0)
            notes.append(f"{spec.name}: cells without points count as 0 ({spec.agg})")
    return out, notes


def read_polygons(path: Path, what: str):
    """GeoParquet, parquet with a WKB ``geometry`` column, or any geopandas-readable file -> GeoDataFrame (EPSG:4326)."""
    import geopandas as gpd
    import shapely

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            try:
                gdf = gpd.read_parquet(path)
            except Exception:  # plain parquet with a WKB column
                df = pd.read_parquet(path)
                if "geometry" not in df.columns:
                    raise UrbanReprError(f"{what}: {path} has no 'geometry' column (WKB polygons expected)") from None
                geometry = shapely.from_wkb(df["geometry"].to_numpy())
                gdf = gpd.GeoDataFrame(df.drop(columns="geometry"), geometry=geometry, crs="EPSG:4326")
        else:
            gdf = gpd.read_file(path)
    except UrbanReprError:
        raise
    except Exception as exc:
        raise UrbanReprError(f"{what}: cannot read polygons from {path} ({type(exc).__name__}: {exc})") from None
    if gdf.crs is None:
        gdf = gdf.set_crs("EPSG:4326")
    gdf = gdf.to_crs("EPSG:4326")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    gdf = gdf[gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])]
    if len(gdf) == 0:
        raise UrbanReprError(f"{what}: {path} holds no polygons")
    gdf = gdf.copy()
    gdf["geometry"] = gdf.geometry.make_valid()
    return gdf


def polygon_values(spec: TargetSpec, resolution: int, area: Area) -> tuple[pd.DataFrame, list[str]]:
    """Polygons -> area-weighted values per cell (uint64 index); see the module docstring."""
    import geopandas as gpd

    what = f"[targets.{spec.name}]"
    polys = read_polygons(spec.path, what)
    _check_columns(polys, list(spec.columns), spec.path, what)
    values = _numeric(polys, spec.columns, spec.path, what)
    cells = area.cells(resolution)
    regions = area.regions_gdf(resolution)
    regions = gpd.GeoDataFrame({"_cell": cells}, geometry=regions.geometry.to_numpy(), crs="EPSG:4326")
    crs = regions.estimate_utm_crs()
    regions = regions.to_crs(crs)
    polys = gpd.GeoDataFrame(values.assign(_poly=np.arange(len(values))), geometry=polys.geometry.to_numpy(), crs="EPSG:4326").to_crs(crs)
    polys = polys[polys.intersects(regions.union_all().envelope)] if len(polys) else polys
    cell_area = pd.Series(regions.geometry.area.to_numpy(), index=cells)
    poly_area = polys.geometry.area.to_numpy()
    pieces = gpd.overlay(regions, polys, how="intersection", keep_geom_type=True) if len(polys) else polys.iloc[:0]
    if len(pieces) == 0:
        return pd.DataFrame(columns=list(spec.columns), dtype=float), []
    piece_area = pieces.geometry.area.to_numpy()
    keys = pieces["_cell"].to_numpy(np.uint64)
    out = {}
    for c in spec.columns:
        v = pieces[c].to_numpy(float)
        has = np.isfinite(v)
        if spec.agg == "sum":  # extensive: polygon value shared by area fraction
            share = piece_area / poly_area[pieces["_poly"].to_numpy()]
            s = pd.Series(np.where(has, v * share, 0.0)).groupby(keys).sum()
            n = pd.Series(has.astype(float)).groupby(keys).sum()
            out[c] = s.where(n > 0)
        else:  # intensive: area-weighted mean over the covered part, cells covered enough
            w = np.where(has, piece_area, 0.0)
            num = pd.Series(np.where(has, v, 0.0) * w).groupby(keys).sum()
            den = pd.Series(w).groupby(keys).sum()
            cover = den / cell_area.reindex(den.index).to_numpy()
            out[c] = (num / den).where((den > 0) & (cover >= MIN_POLYGON_COVER - 1e-9))
    frame = pd.DataFrame(out)
    frame.index = frame.index.astype(np.uint64)
    how = "area-weighted mean over the covered part" if spec.agg != "sum" else "area-shared sum"
    return frame, [f"{spec.name}: {len(polys)} polygons overlaid onto cells ({how}, UTM {crs.to_epsg()})"]


# ---------------------------------------------------------------------------------------------- assembly


def _apply_transform(values: pd.Series, how: str, where: str) -> pd.Series:
    if how in (None, "none"):
        return values
    if how == "log1p":
        neg = values < 0
        if neg.any():
            raise UrbanReprError(f"{where}: log1p of negative values in {int(neg.sum())} cell(s); drop the transform or fix the data")
        return np.log1p(values)
    raise UrbanReprError(f"{where}: unknown transform {how!r}")


def target_name(column: str, transform: str | None) -> str:
    return column if transform in (None, "none") else f"{transform}_{column}"


def _is_count(values: pd.Series) -> bool:
    v = values.dropna().to_numpy(float)
    return len(v) > 0 and bool((v >= 0).all() and np.allclose(v, np.round(v)))


def load_targets(
    study_area: str | Path | StudyArea,
    resolution: int,
    *,
    area: Area | None = None,
    sources: list[str] | None = None,
) -> Targets:
    """All targets of ``study_area`` (or the named ``sources``) on its cells at ``resolution``.

    Raises :class:`UrbanReprError` when the area defines no targets, a source has
    no value on any of the area's cells, or a target is constant over its cells.
    """
    spec = load_study_area(study_area)
    if not spec.targets:
        raise UrbanReprError(f"study area {spec.name!r} ({spec.source_file}) defines no [targets.<name>] to probe against")
    chosen = sources or list(spec.targets)
    unknown = [s for s in chosen if s not in spec.targets]
    if unknown:
        raise UrbanReprError(f"unknown target source(s) {unknown} for study area {spec.name!r}; it has {list(spec.targets)}")
    if area is None or resolution not in area.resolutions:
        area = build_area(spec, [resolution])
    area_cells = area.cells(resolution)
    columns: dict[str, pd.Series] = {}
    specs: dict[str, dict[str, str]] = {}
    notes: list[str] = []
    all_columns = [c for s in chosen for c in spec.targets[s].columns]
    for source in chosen:
        tspec = spec.targets[source]
        if tspec.kind == "h3":
            values, more = h3_values(tspec, resolution)
        elif tspec.kind == "points":
            values, more = points_values(tspec, resolution, area_cells)
        else:
            values, more = polygon_values(tspec, resolution, area)
        notes += more
        values = values[np.isin(values.index.to_numpy(np.uint64), area_cells)]
        if values.notna().sum().sum() == 0:
            raise UrbanReprError(
                f"[targets.{source}] {tspec.path.name} has no values on any of the {len(area_cells)} cells of study area "
                f"{spec.name!r} at resolution {resolution}; check that the file covers the area (and its CRS / lat-lon order)"
            )
        for column in tspec.columns:
            how = tspec.transform.get(column, "none")
            name = target_name(column, how)
            if all_columns.count(column) > 1:
                name = f"{source}_{name}"
            series = _apply_transform(values[column].dropna(), how, f"[targets.{source}] column {column!r}")
            if len(series) == 0:
                raise UrbanReprError(f"[targets.{source}] column {column!r} has no value on the cells of study area {spec.name!r}")
            if np.ptp(series.to_numpy()) == 0:
                raise UrbanReprError(
                    f"target {name!r} ([targets.{source}] in {tspec.path.name}) is constant ({series.iloc[0]:g}) on its "
                    f"{len(series)} cell(s); R² is undefined: drop the column or fix the data"
                )
            columns[name] = series
            specs[name] = {"source": source, "column": column, "transform": how, "agg": tspec.agg, "kind": tspec.kind}
    frame = pd.DataFrame(columns)
    frame = frame.sort_index()
    frame.index = pd.Index(h3ops.cells_to_str(frame.index.to_numpy(np.uint64)), name=REGION_ID)
    coverage = {n: int(frame[n].notna().sum()) for n in frame.columns}
    counts = [n for n in frame.columns if specs[n]["transform"] == "none" and _is_count(frame[n])]
    return Targets(frame=frame, resolution=resolution, cells_in_area=len(area_cells), specs=specs,
                   coverage=coverage, counts=counts, notes=notes)
