"""Geolocation as a training task on the generic loop: classify images over H3 cell classes.

- Inputs: :class:`~urbanrepml.tasks.geoloc.data.Pixels` (model ``geoloc_cnn``, trained from scratch;
  training windows shifted by up to ``jitter_px``) or pooled features of a frozen encoder (model
  ``geoloc_head``); the rows of the training and validation splits; the
  :class:`~urbanrepml.tasks.geoloc.classes.CellClasses` built on the training rows.
- Loss: :func:`~urbanrepml.tasks.geoloc.losses.geoloc_loss` (CE mixed with the distance-aware soft
  target by ``mix_ce``, optional parent-cell term ``hier_weight``); soft targets are precomputed per
  training image from its own coordinates.
- Epoch metrics: ``train_loss``, ``val_loss``, and every metric of
  :func:`~urbanrepml.tasks.geoloc.predict.evaluate_scores` on the validation split, prefixed ``val_``.
- Monitored: ``val_median_km`` (lower is better) by default - the metric the registry's promotion
  policy reads, so the checkpoint kept and the score promoted come from one criterion.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

import urbanrepml.models.geoloc  # noqa: F401 - registers geoloc_cnn and geoloc_head
from urbanrepml.errors import UrbanReprError
from urbanrepml.models.registry import get_model, model_spec
from urbanrepml.tasks.geoloc.classes import CellClasses
from urbanrepml.tasks.geoloc.losses import geoloc_loss, soft_targets
from urbanrepml.tasks.geoloc.predict import PREDICT_MODES, evaluate_scores
from urbanrepml.training import FitResult, Hooks, LoopConfig, Shard, Trainer

MONITORS = {"val_median_km": "min", "val_mean_km": "min", "val_acc_top1": "max"}


@dataclass
class GeolocConfig:
    """Settings of one geolocator training (``model_config`` overrides the registry defaults)."""

    model: str = "geoloc_cnn"
    model_config: dict = field(default_factory=dict)
    tau_km: float = 0.25
    mix_ce: float = 0.5
    hier_weight: float = 0.0
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    epochs: int = 20
    patience: int = 0
    jitter_px: int = 6
    top_k: int = 5
    predict: str = "top1"
    monitor: str = "val_median_km"
    checkpoint_every: int = 5
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        model_spec(self.model, "geolocator")
        if not (np.isfinite(self.tau_km) and self.tau_km > 0):
            raise UrbanReprError(f"tau_km must be a positive number of kilometres, got {self.tau_km}")
        if not 0.0 <= self.mix_ce <= 1.0:
            raise UrbanReprError(f"mix_ce must be in [0, 1] (1: plain cross-entropy), got {self.mix_ce}")
        if self.hier_weight < 0:
            raise UrbanReprError(f"hier_weight must be >= 0, got {self.hier_weight}")
        if self.batch_size < 2:
            raise UrbanReprError(f"batch_size must be >= 2, got {self.batch_size}")
        if self.jitter_px < 0:
            raise UrbanReprError(f"jitter_px must be >= 0, got {self.jitter_px}")
        if self.top_k < 1:
            raise UrbanReprError(f"top_k must be >= 1, got {self.top_k}")
        if self.predict not in PREDICT_MODES:
            raise UrbanReprError(f"predict must be one of {', '.join(PREDICT_MODES)}, got {self.predict!r}")
        if self.monitor not in MONITORS:
            raise UrbanReprError(f"monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}")
        unknown = set(self.model_config) - set(model_spec(self.model).defaults)
        if unknown:
            raise UrbanReprError(f"model {self.model} has no setting(s) {', '.join(sorted(unknown))}")
        self.loop_config()

    def loop_config(self) -> LoopConfig:
        return LoopConfig(epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay, patience=self.patience,
                          monitor=self.monitor, mode=MONITORS[self.monitor], checkpoint_every=self.checkpoint_every,
                          seed=self.seed, device=self.device)

    def as_params(self) -> dict:
        d = asdict(self)
        d.update({f"model.{k}": v for k, v in sorted(d.pop("model_config").items())})
        return d


@dataclass
class GeolocData:
    """What a geolocator trains on: inputs (``Pixels`` or a feature array), coordinates, rows per split."""

    inputs: object
    lat: np.ndarray
    lon: np.ndarray
    train: np.ndarray
    val: np.ndarray
    thresholds: tuple[float, ...]

    @property
    def pixels(self) -> bool:
        return not isinstance(self.inputs, np.ndarray)

    def batch(self, rows: np.ndarray, jitter_px: int = 0) -> torch.Tensor:
        if self.pixels:
            return self.inputs.batch(rows, jitter_px)
        return torch.from_numpy(self.inputs[rows])


class GeolocTask:
    """The geolocation :class:`~urbanrepml.training.task.Task` (see the module docstring)."""

    name = "geoloc"
    mode = "min"
    data_parallel = False

    def __init__(self, data: GeolocData, classes: CellClasses, cfg: GeolocConfig):
        if len(data.train) == 0:
            raise UrbanReprError("the training split has no images")
        if len(data.val) == 0:
            raise UrbanReprError("the validation split has no images; the geolocator picks its checkpoint on it")
        if cfg.model == "geoloc_cnn" and not data.pixels:
            raise UrbanReprError("model geoloc_cnn trains on pixels, not on features")
        if cfg.model == "geoloc_head" and data.pixels:
            raise UrbanReprError("model geoloc_head trains on frozen-encoder features, not on pixels")
        self.data, self.classes, self.cfg = data, classes, cfg
        self.monitor = cfg.monitor
        self.mode = MONITORS[cfg.monitor]
        # once most images land in their cell the median error is the distance to a cell's centroid, equal for
        # many epochs: the mean error (same direction) then tells them apart
        self.tie_break = {"val_median_km": "val_mean_km", "val_mean_km": None, "val_acc_top1": None}[cfg.monitor]
        self.labels = classes.label(data.lat, data.lon)
        if (self.labels[data.train] < 0).any():
            raise UrbanReprError("some training images fall in no class (the classes were built on other images)")
        self.soft = soft_targets(data.lat[data.train], data.lon[data.train], classes.lat, classes.lon, cfg.tau_km)
        self.soft_row = {int(r): i for i, r in enumerate(data.train)}
        self._val_scores: list[np.ndarray] = []

    def build_model(self, device: torch.device) -> nn.Module:
        self.device = device
        self.parent = torch.from_numpy(self.classes.parent).to(device)
        self.soft_t = torch.from_numpy(self.soft).to(device)
        self.labels_t = torch.from_numpy(self.labels).to(device)
        config = {**model_spec(self.cfg.model).defaults, **self.cfg.model_config}
        if self.data.pixels:
            model = get_model(self.cfg.model, in_channels=self.data.inputs.bands, n_classes=self.classes.n,
                              **{**config, "input_px": self.data.inputs.px})
        else:
            x = self.data.inputs[self.data.train].astype(np.float64)
            model = get_model(self.cfg.model, in_dim=x.shape[1], n_classes=self.classes.n, **config)
            model.set_scaling(torch.from_numpy(x.mean(0).astype(np.float32)), torch.from_numpy(x.std(0).astype(np.float32)))
        return model

    def train_batches(self, epoch: int, shard: Shard):
        order = self.data.train[shard.indices(len(self.data.train), epoch)]
        size = self.cfg.batch_size
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            if len(rows) >= 2:
                yield rows, self.data.batch(rows, self.cfg.jitter_px).to(self.device)

    def train_step(self, net: nn.Module, batch):
        rows, x = batch
        soft = self.soft_t[torch.as_tensor([self.soft_row[int(r)] for r in rows], device=self.device)]
        logits = net(x)
        loss = geoloc_loss(logits, self.labels_t[torch.as_tensor(rows, device=self.device)], soft, self.cfg.mix_ce,
                           self.parent, len(self.classes.parent_cells), self.cfg.hier_weight)
        n = float(len(rows))
        return loss, {"loss_x_n": float(loss.detach()) * n, "n": n}

    def val_batches(self, epoch: int, shard: Shard):
        self._val_scores = []
        size = max(self.cfg.batch_size, 256)
        for start in range(0, len(self.data.val), size):
            rows = self.data.val[start:start + size]
            yield rows, self.data.batch(rows).to(self.device)

    def val_step(self, net: nn.Module, batch) -> dict[str, float]:
        rows, x = batch
        logits = net(x)
        labels = self.labels_t[torch.as_tensor(rows, device=self.device)]
        known = labels >= 0
        ce = torch.nn.functional.cross_entropy(logits[known], labels[known], reduction="sum") if known.any() else logits.sum() * 0
        self._val_scores.append(torch.softmax(logits, dim=1).cpu().numpy())
        return {"val_loss_sum": float(ce), "val_known": float(known.sum())}

    def epoch_metrics(self, train: dict[str, float], val: dict[str, float]) -> dict[str, float]:
        out = {"train_loss": train.get("loss_x_n", 0.0) / max(train.get("n", 0.0), 1.0),
               "val_loss": val.get("val_loss_sum", 0.0) / max(val.get("val_known", 0.0), 1.0)}
        scores = np.concatenate(self._val_scores) if self._val_scores else np.zeros((0, self.classes.n))
        rows = self.data.val
        metrics, _ = evaluate_scores(scores, self.labels[rows], self.data.lat[rows], self.data.lon[rows], self.classes.lat,
                                     self.classes.lon, self.data.thresholds, k=self.cfg.top_k, mode=self.cfg.predict)
        out.update({f"val_{k}": v for k, v in metrics.items()})
        return out

    def output(self, model: nn.Module) -> nn.Module:
        return copy.deepcopy(model).cpu().eval()


@dataclass
class GeolocResult:
    model: nn.Module
    task: GeolocTask
    fit: FitResult


def train_geolocator(data: GeolocData, classes: CellClasses, cfg: GeolocConfig, hooks: Hooks | None = None,
                     resume_state: dict | None = None, progress: bool = True) -> GeolocResult:
    """Fit a geolocator with the generic loop (see the module docstring)."""
    task = GeolocTask(data, classes, cfg)
    fit = Trainer(task, cfg.loop_config(), params=cfg.as_params(), progress=progress).fit(hooks, resume_state)
    return GeolocResult(fit.output, task, fit)


@torch.no_grad()
def class_scores(model: nn.Module, data: GeolocData, rows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Softmax scores ``(len(rows), C)`` of ``model`` (eval mode) on ``rows``."""
    model.eval()
    out = [torch.softmax(model(data.batch(rows[s:s + batch_size])), dim=1).numpy()
           for s in range(0, len(rows), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
