"""Contrastive pairing of locations with the embeddings found there (SatCLIP / GeoCLIP training objective).

:class:`ContrastiveLocationModel` holds the location encoder, a projection of the paired
embeddings (standardised with stored mean/std, then linear or a one-hidden-layer MLP) into the encoder's
space, and a learnable temperature (``logit_scale = log(1/temperature)``, CLIP's clamp at 100).
:func:`symmetric_infonce` is CLIP's loss: cross-entropy of the (N, N) cosine-logit matrix
against the diagonal, in both directions, averaged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.location.networks import MLP

MAX_LOGIT_SCALE = 100.0


class ContrastiveLocationModel(nn.Module):
    """Location encoder + embedding projection + temperature.

    Args:
        encoder: a location encoder with an ``out_dim`` attribute.
        in_dim: width of the paired embeddings.
        projection_hidden: hidden width of the projection MLP; 0: a linear projection.
        temperature: initial softmax temperature (learned).
        input_mean: per-column mean of the paired embeddings (standardisation, stored as a buffer).
        input_std: per-column standard deviation (zeros are treated as 1).

    Shapes:
        ``forward(latlon, x)``: ``latlon`` (N, 2) degrees (lat, lon), ``x`` (N, in_dim) ->
        (location (N, D), projected embedding (N, D), scale ()): both embeddings L2-normalised,
        D = ``encoder.out_dim``, ``scale`` = :meth:`scale` (returned so DDP sees every parameter used).
    """

    def __init__(self, encoder: nn.Module, in_dim: int, projection_hidden: int = 256, temperature: float = 0.07,
                 input_mean: Tensor | None = None, input_std: Tensor | None = None):
        super().__init__()
        if not 0 < float(temperature) < 10:
            raise UrbanReprError(f"temperature must be in (0, 10), got {temperature}")
        self.encoder = encoder
        self.out_dim = int(encoder.out_dim)
        self.in_dim = int(in_dim)
        self.projection_hidden = int(projection_hidden)
        if self.projection_hidden < 0:
            raise UrbanReprError(f"projection_hidden must be >= 0 (0: linear), got {projection_hidden}")
        self.projection = MLP(self.in_dim, max(self.projection_hidden, 1), 1 if self.projection_hidden else 0, self.out_dim)
        mean = torch.zeros(self.in_dim) if input_mean is None else torch.as_tensor(input_mean, dtype=torch.float32)
        std = torch.ones(self.in_dim) if input_std is None else torch.as_tensor(input_std, dtype=torch.float32)
        self.register_buffer("input_mean", mean.clone().float())
        self.register_buffer("input_std", torch.where(std > 1e-12, std, torch.ones_like(std)).clone().float())
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / float(temperature))))

    def embed_locations(self, latlon: Tensor) -> Tensor:
        """The location embedding (not normalised): (N, 2) -> (N, D)."""
        return self.encoder(latlon)

    def project(self, x: Tensor) -> Tensor:
        """Paired embeddings into the location space (not normalised): (N, in_dim) -> (N, D)."""
        return self.projection((x - self.input_mean) / self.input_std)

    def scale(self) -> Tensor:
        """``exp(logit_scale)`` clamped at 100 (1 / temperature)."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def forward(self, latlon: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return F.normalize(self.embed_locations(latlon), dim=1), F.normalize(self.project(x), dim=1), self.scale()


def symmetric_infonce(location: Tensor, embedding: Tensor, scale: Tensor) -> Tensor:
    """CLIP's symmetric InfoNCE of normalised pairs.

    Shapes:
        ``location`` (N, D), ``embedding`` (N, D), ``scale`` () -> () loss.
    """
    logits = scale * location @ embedding.T
    labels = torch.arange(location.shape[0], device=location.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
