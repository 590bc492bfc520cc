"""Geolocation classifiers: image (or frozen features) -> scores over H3 cell classes.

- ``geoloc_cnn`` (:class:`GeoCNN`): trained from scratch on pixels; ``blocks`` conv blocks (``convs``
  3x3 convolutions with batch norm and ReLU, then 2x2 max pooling), widths doubling from ``width``, the
  final map flattened (the layout of a chip is what identifies it: no global pooling), dropout, linear.
  CPU-sized: about 0.3 M weights for 4-band 32 px chips and 170 classes at the defaults.
- ``geoloc_head`` (:class:`FeatureHead`): on pooled features of a frozen encoder, standardised with
  the training features' mean and sd (buffers), dropout, one hidden layer (``hidden`` 0: linear).
"""

from __future__ import annotations

import torch
from torch import nn

from urbanrepml.models.registry import Choice, FloatRange, IntRange, ModelSpec, register_model

FAMILY = "geolocator"


def _block(a: int, b: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(a if i == 0 else b, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class GeoCNN(nn.Module):
    """Pixels ``(B, in_channels, input_px, input_px)`` -> logits ``(B, n_classes)``."""

    def __init__(self, in_channels: int, n_classes: int, input_px: int = 32, width: int = 32, blocks: int = 3,
                 convs: int = 1, dropout: float = 0.3):
        super().__init__()
        layers, c = [], in_channels
        for i in range(blocks):
            layers.append(_block(c, width * 2 ** i, convs))
            c = width * 2 ** i
        self.features = nn.Sequential(*layers)
        side = max(1, input_px // 2 ** blocks)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * side * side, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FeatureHead(nn.Module):
    """Pooled features ``(B, in_dim)`` -> logits ``(B, n_classes)``."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 512, dropout: float = 0.3):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        body = [nn.Dropout(dropout)]
        if hidden > 0:
            body += [nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, n_classes)]
        else:
            body += [nn.Linear(in_dim, n_classes)]
        self.body = nn.Sequential(*body)

    def set_scaling(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


def _cnn_space(max_epochs: int):
    return {"dropout": FloatRange(0.0, 0.5), "width": Choice((16, 32))}


def _head_space(max_epochs: int):
    return {"dropout": FloatRange(0.0, 0.5), "hidden": Choice((0, 256, 512))}


register_model(ModelSpec("geoloc_cnn", FAMILY, "small CNN on pixels, trained from scratch (CPU-sized)", build=GeoCNN,
                         defaults={"input_px": 32, "width": 32, "blocks": 3, "convs": 1, "dropout": 0.3}, search_space=_cnn_space))
register_model(ModelSpec("geoloc_head", FAMILY, "MLP head on pooled features of a frozen image encoder", build=FeatureHead,
                         defaults={"hidden": 512, "dropout": 0.3}, search_space=_head_space))

__all__ = ["FAMILY", "FeatureHead", "GeoCNN", "IntRange"]
