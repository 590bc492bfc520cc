"""Per-cell pixel statistics of GeoTIFF/COG rasters, vectorised (shared by ``raster`` and ``alphaearth``).

Each pixel belongs to the H3 cell that contains its centre. Pixel centres are
computed from the raster's affine transform, moved to lon/lat with pyproj when the
raster CRS is not EPSG:4326 (points are transformed, the raster is never warped),
mapped to cells with :func:`urbanrepml.areas.h3ops.latlon_to_cells`, and summed per
cell with ``np.bincount``. Rasters are read in row blocks over the area's extent
only, so memory is bounded by ``max_pixels`` per block, not by the raster size.

Statistics per band and cell: mean, population standard deviation (ddof=0) and
the number of valid pixels. Invalid pixels are the raster's nodata value (or a
``nodata`` override; ``fallback_nodata`` for integer rasters that declare none),
masked pixels and non-finite floats. Columns are ``<band>_<stat>``; bands sharing
a description get their 1-based band index appended (``red_1``, ``red_2``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.areas import Area, h3ops
from urbanrepml.constants import REGION_ID
from urbanrepml.errors import UrbanReprError

DEFAULT_MAX_PIXELS = 2_000_000   # per block, for few bands
DEFAULT_MAX_VALUES = 8_000_000   # per block over all bands (64-band AlphaEarth -> 125k pixels)
STATS = ("mean", "std", "count")


@dataclass
class CellAccumulator:
    """Running per-band sums over the cells of one area resolution (``cells`` sorted uint64)."""

    cells: np.ndarray
    n_bands: int
    band_names: list[str] = field(default_factory=list)
    with_std: bool = True
    sums: np.ndarray = field(init=False)
    sumsq: np.ndarray = field(init=False)
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.cells)
        self.sums = np.zeros((self.n_bands, n))
        self.sumsq = np.zeros((self.n_bands, n)) if self.with_std else np.zeros((self.n_bands, 0))
        self.counts = np.zeros((self.n_bands, n), dtype=np.int64)

    def add(self, positions: np.ndarray, values: np.ndarray, valid: np.ndarray) -> None:
        """Add pixels: ``positions`` (P,) cell positions, ``values``/``valid`` (bands, P).

        All bands at once: a sparse (cells x pixels) indicator matrix times the
        (pixels x bands) values, one product each for sums, squares and counts.
        """
        from scipy import sparse

        if len(positions) == 0:
            return
        n = len(self.cells)
        indicator = sparse.csr_matrix((np.ones(len(positions)), (positions, np.arange(len(positions)))),
                                      shape=(n, len(positions)))
        v = np.where(valid, values, 0.0)
        self.sums += (indicator @ v.T).T
        if self.with_std:
            self.sumsq += (indicator @ (v * v).T).T
        if self.n_bands > 1 and np.array_equal(valid.all(axis=0), valid.any(axis=0)):  # same mask in every band
            self.counts += np.rint(indicator @ valid[0].astype(np.float64)).astype(np.int64)[None, :]
        else:
            self.counts += np.rint((indicator @ valid.T.astype(np.float64)).T).astype(np.int64)

    def frame(self, stats: Sequence[str] = STATS, min_pixels: int = 1) -> pd.DataFrame:
        """Cells with at least ``min_pixels`` valid pixels (in every band) -> columns ``<band>_<stat>``.

        Index ``region_id``; columns ordered band by band, e.g. ``b1_mean, b1_std, b1_count``.
        """
        n_valid = self.counts.min(axis=0)
        keep = n_valid >= max(int(min_pixels), 1)
        counts = self.counts[:, keep].astype(np.float64)
        mean = self.sums[:, keep] / counts
        var = np.maximum(self.sumsq[:, keep] / counts - mean * mean, 0.0) if self.with_std else None
        columns: dict[str, np.ndarray] = {}
        for b, name in enumerate(unique_names(self.band_names)):
            for stat in stats:
                if stat == "std" and var is None:
                    raise ValueError("std needs an accumulator built with with_std=True")
                columns[f"{name}_{stat}"] = (mean if stat == "mean" else counts if stat == "count" else np.sqrt(var))[b]
        index = pd.Index(h3ops.cells_to_str(self.cells[keep]), name=REGION_ID)
        return pd.DataFrame(columns, index=index)


def unique_names(names: Sequence[str]) -> list[str]:
    """Band names made unique: every name shared by several bands gets ``_<1-based band index>`` appended."""
    names = [str(n) for n in names]
    seen = {n: names.count(n) for n in names}
    out = [f"{n}_{i + 1}" if seen[n] > 1 else n for i, n in enumerate(names)]
    if len(set(out)) < len(out):  # a suffixed name collides with another band's name: index every band
        out = [f"{n}_{i + 1}" for i, n in enumerate(names)]
    return out


def open_raster(path: Path):
    import rasterio
    from rasterio.errors import RasterioIOError

    if not Path(path).is_file():
        raise UrbanReprError(f"raster {path} does not exist")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise UrbanReprError(f"raster {path} is not a readable GeoTIFF/COG ({exc})") from None


def read_window(src, path: Path, window, *, masks: bool = False) -> np.ndarray:
    """``src.read(window=...)`` (or its masks); a truncated or corrupt file is one clear line naming it."""
    from rasterio.errors import RasterioError

    try:
        return src.read_masks(window=window) if masks else src.read(window=window)
    except RasterioError as exc:
        cause = exc.__cause__ or exc.__context__ or exc  # GDAL's own message ("IReadBlock failed at ...")
        reason = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(exc).__name__
        raise UrbanReprError(f"raster {path} is truncated or corrupt: rows {int(window.row_off)}-"
                             f"{int(window.row_off + window.height)} cannot be read ({reason}); "
                             "replace the file with a complete copy") from None


def band_names(path: str | Path) -> list[str]:
    """Band descriptions of a raster (``b1``, ``b2``... where a band has none)."""
    with open_raster(Path(path)) as src:
        return [d or f"b{i + 1}" for i, d in enumerate(src.descriptions)]


def area_bounds_lonlat(area: Area, resolution: int) -> tuple[float, float, float, float]:
    """Lon/lat box around the area's cells: the boundary box grown by two cell edge lengths."""
    import h3

    minx, miny, maxx, maxy = area.boundary.bounds
    margin_km = 2 * h3.average_hexagon_edge_length(resolution, unit="km")
    dlat = margin_km / 111.32
    dlon = margin_km / (111.32 * max(np.cos(np.radians(max(abs(miny), abs(maxy)))), 0.01))
    return (minx - dlon, max(miny - dlat, -90.0), maxx + dlon, min(maxy + dlat, 90.0))


def is_wgs84(crs) -> bool:
    from pyproj import CRS

    try:
        return CRS.from_user_input(crs).equals(CRS.from_epsg(4326), ignore_axis_order=True)
    except Exception:  # noqa: BLE001 - unusual CRS definitions: transform them
        return False


def accumulate_raster(
    path: str | Path,
    area: Area,
    resolution: int,
    acc: CellAccumulator,
    *,
    values: Callable[[np.ndarray], np.ndarray] | None = None,
    nodata: float | None = None,
    fallback_nodata: float | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> int:
    """Add the pixels of ``path`` that fall in the area's cells to ``acc``; return how many were added.

    ``values`` maps raw pixel values (any dtype) to float64 (e.g. AlphaEarth's
    dequantisation); ``nodata`` overrides the file's nodata value;
    ``fallback_nodata`` is used only for an integer raster that declares none
    (e.g. AlphaEarth's int8 ``-128``). A raster with
    no CRS or no overlap with the area raises :class:`UrbanReprError`.
    """
    from pyproj import Transformer
    from rasterio.enums import MaskFlags
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    path = Path(path)
    with open_raster(path) as src:
        if src.crs is None:
            raise UrbanReprError(
                f"raster {path} has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:4326 {path.name}) and retry"
            )
        if src.count != acc.n_bands:
            raise UrbanReprError(f"raster {path} has {src.count} band(s), expected {acc.n_bands}")
        lonlat_box = area_bounds_lonlat(area, resolution)
        wgs84 = is_wgs84(src.crs)
        box = lonlat_box if wgs84 else transform_bounds("EPSG:4326", src.crs, *lonlat_box, densify_pts=21)
        full = Window(0, 0, src.width, src.height)
        try:
            raw = from_bounds(*box, transform=src.transform)
            c0, r0 = np.floor(raw.col_off), np.floor(raw.row_off)
            c1, r1 = np.ceil(raw.col_off + raw.width), np.ceil(raw.row_off + raw.height)
            window = Window(c0, r0, c1 - c0, r1 - r0).intersection(full)
        except Exception:  # rasterio raises WindowError when they do not intersect
            window = None
        if window is None or window.width <= 0 or window.height <= 0:
            raise UrbanReprError(
                f"raster {path} (bounds {tuple(round(v, 5) for v in src.bounds)} in {src.crs.to_string()}) "
                f"does not overlap study area {area.name!r}"
            )
        to_lonlat = None if wgs84 else Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        is_float = np.issubdtype(np.dtype(src.dtypes[0]), np.floating)
        file_nodata = nodata if nodata is not None else src.nodata
        if file_nodata is None and not is_float:
            file_nodata = fallback_nodata
        internal_mask = any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in src.mask_flag_enums)
        col0, row0 = int(window.col_off), int(window.row_off)
        width, height = int(window.width), int(window.height)
        block_pixels = min(max_pixels, max(DEFAULT_MAX_VALUES // acc.n_bands, 1))
        rows_per_block = max(1, block_pixels // max(width, 1))
        a = src.transform
        cols = np.arange(col0, col0 + width, dtype=np.float64) + 0.5
        added = 0
        for r in range(row0, row0 + height, rows_per_block):
            h = min(rows_per_block, row0 + height - r)
            win = Window(col0, r, width, h)
            data = read_window(src, path, win)
            invalid = (data == file_nodata) if file_nodata is not None else np.zeros(data.shape, dtype=bool)
            if internal_mask:  # per-dataset or alpha masks (nodata is handled above)
                invalid |= read_window(src, path, win, masks=True) == 0
            rows = np.arange(r, r + h, dtype=np.float64) + 0.5
            cc, rr = np.meshgrid(cols, rows)
            x = a.a * cc + a.b * rr + a.c
            y = a.d * cc + a.e * rr + a.f
            if to_lonlat is not None:
                x, y = to_lonlat.transform(x, y)
            x, y = np.ravel(x), np.ravel(y)
            finite = np.isfinite(x) & np.isfinite(y)
            cells = np.zeros(len(x), dtype=np.uint64)
            cells[finite] = h3ops.latlon_to_cells(y[finite], x[finite], resolution)
            pos = h3ops.positions(acc.cells, cells)
            inside = (pos >= 0) & finite
            if not inside.any():
                continue
            all_inside = bool(inside.all())
            vals = data.reshape(acc.n_bands, -1)
            valid = ~invalid.reshape(acc.n_bands, -1)
            if not all_inside:
                vals, valid = vals[:, inside], valid[:, inside]
            vals = values(vals) if values is not None else vals.astype(np.float64)
            if is_float:
                valid &= np.isfinite(vals)
            acc.add(pos if all_inside else pos[inside], vals, valid)
            added += int(valid.any(axis=0).sum())
    return added


def raster_cell_stats(
    paths: Sequence[str | Path],
    area: Area,
    resolution: int,
    *,
    names: list[str] | None = None,
    values: Callable[[np.ndarray], np.ndarray] | None = None,
    nodata: float | None = None,
    fallback_nodata: float | None = None,
    stats: Sequence[str] = STATS,
    min_pixels: int = 1,
    what: str | None = None,
) -> pd.DataFrame:
    """Per-cell band statistics of one raster, or of several tiles of one raster (same bands), as a frame.

    Tiles are accumulated together, so a cell split across two tiles gets the
    statistics of all its pixels. Raises :class:`UrbanReprError` when no valid
    pixel falls inside the area.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise UrbanReprError("no raster files given")
    names = names or band_names(paths[0])
    acc = CellAccumulator(area.cells(resolution), len(names), list(names), with_std="std" in stats)
    for path in paths:
        accumulate_raster(path, area, resolution, acc, values=values, nodata=nodata, fallback_nodata=fallback_nodata)
    if acc.counts.sum() == 0:
        where = what or (str(paths[0]) if len(paths) == 1 else f"{len(paths)} raster tiles under {paths[0].parent}")
        raise UrbanReprError(f"{where}: no valid pixel falls inside study area {area.name!r} (all outside or nodata)")
    return acc.frame(stats, min_pixels)
