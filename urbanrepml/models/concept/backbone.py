"""A frozen image encoder cut in two: a frozen stem (its features cached) and a trainable top.

Stage 0 of concept geolocation fine-tunes only the top ``N`` blocks of the encoder. Everything below
them is frozen, so its output (the "stem features") is computed once per image and cached; training
then runs the top on those features only.

Shapes:
    ``stem(x)``: ``(B, 3, S, S)`` -> ``(B, C, h, w)`` (an intermediate feature map).
    ``top(f)``: ``(B, C, h, w)`` -> ``pooled (B, D)``, ``tokens (B, T, D)`` (``T = H' * W'``, row-major).

Batch norms of the top stay in eval mode during training (few images per batch; the ImageNet
statistics are kept), so the top trains its weights only.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.encoders import get_encoder


class _EffStem(nn.Module):
    def __init__(self, net, cut: int):
        super().__init__()
        self.conv, self.bn, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = nn.ModuleList(list(net._blocks)[:cut])

    def forward(self, x):
        x = self.act(self.bn(self.conv(x)))
        for b in self.blocks:
            x = b(x)
        return x


class _EffTop(nn.Module):
    def __init__(self, net, cut: int):
        super().__init__()
        self.blocks = nn.ModuleList(list(net._blocks)[cut:])
        self.conv, self.bn, self.act = net._conv_head, net._bn1, net._swish

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.act(self.bn(self.conv(x)))


class _SeqPart(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class SplitBackbone(nn.Module):
    """An encoder of :func:`urbanrepml.models.encoders.get_encoder` with its top ``trainable_blocks`` trainable.

    Args:
        encoder: ``efficientnet_lite0`` (16 MBConv blocks + head conv) or ``small_cnn`` (its conv blocks).
        trainable_blocks: blocks of the top (>= 1).
        input_size: encoder input side (None: the encoder's default).
        weights: weights file of the encoder (None: its own).
        bands: the image bands read as the encoder's R, G, B (0-based; None: the first three), see
            :mod:`urbanrepml.models.encoders.preprocess`.
        context: pixels of surroundings added on each side of a raster window before it is resized
            (zeros beyond the scene; photos are read whole).
    """

    def __init__(self, encoder: str = "efficientnet_lite0", trainable_blocks: int = 2, input_size: int | None = None,
                 weights: str | None = None, bands: tuple[int, int, int] | None = None, context: int = 0):
        super().__init__()
        self.bands = None if bands is None else tuple(int(b) for b in bands)
        if int(context) < 0:
            raise UrbanReprError(f"context must be >= 0 pixels, got {context}")
        self.context = int(context)
        enc = get_encoder(encoder, weights=weights, input_size=input_size)
        self.encoder_name, self.input_size = encoder, enc.input_size
        self.mean, self.std = enc.mean, enc.std
        self.weights_digest = enc.weights_digest
        self.trainable_blocks = int(trainable_blocks)
        if encoder == "efficientnet_lite0":
            n = len(enc.net._blocks)
            if not 1 <= trainable_blocks <= n:
                raise UrbanReprError(f"trainable_blocks must be between 1 and {n} for {encoder}, got {trainable_blocks}")
            self.stem, self.top = _EffStem(enc.net, n - trainable_blocks), _EffTop(enc.net, n - trainable_blocks)
        elif encoder == "small_cnn":
            layers = list(enc.cnn.features)
            n = len(layers)
            if not 1 <= trainable_blocks < n:
                raise UrbanReprError(f"trainable_blocks must be between 1 and {n - 1} for {encoder}, got {trainable_blocks}")
            self.stem, self.top = _SeqPart(layers[:n - trainable_blocks]), _SeqPart(layers[n - trainable_blocks:])
        else:
            raise UrbanReprError(f"concept geolocation supports the encoders efficientnet_lite0 and small_cnn, got {encoder!r}")
        self.stem.float()
        self.top.float()
        for p in self.stem.parameters():
            p.requires_grad_(False)
        for p in self.top.parameters():
            p.requires_grad_(True)
        self.stem.eval()
        with torch.no_grad():
            f = self.stem(torch.zeros(1, 3, self.input_size, self.input_size))
            pooled, tokens = self.forward_top(f)
        self.stem_shape = tuple(f.shape[1:])
        self.embed_dim, self.num_tokens = pooled.shape[1], tokens.shape[1]
        self.grid = int(round(self.num_tokens ** 0.5))

    @property
    def reading(self) -> dict:
        """How pixels are read (``bands``, ``context``), as plain values for a checkpoint or a pyfunc's meta."""
        return {"bands": None if self.bands is None else list(self.bands), "context": self.context}

    def train(self, mode: bool = True):
        super().train(mode)
        self.stem.eval()
        for m in self.top.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def frozen_copy(self) -> SplitBackbone:
        """A deep copy with every weight frozen (the untouched encoder of the anchor loss)."""
        other = copy.deepcopy(self)
        for p in other.parameters():
            p.requires_grad_(False)
        return other.eval()

    def forward_top(self, stem_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stem features -> ``(pooled (B, D), tokens (B, T, D))``."""
        fmap = self.top(stem_features)
        return fmap.mean(dim=(2, 3)), fmap.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, 3, S, S)`` -> ``(pooled, tokens)``."""
        return self.forward_top(self.stem(x))
