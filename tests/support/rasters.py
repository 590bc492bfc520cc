"""GeoTIFFs built pixel by pixel for the raster, AlphaEarth and aerial tests: discs around two known cells."""

from __future__ import annotations

import h3
import numpy as np
import rasterio
from rasterio.transform import from_origin

CELL_A = h3.latlng_to_cell(-30.03, -51.22, 9)
CELL_B = sorted(h3.grid_ring(CELL_A, 1))[0]
BOX = [-51.235, -30.045, -51.205, -30.015]  # a study-area box around A and B in Porto Alegre
NODATA = -9999.0
PIX_DEG = 0.0001  # ~10 m


def write_tif(path, data, transform, crs="EPSG:4326", nodata=None, descriptions=None, **creation):
    """Write a (bands, rows, cols) array as a GeoTIFF (``creation``: GDAL creation options, e.g. ``compress``)."""
    data = np.asarray(data)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata, **creation) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or []):
            dst.set_band_description(i + 1, d)
    return path


def disc_grid(radius_m: dict[str, float], pix_deg: float = PIX_DEG, pad: float = 0.002):
    """Lon/lat pixel grid around cells A and B; label = cell whose centroid is within radius, else None.

    Returns (transform, shape, labels (rows, cols) of object, rows, cols index arrays).
    """
    cents = {c: h3.cell_to_latlng(c) for c in radius_m}
    lats = [v[0] for v in cents.values()]
    lons = [v[1] for v in cents.values()]
    west, north = min(lons) - pad, max(lats) + pad
    cols = int(round((max(lons) + pad - west) / pix_deg))
    rows = int(round((north - (min(lats) - pad)) / pix_deg))
    transform = from_origin(west, north, pix_deg, pix_deg)
    cc, rr = np.meshgrid(np.arange(cols) + 0.5, np.arange(rows) + 0.5)
    lon = west + cc * pix_deg
    lat = north - rr * pix_deg
    labels = np.full((rows, cols), None, dtype=object)
    for cell, (clat, clon) in cents.items():
        dy = (lat - clat) * 111_320
        dx = (lon - clon) * 111_320 * np.cos(np.radians(clat))
        labels[np.hypot(dx, dy) <= radius_m[cell]] = cell
    return transform, (rows, cols), labels, rr.astype(int), cc.astype(int)
