"""AlphaEarth modality: Google's 64-d annual satellite embeddings -> per-cell mean embedding.

Dataset: ``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL`` (bands ``A00``..``A63``, one image
per year and UTM tile). Two sources:

- ``local``: GeoTIFF/COG files as published (int8, 64 bands). Values are
  dequantised ``x = (v / 127.5)^2 * sign(v)``. NoData is the file's declared
  nodata value; an integer file that declares none uses ``-128``. Float rasters
  (e.g. an Earth Engine export of the raw float bands) are used as is, with their
  declared nodata (e.g. ``-9999``) and non-finite values masked.
  ``path`` is a file or a folder of tiles (``*.tif``/``*.tiff``), else the area's
  ``[sources.rasters]`` entry named ``alphaearth``.
- ``ee``: Earth Engine (``earthengine-api``). The collection is filtered to the
  year and the area's box, mosaicked, clipped, quantised to the published int8
  format and downloaded tile by tile (``ee.Image.getDownloadURL``, GeoTIFF,
  10 m, EPSG:4326) into ``<data dir>/cache/alphaearth/``; those files then take
  the local path. Credentials come from the standard EE environment
  (``earthengine authenticate`` / application default credentials; project from
  ``EE_PROJECT`` or ``GOOGLE_CLOUD_PROJECT``) and are never logged.

Output: index ``region_id``, columns ``A00``..``A63`` = mean of the dequantised
pixel embeddings whose centre lies in the cell (cells with no valid pixel are
absent).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from urbanrepml.areas import Area
from urbanrepml.areas.boundary import read_boundary
from urbanrepml.config import StudyArea
from urbanrepml.errors import UrbanReprError
from urbanrepml.modalities.base import Modality, ModalityResult
from urbanrepml.params import param
from urbanrepml.paths import cache_dir
from urbanrepml.sources.rasterstats import raster_cell_stats

COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
BANDS = [f"A{i:02d}" for i in range(64)]
NODATA = -128
SCALE_M = 10
# getDownloadURL refuses requests above ~48 MB; 64 int8 bands at 10 m -> keep tiles <= 0.05 deg (~5.5 km).
MAX_TILE_DEG = 0.05
SOURCES = ("local", "ee")


_LUT = (np.arange(-128, 128, dtype=np.float64) / 127.5) ** 2 * np.sign(np.arange(-128, 128))


def dequantise(values: np.ndarray) -> np.ndarray:
    """Published int8 -> float: ``(v / 127.5)^2 * sign(v)``; float input passes through (as float64)."""
    if values.dtype == np.int8:
        return _LUT[values.astype(np.int16) + 128]  # a 256-entry lookup table, same numbers as the formula
    if np.issubdtype(values.dtype, np.integer):
        v = values.astype(np.float64)
        return (v / 127.5) ** 2 * np.sign(v)
    return values.astype(np.float64)


def quantise(values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dequantise` (float in [-1, 1] -> int8, as published); used in tests and documents the format."""
    v = np.asarray(values, dtype=np.float64)
    return np.clip(np.round(np.sqrt(np.abs(v)) * 127.5 * np.sign(v)), -127, 127).astype(np.int8)


def ee_requests(bbox: tuple[float, float, float, float], year: int, *, scale: int = SCALE_M,
                crs: str = "EPSG:4326", max_tile_deg: float = MAX_TILE_DEG) -> list[dict]:
    """The Earth Engine download requests for an area box and year (pure: no ``ee``, no network).

    The box is cut into a grid of tiles at most ``max_tile_deg`` wide so each
    ``getDownloadURL`` stays under Earth Engine's size limit. Each request holds
    the collection filter (``filterDate`` start/end, ``filterBounds`` region) and
    the ``getDownloadURL`` params (bands, region, scale, crs, GeoTIFF format).
    """
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if not (minx < maxx and miny < maxy):
        raise UrbanReprError(f"Earth Engine request needs a non-empty lon/lat box, got {bbox}")
    year = int(year)
    nx = max(1, math.ceil((maxx - minx) / max_tile_deg - 1e-9))
    ny = max(1, math.ceil((maxy - miny) / max_tile_deg - 1e-9))
    xs = np.linspace(minx, maxx, nx + 1)
    ys = np.linspace(miny, maxy, ny + 1)
    requests = []
    for j in range(ny):
        for i in range(nx):
            x0, x1, y0, y1 = (round(float(v), 7) for v in (xs[i], xs[i + 1], ys[j], ys[j + 1]))
            region = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}
            requests.append({
                "name": f"alphaearth_{year}_r{j}c{i}",
                "collection": COLLECTION,
                "filter": {"start": f"{year}-01-01", "end": f"{year + 1}-01-01", "bounds": region},
                "quantise": {"nodata": NODATA, "formula": "round(sqrt(|x|)*127.5*sign(x)) clamped to [-127, 127], int8"},
                "download": {"bands": list(BANDS), "region": region, "scale": scale, "crs": crs,
                             "format": "GEO_TIFF", "filePerBand": False},
            })
    return requests


def _ee_image(ee, request: dict):
    """Build the ee.Image of one request: filter, mosaic, clip, quantise to the published int8 format."""
    f = request["filter"]
    region = ee.Geometry(f["bounds"])
    image = (ee.ImageCollection(request["collection"]).filterDate(f["start"], f["end"]).filterBounds(region)
             .mosaic().clip(region).select(request["download"]["bands"]))
    quantised = image.abs().sqrt().multiply(127.5).multiply(image.signum()).round().clamp(-127, 127)
    return quantised.unmask(NODATA).toInt8()


def ee_initialise():
    """Import and initialise earthengine-api from the standard environment; one clear line if impossible."""
    try:
        import ee
    except ImportError:
        raise UrbanReprError("source=ee needs earthengine-api (pip install earthengine-api), "
                             "or use source=local with path=<GeoTIFF>") from None
    project = os.environ.get("EE_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT") or None
    try:
        ee.Initialize(project=project)
    except Exception as exc:  # noqa: BLE001 - ee raises EEException, google.auth errors, OSError...
        reason = " ".join(str(exc).split())[:200] or "no detail"
        raise UrbanReprError(
            f"Earth Engine is not reachable or not authenticated ({type(exc).__name__}: {reason}); run "
            "`earthengine authenticate` and set EE_PROJECT, or use source=local with path=<exported GeoTIFF/COG>"
        ) from None
    return ee


def ee_download(requests: list[dict], dest: Path, timeout: float = 300) -> list[Path]:
    """Run the requests against Earth Engine; write one GeoTIFF per request under ``dest`` (skips existing)."""
    import urllib.request

    dest.mkdir(parents=True, exist_ok=True)
    todo = [r for r in requests if not (dest / f"{r['name']}.tif").is_file()]
    if todo:
        ee = ee_initialise()
        for request in todo:
            target = dest / f"{request['name']}.tif"
            try:
                url = _ee_image(ee, request).getDownloadURL(request["download"])
                tmp = target.with_suffix(".part")
                with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as fh:  # noqa: S310 - EE URL
                    fh.write(resp.read())
                os.replace(tmp, target)
            except UrbanReprError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise UrbanReprError(f"Earth Engine download of {request['name']} failed "
                                     f"({type(exc).__name__}: {str(exc)[:200]})") from None
    return [dest / f"{r['name']}.tif" for r in requests]


def local_files(path: Path) -> list[Path]:
    """A GeoTIFF/COG file, or the ``*.tif``/``*.tiff`` files of a folder (sorted)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
        if not files:
            raise UrbanReprError(f"AlphaEarth folder {path} holds no .tif/.tiff files")
        return files
    if not path.is_file():
        raise UrbanReprError(f"AlphaEarth path {path} does not exist")
    return [path]


class AlphaEarthModality(Modality):
    """Mean dequantised AlphaEarth embedding (A00..A63) per cell."""

    name = "alphaearth"

    @dataclass
    class Params:
        """The ``alphaearth`` entry point's own settings."""

        year: int = param(2024, "year of the annual embedding")
        source: str = param("local", "local GeoTIFF/COG files or Earth Engine", choices=SOURCES)
        path: str | None = param(None, "GeoTIFF/COG file or folder of tiles (source=local)")

    def __init__(self, year: int = 2024, source: str = "local", path: str | None = None):
        if source not in SOURCES:
            raise UrbanReprError(f"source must be one of {SOURCES}, got {source!r}")
        self.year = int(year)
        self.source = source
        self.path = path or ""

    def _ee_cache(self, spec: StudyArea) -> tuple[list[dict], Path]:
        bbox = read_boundary(spec.boundary).bounds
        requests = ee_requests(bbox, self.year)
        key = hashlib.sha256(json.dumps(requests, sort_keys=True).encode()).hexdigest()[:12]
        return requests, cache_dir() / "alphaearth" / f"{spec.name}-{self.year}-{key}"

    def files(self, spec: StudyArea) -> list[Path]:
        if self.source == "ee":
            requests, folder = self._ee_cache(spec)
            return ee_download(requests, folder)
        if self.path:
            return local_files(Path(self.path).expanduser().resolve())
        if "alphaearth" in spec.sources.rasters:
            return local_files(spec.sources.rasters["alphaearth"])
        raise UrbanReprError(
            f"alphaearth: no input; pass path=<GeoTIFF or folder>, add alphaearth = \"<file>\" under [sources.rasters] "
            f"of {spec.source_file}, or use source=ee"
        )

    def source_files(self, spec: StudyArea) -> dict[str, Path]:
        # For source=ee this downloads (or reuses the cached download), so the files are digested like local ones.
        return {p.name: p for p in self.files(spec)}

    def compute(self, spec: StudyArea, area: Area, resolution: int) -> ModalityResult:
        files = self.files(spec)
        where = str(files[0]) if len(files) == 1 else f"{len(files)} AlphaEarth tiles under {files[0].parent}"
        features = raster_cell_stats(files, area, resolution, names=list(BANDS), values=dequantise,
                                     fallback_nodata=NODATA, stats=("mean",), what=where)
        features.columns = list(BANDS)
        notes = [f"AlphaEarth {self.year} from {self.source}: {len(files)} file(s), mean of dequantised 64-d pixel embeddings"]
        return ModalityResult(features=features, metrics={"files": len(files)}, notes=notes)
