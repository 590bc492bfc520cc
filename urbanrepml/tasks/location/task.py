"""Location encoding as a training task: pair each location with the embedding stored there (symmetric InfoNCE).

- Records: :class:`~urbanrepml.tasks.location.data.LocatedEmbeddings` (cell centres of a per-cell
  table, or points of an image-embedding CSV).
- Validation: whole spatial blocks (H3 parents at ``block_resolution``, chosen by a seeded hash;
  :func:`~urbanrepml.tasks.location.data.block_split`) are held out, about ``val_fraction`` of
  them; their records never reach a gradient. Never random points.
- Model: a registered ``location_encoder`` family (:mod:`urbanrepml.models.location.encoders`)
  inside :class:`~urbanrepml.models.location.contrastive.ContrastiveLocationModel`; the paired
  embeddings are standardised with the training records' mean/std (stored in the model).
- Loss: :func:`~urbanrepml.models.location.contrastive.symmetric_infonce` over shuffled batches of
  ``batch_size`` training records, learnable temperature.
- Epoch metrics: ``train_loss``, ``val_loss`` (InfoNCE over fixed batches of held-out records),
  ``val_top1``/``val_top10``/``val_top1_cos``/``val_oracle_cos`` (location -> embedding retrieval
  among the held-out records, own record excluded; see :mod:`urbanrepml.tasks.location.metrics`;
  at most ``max_queries`` queries), ``temperature``.
- Monitored: ``val_top10`` (higher is better): the best checkpoint is chosen by the metric the
  registry's promotion policy reads.
- Refit (:func:`refit_location_encoder`): the same configuration trained again on every record,
  held-out blocks included, for the number of epochs the validation run chose (its best
  ``val_top10`` epoch). Its ``val_*`` numbers are in-sample and say nothing about new places; the
  validation run's are the held-out evidence.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.location import TRAINABLE
from urbanrepml.models.location.contrastive import ContrastiveLocationModel, symmetric_infonce
from urbanrepml.models.location.frame import bounds_of
from urbanrepml.models.location.inference import encode  # noqa: F401 - re-exported
from urbanrepml.models.registry import get_model, model_spec
from urbanrepml.tasks.location.data import LocatedEmbeddings, block_split
from urbanrepml.tasks.location.metrics import best_similarity, normalise_rows, retrieval_sums
from urbanrepml.training import FitResult, Hooks, LoopConfig, Shard, Trainer

MONITOR = "val_top10"
MONITOR_MODE = "max"


@dataclass
class LocencConfig:
    """Settings of one location-encoder training.

    ``encoder`` is a trainable family (``sh_siren``, ``space2vec_grid``, ``space2vec_theory``,
    ``rff``); ``encoder_config`` overrides its registry defaults (``bounds`` is set from the
    data). ``weight_decay``, ``warmup_epochs`` and ``grad_clip`` go to the loop. The defaults are
    what the ``locenc`` stage trains on Porto Alegre (see docs/location-encoder.md): a linear
    projection (``projection_hidden`` 0) and a high initial temperature keep the location
    embedding linearly related to the embeddings it is paired with.
    """

    encoder: str = "rff"
    encoder_config: dict = field(default_factory=dict)
    projection_hidden: int = 0
    temperature: float = 1.0
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    epochs: int = 60
    warmup_epochs: int | None = None
    grad_clip: float | None = 1.0
    patience: int = 0
    val_fraction: float = 0.1
    block_resolution: int = 7
    checkpoint_every: int = 25
    seed: int = 0
    device: str | None = None
    max_queries: int = 4096

    def __post_init__(self):
        if self.encoder not in TRAINABLE:
            raise UrbanReprError(f"encoder must be one of {', '.join(TRAINABLE)}, got {self.encoder!r}")
        if self.batch_size < 2:
            raise UrbanReprError(f"batch_size must be >= 2 (in-batch negatives), got {self.batch_size}")
        if not 0 < self.val_fraction < 1:
            raise UrbanReprError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0 <= self.block_resolution <= 15:
            raise UrbanReprError(f"block_resolution must be an H3 resolution (0-15), got {self.block_resolution}")
        if not 0 < self.temperature < 10:
            raise UrbanReprError(f"temperature must be in (0, 10), got {self.temperature}")
        if self.projection_hidden < 0:
            raise UrbanReprError(f"projection_hidden must be >= 0 (0: a linear projection), got {self.projection_hidden}")
        unknown = set(self.encoder_config) - set(model_spec(self.encoder).defaults) - {"bounds"}
        if unknown:
            raise UrbanReprError(f"encoder {self.encoder} has no setting(s) {', '.join(sorted(unknown))}; "
                                 f"it takes {', '.join(model_spec(self.encoder).defaults)}")
        self.loop_config()

    def loop_config(self) -> LoopConfig:
        return LoopConfig(epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay, warmup_epochs=self.warmup_epochs,
                          grad_clip=self.grad_clip, patience=self.patience, checkpoint_every=self.checkpoint_every,
                          seed=self.seed, device=self.device)

    def as_params(self) -> dict:
        """Flat settings (stored in loop checkpoints and compared on resume)."""
        d = asdict(self)
        d.update({f"encoder.{k}": v for k, v in sorted(d.pop("encoder_config").items()) if k != "bounds"})
        return d


class LocationTask:
    """The location-encoder :class:`~urbanrepml.training.task.Task` (see the module docstring).

    Args:
        data: the records.
        cfg: the settings.
        bounds: the encoder's region ``(lat_min, lat_max, lon_min, lon_max)``; default: the
            records' extent widened by 10% on each side.
        train_on_all: train on every record, held-out blocks included (a refit; ``val_*`` become in-sample).
    """

    name = "locenc"
    monitor = MONITOR
    mode = MONITOR_MODE
    data_parallel = True

    def __init__(self, data: LocatedEmbeddings, cfg: LocencConfig, bounds: tuple[float, float, float, float] | None = None,
                 train_on_all: bool = False):
        self.data, self.cfg = data, cfg
        self.held = block_split(data.lat, data.lon, cfg.block_resolution, cfg.val_fraction, cfg.seed)
        self.train_on_all = bool(train_on_all)
        self.epochs_seen = 0
        self.train_idx = np.arange(data.n) if train_on_all else np.flatnonzero(~self.held)
        self.val_idx = np.flatnonzero(self.held)
        if len(self.train_idx) < 2 or len(self.val_idx) < 2:
            raise UrbanReprError(f"{data.source}: the block split leaves {len(self.train_idx)} training and "
                                 f"{len(self.val_idx)} held-out record(s); use a finer block_resolution or more records")
        self.bounds = tuple(bounds) if bounds is not None else bounds_of(data.lat, data.lon)
        self.encoder_config = {**model_spec(cfg.encoder).defaults, **cfg.encoder_config, "bounds": self.bounds}
        x_train = data.x[self.train_idx].astype(np.float64)
        self.mean, self.std = x_train.mean(axis=0), x_train.std(axis=0)
        rng = np.random.default_rng(cfg.seed)
        n_val = len(self.val_idx)
        self.query_pos = (np.sort(rng.choice(n_val, cfg.max_queries, replace=False)) if n_val > cfg.max_queries
                          else np.arange(n_val))
        self.last_scale = float("nan")

    def build_model(self, device: torch.device) -> nn.Module:
        """Records on ``device``, the held-out retrieval answers precomputed, a fresh model."""
        d = self.data
        self.device = device
        self.latlon = torch.from_numpy(d.latlon).to(device)
        self.x = torch.from_numpy(d.x).to(device)
        val = torch.from_numpy(self.val_idx).to(device)
        xb = normalise_rows(d.x[self.val_idx], self.mean, self.std).to(device)
        q = torch.from_numpy(self.query_pos).to(device)
        self.val_bank = val
        self.val_bank_norm = xb
        self.query_own = q
        self.query_best = best_similarity(xb[q], xb, q)
        encoder = get_model(self.cfg.encoder, **self.encoder_config)
        return ContrastiveLocationModel(encoder, d.dim, self.cfg.projection_hidden, self.cfg.temperature,
                                        torch.from_numpy(self.mean.astype(np.float32)),
                                        torch.from_numpy(self.std.astype(np.float32)))

    def train_batches(self, epoch: int, shard: Shard):
        order = self.train_idx[shard.indices(len(self.train_idx), epoch)]
        size = self.cfg.batch_size
        for start in range(0, len(order), size):
            batch = order[start:start + size]
            if len(batch) >= 2:
                yield torch.from_numpy(batch).to(self.device)

    def train_step(self, net: nn.Module, batch: Tensor) -> tuple[Tensor, dict[str, float]]:
        loc, emb, scale = net(self.latlon[batch], self.x[batch])
        loss = symmetric_infonce(loc, emb, scale)
        self.last_scale = float(scale.detach())
        n = float(len(batch))
        return loss, {"loss_x_n": float(loss.detach()) * n, "n": n}

    def val_batches(self, epoch: int, shard: Shard):
        size = self.cfg.batch_size
        for j, start in enumerate(range(0, len(self.val_idx), size)):
            batch = self.val_idx[start:start + size]
            if len(batch) >= 2 and j % shard.world == shard.rank:
                yield ("loss", torch.from_numpy(batch).to(self.device))
        if shard.rank == 0:
            yield ("retrieval", None)

    def val_step(self, net: nn.Module, batch: tuple[str, Any]) -> dict[str, float]:
        kind, idx = batch
        if kind == "loss":
            loc, emb, scale = net(self.latlon[idx], self.x[idx])
            n = float(len(idx))
            return {"val_loss_x_n": float(symmetric_infonce(loc, emb, scale)) * n, "val_n": n}
        locs, keys = [], []
        for start in range(0, len(self.val_bank), 8192):
            rows = self.val_bank[start:start + 8192]
            loc, emb, _ = net(self.latlon[rows], self.x[rows])
            locs.append(loc)
            keys.append(emb)
        loc, keys = torch.cat(locs), torch.cat(keys)
        q = self.query_own
        sums = retrieval_sums(loc[q], keys, self.val_bank_norm[q], self.val_bank_norm, q, best=self.query_best)
        return {f"val_{k}_sum": v for k, v in sums.items()}

    def epoch_metrics(self, train: dict[str, float], val: dict[str, float]) -> dict[str, float]:
        out = {"train_loss": train.get("loss_x_n", 0.0) / max(train.get("n", 0.0), 1.0),
               "val_loss": val.get("val_loss_x_n", 0.0) / max(val.get("val_n", 0.0), 1.0),
               "temperature": 1.0 / self.last_scale if self.last_scale == self.last_scale else float("nan")}
        queries = max(val.get("val_queries_sum", 0.0), 1.0)
        for key in ("top1", "top10", "top1_cos", "oracle_cos"):
            out[f"val_{key}"] = val.get(f"val_{key}_sum", 0.0) / queries
        if self.train_on_all:  # a refit keeps its last epoch: it monitors the epoch count
            self.epochs_seen += 1
            out["epoch"] = float(self.epochs_seen)
        return out

    def output(self, model: nn.Module) -> ContrastiveLocationModel:
        """The trained model (best weights), on the CPU, in eval mode."""
        return copy.deepcopy(model).cpu().eval()


@dataclass
class LocencResult:
    """What :func:`train_location_encoder` returns: the model (best weights), the task (split, bounds) and the fit."""

    model: ContrastiveLocationModel
    task: LocationTask
    fit: FitResult

    @property
    def encoder_config(self) -> dict:
        return self.task.encoder_config


def train_location_encoder(data: LocatedEmbeddings, cfg: LocencConfig, hooks: Hooks | None = None,
                           resume_state: dict | None = None, progress: bool = True,
                           bounds: tuple[float, float, float, float] | None = None) -> LocencResult:
    """Fit a location encoder on ``data`` with the generic loop (see the module docstring)."""
    task = LocationTask(data, cfg, bounds)
    fit = Trainer(task, cfg.loop_config(), params=cfg.as_params(), progress=progress).fit(hooks, resume_state)
    return LocencResult(fit.output, task, fit)


def refit_location_encoder(data: LocatedEmbeddings, cfg: LocencConfig, epochs: int, bounds: tuple[float, float, float, float],
                           hooks: Hooks | None = None, progress: bool = True) -> LocencResult:
    """``cfg`` trained again on every record for ``epochs`` epochs (the validation run's best); the last epoch is kept."""
    import dataclasses

    cfg = dataclasses.replace(cfg, epochs=max(1, int(epochs)), patience=0, checkpoint_every=max(1, int(epochs)))
    task = LocationTask(data, cfg, bounds, train_on_all=True)
    loop = dataclasses.replace(cfg.loop_config(), monitor="epoch", mode="max")
    task.monitor = "epoch"
    fit = Trainer(task, loop, params={**cfg.as_params(), "refit": True}, progress=progress).fit(hooks)
    return LocencResult(fit.output, task, fit)
