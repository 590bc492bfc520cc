"""Fusion as a training task: a U-Net learns to reconstruct the modality inputs over the H3 hierarchy.

- Inputs ``x`` (N, D) at the finest cells (sorted ``uint64``); the model is a
  :class:`~urbanrepml.models.unet.FullAreaUNet` fed by a batching
  (:mod:`urbanrepml.tasks.fusion.batching`): the whole area (``full_unet``) or
  batches of cones (``cone_unet``).
- Validation: cells are split by spatial blocks (their parent at
  ``val_block_resolution``, hashed with the seed; :func:`~urbanrepml.tasks.fusion.split.spatial_split`):
  about ``val_fraction`` of the blocks are held out. Their rows still flow through
  the graph as inputs (the model is the same at training and at inference time),
  but their reconstruction error is never trained on; the validation loss
  (reconstruction of held-out cells + consistency) is the monitored metric.
- Losses: :func:`~urbanrepml.models.unet.unet_losses` (reconstruction + weighted
  cross-resolution consistency).
- Output: the finest-resolution embedding ``z_0`` of every cell, (N, embedding_dim) float32.
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
from urbanrepml.models.unet import FullAreaUNet, Losses, unet_losses
from urbanrepml.tasks.fusion.batching import ConeBatching, FullAreaBatching, FusionBatch
from urbanrepml.tasks.fusion.split import spatial_split
from urbanrepml.training.distributed import Shard

if TYPE_CHECKING:
    from urbanrepml.tasks.fusion.train import TrainConfig


def _stats(losses: Losses, mask: Tensor) -> dict[str, float]:
    """Summable stats of one batch: the losses as they are, and the reconstruction times the cells it counts."""
    n = float(mask.sum())
    rec = losses.reconstruction.item()
    return {"loss": losses.total.item(), "reconstruction": rec, "consistency": losses.consistency.item(),
            "reconstruction_x_cells": rec * n, "cells": n, "batches": 1.0}


class FusionTask:
    """The fusion :class:`~urbanrepml.training.task.Task` (see the module docstring).

    Args:
        x: (N, D) finite inputs, rows in the order of ``cells``.
        cells: the finest cells, sorted unique ``uint64`` at ``cfg.resolutions[0]``.
        cfg: the fusion settings (model, widths, split, cones).
        cache_dir: where cones are cached (``cone_unet``); ``None``: no cache.
    """

    monitor = "val_loss"
    mode = "min"

    def __init__(self, x: np.ndarray, cells: np.ndarray, cfg: TrainConfig, *, cache_dir: str | Path | None = None):
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
        self.name = cfg.model
        if cfg.model == "full_unet":
            self.batching: FullAreaBatching | ConeBatching = FullAreaBatching()
        else:
            self.batching = ConeBatching(cfg.cone_root_resolution, cfg.cone_k, cfg.cone_batch, cache_dir)
        self.data_parallel = self.batching.data_parallel

    @property
    def embedding_dim(self) -> int:
        """Width of the fused embedding."""
        return int(self.cfg.embedding_dim or self.cfg.hidden_dims[0])

    def build_model(self, device: torch.device) -> nn.Module:
        """Hierarchy, validation split and batching on ``device``; a fresh U-Net."""
        cfg = self.cfg
        levels = cell_levels(self.cells, cfg.resolutions, with_edges=self.batching.with_edges)
        x = torch.from_numpy(np.ascontiguousarray(self.x, dtype=np.float32)).to(device)
        val = torch.from_numpy(spatial_split(self.cells, cfg.block_resolution, cfg.val_fraction, cfg.seed)).to(device)
        self.batching.prepare(levels, x, ~val, val, device)
        return FullAreaUNet(x.shape[1], cfg.hidden_dims, cfg.convs_per_level, cfg.dropout, cfg.embedding_dim)

    def train_batches(self, epoch: int, shard: Shard):
        return self.batching.batches(epoch, shard)

    def val_batches(self, epoch: int, shard: Shard):
        return self.batching.batches(epoch, shard)

    def train_step(self, net: nn.Module, batch: FusionBatch) -> tuple[Tensor, dict[str, float]]:
        losses = unet_losses(net(batch.x, batch.hierarchy), batch.x, batch.hierarchy, batch.train_mask,
                             self.cfg.consistency_weight)
        return losses.total, _stats(losses, batch.train_mask)

    def val_step(self, net: nn.Module, batch: FusionBatch) -> dict[str, float]:
        losses = unet_losses(net(batch.x, batch.hierarchy), batch.x, batch.hierarchy, batch.val_mask,
                             self.cfg.consistency_weight)
        return _stats(losses, batch.val_mask)

    def epoch_metrics(self, train: dict[str, float], val: dict[str, float]) -> dict[str, float]:
        """``train_``/``val_`` ``loss``, ``reconstruction`` and ``consistency``."""
        w = self.cfg.consistency_weight
        return {**self.batching.metrics("train", train, w), **self.batching.metrics("val", val, w)}

    def output(self, model: nn.Module) -> np.ndarray:
        """Finest-resolution output ``z_0`` of every cell (all inputs visible)."""
        return self.batching.embed(model)
