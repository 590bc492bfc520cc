"""Place / building embedders: images of the same place close, others far (unit-norm outputs).

Two registered models of family ``place_embedder`` (:func:`urbanrepml.models.registry.get_model`):

==============  ===========================================================================
name            what
==============  ===========================================================================
``place_mlp``   :class:`ProjectionHead`: an MLP on cached frozen-encoder features
                (e.g. EfficientNet-Lite0's 1280-d pooled vector -> 512 -> 256)
``place_cnn``   :class:`PixelEmbedder`: a small CNN trained from scratch on per-image
                normalised pixels; it keeps the spatial layout (strided convolutions, then a
                linear map of the flattened feature map), because what stays the same across
                years of farmland is *where* field edges, water and roads are
==============  ===========================================================================

Shapes:
    ``place_mlp``: ``(N, in_dim)`` -> ``(N, out_dim)``;
    ``place_cnn``: ``(N, in_channels, size, size)`` -> ``(N, out_dim)``; rows have unit L2 norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from urbanrepml.models.registry import Choice, FloatRange, IntRange, ModelSpec, register_model

FAMILY = "place_embedder"


class ProjectionHead(nn.Module):
    """MLP ``in_dim -> hidden... -> out_dim`` (ReLU, dropout), L2-normalised output.

    Args:
        in_dim: width of the input features.
        hidden: widths of the hidden layers (empty: linear).
        out_dim: embedding width.
        dropout: dropout after each hidden layer.
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...] = (512,), out_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(), nn.Dropout(dropout)]
            prev = h
        layers.append(nn.Linear(prev, out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


class PixelEmbedder(nn.Module):
    """Small CNN on pixels: conv blocks (the last two strided), flatten, linear, L2-normalise.

    Args:
        in_channels: input channels (e.g. 4 NAIP bands + NDVI = 5).
        size: input side in pixels (a multiple of 4).
        width: channels of the first block (doubled by each strided block).
        out_dim: embedding width.
        dropout: dropout before the linear map.
    """

    def __init__(self, in_channels: int = 5, size: int = 32, width: int = 32, out_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        if size % 4:
            raise ValueError(f"size must be a multiple of 4, got {size}")

        def block(c_in, c_out, stride):
            return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.features = nn.Sequential(*block(in_channels, width, 1), *block(width, 2 * width, 2),
                                      *block(2 * width, 4 * width, 2), nn.Conv2d(4 * width, width, 1))
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(width * (size // 4) ** 2, out_dim)
        self.in_channels, self.size, self.out_dim = int(in_channels), int(size), int(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x).flatten(1)
        return F.normalize(self.proj(self.dropout(z)), dim=1)


def build_place_mlp(in_dim: int = 1280, hidden: str | tuple = "512", out_dim: int = 256, dropout: float = 0.1) -> ProjectionHead:
    """``hidden``: widths as a tuple or a comma-separated string (``""``: linear)."""
    return ProjectionHead(in_dim, parse_widths(hidden), out_dim, dropout)


def build_place_cnn(in_channels: int = 5, size: int = 32, width: int = 32, out_dim: int = 256,
                    dropout: float = 0.1) -> PixelEmbedder:
    return PixelEmbedder(in_channels, size, width, out_dim, dropout)


def parse_widths(hidden: str | tuple | list) -> tuple[int, ...]:
    """``"512,256"`` / ``(512, 256)`` -> ``(512, 256)``; ``""`` -> ``()``."""
    if isinstance(hidden, (tuple, list)):
        return tuple(int(h) for h in hidden)
    return tuple(int(h) for h in str(hidden).split(",") if h.strip())


def _mlp_space(max_epochs: int) -> dict:
    return {"hidden": Choice(("256", "512", "1024", "512,512")), "out_dim": Choice((128, 256)),
            "dropout": FloatRange(0.0, 0.3)}


def _cnn_space(max_epochs: int) -> dict:
    return {"width": Choice((16, 32, 48)), "out_dim": Choice((128, 256)), "dropout": FloatRange(0.0, 0.3)}


register_model(ModelSpec("place_mlp", FAMILY, "projection head (MLP) on cached frozen-encoder features", build=build_place_mlp,
                         defaults={"in_dim": 1280, "hidden": "512", "out_dim": 256, "dropout": 0.1},
                         search_space=_mlp_space))
register_model(ModelSpec("place_cnn", FAMILY, "small CNN from scratch on per-image normalised pixels (layout kept)",
                         build=build_place_cnn,
                         defaults={"in_channels": 5, "size": 32, "width": 32, "out_dim": 256, "dropout": 0.1},
                         search_space=_cnn_space))

TRAINING_SPACE = {"lr": FloatRange(3e-4, 3e-3, log=True), "margin": FloatRange(0.2, 0.8),
                  "n_bands": IntRange(3, 9), "ucb_c": FloatRange(0.1, 2.0, log=True)}
"""Training settings the tuning searches beside each model's own space."""
