"""Fusion as a training task: U-Nets learn to predict hidden modality entries over the H3 hierarchy.

- Inputs ``x`` (N, D) at the finest cells (sorted ``uint64``), ``groups`` (D,) the modality of each
  column (-1: an indicator, never hidden, never predicted) and ``present`` (N, M) which modality
  holds a value per cell; the model is a :class:`~urbanrepml.models.unet.FusionEnsemble` of
  ``members`` :class:`~urbanrepml.models.unet.FullAreaUNet` fed by a batching
  (:mod:`urbanrepml.tasks.fusion.batching`): the whole area (``full_unet``) or batches of cones
  (``cone_unet``).
- Masked prediction: every step, for every member, each modality block of each cell is hidden with
  probability ``mask_modality`` and whole cells with ``mask_cell`` (drawn per batch; for cones the
  loss counts centre cells); hidden entries are zeroed and one visibility flag per modality is
  appended; the loss is the MSE on hidden present entries of training cells (+ ``visible_weight``
  x the MSE on visible ones) + ``consistency_weight`` x the cross-resolution consistency.
- Validation: cells are split by spatial blocks (their parent at ``val_block_resolution``, hashed
  with the seed and the member; :func:`~urbanrepml.tasks.fusion.split.spatial_split`), each member
  holding out its own blocks; the validation loss is the MSE on a fixed, seeded draw of hidden entries
  of a member's held-out cells - values the network does not see in that forward pass - plus the
  same consistency term, averaged over members. It is the monitored metric.
- Output: the codes of every cell with every modality visible: the concatenated finest outputs
  ``z_0`` of the members, (N, members x embedding_dim) float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from urbanrepml.areas import h3ops
from urbanrepml.errors import UrbanReprError
from urbanrepml.models.hierarchy import cell_levels
from urbanrepml.models.unet import FusionEnsemble, MaskedLosses, draw_hidden, masked_input, masked_losses
from urbanrepml.tasks.fusion.batching import ConeBatching, FullAreaBatching, FusionBatch
from urbanrepml.tasks.fusion.split import spatial_split
from urbanrepml.training.distributed import Shard

if TYPE_CHECKING:
    from urbanrepml.tasks.fusion.train import TrainConfig


def _stats(losses: list[MaskedLosses], mask: Tensor, visible_weight: float) -> dict[str, float]:
    """Summable stats of one batch (averaged over members): losses as they are, and times the cells they count."""
    k = len(losses)
    n = float(mask.sum()) / mask.shape[1]  # cells per member
    rec = sum(x.hidden.item() for x in losses) / k
    vis = sum(x.visible.item() for x in losses) / k
    return {"loss": sum(x.total.item() for x in losses) / k, "reconstruction": rec,
            "consistency": sum(x.consistency.item() for x in losses) / k,
            "reconstruction_x_cells": rec * n, "visible_x_cells": visible_weight * vis * n, "cells": n, "batches": 1.0}


class FusionTask:
    """The fusion :class:`~urbanrepml.training.task.Task` (see the module docstring).

    Args:
        x: (N, D) finite inputs, rows in the order of ``cells``.
        cells: the finest cells, sorted unique ``uint64`` at ``cfg.resolutions[0]``.
        cfg: the fusion settings (model, widths, masking, split, cones).
        cache_dir: where cones are cached (``cone_unet``); ``None``: no cache.
        groups: (D,) int column -> modality (-1: indicator); ``None``: every column one modality.
        present: (N, M) bool, modality values present per cell; ``None``: all present.
    """

    monitor = "val_loss"
    mode = "min"

    def __init__(self, x: np.ndarray, cells: np.ndarray, cfg: TrainConfig, *, cache_dir: str | Path | None = None,
                 groups: np.ndarray | None = None, present: np.ndarray | None = None):
        if x.shape[0] != len(cells):
            raise UrbanReprError(f"inputs have {x.shape[0]} rows but {len(cells)} cells")
        if not np.isfinite(x).all():
            raise UrbanReprError("fusion inputs contain NaN or inf; fix the modality tables")
        if np.any(np.diff(cells.astype(np.uint64)) <= 0):
            raise UrbanReprError("cells must be sorted and unique")
        finest = int(h3ops.cell_resolution(cells[:1])[0])
        if finest != cfg.resolutions[0]:
            raise UrbanReprError(f"finest resolution {cfg.resolutions[0]} differs from the inputs' resolution {finest}")
        if cfg.block_resolution >= finest:
            raise UrbanReprError(f"val_block_resolution {cfg.block_resolution} must be coarser than {finest}")
        self.x, self.cells, self.cfg = x, cells, cfg
        self.groups = np.zeros(x.shape[1], dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
        if self.groups.shape != (x.shape[1],):
            raise UrbanReprError(f"groups must give one modality per input column ({x.shape[1]}), got {self.groups.shape}")
        n_mod = int(self.groups.max()) + 1 if (self.groups >= 0).any() else 0
        self.present = np.ones((len(cells), n_mod), dtype=bool) if present is None else np.asarray(present, dtype=bool)
        if self.present.shape != (len(cells), n_mod):
            raise UrbanReprError(f"present must be (cells, modalities) = {(len(cells), n_mod)}, got {self.present.shape}")
        self.n_modalities = n_mod
        self.name = cfg.model
        if cfg.model == "full_unet":
            self.batching: FullAreaBatching | ConeBatching = FullAreaBatching()
        else:
            self.batching = ConeBatching(cfg.cone_root_resolution, cfg.cone_k, cfg.cone_batch, cache_dir)
        self.data_parallel = self.batching.data_parallel

    @property
    def embedding_dim(self) -> int:
        """Width of the fused embedding (all members' codes)."""
        return int(self.cfg.embedding_dim or self.cfg.hidden_dims[0]) * self.cfg.members

    def build_model(self, device: torch.device) -> nn.Module:
        """Hierarchy, validation split, fixed validation mask and batching on ``device``; a fresh ensemble."""
        cfg = self.cfg
        levels = cell_levels(self.cells, cfg.resolutions, with_edges=self.batching.with_edges)
        x = torch.from_numpy(np.ascontiguousarray(self.x, dtype=np.float32)).to(device)
        # each member holds out its own blocks (independent draws): the others train on them
        val = torch.from_numpy(np.stack([spatial_split(self.cells, cfg.block_resolution, cfg.val_fraction,
                                                       cfg.seed * 1_000 + m) for m in range(cfg.members)], 1)).to(device)
        present = torch.from_numpy(self.present).to(device)
        gen = torch.Generator().manual_seed(10_007 + int(cfg.seed))  # the same validation draw every epoch
        val_hidden = draw_hidden(len(self.cells), self.n_modalities, cfg.mask_modality, cfg.mask_cell, gen, device)
        self.groups_t = torch.from_numpy(self.groups).to(device)
        visible = torch.zeros((1, self.n_modalities), dtype=torch.bool, device=device)
        self.batching.inference_input = lambda xb: masked_input(xb, visible.expand(xb.shape[0], -1), self.groups_t)
        self.batching.prepare(levels, x, ~val, val, device, present, val_hidden)
        return FusionEnsemble(cfg.members, x.shape[1] + self.n_modalities, cfg.hidden_dims, cfg.convs_per_level,
                              cfg.dropout, cfg.embedding_dim, out_dim=x.shape[1], seed=cfg.seed)

    def train_batches(self, epoch: int, shard: Shard):
        return self.batching.batches(epoch, shard)

    def val_batches(self, epoch: int, shard: Shard):
        return self.batching.batches(epoch, shard)

    def _losses(self, net: nn.Module, batch: FusionBatch, hiddens: list[Tensor], rows: Tensor) -> list[MaskedLosses]:
        """Each member's losses on its own ``rows`` (a column of the ``(n, members)`` mask)."""
        cfg = self.cfg
        outs = net([masked_input(batch.x, h, self.groups_t) for h in hiddens], batch.hierarchy)
        return [masked_losses(o, batch.x, batch.hierarchy, h, batch.present, self.groups_t, rows[:, m],
                              cfg.visible_weight, cfg.consistency_weight)
                for m, (o, h) in enumerate(zip(outs, hiddens, strict=True))]

    def train_step(self, net: nn.Module, batch: FusionBatch) -> tuple[Tensor, dict[str, float]]:
        cfg = self.cfg
        n = batch.x.shape[0]
        hiddens = [draw_hidden(n, self.n_modalities, cfg.mask_modality, cfg.mask_cell, device=batch.x.device)
                   for _ in range(cfg.members)]  # a fresh draw per member and step (the loop's seeded torch RNG)
        losses = self._losses(net, batch, hiddens, batch.train_mask)
        total = sum(x.total for x in losses) / len(losses)
        return total, _stats(losses, batch.train_mask, cfg.visible_weight)

    def val_step(self, net: nn.Module, batch: FusionBatch) -> dict[str, float]:
        losses = self._losses(net, batch, [batch.val_hidden] * self.cfg.members, batch.val_mask)
        return _stats(losses, batch.val_mask, self.cfg.visible_weight)

    def epoch_metrics(self, train: dict[str, float], val: dict[str, float]) -> dict[str, float]:
        """``train_``/``val_`` ``loss``, ``reconstruction`` and ``consistency``."""
        w = self.cfg.consistency_weight
        return {**self.batching.metrics("train", train, w), **self.batching.metrics("val", val, w)}

    def output(self, model: nn.Module) -> np.ndarray:
        """The members' concatenated finest outputs ``z_0`` of every cell (every modality visible)."""
        return self.batching.embed(model)
