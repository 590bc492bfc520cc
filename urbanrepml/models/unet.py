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
              x_hat = MLP(z_0)                                     prediction of every modality entry

The fused embedding is ``z_0``: the finest-resolution output, of width
``embedding_dim`` (default: ``hidden_dims[0]``). One level (``hidden_dims`` of
length 1) is a plain residual graph network at the finest resolution.

Masked prediction (:func:`draw_hidden`, :func:`masked_input`, :func:`masked_losses`):
each step hides modality blocks of cells; hidden entries are zeroed in the input
and one visibility flag per modality is appended, so the network input has
``D + M`` columns; the decoder predicts all ``D`` entries and the loss counts the
hidden entries that hold a value. :class:`FusionEnsemble` holds several
independently initialised U-Nets whose codes are concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
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
        out_dim: width of the prediction ``x_hat`` (default ``in_dim``).

    ``forward(x, hierarchy)``: ``x`` (N_0, in_dim) -> :class:`UNetOutput`.
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], convs_per_level: int = 2,
                 dropout: float = 0.0, embedding_dim: int | None = None, out_dim: int | None = None):
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
        e = self.embedding_dim
        self.recon = nn.Sequential(nn.Linear(e, e), nn.GELU(), nn.Linear(e, int(out_dim or in_dim)))

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


class FusionEnsemble(nn.Module):
    """``members`` U-Nets with the same settings, each initialised from its own seed; codes concatenated.

    ``forward(xs, hierarchy)``: ``xs`` one input tensor per member (or one tensor for all) ->
    list of :class:`UNetOutput`. :meth:`embed` gives ``[z_0 of member 0 | z_0 of member 1 | ...]``.
    """

    def __init__(self, members: int, in_dim: int, hidden_dims: Sequence[int], convs_per_level: int = 2,
                 dropout: float = 0.0, embedding_dim: int | None = None, out_dim: int | None = None, seed: int = 0):
        super().__init__()
        if members < 1:
            raise ValueError("an ensemble needs at least one member")
        nets = []
        for i in range(int(members)):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed) * 1000 + i)
                nets.append(FullAreaUNet(in_dim, hidden_dims, convs_per_level, dropout, embedding_dim, out_dim))
        self.members = nn.ModuleList(nets)
        self.member_dim = nets[0].embedding_dim
        self.embedding_dim = self.member_dim * len(nets)

    def forward(self, xs, hierarchy: Hierarchy) -> list[UNetOutput]:
        if isinstance(xs, Tensor):
            xs = [xs] * len(self.members)
        return [net(x, hierarchy) for net, x in zip(self.members, xs, strict=True)]

    def embed(self, x: Tensor, hierarchy: Hierarchy) -> Tensor:
        """Concatenated finest codes of every member for input ``x`` (all members see the same)."""
        return torch.cat([out.embeddings[0] for out in self(x, hierarchy)], dim=1)


def draw_hidden(n: int, modalities: int, mask_modality: float, mask_cell: float, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu") -> Tensor:
    """Bool ``(n, modalities)``: each entry hidden with prob ``mask_modality``, each whole row with prob ``mask_cell``."""
    u = torch.rand((n, modalities), generator=generator)
    c = torch.rand((n, 1), generator=generator)
    return ((u < mask_modality) | (c < mask_cell)).to(device)


def masked_input(x: Tensor, hidden: Tensor, groups: Tensor) -> Tensor:
    """``x`` with hidden entries zeroed, plus one visibility flag per modality: ``(n, D + M)``.

    ``groups`` (``(D,)`` long): each column's modality, -1 for columns never hidden (indicators).
    The hidden values never reach the result: they are replaced, not scaled.
    """
    cols = groups >= 0
    hide = torch.zeros_like(x, dtype=torch.bool)
    hide[:, cols] = hidden[:, groups[cols]]
    visible = (~hidden).to(x.dtype)
    return torch.cat([torch.where(hide, torch.zeros((), dtype=x.dtype, device=x.device), x), visible], dim=1)


@dataclass
class MaskedLosses:
    total: Tensor
    hidden: Tensor  # MSE on hidden present entries
    visible: Tensor  # MSE on visible present entries
    consistency: Tensor
    hidden_entries: Tensor  # how many entries ``hidden`` counts


def masked_losses(out: UNetOutput, x: Tensor, hierarchy: Hierarchy, hidden: Tensor, present: Tensor, groups: Tensor,
                  rows: Tensor, visible_weight: float = 0.0, consistency_weight: float = 0.5) -> MaskedLosses:
    """MSE of ``out.reconstruction`` vs ``x`` on the hidden entries that hold a value, of rows ``rows``.

    ``hidden``/``present``: bool ``(n, M)`` per modality; ``groups``: ``(D,)`` column -> modality
    (-1: not predicted); ``rows``: bool ``(n,)`` rows counted. Plus ``visible_weight`` x the MSE on
    visible present entries and ``consistency_weight`` x the cross-resolution consistency.
    """
    cols = groups >= 0
    g = groups[cols]
    err = (out.reconstruction[:, cols] - x[:, cols]) ** 2
    ok = present[:, g] & rows[:, None]
    h = hidden[:, g] & ok
    v = ~hidden[:, g] & ok
    nh = h.sum()
    rec_h = (err * h).sum() / nh.clamp(min=1)
    rec_v = (err * v).sum() / v.sum().clamp(min=1)
    cons = _consistency(out, hierarchy, x)
    total = rec_h + visible_weight * rec_v + consistency_weight * cons
    return MaskedLosses(total, rec_h, rec_v, cons, nh)


def _consistency(out: UNetOutput, hierarchy: Hierarchy, like: Tensor) -> Tensor:
    cons = like.new_zeros(())
    levels = len(out.embeddings)
    for l in range(1, levels):
        pooled = mean_pool(out.embeddings[l - 1], hierarchy.pools[l])
        cons = cons + F.mse_loss(pooled, out.embeddings[l])
    return cons / (levels - 1) if levels > 1 else cons


def unet_search_space(max_epochs: int) -> dict:
    """What tuning samples for the U-Nets (shared names, so a sampler learns across both batchings)."""
    return {
        "unet.width": Choice((32, 64, 128)),
        "unet.convs_per_level": IntRange(1, 3),
        "unet.dropout": FloatRange(0.0, 0.3),
        "unet.lr": FloatRange(1e-3, 2e-2, log=True),
        "unet.epochs": IntRange(max(1, max_epochs // 3), max_epochs),
        "unet.consistency_weight": FloatRange(0.0, 1.0),
        "unet.mask_modality": FloatRange(0.1, 0.5),
        "unet.mask_cell": FloatRange(0.0, 0.7),
    }


def cone_unet_search_space(max_epochs: int) -> dict:
    """The U-Net space plus the number of cones per batch."""
    return {**unet_search_space(max_epochs), "cone.batch": Choice((4, 8, 16))}


UNET_DEFAULTS = {"hidden_dims": (128,), "convs_per_level": 2, "dropout": 0.1}
register_model(ModelSpec("full_unet", "fusion", "graph U-Net over the H3 levels, trained on the whole area at once",
                         build=FullAreaUNet, defaults=UNET_DEFAULTS, search_space=unet_search_space))
register_model(ModelSpec("cone_unet", "fusion", "the same U-Net trained on batches of cones (memory bounded by a cone)",
                         build=FullAreaUNet, defaults=UNET_DEFAULTS, search_space=cone_unet_search_space))
