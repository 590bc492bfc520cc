"""How the fusion task feeds a U-Net: the whole area as one batch, or batches of cones.

Both feed the same :class:`~urbanrepml.models.unet.FullAreaUNet`; the choice is
one of data, named by the ``model`` setting users pass:

- ``full_unet``: :class:`FullAreaBatching`, the whole area's hierarchy at once
  (one graph, so one process);
- ``cone_unet``: :class:`ConeBatching`, batches of cones (see
  :mod:`urbanrepml.tasks.fusion.cones`), so memory is bounded by the batch; the
  cones are independent, so each ``torchrun`` rank takes its share.

A batching also says how the per-batch loss stats combine into the epoch's
metrics: the one full-area batch's losses as they are, or cell-weighted
reconstruction and batch-averaged consistency over cones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from urbanrepml.models.hierarchy import CellLevels, Hierarchy
from urbanrepml.tasks.fusion.cones import ConeBatcher, build_cones
from urbanrepml.training.distributed import Shard


@dataclass
class FusionBatch:
    """One step's data.

    Attributes:
        x: ``(n, D)`` inputs of the batch's finest cells.
        hierarchy: the graphs and parent maps over those cells.
        train_mask: ``(n, members)`` bool, rows whose reconstruction each member is trained on.
        val_mask: ``(n, members)`` bool, rows whose reconstruction is each member's validation loss.
        present: ``(n, M)`` bool, which modalities hold a value for each row.
        val_hidden: ``(n, M)`` bool, the fixed entries hidden for the validation loss.
    """

    x: Tensor
    hierarchy: Hierarchy
    train_mask: Tensor
    val_mask: Tensor
    present: Tensor | None = None
    val_hidden: Tensor | None = None


def _combine(prefix: str, sums: dict[str, float], consistency_weight: float, weighted: bool) -> dict[str, float]:
    if not weighted:  # one batch: its losses as computed
        return {f"{prefix}_loss": sums["loss"], f"{prefix}_reconstruction": sums["reconstruction"],
                f"{prefix}_consistency": sums["consistency"]}
    rec = sums["reconstruction_x_cells"] / max(sums["cells"], 1)
    cons = sums["consistency"] / max(sums["batches"], 1)
    extra = sums.get("visible_x_cells", 0.0) / max(sums["cells"], 1)  # visible_weight x visible MSE, cell-weighted
    return {f"{prefix}_loss": rec + extra + consistency_weight * cons, f"{prefix}_reconstruction": rec,
            f"{prefix}_consistency": cons}


def _as_is(x: Tensor) -> Tensor:
    return x


class FullAreaBatching:
    """The whole area as one batch: every cell, one graph per resolution, one process."""

    inference_input = staticmethod(_as_is)  # the task sets it: inputs -> the network's input, all visible

    data_parallel = False
    with_edges = True  # the area's neighbour graphs are built once, up front

    def prepare(self, levels: CellLevels, x: Tensor, train_mask: Tensor, val_mask: Tensor, device: torch.device,
                present: Tensor | None = None, val_hidden: Tensor | None = None) -> None:
        """Keep the inputs and build the area's hierarchy on ``device``."""
        self.x, self.train_mask, self.val_mask = x, train_mask, val_mask
        self.present, self.val_hidden = present, val_hidden
        self.hierarchy = levels.hierarchy().to(device)

    def batches(self, epoch: int, shard: Shard) -> Iterator[FusionBatch]:
        """The one batch (the same every epoch)."""
        yield FusionBatch(self.x, self.hierarchy, self.train_mask, self.val_mask, self.present, self.val_hidden)

    def metrics(self, prefix: str, sums: dict[str, float], consistency_weight: float) -> dict[str, float]:
        """``<prefix>_loss``, ``_reconstruction``, ``_consistency`` of the one batch."""
        return _combine(prefix, sums, consistency_weight, weighted=False)

    def embed(self, model: nn.Module) -> np.ndarray:
        """The code of every cell (N, embedding_dim) float32, every modality visible."""
        return model.embed(self.inference_input(self.x), self.hierarchy).cpu().numpy().astype(np.float32)


class ConeBatching:
    """Batches of ``batch_size`` cones (root resolution ``root_resolution``, ``k``-ring of roots).

    Each epoch the cones are shuffled by :meth:`~urbanrepml.training.distributed.Shard.indices`
    (seeded, per rank under ``torchrun``). Losses count each cell once, in its centre cone.
    """

    data_parallel = True
    with_edges = False  # neighbours are found per batch
    inference_input = staticmethod(_as_is)

    def __init__(self, root_resolution: int, k: int, batch_size: int, cache_dir: str | Path | None = None):
        self.root_resolution, self.k, self.batch_size, self.cache_dir = root_resolution, k, batch_size, cache_dir

    def prepare(self, levels: CellLevels, x: Tensor, train_mask: Tensor, val_mask: Tensor, device: torch.device,
                present: Tensor | None = None, val_hidden: Tensor | None = None) -> None:
        """Keep the inputs and build (or read from the cache) the cones over ``levels``."""
        self.x, self.train_mask, self.val_mask, self.device = x, train_mask, val_mask, device
        self.present, self.val_hidden = present, val_hidden
        self.cones = build_cones(levels, self.root_resolution, self.k, cache_dir=self.cache_dir)
        self.batcher = ConeBatcher(self.cones)

    def _batch(self, cone_ids: np.ndarray) -> FusionBatch:
        b = self.batcher.batch(cone_ids)
        cells = torch.from_numpy(b.cells0).to(self.device)
        centre = torch.from_numpy(b.centre0).to(self.device)
        return FusionBatch(self.x.index_select(0, cells), b.hierarchy.to(self.device),
                           centre[:, None] & self.train_mask[cells], centre[:, None] & self.val_mask[cells],
                           None if self.present is None else self.present.index_select(0, cells),
                           None if self.val_hidden is None else self.val_hidden.index_select(0, cells))

    def batches(self, epoch: int, shard: Shard) -> Iterator[FusionBatch]:
        """This rank's cones for ``epoch``, ``batch_size`` at a time."""
        order = shard.indices(self.cones.n_cones, epoch)
        for i in range(0, len(order), self.batch_size):
            yield self._batch(order[i:i + self.batch_size])

    def metrics(self, prefix: str, sums: dict[str, float], consistency_weight: float) -> dict[str, float]:
        """Reconstruction weighted by cells, consistency averaged over batches."""
        return _combine(prefix, sums, consistency_weight, weighted=True)

    def embed(self, model: nn.Module) -> np.ndarray:
        """``z_0`` of every cell, each taken from its centre cone (N, embedding_dim) float32."""
        out = np.zeros((self.x.shape[0], model.embedding_dim), dtype=np.float32)
        seen = np.zeros(self.x.shape[0], dtype=bool)
        order = np.arange(self.cones.n_cones)
        for i in range(0, len(order), self.batch_size):
            b = self.batcher.batch(order[i:i + self.batch_size])
            xb = self.x.index_select(0, torch.from_numpy(b.cells0).to(self.device))
            z = model.embed(self.inference_input(xb), b.hierarchy.to(self.device)).cpu().numpy()
            out[b.cells0[b.centre0]] = z[b.centre0]
            seen[b.cells0[b.centre0]] = True
        assert seen.all(), "every cell must lie in its centre cone"
        return out
