"""Coordinate frames of location encoders: (lat, lon) degrees -> the coordinates an encoding works in.

Every public API of the location encoders takes ``(lat, lon)`` in degrees (WGS84), in that
order, as the rest of the project does; a frame converts at the boundary:

- :meth:`RegionFrame.local_km`: a local equirectangular plane around the region's centre,
  ``(x, y)`` in km (x east, y north);
- :meth:`RegionFrame.normalised`: the same divided by the region's half extent, so the
  region spans about ``[-1, 1]`` on its longer side;
- :meth:`RegionFrame.region_sphere`: ``(lon, lat)`` in degrees on a sphere onto which the
  region is stretched (``[-1, 1]`` maps to ``[-SPHERE_SPAN, SPHERE_SPAN]`` degrees around
  (0, 0), clamped at ``SPHERE_CLAMP`` times the region), so that low-degree spherical
  harmonics resolve a city instead of a continent.

The frame's numbers are buffers: a checkpoint holds them, so a reloaded encoder maps
coordinates exactly as the trained one did.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from urbanrepml.errors import UrbanReprError

EARTH_RADIUS_KM = 6371.0088
KM_PER_DEGREE = EARTH_RADIUS_KM * math.pi / 180.0
SPHERE_SPAN = 60.0
SPHERE_CLAMP = 1.45


def check_latlon(lat, lon, where: str = "coordinates") -> tuple[np.ndarray, np.ndarray]:
    """``lat``, ``lon`` as float64 arrays; one clear error when any is missing or out of range.

    Raises:
        UrbanReprError: a NaN/inf coordinate, |lat| > 90 or |lon| > 180 (the message names the first row).
    """
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    if lat.shape != lon.shape:
        raise UrbanReprError(f"{where}: {len(lat)} latitudes but {len(lon)} longitudes")
    bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UrbanReprError(f"{where}: {int(bad.sum())} coordinate(s) missing or out of range (lat within ±90, "
                             f"lon within ±180), e.g. row {i}: lat {lat[i]}, lon {lon[i]}; "
                             "give lat, lon in degrees (WGS84), in that order")
    return lat, lon


def bounds_of(lat: np.ndarray, lon: np.ndarray, margin: float = 0.1) -> tuple[float, float, float, float]:
    """``(lat_min, lat_max, lon_min, lon_max)`` of the points, widened by ``margin`` of the extent on each side."""
    lat_min, lat_max = float(np.min(lat)), float(np.max(lat))
    lon_min, lon_max = float(np.min(lon)), float(np.max(lon))
    dlat = max(lat_max - lat_min, 1e-3) * margin
    dlon = max(lon_max - lon_min, 1e-3) * margin
    return (max(lat_min - dlat, -90.0), min(lat_max + dlat, 90.0), max(lon_min - dlon, -180.0), min(lon_max + dlon, 180.0))


class RegionFrame(nn.Module):
    """The region an encoder was trained on: its centre and half extent (see the module docstring).

    Args:
        bounds: ``(lat_min, lat_max, lon_min, lon_max)`` in degrees.

    Shapes:
        every method: ``latlon`` (N, 2) degrees, column 0 lat, column 1 lon -> (N, 2).
    """

    def __init__(self, bounds: tuple[float, float, float, float] | list[float] = (-90.0, 90.0, -180.0, 180.0)):
        super().__init__()
        lat_min, lat_max, lon_min, lon_max = (float(b) for b in bounds)
        if not (-90 <= lat_min < lat_max <= 90 and -180 <= lon_min < lon_max <= 180):
            raise UrbanReprError(f"region bounds must be lat_min < lat_max within ±90 and lon_min < lon_max within ±180, "
                                 f"got {tuple(bounds)}")
        lat0, lon0 = (lat_min + lat_max) / 2, (lon_min + lon_max) / 2
        half_x = (lon_max - lon_min) / 2 * math.cos(math.radians(lat0)) * KM_PER_DEGREE
        half_y = (lat_max - lat_min) / 2 * KM_PER_DEGREE
        self.register_buffer("centre", torch.tensor([lat0, lon0], dtype=torch.float64))
        self.register_buffer("half_extent_km", torch.tensor(max(half_x, half_y, 1e-3), dtype=torch.float64))
        self.km_per_degree = KM_PER_DEGREE
        self.sphere_span = SPHERE_SPAN
        self.sphere_clamp = SPHERE_CLAMP

    def local_km(self, latlon: Tensor) -> Tensor:
        """(x east, y north) km on the plane tangent at the region's centre."""
        ll = latlon.to(torch.float64)
        lat0 = self.centre[0]
        x = (ll[:, 1] - self.centre[1]) * torch.cos(torch.deg2rad(lat0)) * self.km_per_degree
        y = (ll[:, 0] - lat0) * self.km_per_degree
        return torch.stack((x, y), dim=1).to(latlon.dtype)

    def normalised(self, latlon: Tensor) -> Tensor:
        """:meth:`local_km` over the half extent: the region spans about [-1, 1] on its longer side."""
        return (self.local_km(latlon).to(torch.float64) / self.half_extent_km).to(latlon.dtype)

    def region_sphere(self, latlon: Tensor) -> Tensor:
        """(lon, lat) degrees on the sphere the region is stretched onto (note the order: lon first)."""
        u = self.normalised(latlon).clamp(-self.sphere_clamp, self.sphere_clamp) * self.sphere_span
        return torch.stack((u[:, 0], u[:, 1]), dim=1)


def globe_lonlat(latlon: Tensor) -> Tensor:
    """(lat, lon) -> (lon, lat): the true sphere, SatCLIP's input order.

    Shapes:
        ``latlon`` (N, 2) -> (N, 2).
    """
    return torch.stack((latlon[:, 1], latlon[:, 0]), dim=1)


def equal_earth(latlon: Tensor) -> Tensor:
    """GeoCLIP's Equal Earth projection of (lat, lon) degrees, scaled as GeoCLIP scales it (x, y about [-1, 1]).

    Shapes:
        ``latlon`` (N, 2) -> (N, 2).
    """
    a1, a2, a3, a4, sf = 1.340264, -0.081106, 0.000893, 0.003796, 66.50336
    lat = torch.deg2rad(latlon[:, 0])
    lon = torch.deg2rad(latlon[:, 1])
    theta = torch.asin(math.sqrt(3.0) / 2 * torch.sin(lat))
    denominator = 3 * (9 * a4 * theta ** 8 + 7 * a3 * theta ** 6 + 3 * a2 * theta ** 2 + a1)
    x = 2 * math.sqrt(3.0) * lon * torch.cos(theta) / denominator
    y = a4 * theta ** 9 + a3 * theta ** 7 + a2 * theta ** 3 + a1 * theta
    return torch.stack((x, y), dim=1) * sf / 180
