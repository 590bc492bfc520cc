"""The training loop shared by both U-Nets (no file or MLflow code: tracking goes through :class:`TrainHooks`).

- AdamW, linear warm-up then cosine decay (stepped once per epoch), gradient
  clipping, seeded (``torch``, ``numpy``, ``random``), device auto-detected
  (CUDA when present), a tqdm progress bar.
- Validation: cells are split by spatial blocks (their parent at
  ``val_block_resolution``, hashed with the seed): about ``val_fraction`` of the
  blocks are held out. Their rows still flow through the graph as inputs (the
  model is the same at training and at inference time), but their
  reconstruction error is never trained on; it is the validation loss
  (reconstruction of held-out cells + consistency) that picks the best epoch
  and stops early, never the training loss.
- The final embedding comes from the best-validation weights.
- Checkpoints (model, optimiser, scheduler, epoch, best weights, early-stopping
  counters, RNG states of torch/numpy/python) every ``checkpoint_every`` epochs
  and at the last epoch; a killed run resumes from the latest one and, on CPU
  with the same seed, ends with exactly the embedding an uninterrupted run gives.
- ``cone_unet`` trains on batches of cones and runs data-parallel under
  ``torchrun`` (DDP; each rank takes its share of cones through a
  ``DistributedSampler``; only rank 0 calls the hooks).
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from urbanrepml.areas import h3ops
from urbanrepml.errors import UrbanReprError
from urbanrepml.tasks.fusion.cones import ConeBatcher, build_cones
from urbanrepml.models.hierarchy import cell_levels
from urbanrepml.training.memory import limit_heap_fragmentation
from urbanrepml.models.unet import ConeBatchingUNet, FullAreaUNet, unet_losses

LEARNED_MODELS = ("full_unet", "cone_unet")


@dataclass
class TrainConfig:
    """Hyperparameters of a learned fusion model (see docs/fusion.md for the defaults' reasoning)."""

    model: str = "full_unet"
    resolutions: tuple[int, ...] = (9, 8, 7)
    hidden_dims: tuple[int, ...] = (64, 128, 256)
    convs_per_level: int = 2
    dropout: float = 0.1
    embedding_dim: int | None = None
    lr: float = 3e-3
    weight_decay: float = 0.01
    epochs: int = 60
    warmup_epochs: int | None = None  # default: 10% of epochs, at least 1
    consistency_weight: float = 0.5
    grad_clip: float = 1.0
    patience: int = 0  # epochs without validation improvement before stopping; 0 = never stop early
    val_fraction: float = 0.15
    val_block_resolution: int | None = None  # default: the coarsest resolution used
    checkpoint_every: int = 10
    seed: int = 0
    cone_root_resolution: int = 6
    cone_k: int = 1
    cone_batch: int = 8
    device: str | None = None

    def __post_init__(self):
        self.resolutions = tuple(sorted({int(r) for r in self.resolutions}, reverse=True))
        self.hidden_dims = tuple(int(d) for d in self.hidden_dims)
        if self.model not in LEARNED_MODELS:
            raise UrbanReprError(f"model must be one of {LEARNED_MODELS} for training, got {self.model!r}")
        if len(self.hidden_dims) != len(self.resolutions):
            raise UrbanReprError(
                f"hidden_dims has {len(self.hidden_dims)} widths but resolutions has {len(self.resolutions)} levels "
                f"({list(self.resolutions)}); give one width per resolution, finest first"
            )
        if min(self.hidden_dims) < 1 or self.convs_per_level < 0 or self.epochs < 1:
            raise UrbanReprError("hidden_dims must be positive, convs_per_level >= 0 and epochs >= 1")
        if not 0 <= self.dropout < 1:
            raise UrbanReprError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.val_fraction < 1:
            raise UrbanReprError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.checkpoint_every < 1:
            raise UrbanReprError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.lr <= 0:
            raise UrbanReprError(f"lr must be positive, got {self.lr}")

    @property
    def warmup(self) -> int:
        return self.warmup_epochs if self.warmup_epochs is not None else max(1, self.epochs // 10)

    @property
    def block_resolution(self) -> int:
        return self.val_block_resolution if self.val_block_resolution is not None else self.resolutions[-1]

    def as_params(self) -> dict:
        d = asdict(self)
        d["resolutions"] = ",".join(map(str, self.resolutions))
        d["hidden_dims"] = ",".join(map(str, self.hidden_dims))
        return d


class TrainHooks:
    """What the trainer tells the outside world (rank 0 only). Override what you need."""

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...

    def checkpoint(self, state: dict, epoch: int) -> None: ...

    def best(self, state: dict, epoch: int) -> None: ...

    def flush(self) -> None: ...


@dataclass
class TrainResult:
    embedding: np.ndarray  # (N, embedding_dim) float32, rows in the order of the input cells
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    stopped_early: bool
    resumed_from: int | None = None
    history: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers
def spatial_split(cells: np.ndarray, block_resolution: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Bool mask of held-out cells: whole blocks (parents at ``block_resolution``) chosen by a seeded hash.

    At least one block is held out and one kept. An area inside fewer than two
    blocks at ``block_resolution`` is split at the next finer resolution that has two.
    """
    if fraction <= 0 or len(cells) == 0:
        return np.zeros(len(cells), dtype=bool)
    finest = int(h3ops.cell_resolution(cells[:1])[0])
    for res in range(min(block_resolution, finest), finest + 1):
        uniq, inv = np.unique(h3ops.parent_cells(cells, res), return_inverse=True)
        if len(uniq) >= 2:
            break
    else:
        raise UrbanReprError(f"{len(cells)} cell(s) cannot be split into training and validation blocks; use a larger area")
    with np.errstate(over="ignore"):
        z = uniq ^ np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    held = u < fraction
    if not held.any():
        held[np.argmin(u)] = True
    if held.all():
        held[np.argmax(u)] = False
    return held[inv]


def resolve_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """RNG states of python, numpy and torch (CPU and CUDA) as tensors and plain values (``weights_only`` safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def lr_lambda(warmup: int, epochs: int) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` epochs, then cosine decay to 0 at ``epochs``."""

    def fn(step: int) -> float:
        if step < warmup:
            return float(step + 1) / float(warmup)
        progress = (step - warmup) / max(1, epochs - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return fn


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _allreduce(values: list[float], device) -> list[float]:
    if _dist()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Trains ``cfg.model`` on inputs ``x`` (N, D) at the finest cells ``cells`` (sorted uint64)."""

    def __init__(self, x: np.ndarray, cells: np.ndarray, cfg: TrainConfig, *, cache_dir=None, progress: bool = True):
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
        self.cfg = cfg
        self.progress = progress
        if os.environ.get("URBANREPML_LOW_MEMORY", "").lower() in ("1", "true", "yes"):
            limit_heap_fragmentation()  # less peak memory on CPU, about 2x slower epochs (docs/fusion.md)
        self.rank, self.world = _dist()
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        self.levels = cell_levels(cells, cfg.resolutions, with_edges=cfg.model == "full_unet")
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        val = spatial_split(cells, cfg.block_resolution, cfg.val_fraction, cfg.seed)
        self.val_mask = torch.from_numpy(val).to(self.device)
        self.train_mask = ~self.val_mask
        model_cls = FullAreaUNet if cfg.model == "full_unet" else ConeBatchingUNet
        self.model = model_cls(x.shape[1], cfg.hidden_dims, cfg.convs_per_level, cfg.dropout, cfg.embedding_dim).to(self.device)
        self.net: nn.Module = self.model
        if self.world > 1:
            if cfg.model != "cone_unet":
                raise UrbanReprError("data-parallel training (torchrun) needs model=cone_unet; full_unet is one graph")
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg.warmup, cfg.epochs))
        if cfg.model == "full_unet":
            self.hierarchy = self.levels.hierarchy().to(self.device)
        else:
            self.cones = build_cones(self.levels, cfg.cone_root_resolution, cfg.cone_k, cache_dir=cache_dir)
            self.batcher = ConeBatcher(self.cones)
        self.epoch = 0
        self.best_val = math.inf
        self.best_epoch = 0
        self.best_state: dict | None = None
        self.bad_epochs = 0

    # -- state -------------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "format": 1,
            "config": self.cfg.as_params(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "best_model": self.best_state,
            "bad_epochs": self.bad_epochs,
            "rng": rng_state(),
        }

    def load_state(self, state: dict) -> None:
        mine = self.cfg.as_params()
        theirs = state.get("config", {})
        differ = sorted(k for k in mine if k not in ("device",) and str(theirs.get(k)) != str(mine[k]))
        if differ:
            raise UrbanReprError(
                f"checkpoint was made with other settings ({', '.join(f'{k}={theirs.get(k)!r}' for k in differ[:4])}); "
                "resume with the parameters of the original run"
            )
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.best_val = float(state["best_val"])
        self.best_epoch = int(state["best_epoch"])
        self.best_state = state["best_model"]
        self.bad_epochs = int(state["bad_epochs"])
        set_rng_state(state["rng"])

    # -- one epoch ----------------------------------------------------------------------------
    def _full_epoch(self) -> dict[str, float]:
        cfg = self.cfg
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        out = self.net(self.x, self.hierarchy)
        loss = unet_losses(out, self.x, self.hierarchy, self.train_mask, cfg.consistency_weight)
        loss.total.backward()
        grad = float(nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
        self.opt.step()
        self.net.eval()
        with torch.no_grad():
            out = self.net(self.x, self.hierarchy)
            val = unet_losses(out, self.x, self.hierarchy, self.val_mask, cfg.consistency_weight)
        return {
            "train_loss": loss.total.item(), "train_reconstruction": loss.reconstruction.item(),
            "train_consistency": loss.consistency.item(), "grad_norm": grad,
            "val_loss": float(val.total), "val_reconstruction": float(val.reconstruction),
            "val_consistency": float(val.consistency),
        }

    def _cone_order(self, epoch: int) -> np.ndarray:
        sampler = torch.utils.data.DistributedSampler(
            range(self.cones.n_cones), num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.cfg.seed)
        sampler.set_epoch(epoch)
        return np.fromiter(iter(sampler), dtype=np.int64)

    def _cone_pass(self, order: np.ndarray, train: bool) -> tuple[float, ...]:
        """Sums over batches: (train rec*n, train n, val rec*n, val n, consistency sum, batches) and max grad norm."""
        cfg = self.cfg
        sums = np.zeros(6)
        grad = 0.0
        self.net.train(train)
        for i in range(0, len(order), cfg.cone_batch):
            b = self.batcher.batch(order[i:i + cfg.cone_batch])
            hier = b.hierarchy.to(self.device)
            xb = self.x.index_select(0, torch.from_numpy(b.cells0).to(self.device))
            centre = torch.from_numpy(b.centre0).to(self.device)
            cells = torch.from_numpy(b.cells0).to(self.device)
            tmask = centre & self.train_mask[cells]
            vmask = centre & self.val_mask[cells]
            if train:
                self.opt.zero_grad(set_to_none=True)
                out = self.net(xb, hier)
                loss = unet_losses(out, xb, hier, tmask, cfg.consistency_weight)
                loss.total.backward()
                grad = max(grad, float(nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)))
                self.opt.step()
                n = float(tmask.sum())
                sums += [loss.reconstruction.item() * n, n, 0, 0, loss.consistency.item(), 1]
            else:
                with torch.no_grad():
                    out = self.net(xb, hier)
                    loss = unet_losses(out, xb, hier, vmask, cfg.consistency_weight)
                n = float(vmask.sum())
                sums += [0, 0, float(loss.reconstruction) * n, n, float(loss.consistency), 1]
        return (*[float(v) for v in sums], grad)  # type: ignore[return-value]

    def _cone_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        order = self._cone_order(epoch)
        tr = self._cone_pass(order, train=True)
        va = self._cone_pass(order, train=False)
        t_rec, t_n, _, _, t_cons, t_b = _allreduce(list(tr[:6]), self.device)
        _, _, v_rec, v_n, v_cons, v_b = _allreduce(list(va[:6]), self.device)
        t_rec, t_cons = t_rec / max(t_n, 1), t_cons / max(t_b, 1)
        v_rec, v_cons = v_rec / max(v_n, 1), v_cons / max(v_b, 1)
        return {
            "train_loss": t_rec + cfg.consistency_weight * t_cons, "train_reconstruction": t_rec,
            "train_consistency": t_cons, "grad_norm": tr[6],
            "val_loss": v_rec + cfg.consistency_weight * v_cons, "val_reconstruction": v_rec,
            "val_consistency": v_cons,
        }

    # -- loop -----------------------------------------------------------------------------------
    def fit(self, hooks: TrainHooks | None = None, resume_state: dict | None = None) -> TrainResult:
        cfg = self.cfg
        hooks = hooks if (hooks is not None and self.rank == 0) else TrainHooks()
        resumed_from = None
        if resume_state is not None:
            self.load_state(resume_state)
            resumed_from = self.epoch
        history: list[dict] = []
        stopped = cfg.patience > 0 and self.bad_epochs >= cfg.patience
        from tqdm.auto import tqdm

        bar = tqdm(range(self.epoch + 1, cfg.epochs + 1), desc=f"{cfg.model}", unit="epoch",
                   disable=not self.progress or self.rank != 0, initial=self.epoch, total=cfg.epochs)
        for epoch in ([] if stopped else bar):
            start = time.perf_counter()
            lr = self.opt.param_groups[0]["lr"]
            metrics = self._full_epoch() if cfg.model == "full_unet" else self._cone_epoch(epoch)
            self.sched.step()
            self.epoch = epoch
            if not math.isfinite(metrics["train_loss"]):
                raise UrbanReprError(f"training diverged at epoch {epoch} (loss {metrics['train_loss']}); lower lr")
            improved = metrics["val_loss"] < self.best_val or self.best_state is None
            if improved:
                self.best_val, self.best_epoch, self.bad_epochs = metrics["val_loss"], epoch, 0
                self.best_state = copy.deepcopy(self.model.state_dict())
            else:
                self.bad_epochs += 1
            metrics.update({"lr": lr, "epoch_seconds": time.perf_counter() - start, "best_val_loss": self.best_val})
            history.append({"epoch": epoch, **metrics})
            hooks.epoch_end(epoch, metrics)
            bar.set_postfix(train=f"{metrics['train_loss']:.4f}", val=f"{metrics['val_loss']:.4f}")
            stopped = cfg.patience > 0 and self.bad_epochs >= cfg.patience
            if improved:
                hooks.best({"epoch": epoch, "val_loss": self.best_val, "model": self.best_state}, epoch)
            if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs or stopped:
                hooks.checkpoint(self.state(), epoch)
            if stopped:
                break
        bar.close()
        hooks.flush()
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        emb = self.embed() if self.rank == 0 else np.zeros((0, self.model.embedding_dim), dtype=np.float32)
        return TrainResult(emb, self.best_epoch, self.best_val, self.epoch, stopped, resumed_from, history)

    @torch.no_grad()
    def embed(self) -> np.ndarray:
        """Finest-resolution output of the current weights for every cell (eval mode, all inputs visible)."""
        self.model.eval()
        if self.cfg.model == "full_unet":
            return self.model(self.x, self.hierarchy).embeddings[0].cpu().numpy().astype(np.float32)
        out = np.zeros((self.x.shape[0], self.model.embedding_dim), dtype=np.float32)
        seen = np.zeros(self.x.shape[0], dtype=bool)
        order = np.arange(self.cones.n_cones)
        for i in range(0, len(order), self.cfg.cone_batch):
            b = self.batcher.batch(order[i:i + self.cfg.cone_batch])
            xb = self.x.index_select(0, torch.from_numpy(b.cells0).to(self.device))
            z = self.model(xb, b.hierarchy.to(self.device)).embeddings[0].cpu().numpy()
            out[b.cells0[b.centre0]] = z[b.centre0]
            seen[b.cells0[b.centre0]] = True
        assert seen.all(), "every cell must lie in its centre cone"
        return out


def train(x: np.ndarray, cells: np.ndarray, cfg: TrainConfig, hooks: TrainHooks | None = None,
          resume_state: dict | None = None, cache_dir=None, progress: bool = True) -> TrainResult:
    """Build a :class:`Trainer` and fit it (see the module docstring)."""
    return Trainer(x, cells, cfg, cache_dir=cache_dir, progress=progress).fit(hooks, resume_state)
