"""Stage 1: a concept bottleneck on the frozen stage-0 encoder, classified against text-anchored prototypes.

Model (:class:`Stage1Net`): bottleneck MLP with dropout (pooled feature -> concept embedding), and for
each level a :class:`~urbanrepml.models.concept.heads.PrototypeClassifier` whose base prototypes are
stage 0's text prototypes in the shared space, plus learnable residuals, a projection, normalisation,
a per-concept bias and a clamped logit scale. Loss (defaults in :class:`Stage1Config`):

- focal loss (gamma 2, inverse-frequency class weights, label smoothing 0.2) on meta and (``w_parent``) parent;
- ``w_hier`` x hierarchy consistency: KL(meta-implied parent || parent prediction);
- ``w_guided`` x parent-guided meta loss: cross-entropy among the true parent's metas only;
- ``w_proto`` x prototype contrastive: each meta prototype must be nearest to itself among all (InfoNCE);
- ``w_residual`` x mean squared residual (keeps prototypes near their text anchors).

Monitored: ``val_meta_top1`` (higher is better).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from urbanrepml.models.concept.heads import ConceptBottleneck, PrototypeClassifier
from urbanrepml.models.concept.losses import focal_loss, hierarchy_kl, parent_guided_meta
from urbanrepml.training import LoopConfig


@dataclass
class Stage1Config:
    hidden: int = 256
    dropout: float = 0.2
    gamma: float = 2.0
    smoothing: float = 0.2
    w_parent: float = 0.5
    w_hier: float = 0.5
    w_guided: float = 0.5
    w_proto: float = 0.1
    w_residual: float = 0.01
    batch_size: int = 64
    epochs: int = 15
    lr: float = 2e-3
    patience: int = 0
    seed: int = 0

    def loop(self) -> LoopConfig:
        return LoopConfig(epochs=self.epochs, lr=self.lr, patience=self.patience, seed=self.seed,
                          checkpoint_every=max(1, self.epochs), warmup_epochs=1)


class Stage1Net(nn.Module):
    def __init__(self, embed_dim: int, dim: int, meta_protos: torch.Tensor, parent_protos: torch.Tensor,
                 meta_to_parent: torch.Tensor, cfg: Stage1Config):
        super().__init__()
        self.bottleneck = ConceptBottleneck(embed_dim, dim, cfg.hidden, cfg.dropout)
        self.meta_cls = PrototypeClassifier(meta_protos)
        self.parent_cls = PrototypeClassifier(parent_protos)
        self.register_buffer("meta_to_parent", meta_to_parent)

    def forward(self, pooled):
        z = self.bottleneck(pooled)
        return z, self.meta_cls(z), self.parent_cls(z)


def class_weights(labels: np.ndarray, k: int) -> torch.Tensor:
    """Inverse class frequency, mean 1 over the classes present (absent classes weigh 1)."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 1.0)
    return torch.tensor(w / w[counts > 0].mean() if (counts > 0).any() else w, dtype=torch.float32)


class Stage1Task:
    name = "concept_stage1"
    monitor = "val_meta_top1"
    mode = "max"
    data_parallel = False

    def __init__(self, pooled: np.ndarray, meta: np.ndarray, parent: np.ndarray, train_rows, val_rows,
                 meta_protos: torch.Tensor, parent_protos: torch.Tensor, meta_to_parent, cfg: Stage1Config):
        self.pooled = torch.from_numpy(pooled)
        self.meta, self.parent = torch.from_numpy(meta), torch.from_numpy(parent)
        self.train_rows, self.val_rows, self.cfg = train_rows, val_rows, cfg
        self.meta_protos, self.parent_protos = meta_protos, parent_protos
        self.m2p = torch.as_tensor(meta_to_parent, dtype=torch.long)
        self.w_meta = class_weights(meta[train_rows], len(meta_protos))
        self.w_parent = class_weights(parent[train_rows], len(parent_protos))

    def build_model(self, device):
        return Stage1Net(self.pooled.shape[1], self.meta_protos.shape[1], self.meta_protos, self.parent_protos,
                         self.m2p, self.cfg)

    def _batches(self, rows, epoch, shard, shuffle):
        order = rows[shard.indices(len(rows), epoch, shuffle=True)] if shuffle else rows
        for i in range(0, len(order), self.cfg.batch_size):
            yield torch.from_numpy(np.asarray(order[i:i + self.cfg.batch_size]))

    def train_batches(self, epoch, shard):
        return self._batches(self.train_rows, epoch, shard, True)

    def val_batches(self, epoch, shard):
        return self._batches(self.val_rows, epoch, shard, False)

    def loss(self, net: Stage1Net, b):
        c = self.cfg
        _, ml, pl = net(self.pooled[b])
        m, p = self.meta[b], self.parent[b]
        loss = focal_loss(ml, m, gamma=c.gamma, weight=self.w_meta, smoothing=c.smoothing)
        loss = loss + c.w_parent * focal_loss(pl, p, gamma=c.gamma, weight=self.w_parent, smoothing=c.smoothing)
        loss = loss + c.w_hier * hierarchy_kl(ml, pl, net.meta_to_parent)
        loss = loss + c.w_guided * parent_guided_meta(ml, m, net.meta_to_parent)
        protos = net.meta_cls.prototypes()
        if len(protos) > 1:
            loss = loss + c.w_proto * F.cross_entropy(protos @ protos.T / 0.1, torch.arange(len(protos)))
        loss = loss + c.w_residual * (net.meta_cls.residual.pow(2).mean() + net.parent_cls.residual.pow(2).mean())
        return loss, ml, pl

    def train_step(self, net, b):
        loss, _, _ = self.loss(net, b)
        return loss, {"n": len(b), "loss": float(loss.detach()) * len(b)}

    def val_step(self, net, b):
        loss, ml, pl = self.loss(net, b)
        return {"n": len(b), "loss": float(loss.detach()) * len(b), "meta_ok": float((ml.argmax(1) == self.meta[b]).sum()),
                "parent_ok": float((pl.argmax(1) == self.parent[b]).sum())}

    def epoch_metrics(self, train, val):
        n = max(val.get("n", 0.0), 1.0)
        return {"train_loss": train["loss"] / max(train["n"], 1.0), "val_loss": val["loss"] / n,
                "val_meta_top1": val["meta_ok"] / n, "val_parent_top1": val["parent_ok"] / n}

    def output(self, model):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
