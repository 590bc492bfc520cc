"""GeoTIFF scenes cut into square chips: one index row per chip (the scene's path and a pixel window).

For each scene (any CRS, read once):

- chips of ``chip_px`` x ``chip_px`` pixels start every ``stride_px`` pixels from the upper-left
  corner (chips that would cross the right or bottom edge are not cut);
- a pixel is nodata when it is masked in every band (the file's nodata value or internal mask);
  chips whose nodata share exceeds ``max_nodata`` are dropped (counted), found for all chips at
  once with a summed-area table;
- each chip's centre is mapped through the scene's transform and reprojected to lat/lon with pyproj;
- ``captured_at``: the acquisition date in the file name (the last ``yyyymmdd`` in it, as in
  NAIP's ``m_4709963_se_14_1_20190815.tif``), else ``date``;
- ``group`` is the scene (file stem); ``identity`` is the chip's grid position (``r<row>_c<col>``)
  on the chip grid of the first scene, every other scene's chips snapped to it (reprojected when
  its CRS differs), so the same place in several scenes shares an identity.

Errors (one line each): no scene, a scene without CRS, a chip larger than a scene, a scene that
holds only nodata.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.errors import UrbanReprError
from urbanrepml.images import format_windows, index_frame
from urbanrepml.sources.imagery.base import BuildResult

SCENE_SUFFIXES = (".tif", ".tiff")
_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)")


@dataclass
class SceneChips:
    """The chips kept from one scene (pixel offsets, centres in lat/lon and in the reference grid)."""

    path: Path
    col_off: np.ndarray
    row_off: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    grid_row: np.ndarray
    grid_col: np.ndarray
    n_cut: int
    captured_at: pd.Timestamp | None


def scene_files(source: Path) -> list[Path]:
    """A GeoTIFF, or the GeoTIFFs of a folder (sorted by name); one clear error when there is none."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise UrbanReprError(f"scenes {source} do not exist; pass a GeoTIFF or a folder of them")
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in SCENE_SUFFIXES)
    if not files:
        raise UrbanReprError(f"no GeoTIFF scene (.tif, .tiff) in {source}")
    return files


def date_from_name(path: Path) -> pd.Timestamp | None:
    """The last ``yyyymmdd`` date in a file name (``m_..._20190815.tif`` -> 2019-08-15), or None."""
    found = _DATE.findall(path.stem)
    if not found:
        return None
    y, m, d = found[-1]
    try:
        return pd.Timestamp(int(y), int(m), int(d))
    except ValueError:
        return None


def chip_nodata_share(invalid: np.ndarray, row_off: np.ndarray, col_off: np.ndarray, chip_px: int) -> np.ndarray:
    """Share of nodata pixels in every chip of a grid: ``(len(row_off), len(col_off))``, via a summed-area table."""
    sat = np.zeros((invalid.shape[0] + 1, invalid.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(invalid, axis=0, dtype=np.int64), axis=1, out=sat[1:, 1:])
    r0, c0 = row_off[:, None], col_off[None, :]
    r1, c1 = r0 + chip_px, c0 + chip_px
    count = sat[r1, c1] - sat[r0, c1] - sat[r1, c0] + sat[r0, c0]
    return count / float(chip_px * chip_px)


def cut_scene(path: Path, chip_px: int, stride_px: int, max_nodata: float, reference) -> tuple[SceneChips, tuple]:
    """Chips of one scene. ``reference`` is ``(crs, transform)`` of the grid identities snap to, or None for this scene's own.

    Returns the chips and the reference to pass to the next scene.
    """
    import rasterio
    from pyproj import Transformer
    from rasterio.errors import NodataShadowWarning

    try:
        src = rasterio.open(path)
    except Exception as exc:  # noqa: BLE001 - rasterio raises several types
        raise UrbanReprError(f"scene {path} is not a readable GeoTIFF ({str(exc).splitlines()[0]})") from None
    with src:
        if src.crs is None:
            raise UrbanReprError(f"scene {path} has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:26914 {path.name})")
        if chip_px > src.width or chip_px > src.height:
            raise UrbanReprError(f"chip_px {chip_px} is larger than scene {path.name} ({src.width}x{src.height} px); "
                                 f"use chip_px <= {min(src.width, src.height)}")
        with warnings.catch_warnings():  # a 4th band (NIR) is not an alpha band: the nodata value decides
            warnings.simplefilter("ignore", NodataShadowWarning)
            data = src.read(masked=True)  # the one read of this scene
        crs, transform = src.crs, src.transform
    invalid = np.ma.getmaskarray(data).all(axis=0)
    del data
    if invalid.all():
        raise UrbanReprError(f"scene {path} holds only nodata pixels; remove it from the input or fix its nodata value")
    row_grid = np.arange(0, invalid.shape[0] - chip_px + 1, stride_px)
    col_grid = np.arange(0, invalid.shape[1] - chip_px + 1, stride_px)
    share = chip_nodata_share(invalid, row_grid, col_grid, chip_px)
    keep_r, keep_c = np.nonzero(share <= max_nodata + 1e-12)
    row_off, col_off = row_grid[keep_r], col_grid[keep_c]
    half = chip_px / 2.0
    x = transform.a * (col_off + half) + transform.b * (row_off + half) + transform.c
    y = transform.d * (col_off + half) + transform.e * (row_off + half) + transform.f
    if crs.to_epsg() == 4326:
        lon, lat = x, y
    else:
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    # Grid position: the chip's upper-left corner on the reference scene's chip grid.
    ref_crs, ref_transform = reference if reference is not None else (crs, transform)
    ux = transform.a * col_off + transform.b * row_off + transform.c
    uy = transform.d * col_off + transform.e * row_off + transform.f
    if ref_crs != crs:
        ux, uy = Transformer.from_crs(crs, ref_crs, always_xy=True).transform(ux, uy)
    inv = ~ref_transform
    ref_col = inv.a * ux + inv.b * uy + inv.c
    ref_row = inv.d * ux + inv.e * uy + inv.f
    chips = SceneChips(
        path=path, col_off=col_off, row_off=row_off, lat=np.asarray(lat, np.float64), lon=np.asarray(lon, np.float64),
        grid_row=np.rint(ref_row / stride_px).astype(np.int64), grid_col=np.rint(ref_col / stride_px).astype(np.int64),
        n_cut=int(share.size), captured_at=None,
    )
    return chips, (ref_crs, ref_transform)


def build_chips(
    source: Path,
    *,
    chip_px: int = 32,
    stride_px: int = 0,
    max_nodata: float = 0.0,
    date: str | None = None,
) -> BuildResult:
    """Cut every scene of ``source`` (a GeoTIFF or a folder of them) into chips; see the module docstring.

    Args:
        source: A GeoTIFF file or a folder of GeoTIFFs.
        chip_px: Chip side in pixels.
        stride_px: Step between chips in pixels (0: ``chip_px``, no overlap).
        max_nodata: Largest share of nodata pixels a kept chip may hold (0: none).
        date: Acquisition date for scenes whose file name holds none (ISO, e.g. ``2019-08-15``).
    """
    if chip_px <= 0:
        raise UrbanReprError(f"parameter chip_px must be positive, got {chip_px}")
    stride_px = stride_px or chip_px
    if stride_px <= 0:
        raise UrbanReprError(f"parameter stride_px must be positive (or 0 for chip_px), got {stride_px}")
    if not 0.0 <= max_nodata <= 1.0:
        raise UrbanReprError(f"parameter max_nodata is a share of pixels in [0, 1], got {max_nodata}")
    fallback = None
    if date:
        try:
            fallback = pd.Timestamp(date)
        except (ValueError, TypeError):
            raise UrbanReprError(f"parameter date: {date!r} is not a date; use ISO, e.g. 2019-08-15") from None
    scenes = scene_files(source)
    reference = None
    parts: list[SceneChips] = []
    for path in scenes:
        chips, reference = cut_scene(path, chip_px, stride_px, max_nodata, reference)
        chips.captured_at = date_from_name(path) or fallback
        parts.append(chips)
    n = np.array([len(p.col_off) for p in parts])
    if n.sum() == 0:
        raise UrbanReprError(f"no chip of {source} has at most {max_nodata:.0%} nodata pixels; raise max_nodata or check the nodata value")
    stems = np.repeat([p.path.stem for p in parts], n).astype(object)
    col_off = np.concatenate([p.col_off for p in parts])
    row_off = np.concatenate([p.row_off for p in parts])
    image_id = np.char.add(np.char.add(np.char.add(np.char.add(stems.astype(str), "_r"), row_off.astype(str)), "_c"), col_off.astype(str))
    grid_r = np.concatenate([p.grid_row for p in parts])
    grid_c = np.concatenate([p.grid_col for p in parts])
    identity = np.char.add(np.char.add(np.char.add("r", grid_r.astype(str)), "_c"), grid_c.astype(str))
    frame = index_frame(
        image_id=image_id.astype(object),
        path=np.repeat([str(p.path.resolve()) for p in parts], n).astype(object),
        lat=np.concatenate([p.lat for p in parts]),
        lon=np.concatenate([p.lon for p in parts]),
        group=stems,
        window=format_windows(col_off, row_off, chip_px, chip_px),
        captured_at=np.repeat(np.array([p.captured_at for p in parts], dtype=object), n),
        identity=identity.astype(object),
    )
    cut = sum(p.n_cut for p in parts)
    undated = [p.path.name for p in parts if p.captured_at is None]
    notes = [(f"{len(scenes)} scene(s), {int(n.sum()):,} chips of {chip_px} px kept of {cut:,} cut "
              f"({cut - int(n.sum()):,} over {max_nodata:.0%} nodata)")]
    if undated:
        notes.append(f"{len(undated)} scene(s) have no date in their name and no date parameter, e.g. {undated[0]}")
    counts = {"scenes": len(scenes), "chips_cut": cut, "chips_dropped_nodata": cut - int(n.sum()),
              "places": int(pd.Series(identity).nunique())}
    settings = {"chip_px": str(chip_px), "stride_px": str(stride_px), "max_nodata": str(max_nodata)}
    return BuildResult(frame=frame, counts=counts, notes=notes, settings=settings)
