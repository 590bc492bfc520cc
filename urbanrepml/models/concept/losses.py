"""Losses of concept geolocation (tensors in, a scalar out).

- :func:`info_nce`: symmetric InfoNCE between two sets of L2-normalised rows paired by position.
- :func:`prototype_nce`: InfoNCE of embeddings against class prototypes (cross-entropy of scaled cosines).
- :func:`focal_loss`: focal loss with class weights and label smoothing.
- :func:`parent_from_meta`: the parent distribution a meta distribution implies (sum over each parent's metas).
- :func:`hierarchy_kl`: KL(meta-implied parent || predicted parent), batch mean.
- :func:`parent_guided_meta`: cross-entropy of the meta among the metas of the true parent only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(a: Tensor, b: Tensor, temperature: float | Tensor) -> Tensor:
    """Symmetric InfoNCE: row i of ``a`` matches row i of ``b`` (both (B, D), normalised)."""
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def prototype_nce(z: Tensor, prototypes: Tensor, labels: Tensor, temperature: float | Tensor) -> Tensor:
    """Cross-entropy of ``z`` (B, D) against normalised ``prototypes`` (K, D) at ``temperature``."""
    return F.cross_entropy(z @ prototypes.T / temperature, labels)


def focal_loss(logits: Tensor, labels: Tensor, *, gamma: float = 2.0, weight: Tensor | None = None,
               smoothing: float = 0.0) -> Tensor:
    """Focal loss ``-(1 - p_t)^gamma * sum_k q_k log p_k`` with smoothed targets ``q`` and class weights.

    ``weight[k]`` scales the loss of an item of true class ``k``; ``p_t`` is the probability of the true class.
    """
    k = logits.shape[1]
    logp = F.log_softmax(logits, dim=1)
    q = torch.full_like(logp, smoothing / k)
    q.scatter_(1, labels[:, None], 1.0 - smoothing + smoothing / k)
    ce = -(q * logp).sum(dim=1)
    pt = logp.gather(1, labels[:, None]).squeeze(1).exp()
    loss = (1.0 - pt).clamp_min(0.0) ** gamma * ce
    if weight is not None:
        w = weight[labels]
        return (loss * w).sum() / w.sum().clamp_min(1e-12)
    return loss.mean()


def parent_from_meta(meta_probs: Tensor, meta_to_parent: Tensor, n_parents: int) -> Tensor:
    """(B, M) meta probabilities -> (B, P) parent probabilities (sum over each parent's metas)."""
    out = torch.zeros(meta_probs.shape[0], n_parents, device=meta_probs.device, dtype=meta_probs.dtype)
    return out.index_add(1, meta_to_parent, meta_probs)


def hierarchy_kl(meta_logits: Tensor, parent_logits: Tensor, meta_to_parent: Tensor) -> Tensor:
    """KL(parent implied by the meta prediction || parent prediction), batch mean."""
    implied = parent_from_meta(meta_logits.softmax(dim=1), meta_to_parent, parent_logits.shape[1]).clamp_min(1e-8)
    return F.kl_div(parent_logits.log_softmax(dim=1), implied, reduction="batchmean")


def parent_guided_meta(meta_logits: Tensor, meta_labels: Tensor, meta_to_parent: Tensor) -> Tensor:
    """Cross-entropy of the true meta among the metas of its own parent (the others masked out)."""
    true_parent = meta_to_parent[meta_labels]
    mask = meta_to_parent[None, :] == true_parent[:, None]
    return F.cross_entropy(meta_logits.masked_fill(~mask, -1e4), meta_labels)
