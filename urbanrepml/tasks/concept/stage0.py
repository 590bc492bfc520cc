"""Stage 0: align the image encoder with GPS and concepts (contrastive); top encoder blocks trainable.

Model (:class:`Stage0Net`): the top ``N`` blocks of the encoder (on cached stem features), a concept
projection and a GPS projection of the pooled feature, a patch projection of the tokens, a GPS adapter on
a frozen pretrained location encoder's embedding, and a linear map of the text prototypes into the
shared space. Loss (weights are parameters; defaults in :class:`Stage0Config`):

- ``w_gps`` x image-GPS symmetric InfoNCE;
- ``w_meta`` x image-meta and ``w_parent`` x image-parent prototype InfoNCE;
- ``w_hier`` x intra-batch hierarchy consistency (KL of the meta-implied parent vs the parent prediction);
- ``w_patch`` x patch-GPS InfoNCE (an image's score for a location is its best-matching patch);
- ``w_anchor`` x anchor loss: 1 - cosine of the pooled feature to the untouched encoder's (0: off).

Monitored: ``val_loss`` (lower is better).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.concept.heads import Projection
from urbanrepml.models.concept.losses import hierarchy_kl, info_nce, prototype_nce
from urbanrepml.training import LoopConfig


@dataclass
class Stage0Config:
    dim: int = 128
    temperature: float = 0.07
    w_gps: float = 1.0
    w_meta: float = 1.0
    w_parent: float = 0.5
    w_hier: float = 0.5
    w_patch: float = 0.5
    w_anchor: float = 0.1
    batch_size: int = 64
    epochs: int = 6
    lr: float = 5e-4
    patience: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.batch_size < 2:
            raise UrbanReprError(f"batch_size must be >= 2 (in-batch negatives), got {self.batch_size}")
        if not 0 < self.temperature < 10:
            raise UrbanReprError(f"temperature must be in (0, 10), got {self.temperature}")
        for k, v in asdict(self).items():
            if k.startswith("w_") and v < 0:
                raise UrbanReprError(f"loss weight {k} must be >= 0, got {v}")

    def loop(self) -> LoopConfig:
        return LoopConfig(epochs=self.epochs, lr=self.lr, patience=self.patience, seed=self.seed,
                          checkpoint_every=max(1, self.epochs), warmup_epochs=1)


class Stage0Net(nn.Module):
    def __init__(self, top: nn.Module, embed_dim: int, gps_dim: int, text_dim: int, cfg: Stage0Config,
                 meta_text: torch.Tensor, parent_text: torch.Tensor, meta_to_parent: torch.Tensor):
        super().__init__()
        self.top = top
        self.concept_proj = Projection(embed_dim, cfg.dim)
        self.gps_proj = Projection(embed_dim, cfg.dim)
        self.patch_proj = Projection(embed_dim, cfg.dim)
        self.gps_adapter = Projection(gps_dim, cfg.dim, hidden=256)
        self.text_proj = nn.Linear(text_dim, cfg.dim)
        self.register_buffer("meta_text", meta_text)
        self.register_buffer("parent_text", parent_text)
        self.register_buffer("meta_to_parent", meta_to_parent)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.top.modules():  # batch norms keep their statistics
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def prototypes(self) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.text_proj(self.meta_text), dim=-1), F.normalize(self.text_proj(self.parent_text), dim=-1)

    def encode(self, stem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.top(stem)
        return fmap.mean(dim=(2, 3)), fmap.flatten(2).transpose(1, 2)


class Stage0Task:
    """Stage 0 on the generic loop (see the module docstring)."""

    name = "concept_stage0"
    monitor = "val_loss"
    mode = "min"
    data_parallel = False

    def __init__(self, backbone, stem: np.ndarray, gps: np.ndarray, meta: np.ndarray, parent: np.ndarray,
                 train_rows: np.ndarray, val_rows: np.ndarray, meta_text: np.ndarray, parent_text: np.ndarray,
                 meta_to_parent: np.ndarray, cfg: Stage0Config):
        self.backbone, self.cfg = backbone, cfg
        self.stem = torch.from_numpy(stem)
        self.gps = torch.from_numpy(gps)
        self.meta, self.parent = torch.from_numpy(meta), torch.from_numpy(parent)
        self.train_rows, self.val_rows = train_rows, val_rows
        self.meta_text, self.parent_text = torch.from_numpy(meta_text), torch.from_numpy(parent_text)
        self.m2p = torch.as_tensor(meta_to_parent, dtype=torch.long)
        with torch.no_grad():  # the untouched encoder's pooled features (anchor loss)
            self.anchor = torch.cat([backbone.forward_top(self.stem[i:i + 256])[0] for i in range(0, len(self.stem), 256)])

    def build_model(self, device):
        import copy

        return Stage0Net(copy.deepcopy(self.backbone.top), self.backbone.embed_dim, self.gps.shape[1],
                         self.meta_text.shape[1], self.cfg, self.meta_text, self.parent_text, self.m2p)

    def _batches(self, rows, epoch, shard, shuffle):
        order = rows[shard.indices(len(rows), epoch, shuffle=shuffle)] if shuffle else rows
        bs = self.cfg.batch_size
        for i in range(0, len(order), bs):
            b = order[i:i + bs]
            if len(b) >= 2:
                yield torch.from_numpy(np.asarray(b))

    def train_batches(self, epoch, shard):
        return self._batches(self.train_rows, epoch, shard, True)

    def val_batches(self, epoch, shard):
        return self._batches(self.val_rows, epoch, shard, False)

    def losses(self, net: Stage0Net, b: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c, t = self.cfg, self.cfg.temperature
        pooled, tokens = net.encode(self.stem[b])
        g = net.gps_adapter(self.gps[b])
        z_c, z_g = net.concept_proj(pooled), net.gps_proj(pooled)
        pm, pp = net.prototypes()
        meta_logits, parent_logits = z_c @ pm.T / t, z_c @ pp.T / t
        patches = net.patch_proj(tokens)
        sim = torch.einsum("btd,kd->btk", patches, g).amax(dim=1) / t
        target = torch.arange(len(b))
        parts = {
            "gps": info_nce(z_g, g, t),
            "meta": prototype_nce(z_c, pm, self.meta[b], t),
            "parent": prototype_nce(z_c, pp, self.parent[b], t),
            "hier": hierarchy_kl(meta_logits, parent_logits, net.meta_to_parent),
            "patch": 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)),
            "anchor": (1 - F.cosine_similarity(pooled, self.anchor[b], dim=-1)).mean(),
        }
        loss = sum(getattr(c, f"w_{k}") * v for k, v in parts.items())
        parts["meta_correct"] = (meta_logits.argmax(1) == self.meta[b]).float().sum()
        return loss, parts

    def train_step(self, net, b):
        loss, parts = self.losses(net, b)
        return loss, {"n": len(b), "loss": float(loss.detach()) * len(b)}

    def val_step(self, net, b):
        loss, parts = self.losses(net, b)
        out = {"n": len(b), "loss": float(loss.detach()) * len(b), "meta_correct": float(parts.pop("meta_correct"))}
        out.update({f"l_{k}": float(v) * len(b) for k, v in parts.items()})
        return out

    def epoch_metrics(self, train, val):
        n = max(val.get("n", 0.0), 1.0)
        out = {"train_loss": train.get("loss", 0.0) / max(train.get("n", 0.0), 1.0), "val_loss": val.get("loss", 0.0) / n,
               "val_meta_top1_proto": val.get("meta_correct", 0.0) / n}
        out.update({f"val_loss_{k[2:]}": v / n for k, v in val.items() if k.startswith("l_")})
        return out

    def output(self, model: Stage0Net) -> dict:
        pm, pp = model.prototypes()
        return {"top": {k: v.detach().clone() for k, v in model.top.state_dict().items()},
                "net": {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("top.")},
                "meta_prototypes": pm.detach().clone(), "parent_prototypes": pp.detach().clone()}
