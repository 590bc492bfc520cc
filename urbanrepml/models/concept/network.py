"""The whole stage-2 network, pixels to outputs, for serving (TorchScript) and attention figures.

``ConceptGeolocator(backbone, bottleneck, meta_cls, parent_cls, head)``: ``(B, 3, S, S)`` ->
``(cell logits (B, K), offsets (B, 3), meta logits (B, M), parent logits (B, P), attention (B, T))``.
"""

from __future__ import annotations

import torch
from torch import nn


class ConceptGeolocator(nn.Module):
    def __init__(self, stem: nn.Module, top: nn.Module, bottleneck: nn.Module, meta_cls: nn.Module, parent_cls: nn.Module,
                 head: nn.Module):
        super().__init__()
        self.stem, self.top, self.bottleneck = stem, top, bottleneck
        self.meta_cls, self.parent_cls, self.head = meta_cls, parent_cls, head

    def forward(self, x: torch.Tensor):
        fmap = self.top(self.stem(x))
        pooled, tokens = fmap.mean(dim=(2, 3)), fmap.flatten(2).transpose(1, 2)
        z = self.bottleneck(pooled)
        cells, offsets, attn = self.head(z, tokens)
        return cells, offsets, self.meta_cls(z), self.parent_cls(z), attn
