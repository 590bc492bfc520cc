"""Multi-resolution graph U-Nets over the H3 hierarchy (tensors in, tensors out; no file or MLflow code).

:class:`FullAreaUNet` runs on whatever hierarchy it is given: the whole area at
once, or a batch of cones (a disjoint union of cone subgraphs, see
:mod:`urbanrepml.tasks.fusion.cones`), so memory is bounded by the batch. Which
one is a data choice of the fusion task (:mod:`urbanrepml.tasks.fusion.batching`),
not a different network.

Architecture, levels ``0..L-1`` finest to coarsest with widths ``hidden_dims``::

    encoder:  e0 = Block0(Lin(x))                                  level 0 (e.g. res 9)
              e_l = Block_l(Lin(mean_pool(e_{l-1})))               level l (res 8, 7)
    decoder:  d_{L-1} = e_{L-1}
              d_l = Block'_l(Lin(broadcast(d_{l+1})) + e_l)        skip connection
    outputs:  z_l = Lin_l(d_l) of width ``embedding_dim``          one per resolution
              x_hat = Lin(z_0)                                     reconstruction of the input

The fused embedding is ``z_0``: the finest-resolution output, of width
``embedding_dim`` (default: ``hidden_dims[0]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from urbanrepml.models.hierarchy import Hierarchy
from urbanrepml.models.layers import GCNBlock, broadcast, mean_pool
from urbanrepml.models.registry import Choice, FloatRange, IntRange, ModelSpec, register_model


@dataclass
class UNetOutput:
    """``embeddings[l]``: level ``l`` output (finest first); ``reconstruction``: input estimate at level 0."""

    embeddings: list[Tensor]
    reconstruction: Tensor


class FullAreaUNet(nn.Module):
    """Graph U-Net over ``len(hidden_dims)`` H3 levels of a whole area.

    Args:
        in_dim: input features per finest cell.
        hidden_dims: width per level, finest first (e.g. ``(64, 128, 256)`` for res 9/8/7).
        convs_per_level: GCN layers per encoder block and per decoder block.
        dropout: dropout after each GCN layer.
        embedding_dim: width of the per-resolution outputs (default ``hidden_dims[0]``).

    ``forward(x, hierarchy)``: ``x`` (N_0, in_dim) -> :class:`UNetOutput`.
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], convs_per_level: int = 2,
                 dropout: float = 0.0, embedding_dim: int | None = None):
        super().__init__()
        dims = [int(d) for d in hidden_dims]
        if not dims:
            raise ValueError("hidden_dims must name at least one level")
        self.dims = dims
        self.embedding_dim = int(embedding_dim or dims[0])
        self.inp = nn.Linear(in_dim, dims[0])
        self.down = nn.ModuleList(nn.Linear(dims[l - 1], dims[l]) for l in range(1, len(dims)))
        self.enc = nn.ModuleList(GCNBlock(d, convs_per_level, dropout) for d in dims)
        self.up = nn.ModuleList(nn.Linear(dims[l + 1], dims[l]) for l in range(len(dims) - 1))
        self.dec = nn.ModuleList(GCNBlock(d, convs_per_level, dropout) for d in dims[:-1])
        self.out = nn.ModuleList(nn.Sequential(nn.LayerNorm(d), nn.Linear(d, self.embedding_dim)) for d in dims)
        self.recon = nn.Linear(self.embedding_dim, in_dim)

    @property
    def levels(self) -> int:
        return len(self.dims)

    def forward(self, x: Tensor, hierarchy: Hierarchy) -> UNetOutput:
        if hierarchy.levels != self.levels:
            raise ValueError(f"model has {self.levels} levels, hierarchy {hierarchy.levels}")
        skips = []
        h = self.enc[0](self.inp(x), hierarchy.graphs[0])
        skips.append(h)
        for l in range(1, self.levels):
            h = mean_pool(h, hierarchy.pools[l])
            h = self.enc[l](self.down[l - 1](h), hierarchy.graphs[l])
            skips.append(h)
        decoded = [h]
        for l in range(self.levels - 2, -1, -1):
            h = self.up[l](broadcast(h, hierarchy.parents[l + 1])) + skips[l]
            h = self.dec[l](h, hierarchy.graphs[l])
            decoded.append(h)
        decoded.reverse()
        embeddings = [head(d) for head, d in zip(self.out, decoded, strict=False)]
        return UNetOutput(embeddings, self.recon(embeddings[0]))


@dataclass
class Losses:
    total: Tensor
    reconstruction: Tensor
    consistency: Tensor


def unet_losses(out: UNetOutput, x: Tensor, hierarchy: Hierarchy, mask: Tensor | None = None,
                consistency_weight: float = 0.5, reconstruction_weight: float = 1.0) -> Losses:
    """Reconstruction of the (z-scored) input + cross-resolution consistency.

    - reconstruction: MSE between ``out.reconstruction`` and ``x`` over the level-0
      rows selected by ``mask`` (bool, all rows when ``None``);
    - consistency: mean over levels ``l >= 1`` of the MSE between the mean-pooled
      level ``l-1`` embedding and the level ``l`` embedding (all nodes).
    """
    if mask is None:
        rec = F.mse_loss(out.reconstruction, x)
    else:
        n = mask.sum()
        err = ((out.reconstruction - x) ** 2).mean(dim=1)
        rec = (err * mask).sum() / n.clamp(min=1)
    cons = x.new_zeros(())
    levels = len(out.embeddings)
    for l in range(1, levels):
        pooled = mean_pool(out.embeddings[l - 1], hierarchy.pools[l])
        cons = cons + F.mse_loss(pooled, out.embeddings[l])
    if levels > 1:
        cons = cons / (levels - 1)
    total = reconstruction_weight * rec + consistency_weight * cons
    return Losses(total, rec, cons)


def unet_search_space(max_epochs: int) -> dict:
    """What tuning samples for the U-Nets (shared names, so a sampler learns across both batchings)."""
    return {
        "unet.width": Choice((16, 32, 64)),
        "unet.convs_per_level": IntRange(1, 3),
        "unet.dropout": FloatRange(0.0, 0.3),
        "unet.lr": FloatRange(1e-3, 2e-2, log=True),
        "unet.epochs": IntRange(max(1, max_epochs // 3), max_epochs),
        "unet.consistency_weight": FloatRange(0.0, 1.0),
    }


def cone_unet_search_space(max_epochs: int) -> dict:
    """The U-Net space plus the number of cones per batch."""
    return {**unet_search_space(max_epochs), "cone.batch": Choice((4, 8, 16))}


UNET_DEFAULTS = {"hidden_dims": (64, 128, 256), "convs_per_level": 2, "dropout": 0.1}
register_model(ModelSpec("full_unet", "fusion", "graph U-Net over the H3 levels, trained on the whole area at once",
                         build=FullAreaUNet, defaults=UNET_DEFAULTS, search_space=unet_search_space))
register_model(ModelSpec("cone_unet", "fusion", "the same U-Net trained on batches of cones (memory bounded by a cone)",
                         build=FullAreaUNet, defaults=UNET_DEFAULTS, search_space=cone_unet_search_space))
