"""Location encoders: a positional encoding of (lat, lon) followed by a network, registered by family.

Registered in :mod:`urbanrepml.models.registry` under the family ``location_encoder``:

=================== =====================================================================
``sh_siren``        spherical harmonics (degree L) + SIREN: SatCLIP's design
``space2vec_grid``  Space2Vec ``grid`` sinusoids of the local plane + MLP or SIREN
``space2vec_theory`` Space2Vec ``theory`` sinusoids (3 directions) + MLP or SIREN
``rff``             random Fourier features at several scales, one network per scale, summed:
                    GeoCLIP's design (trained from scratch on the region)
``geoclip``         GeoCLIP's pretrained global encoder (512-d; see :mod:`.geoclip`)
=================== =====================================================================

Every encoder takes ``latlon`` (N, 2) degrees, column 0 latitude, column 1 longitude, and
returns (N, ``out_dim``). ``bounds`` ``(lat_min, lat_max, lon_min, lon_max)`` is the region the
encoder is made for (its frame; the default is the whole globe). Each registry entry carries
defaults and a search space over its own settings plus ``lr`` and ``temperature`` (the
contrastive training's), which the ``locenc`` stage's ``tune`` samples.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.location.networks import make_network
from urbanrepml.models.location.positional import (
    GaussianFourierFeatures,
    Space2VecGrid,
    Space2VecTheory,
    SphericalHarmonics,
)
from urbanrepml.models.registry import Choice, FloatRange, IntRange, ModelSpec, register_model

FAMILY = "location_encoder"
GLOBE = (-90.0, 90.0, -180.0, 180.0)


class LocationEncoder(nn.Module):
    """A positional encoding followed by a network.

    Args:
        positional: a module (N, 2) lat/lon degrees -> (N, P) with an ``out_dim`` attribute.
        network: a module (N, P) -> (N, out_dim).
        out_dim: the embedding width.

    Shapes:
        ``latlon`` (N, 2) degrees (lat, lon) -> (N, out_dim).
    """

    def __init__(self, positional: nn.Module, network: nn.Module, out_dim: int):
        super().__init__()
        self.positional = positional
        self.network = network
        self.out_dim = int(out_dim)

    def forward(self, latlon: Tensor) -> Tensor:
        return self.network(self.positional(latlon))


class MultiScaleFourierEncoder(nn.Module):
    """GeoCLIP's design: one Fourier-feature capsule (encoding + network) per scale, outputs summed.

    Args:
        encodings: one :class:`GaussianFourierFeatures` per scale.
        networks: one network per scale, each (N, 2 x encoded_size) -> (N, out_dim).
        out_dim: the embedding width.

    Shapes:
        ``latlon`` (N, 2) degrees (lat, lon) -> (N, out_dim).
    """

    def __init__(self, encodings: list[nn.Module], networks: list[nn.Module], out_dim: int):
        super().__init__()
        self.encodings = nn.ModuleList(encodings)
        self.networks = nn.ModuleList(networks)
        self.out_dim = int(out_dim)

    def forward(self, latlon: Tensor) -> Tensor:
        out = torch.zeros((latlon.shape[0], self.out_dim), dtype=torch.float32, device=latlon.device)
        for encoding, network in zip(self.encodings, self.networks):  # noqa: B905 - TorchScript has no strict=
            out = out + network(encoding(latlon))
        return out


def parse_sigmas(value) -> tuple[float, ...]:
    """``"1,8,64"`` or a sequence -> positive floats (one clear error otherwise)."""
    try:
        items = [float(v) for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]
    except ValueError:
        raise UrbanReprError(f"sigmas must be positive numbers separated by commas, got {value!r}") from None
    if not items or any(not s > 0 for s in items):
        raise UrbanReprError(f"sigmas must be positive numbers separated by commas, got {value!r}")
    return tuple(items)


def build_sh_siren(legendre_polys: int = 10, frame: str = "region", bounds=GLOBE, network: str = "siren", hidden: int = 256,
                   layers: int = 2, embedding_dim: int = 128, w0_initial: float = 30.0) -> LocationEncoder:
    """Spherical harmonics of degree < ``legendre_polys`` + SIREN (SatCLIP)."""
    pe = SphericalHarmonics(legendre_polys, frame, tuple(bounds))
    return LocationEncoder(pe, make_network(network, pe.out_dim, hidden, layers, embedding_dim, w0_initial), embedding_dim)


def _space2vec(cls, frequency_num: int, min_radius_km: float, max_radius_km: float, bounds, network: str, hidden: int,
               layers: int, embedding_dim: int, w0_initial: float) -> LocationEncoder:
    if not max_radius_km:  # auto: twice the region's longer side
        from urbanrepml.models.location.frame import RegionFrame

        max_radius_km = 4.0 * float(RegionFrame(tuple(bounds)).half_extent_km)
    pe = cls(frequency_num, min_radius_km, max_radius_km, tuple(bounds))
    return LocationEncoder(pe, make_network(network, pe.out_dim, hidden, layers, embedding_dim, w0_initial), embedding_dim)


def build_space2vec_grid(frequency_num: int = 32, min_radius_km: float = 0.05, max_radius_km: float = 0.0, bounds=GLOBE,
                         network: str = "mlp", hidden: int = 256, layers: int = 2, embedding_dim: int = 128,
                         w0_initial: float = 1.0) -> LocationEncoder:
    """Space2Vec ``grid`` + MLP/SIREN; ``max_radius_km`` 0 means twice the region's longer side."""
    return _space2vec(Space2VecGrid, frequency_num, min_radius_km, max_radius_km, bounds, network, hidden, layers,
                      embedding_dim, w0_initial)


def build_space2vec_theory(frequency_num: int = 32, min_radius_km: float = 0.05, max_radius_km: float = 0.0, bounds=GLOBE,
                           network: str = "mlp", hidden: int = 256, layers: int = 2, embedding_dim: int = 128,
                           w0_initial: float = 1.0) -> LocationEncoder:
    """Space2Vec ``theory`` + MLP/SIREN; ``max_radius_km`` 0 means twice the region's longer side."""
    return _space2vec(Space2VecTheory, frequency_num, min_radius_km, max_radius_km, bounds, network, hidden, layers,
                      embedding_dim, w0_initial)


def build_rff(sigmas="2,8,32", encoded_size: int = 128, frame: str = "region", bounds=GLOBE, network: str = "mlp",
              hidden: int = 256, layers: int = 2, embedding_dim: int = 128, w0_initial: float = 1.0,
              seed: int = 0) -> MultiScaleFourierEncoder:
    """Random Fourier features at each scale of ``sigmas``, one network per scale, summed (GeoCLIP)."""
    scales = parse_sigmas(sigmas)
    encodings = [GaussianFourierFeatures(s, encoded_size, frame, tuple(bounds), seed=seed + i) for i, s in enumerate(scales)]
    networks = [make_network(network, e.out_dim, hidden, layers, embedding_dim, w0_initial) for e in encodings]
    return MultiScaleFourierEncoder(encodings, networks, embedding_dim)


def _training_space() -> dict:
    return {"lr": FloatRange(3e-4, 1e-2, log=True), "temperature": FloatRange(0.02, 0.2, log=True)}


def _capacity_space() -> dict:
    return {"hidden": Choice((128, 256, 512)), "layers": IntRange(1, 3)}


def sh_siren_space(max_epochs: int) -> dict:
    return {"legendre_polys": IntRange(5, 40), **_capacity_space(), **_training_space()}


def space2vec_space(max_epochs: int) -> dict:
    return {"frequency_num": IntRange(8, 48), "min_radius_km": FloatRange(0.01, 0.3, log=True),
            "network": Choice(("mlp", "siren")), **_capacity_space(), **_training_space()}


def rff_space(max_epochs: int) -> dict:
    return {"sigmas": Choice(("1,4,16", "1,8,64", "2,16,128", "1,4,16,64")), "encoded_size": Choice((64, 128, 256)),
            **_capacity_space(), **_training_space()}


SH_DEFAULTS = {"legendre_polys": 10, "frame": "region", "network": "siren", "hidden": 256, "layers": 2, "embedding_dim": 128,
               "w0_initial": 30.0}
SPACE2VEC_DEFAULTS = {"frequency_num": 32, "min_radius_km": 0.05, "max_radius_km": 0.0, "network": "mlp", "hidden": 256,
                      "layers": 2, "embedding_dim": 128, "w0_initial": 1.0}
RFF_DEFAULTS = {"sigmas": "2,8,32", "encoded_size": 128, "frame": "region", "network": "mlp", "hidden": 256, "layers": 2,
                "embedding_dim": 128, "w0_initial": 1.0, "seed": 0}

register_model(ModelSpec("sh_siren", FAMILY, "spherical harmonics (degree L) + SIREN (SatCLIP)", build=build_sh_siren,
                         defaults=SH_DEFAULTS, search_space=sh_siren_space))
register_model(ModelSpec("space2vec_grid", FAMILY, "Space2Vec grid sinusoids of the local plane + MLP or SIREN",
                         build=build_space2vec_grid, defaults=SPACE2VEC_DEFAULTS, search_space=space2vec_space))
register_model(ModelSpec("space2vec_theory", FAMILY, "Space2Vec theory sinusoids (three directions) + MLP or SIREN",
                         build=build_space2vec_theory, defaults=SPACE2VEC_DEFAULTS, search_space=space2vec_space))
register_model(ModelSpec("rff", FAMILY, "random Fourier features at several scales, a network per scale, summed (GeoCLIP)",
                         build=build_rff, defaults=RFF_DEFAULTS, search_space=rff_space))
