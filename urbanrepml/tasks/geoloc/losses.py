"""Losses of a geolocator: cross-entropy, the distance-aware soft target, and a parent-cell term.

Soft target (as in geo-locate-ml and PlaNet-style haversine smoothing): for an image taken at ``x``,
class ``j`` gets ``p_j ∝ exp(-d(x, centroid_j) / tau_km)``, ``d`` the great-circle distance
(:func:`urbanrepml.geodesy.pairwise_km`). A small ``tau_km`` approaches the one-hot target of the
nearest centroid; a large one spreads mass over neighbouring cells, so a near miss costs less than a
far one. The loss mixes both::

    loss = mix_ce * CE(logits, label) + (1 - mix_ce) * H(soft, softmax(logits)) + hier_weight * CE_parent

``CE_parent`` is the cross-entropy of the parent cells, whose probabilities are the sums of their
children's (H3 parent maps, :attr:`CellClasses.parent`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from urbanrepml.errors import UrbanReprError
from urbanrepml.geodesy import pairwise_km


def soft_targets(lat, lon, centroid_lat, centroid_lon, tau_km: float) -> np.ndarray:
    """``(n, C)`` float32 rows summing to 1: ``softmax(-d(point, centroid_j) / tau_km)``."""
    if not (np.isfinite(tau_km) and tau_km > 0):
        raise UrbanReprError(f"tau_km must be a positive number of kilometres, got {tau_km}")
    d = pairwise_km(lat, lon, centroid_lat, centroid_lon)
    z = -(d - d.min(axis=1, keepdims=True)) / float(tau_km)
    p = np.exp(z)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def geoloc_loss(logits: Tensor, labels: Tensor, soft: Tensor | None, mix_ce: float, parent: Tensor | None = None,
                n_parents: int = 0, hier_weight: float = 0.0) -> Tensor:
    """The mixed loss of the module docstring (mean over the batch)."""
    logp = F.log_softmax(logits, dim=1)
    loss = logits.new_zeros(())
    if mix_ce > 0:
        loss = loss + mix_ce * F.nll_loss(logp, labels)
    if mix_ce < 1:
        if soft is None:
            raise UrbanReprError("the soft-target loss needs soft targets (mix_ce < 1)")
        loss = loss + (1.0 - mix_ce) * -(soft * logp).sum(dim=1).mean()
    if hier_weight > 0 and parent is not None:
        probs = logp.exp()
        pp = probs.new_zeros(probs.shape[0], n_parents).index_add_(1, parent, probs)
        loss = loss + hier_weight * F.nll_loss(torch.log(pp.clamp_min(1e-12)), parent[labels])
    return loss
