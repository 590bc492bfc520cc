"""Image tiles per H3 cell: from an orthophoto GeoTIFF/COG or from a folder of ``<region_id>`` images.

- :func:`iter_orthophoto_tiles` / :func:`tiles_from_orthophoto`: for each cell a square
  ``tile_px`` x ``tile_px`` tile centred on the cell centroid, side = 2 x the average H3 edge
  length of the resolution, sampled from the raster at that ground resolution (any CRS).
- :func:`tiles_from_folder`: tiles named ``<region_id>.png`` / ``.jpg`` / ``.tif``, resized.

Tiles come back as ``(positions of kept cells, (N, 3, tile_px, tile_px) float32 in [0, 1])``;
:func:`normalise` applies the ImageNet mean/std.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.areas import Area, h3ops
from urbanrepml.errors import UrbanReprError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
TILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MIN_VALID_FRACTION = 0.5


def _unit_range(pixels: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """(lo, hi) that map raw pixels to [0, 1]: 0..255 for uint8, else the 2nd-98th percentile of valid pixels."""
    if pixels.dtype == np.uint8:
        return 0.0, 255.0
    vals = pixels[valid] if valid.any() else pixels.ravel()
    if vals.size > 1_000_000:  # a fixed subsample is plenty for two percentiles
        vals = vals[np.random.default_rng(0).choice(vals.size, 1_000_000, replace=False)]
    lo, hi = np.percentile(vals, [2, 98]) if vals.size else (0.0, 1.0)
    return float(lo), float(max(hi, lo + 1e-9))


def _scale(pixels: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((pixels.astype(np.float32) - lo) / (hi - lo), 0, 1)


def _to_unit(pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Raw pixels -> [0, 1] float32 (uint8 / 255, else 2-98 percentile stretch over valid pixels)."""
    return _scale(pixels, *_unit_range(pixels, valid))


def _rgb(bands: np.ndarray) -> np.ndarray:
    """(B, ...) -> (3, ...): first three bands, or one band repeated."""
    if bands.shape[0] >= 3:
        return bands[:3]
    return np.repeat(bands[:1], 3, axis=0)


def normalise(tiles: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> ImageNet-normalised float32."""
    return ((tiles - IMAGENET_MEAN[None, :, None, None]) / IMAGENET_STD[None, :, None, None]).astype(np.float32)


def tile_side_deg(resolution: int, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tile side in degrees (lon, lat) per cell: 2 x average edge length of the resolution."""
    import h3

    side_km = 2 * h3.average_hexagon_edge_length(resolution, unit="km")
    dlat = np.full(len(lat), side_km / 111.32)
    dlon = side_km / (111.32 * np.maximum(np.cos(np.radians(lat)), 0.01))
    return dlon, dlat


def tiles_from_orthophoto(path: Path, area: Area, resolution: int, tile_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut one tile per area cell from a GeoTIFF -> (positions of kept cells, (N, 3, tile_px, tile_px) in [0, 1])."""
    chunks = list(iter_orthophoto_tiles(path, area, resolution, tile_px))
    if not chunks:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 3, tile_px, tile_px), dtype=np.float32)
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def iter_orthophoto_tiles(path: Path, area: Area, resolution: int, tile_px: int, chunk_values: int = 4_000_000):
    """Like :func:`tiles_from_orthophoto`, in chunks of about ``chunk_values`` sample points (bounded memory)."""
    import rasterio
    from pyproj import Transformer
    from rasterio.enums import Resampling
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    from urbanrepml.sources.rasterstats import area_bounds_lonlat, is_wgs84, open_raster

    cells = area.cells(resolution)
    with open_raster(path) as src:
        if src.crs is None:
            raise UrbanReprError(f"imagery {path} has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:4326 {path.name}) and retry")
        wgs84 = is_wgs84(src.crs)
        box = area_bounds_lonlat(area, resolution)
        if not wgs84:
            box = transform_bounds("EPSG:4326", src.crs, *box, densify_pts=21)
        raw = from_bounds(*box, transform=src.transform)
        c0, r0 = np.floor(raw.col_off), np.floor(raw.row_off)
        c1, r1 = np.ceil(raw.col_off + raw.width), np.ceil(raw.row_off + raw.height)
        try:
            window = Window(c0, r0, c1 - c0, r1 - r0).intersection(Window(0, 0, src.width, src.height))
        except Exception:  # noqa: BLE001 - rasterio WindowError: no intersection
            window = None
        if window is None or window.width <= 0 or window.height <= 0:
            raise UrbanReprError(f"imagery {path} does not overlap study area {area.name!r}")
        lat, lon = h3ops.cell_centroids(cells)
        dlon, dlat = tile_side_deg(resolution, lat)
        # Read at about the tile's ground resolution (never finer than the file).
        mid = np.array([[lon.mean()], [lat.mean()]])
        to_src = None if wgs84 else Transformer.from_crs("EPSG:4326", src.crs, always_xy=True)
        if to_src is not None:
            x0, y0 = to_src.transform(mid[0] - dlon.mean() / 2, mid[1])
            x1, y1 = to_src.transform(mid[0] + dlon.mean() / 2, mid[1])
            tile_w_src = float(np.hypot(x1 - x0, y1 - y0)[0])
        else:
            tile_w_src = float(dlon.mean())
        step = max(tile_w_src / tile_px / abs(src.transform.a), 1.0)
        out_w = max(1, int(round(window.width / step)))
        out_h = max(1, int(round(window.height / step)))
        data = src.read(window=window, out_shape=(src.count, out_h, out_w), masked=True,
                        resampling=Resampling.average if step > 1 else Resampling.nearest)
        valid_px = ~np.ma.getmaskarray(data).any(axis=0)
        if src.nodata is not None:
            valid_px &= ~(np.ma.getdata(data) == src.nodata).any(axis=0)
        pixels = _rgb(np.ma.getdata(data))  # raw dtype; scaled to [0, 1] per chunk below
        lo, hi = _unit_range(pixels, np.broadcast_to(valid_px, pixels.shape))
        del data
        win_transform = src.window_transform(window) * rasterio.Affine.scale(window.width / out_w, window.height / out_h)
    # Tile sample points: (N, tile_px, tile_px) lon/lat grid of pixel centres around each centroid.
    frac = (np.arange(tile_px) + 0.5) / tile_px - 0.5
    per_chunk = max(1, chunk_values // (tile_px * tile_px))
    inv = ~win_transform
    for s in range(0, len(cells), per_chunk):
        sl = slice(s, s + per_chunk)
        x = lon[sl, None, None] + dlon[sl, None, None] * frac[None, None, :]
        y = lat[sl, None, None] - dlat[sl, None, None] * frac[None, :, None]
        x, y = np.broadcast_arrays(x, y)
        if to_src is not None:
            x, y = to_src.transform(x, y)
        col = np.floor(inv.a * x + inv.b * y + inv.c).astype(np.int64)
        row = np.floor(inv.d * x + inv.e * y + inv.f).astype(np.int64)
        inside = (col >= 0) & (col < out_w) & (row >= 0) & (row < out_h)
        col_c, row_c = np.clip(col, 0, out_w - 1), np.clip(row, 0, out_h - 1)
        ok = inside & valid_px[row_c, col_c]
        good = ok.reshape(len(ok), -1).mean(axis=1) >= MIN_VALID_FRACTION
        if not good.any():
            continue
        tiles = _scale(pixels[:, row_c[good], col_c[good]], lo, hi)      # (3, n, px, px)
        tiles = np.where(ok[good][None], tiles, 0.0).transpose(1, 0, 2, 3)
        yield np.arange(len(cells))[sl][good], np.ascontiguousarray(tiles, dtype=np.float32)


def tiles_from_folder(folder: Path, area: Area, resolution: int, tile_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Tiles named ``<region_id>.<png|jpg|tif>`` -> (positions of the area cells found, (N, 3, px, px) in [0, 1])."""
    from PIL import Image

    files = tile_files(folder)
    ids = pd.Index(area.region_ids(resolution))
    pos, tiles = [], []
    for f in files:
        p = ids.get_indexer([f.stem.lower()])[0]
        if p < 0:
            continue
        try:
            if f.suffix.lower() in (".tif", ".tiff"):
                import rasterio

                with rasterio.open(f) as src:
                    arr = src.read()
                arr = _to_unit(arr, np.ones(arr.shape, bool))
                img = np.stack([np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize((tile_px, tile_px), Image.BILINEAR))
                                for a in _rgb(arr)]) / 255.0
            else:
                with Image.open(f) as im:
                    img = np.asarray(im.convert("RGB").resize((tile_px, tile_px), Image.BILINEAR)).transpose(2, 0, 1) / 255.0
        except Exception as exc:  # noqa: BLE001 - PIL/rasterio raise many types
            raise UrbanReprError(f"image tile {f} is unreadable ({type(exc).__name__}: {exc})") from None
        pos.append(p)
        tiles.append(img.astype(np.float32))
    if not pos:
        raise UrbanReprError(f"no tile in {folder} is named after a cell of {area.name!r} at resolution {resolution} (<region_id>.png)")
    return np.array(pos), np.stack(tiles)


def tile_files(folder: Path) -> list[Path]:
    """Image files of a tile folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in TILE_SUFFIXES and p.is_file())
