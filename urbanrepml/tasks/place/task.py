"""Place embeddings as a training task: triplets whose negatives come from difficulty bands chosen by a bandit.

- Data: model inputs ``x`` (cached frozen features ``(N, D)`` or pixels ``(N, C, S, S)``), identity
  codes, and the train/val positions. Only training views ever reach a gradient.
- Bands (:mod:`.bands`): computed over the training views alone, in ``band_space`` vectors
  (fingerprints or features), so negatives never come from held-out identities.
- Batches: per epoch the training views in a seeded order (:meth:`Shard.indices`), ``batch_size``
  anchors per batch; each anchor's positive is another view of its identity, its negative a
  neighbour in the band the sampler chose for the batch. The sampler (:mod:`.sampler`) is an
  attribute of the task and is asked in the training process itself - batches are built here,
  not in data-loader workers - so every update is seen by the next choice.
- Loss: :class:`torch.nn.TripletMarginLoss` (``margin``) on unit-norm embeddings. The batch's
  reward (share of triplets violating the margin, measured on the forward pass) updates the sampler.
- Validation: the validation identities' queries (latest view) against the gallery of their other
  views: ``val_recall_1``, ``val_recall_10``, ``val_map``. Monitored: ``val_recall_1``
  (higher is better) - the metric tuning maximises and promotion reads.
- Per-epoch metrics also hold ``band_<b>_pulls`` and ``band_<b>_reward``.

- The sampler's run statistics (pulls and rewards per band) are part of every checkpoint
  (``extra_state``), so a resumed run continues the bandit where it stopped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.place import FAMILY as MODEL_FAMILY  # noqa: F401 - registers place_cnn, place_mlp
from urbanrepml.models.registry import get_model, model_spec
from urbanrepml.tasks.place.bands import Bands, difficulty_bands
from urbanrepml.tasks.place.metrics import retrieval_metrics
from urbanrepml.tasks.place.sampler import SAMPLERS, BandSampler, make_sampler
from urbanrepml.training import FitResult, Hooks, LoopConfig, Shard, Trainer

MONITOR = "val_recall_1"
MODELS = ("place_cnn", "place_mlp")


@dataclass
class PlaceConfig:
    """Settings of one place-embedding training (the model's own settings in ``model_config``)."""

    model: str = "place_cnn"
    model_config: dict = field(default_factory=dict)
    margin: float = 0.5
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 30
    patience: int = 0
    sampler: str = "ucb"
    ucb_c: float = 0.5
    n_bands: int = 7
    neighbours: int = 70
    seed: int = 0
    checkpoint_every: int = 10
    device: str | None = None

    def __post_init__(self):
        if self.model not in MODELS:
            raise UrbanReprError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.sampler not in SAMPLERS:
            raise UrbanReprError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if not 0 < self.margin <= 2:
            raise UrbanReprError(f"margin must be in (0, 2] (unit-norm embeddings), got {self.margin}")
        if self.batch_size < 2:
            raise UrbanReprError(f"batch_size must be >= 2, got {self.batch_size}")
        if self.n_bands < 1 or self.neighbours < 1:
            raise UrbanReprError(f"n_bands and neighbours must be >= 1, got {self.n_bands}, {self.neighbours}")
        if self.n_bands > self.neighbours:
            raise UrbanReprError(f"more bands ({self.n_bands}) than neighbours per anchor ({self.neighbours}); "
                                 "lower n_bands or raise neighbours")
        unknown = set(self.model_config) - set(model_spec(self.model).defaults)
        if unknown:
            raise UrbanReprError(f"model {self.model} has no setting(s) {', '.join(sorted(unknown))}")
        self.loop_config()

    def loop_config(self) -> LoopConfig:
        return LoopConfig(epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay, patience=self.patience,
                          checkpoint_every=self.checkpoint_every, seed=self.seed, device=self.device, monitor=MONITOR,
                          mode="max")

    def as_params(self) -> dict:
        d = asdict(self)
        d.update({f"model.{k}": v for k, v in sorted(d.pop("model_config").items())})
        return d


@dataclass
class PlaceData:
    """What the task trains on: inputs, identity codes, train positions, validation queries and gallery."""

    x: np.ndarray
    codes: np.ndarray
    train: np.ndarray
    val_queries: np.ndarray
    val_gallery: np.ndarray
    band_space: np.ndarray


def embed(model: nn.Module, x: np.ndarray | torch.Tensor, batch: int = 1024) -> np.ndarray:
    """Embeddings ``(N, out_dim)`` float32 of inputs ``x`` (eval mode, no gradients)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            xb = x[s:s + batch]
            xb = xb if isinstance(xb, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(xb))
            out.append(model(xb.to(dev)).cpu().numpy())
    model.train(was)
    return np.concatenate(out).astype(np.float32)


class PlaceTask:
    """The triplet :class:`~urbanrepml.training.task.Task` (see the module docstring)."""

    monitor = MONITOR
    mode = "max"
    data_parallel = False

    def __init__(self, data: PlaceData, cfg: PlaceConfig):
        self.data, self.cfg = data, cfg
        self.name = f"placeemb-{cfg.model}"
        if not np.isfinite(data.x).all():
            raise UrbanReprError("model inputs hold NaN or inf; check the features or images")
        tr = np.asarray(data.train)
        codes = data.codes[tr]
        # positives: the other training views of each anchor's identity
        self.by_identity: dict[int, np.ndarray] = {}
        for c in np.unique(codes):
            self.by_identity[int(c)] = tr[codes == c]
        if min(len(v) for v in self.by_identity.values()) < 2:
            raise UrbanReprError("every training identity needs two or more views")
        self.bands: Bands = difficulty_bands(data.band_space[tr], codes, cfg.n_bands, cfg.neighbours)
        self.sampler: BandSampler = make_sampler(cfg.sampler, cfg.n_bands, cfg.ucb_c)
        self.loss = nn.TripletMarginLoss(margin=cfg.margin)
        self.model_config = dict(self.model_config_for(data.x))

    def model_config_for(self, x: np.ndarray) -> dict:
        cfg = dict(self.cfg.model_config)
        if self.cfg.model == "place_mlp":
            if x.ndim != 2:
                raise UrbanReprError("place_mlp takes feature vectors; use place_cnn for pixels")
            cfg["in_dim"] = int(x.shape[1])
        else:
            if x.ndim != 4:
                raise UrbanReprError("place_cnn takes pixels (N, C, S, S); use place_mlp for features")
            cfg["in_channels"], cfg["size"] = int(x.shape[1]), int(x.shape[2])
        return cfg

    def build_model(self, device: torch.device) -> nn.Module:
        self.device = device
        self.x = torch.from_numpy(np.ascontiguousarray(self.data.x)).to(device)
        return get_model(self.cfg.model, **self.model_config)

    def train_batches(self, epoch: int, shard: Shard):
        tr = np.asarray(self.data.train)
        order = shard.indices(len(tr), epoch)
        codes = self.data.codes
        for s in range(0, len(order), self.cfg.batch_size):
            local = order[s:s + self.cfg.batch_size]
            if len(local) < 2:
                continue
            band = self.sampler.choose()
            anchors = tr[local]
            pos = np.empty_like(anchors)
            for i, a in enumerate(anchors):
                same = self.by_identity[int(codes[a])]
                others = same[same != a]
                pos[i] = others[np.random.randint(len(others))]
            members = self.bands.members(local, band)
            neg = tr[members[np.arange(len(local)), np.random.randint(members.shape[1], size=len(local))]]
            yield band, anchors, pos, neg

    def train_step(self, net: nn.Module, batch):
        band, a, p, n = batch
        idx = torch.from_numpy(np.concatenate([a, p, n])).to(self.x.device)
        e = net(self.x[idx])
        ea, ep, en = e.split(len(a))
        loss = self.loss(ea, ep, en)
        with torch.no_grad():
            d_ap = (ea - ep).norm(dim=1)
            d_an = (ea - en).norm(dim=1)
            reward = float((d_an < d_ap + self.cfg.margin).float().mean())
        self.sampler.update(band, reward)
        return loss, {"triplets": float(len(a)), "violating": reward * len(a)}

    def val_batches(self, epoch: int, shard: Shard):
        yield None

    def val_step(self, net: nn.Module, batch) -> dict[str, float]:
        pos = np.concatenate([self.data.val_queries, self.data.val_gallery])
        e = embed(net, self.x[torch.from_numpy(pos).to(self.x.device)])
        nq = len(self.data.val_queries)
        m = retrieval_metrics(e[:nq], self.data.codes[self.data.val_queries], e[nq:], self.data.codes[self.data.val_gallery],
                              ks=(1, 10))
        n = m["queries"]
        return {"val_recall_1": m["recall_1"] * n, "val_recall_10": m["recall_10"] * n, "val_map": m["map"] * n,
                "val_queries": n}

    def epoch_metrics(self, train: dict[str, float], val: dict[str, float]) -> dict[str, float]:
        n = max(val.get("val_queries", 0.0), 1.0)
        out = {k: val[k] / n for k in ("val_recall_1", "val_recall_10", "val_map")}
        out["violating_share"] = train.get("violating", 0.0) / max(train.get("triplets", 0.0), 1.0)
        out.update(self.sampler.epoch_stats())
        return out

    def extra_state(self) -> dict:
        return {"sampler": self.sampler.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])

    def output(self, model: nn.Module) -> nn.Module:
        return model


@dataclass
class PlaceResult:
    fit: FitResult
    model: nn.Module
    task: PlaceTask


def train_place_embedder(data: PlaceData, cfg: PlaceConfig, hooks: Hooks | None = None,
                         progress: bool = True, resume_state: dict | None = None) -> PlaceResult:
    """Fit a place embedder on ``data`` with ``cfg`` on the project's loop; the best ``val_recall_1`` weights.

    ``resume_state``: a training checkpoint to continue from (weights, optimiser, sampler statistics).
    """
    task = PlaceTask(data, cfg)
    fit = Trainer(task, cfg.loop_config(), params={"task": task.name, **cfg.as_params()},
                  progress=progress).fit(hooks, resume_state)
    return PlaceResult(fit, fit.output, task)
