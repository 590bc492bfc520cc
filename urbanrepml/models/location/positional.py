"""Positional encodings of (lat, lon): spherical harmonics, Space2Vec grid/theory, random Fourier features.

Each module takes ``latlon`` (N, 2) in degrees, column 0 latitude and column 1 longitude (the
project's order), converts through its :class:`~urbanrepml.models.location.frame.RegionFrame`
and returns (N, ``out_dim``) float32 features:

- :class:`SphericalHarmonics` (SatCLIP): real orthonormal spherical harmonics of degrees
  ``0..L-1`` (``L**2`` features) of ``(lon, lat)`` - internally in SatCLIP's (lon, lat) order -
  on the true sphere (``frame="globe"``) or on the sphere the region is stretched onto
  (``frame="region"``, see :meth:`RegionFrame.region_sphere`). Associated Legendre functions
  come from the stable normalised recurrences (no factorials, fine for L in the hundreds).
- :class:`Space2VecGrid` / :class:`Space2VecTheory` (Mai et al., 2020): sinusoids of the local
  km coordinates at ``frequency_num`` wavelengths spaced geometrically between
  ``min_radius_km`` and ``max_radius_km``; ``grid`` per axis (4 per scale), ``theory`` along the
  three unit vectors 120 degrees apart (6 per scale).
- :class:`GaussianFourierFeatures` (GeoCLIP's ``GaussianEncoding``): ``cos``/``sin`` of
  ``2 pi B v`` with ``B ~ N(0, sigma^2)`` fixed at construction (a buffer, so checkpoints keep
  it); ``v`` is the region-normalised plane (``frame="region"``) or GeoCLIP's Equal Earth
  projection (``frame="globe"``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.location.frame import RegionFrame, equal_earth, globe_lonlat

FRAMES = ("region", "globe")


def _check_frame(frame: str) -> str:
    if frame not in FRAMES:
        raise UrbanReprError(f"frame must be one of {', '.join(FRAMES)}, got {frame!r}")
    return frame


class SphericalHarmonics(nn.Module):
    """Real spherical harmonics ``Y_l^m`` for ``l < legendre_polys`` (SatCLIP's positional encoding).

    Args:
        legendre_polys: L, the number of degrees (features: ``L**2``, ordered ``l**2 + l + m``).
        frame: ``region`` or ``globe`` (see the module docstring).
        bounds: the region ``(lat_min, lat_max, lon_min, lon_max)``.

    Shapes:
        ``latlon`` (N, 2) degrees (lat, lon) -> (N, L**2).
    """

    def __init__(self, legendre_polys: int = 20, frame: str = "region", bounds=(-90.0, 90.0, -180.0, 180.0)):
        super().__init__()
        if not 1 <= int(legendre_polys) <= 200:
            raise UrbanReprError(f"legendre_polys must be between 1 and 200, got {legendre_polys}")
        self.legendre_polys = int(legendre_polys)
        self.frame_kind = _check_frame(frame)
        self.frame = RegionFrame(bounds)
        self.out_dim = self.legendre_polys ** 2

    def lonlat(self, latlon: Tensor) -> Tensor:
        """The (lon, lat) degrees the harmonics are evaluated at."""
        if self.frame_kind == "region":
            return self.frame.region_sphere(latlon)
        return globe_lonlat(latlon)

    def forward(self, latlon: Tensor) -> Tensor:
        ll = self.lonlat(latlon).to(torch.float64)
        phi = torch.deg2rad(ll[:, 0])
        theta = torch.deg2rad(90.0 - ll[:, 1])  # colatitude
        x = torch.cos(theta)
        s = torch.sin(theta)
        big_l = self.legendre_polys
        # pbar[m][l - m]: orthonormal associated Legendre functions (Condon-Shortley phase included)
        out = [torch.zeros_like(x) for _ in range(big_l * big_l)]
        pmm = torch.full_like(x, math.sqrt(1.0 / (4.0 * math.pi)))
        for m in range(big_l):
            if m > 0:
                pmm = -math.sqrt((2.0 * m + 1.0) / (2.0 * m)) * s * pmm
            cos_m = torch.cos(m * phi)
            sin_m = torch.sin(m * phi)
            p_prev = torch.zeros_like(x)
            p_cur = pmm
            for ell in range(m, big_l):
                if ell == m + 1:
                    p_prev, p_cur = p_cur, math.sqrt(2.0 * m + 3.0) * x * pmm
                elif ell > m + 1:
                    a = math.sqrt((4.0 * ell * ell - 1.0) / (ell * ell - m * m))
                    b = math.sqrt(((ell - 1.0) ** 2 - m * m) / (4.0 * (ell - 1.0) ** 2 - 1.0))
                    p_prev, p_cur = p_cur, a * (x * p_cur - b * p_prev)
                if m == 0:
                    out[ell * ell + ell] = p_cur
                else:
                    out[ell * ell + ell + m] = math.sqrt(2.0) * p_cur * cos_m
                    out[ell * ell + ell - m] = math.sqrt(2.0) * p_cur * sin_m
        return torch.stack(out, dim=1).to(torch.float32)


class Space2VecGrid(nn.Module):
    """Space2Vec's ``grid`` encoding of local km coordinates: per scale, sin/cos of x and of y.

    Args:
        frequency_num: number of scales S (features: 4 S).
        min_radius_km: the shortest wavelength (km).
        max_radius_km: the longest wavelength (km).
        bounds: the region (its centre is the origin of the plane).

    Shapes:
        ``latlon`` (N, 2) degrees (lat, lon) -> (N, 4 S).
    """

    def __init__(self, frequency_num: int = 16, min_radius_km: float = 0.05, max_radius_km: float = 20.0,
                 bounds=(-90.0, 90.0, -180.0, 180.0)):
        super().__init__()
        if not 1 <= int(frequency_num) <= 256:
            raise UrbanReprError(f"frequency_num must be between 1 and 256, got {frequency_num}")
        if not 0 < float(min_radius_km) < float(max_radius_km):
            raise UrbanReprError(f"need 0 < min_radius_km < max_radius_km, got {min_radius_km} and {max_radius_km}")
        self.frame = RegionFrame(bounds)
        s = int(frequency_num)
        ratio = float(max_radius_km) / float(min_radius_km)
        steps = torch.arange(s, dtype=torch.float64) / max(s - 1, 1)
        self.register_buffer("frequencies", 1.0 / (float(min_radius_km) * ratio ** steps))
        self.register_buffer("directions", self._directions())
        self.out_dim = 2 * s * int(self.directions.shape[0])

    @staticmethod
    def _directions() -> Tensor:
        return torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)

    def forward(self, latlon: Tensor) -> Tensor:
        xy = self.frame.local_km(latlon.to(torch.float64))
        proj = xy @ self.directions.T  # (N, A)
        angles = (proj[:, :, None] * self.frequencies[None, None, :]).reshape(xy.shape[0], -1)
        return torch.cat((torch.sin(angles), torch.cos(angles)), dim=1).to(torch.float32)


class Space2VecTheory(Space2VecGrid):
    """Space2Vec's ``theory`` encoding: sin/cos along three unit vectors 120 degrees apart (features: 6 S).

    Shapes:
        ``latlon`` (N, 2) degrees (lat, lon) -> (N, 6 S).
    """

    @staticmethod
    def _directions() -> Tensor:
        r = math.sqrt(3.0) / 2.0
        return torch.tensor([[1.0, 0.0], [-0.5, r], [-0.5, -r]], dtype=torch.float64)


class GaussianFourierFeatures(nn.Module):
    """Random Fourier features at one scale ``sigma`` (GeoCLIP's ``GaussianEncoding``).

    Args:
        sigma: standard deviation of the frequencies ``B`` (cycles per unit of the frame).
        encoded_size: rows of ``B`` (features: 2 x encoded_size).
        frame: ``region`` (normalised plane) or ``globe`` (GeoCLIP's Equal Earth projection).
        bounds: the region.
        seed: seed of ``B`` (drawn from its own generator; stored as a buffer).

    Shapes:
        ``latlon`` (N, 2) degrees (lat, lon) -> (N, 2 x encoded_size).
    """

    def __init__(self, sigma: float, encoded_size: int = 128, frame: str = "region", bounds=(-90.0, 90.0, -180.0, 180.0),
                 seed: int = 0):
        super().__init__()
        if not float(sigma) > 0 or int(encoded_size) < 1:
            raise UrbanReprError(f"sigma must be positive and encoded_size >= 1, got {sigma} and {encoded_size}")
        self.frame_kind = _check_frame(frame)
        self.frame = RegionFrame(bounds)
        gen = torch.Generator().manual_seed(int(seed))
        self.register_buffer("b", torch.randn((int(encoded_size), 2), generator=gen) * float(sigma))
        self.out_dim = 2 * int(encoded_size)

    def forward(self, latlon: Tensor) -> Tensor:
        if self.frame_kind == "region":
            v = self.frame.normalised(latlon.to(torch.float64)).to(torch.float32)
        else:
            v = equal_earth(latlon.to(torch.float32))
        vp = 2 * math.pi * v @ self.b.T
        return torch.cat((torch.cos(vp), torch.sin(vp)), dim=-1)
