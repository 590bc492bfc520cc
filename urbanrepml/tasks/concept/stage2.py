"""Stage 2: geolocation from the frozen encoder and bottleneck, by cross-attention from the concept embedding.

Model: :class:`~urbanrepml.models.concept.heads.ConceptGeoHead` (patch tokens projected; multi-head
cross-attention with the concept embedding as query and the patches as keys and values; residual +
norm + FFN; optional gate; a geocell head and an offset head). Targets: the image's geocell and its 3-D
Cartesian offset from that cell's centre, divided by ``offset_scale`` (the training offsets' RMS, so the
regression has unit scale). Loss: cross-entropy on the cell + ``w_offset`` (5) x MSE on the offset.
Prediction: centre of the most likely cell + predicted offset x ``offset_scale``, back on the sphere.
``mode`` is the ablation (``both``, ``concept_only``, ``image_only``).

Monitored: ``val_median_km`` (lower is better).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from urbanrepml.geodesy import haversine_km
from urbanrepml.models.concept.heads import ConceptGeoHead
from urbanrepml.tasks.concept.metrics import predicted_points
from urbanrepml.training import LoopConfig


@dataclass
class Stage2Config:
    mode: str = "both"
    heads: int = 4
    gate: bool = True
    dropout: float = 0.1
    w_offset: float = 5.0
    batch_size: int = 64
    epochs: int = 20
    lr: float = 2e-3
    patience: int = 0
    seed: int = 0

    def loop(self) -> LoopConfig:
        return LoopConfig(epochs=self.epochs, lr=self.lr, patience=self.patience, seed=self.seed,
                          checkpoint_every=max(1, self.epochs), warmup_epochs=1)


class Stage2Task:
    name = "concept_stage2"
    monitor = "val_median_km"
    mode = "min"
    data_parallel = False

    def __init__(self, concept: np.ndarray, tokens: np.ndarray, cells: np.ndarray, offsets: np.ndarray,
                 centres: np.ndarray, lat: np.ndarray, lon: np.ndarray, train_rows, val_rows, cfg: Stage2Config):
        self.concept, self.tokens = torch.from_numpy(concept), torch.from_numpy(tokens)
        self.cells = torch.from_numpy(cells)
        self.offset_scale = float(np.sqrt((offsets[train_rows] ** 2).sum(axis=1).mean())) or 1.0
        self.offsets = torch.from_numpy((offsets / self.offset_scale).astype(np.float32))
        self.centres, self.lat, self.lon = centres, lat, lon
        self.train_rows, self.val_rows, self.cfg = train_rows, val_rows, cfg
        self._errors: list[float] = []

    def build_model(self, device):
        c = self.cfg
        return ConceptGeoHead(self.concept.shape[1], self.tokens.shape[2], len(self.centres), heads=c.heads, mode=c.mode,
                              gate=c.gate, dropout=c.dropout)

    def _batches(self, rows, epoch, shard, shuffle):
        order = rows[shard.indices(len(rows), epoch, shuffle=True)] if shuffle else rows
        for i in range(0, len(order), self.cfg.batch_size):
            yield torch.from_numpy(np.asarray(order[i:i + self.cfg.batch_size]))

    def train_batches(self, epoch, shard):
        return self._batches(self.train_rows, epoch, shard, True)

    def val_batches(self, epoch, shard):
        return self._batches(self.val_rows, epoch, shard, False)

    def forward(self, net, b):
        logits, off, attn = net(self.concept[b], self.tokens[b])
        loss = F.cross_entropy(logits, self.cells[b]) + self.cfg.w_offset * F.mse_loss(off, self.offsets[b])
        return loss, logits, off, attn

    def train_step(self, net, b):
        loss, *_ = self.forward(net, b)
        return loss, {"n": len(b), "loss": float(loss.detach()) * len(b)}

    def val_step(self, net, b):
        loss, logits, off, _ = self.forward(net, b)
        lat, lon = predicted_points(logits.numpy(), off.numpy().astype(np.float64), self.centres, self.offset_scale)
        err = haversine_km(lat, lon, self.lat[b.numpy()], self.lon[b.numpy()])
        # medians do not add up over batches: keep the errors in a side list, reset each epoch
        self._errors.extend(err.tolist())
        return {"n": len(b), "loss": float(loss.detach()) * len(b), "cell_ok": float((logits.argmax(1) == self.cells[b]).sum())}

    def epoch_metrics(self, train, val):
        n = max(val.get("n", 0.0), 1.0)
        med = float(np.median(self._errors)) if self._errors else float("nan")
        self._errors = []
        return {"train_loss": train["loss"] / max(train["n"], 1.0), "val_loss": val["loss"] / n,
                "val_cell_top1": val["cell_ok"] / n, "val_median_km": med}

    def predict(self, net, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cell logits, offsets in unit-sphere units, attention) of ``rows`` (eval mode)."""
        net.eval()
        outs = []
        with torch.no_grad():
            for i in range(0, len(rows), 256):
                b = torch.from_numpy(np.asarray(rows[i:i + 256]))
                logits, off, attn = net(self.concept[b], self.tokens[b])
                outs.append((logits.numpy(), off.numpy().astype(np.float64) * self.offset_scale, attn.numpy()))
        return tuple(np.concatenate([o[k] for o in outs]) for k in range(3))

    def output(self, model):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
