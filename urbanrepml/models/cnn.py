"""A small convolutional image encoder (``BuiltinCNN``), built with a fixed seed.

Shapes:
    input: ``(N, 3, H, W)`` float32, ImageNet-normalised.
    output: ``(N, embed_dim)`` float32 (global average pooling of the last feature map).
"""

from __future__ import annotations

import torch
from torch import nn


class BuiltinCNN(nn.Module):
    """Four strided 3x3 conv blocks with ReLU, then global average pooling."""

    def __init__(self, embed_dim: int = 64):
        super().__init__()
        chans = [3, 16, 32, 64, embed_dim]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=False):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, embed_dim)``."""
        return self.features(x).mean(dim=(2, 3))


def builtin_cnn(embed_dim: int = 64, seed: int = 0) -> BuiltinCNN:
    """A :class:`BuiltinCNN` in eval mode, initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BuiltinCNN(embed_dim)
    return model.eval()
