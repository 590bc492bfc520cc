"""The one training loop: a :class:`Trainer` fits any :class:`~urbanrepml.training.task.Task`.

- Seeded (``torch``, ``numpy``, ``random``) before the task builds its model;
  device from the config, else CUDA when present.
- AdamW, linear warm-up then cosine decay (stepped once per epoch), gradient
  clipping (the epoch's largest pre-clipping norm is logged as ``grad_norm``).
- Validation after every epoch; the monitored metric (the task's, unless the
  config names another) picks the best epoch and, with ``patience > 0``, stops
  training after that many epochs without improvement. A task may name a
  ``tie_break`` metric (same direction): an epoch that equals the best monitored
  value but is better on it counts as an improvement (a median error that has
  settled on the distance to a cell's centre no longer tells epochs apart). The
  output comes from the best weights.
- Checkpoints (model, optimiser, scheduler, epoch, best weights, early-stopping
  counters, RNG states, and the task's own state when it has any: ``extra_state()``
  / ``load_extra_state(state)``, e.g. a sampler's statistics) every ``checkpoint_every`` epochs, at the last epoch and
  when stopping early. ``fit(resume_state=...)`` continues from one and, on CPU
  with the same seed and inputs, ends with exactly the result of an
  uninterrupted run.
- Under ``torchrun`` (an initialised process group) the model is wrapped in
  :class:`~torch.nn.parallel.DistributedDataParallel`, each rank trains on the
  share of batches its :class:`~urbanrepml.training.distributed.Shard` gives it,
  the batch stats are summed over ranks, and only rank 0 calls the hooks and
  produces the output.
- A tqdm progress bar per run; the hooks (:mod:`urbanrepml.training.hooks`) get
  every epoch's metrics in one dict.
- ``URBANREPML_LOW_MEMORY=1`` applies :func:`urbanrepml.training.memory.limit_heap_fragmentation`.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from urbanrepml.errors import UrbanReprError
from urbanrepml.training.distributed import Shard, all_reduce_sums, rank_and_world, resolve_device
from urbanrepml.training.hooks import Hooks, TrainHooks
from urbanrepml.training.memory import limit_heap_fragmentation
from urbanrepml.training.optim import adamw_warmup_cosine
from urbanrepml.training.seeding import rng_state, seed_everything, set_rng_state
from urbanrepml.training.task import Task

CHECKPOINT_FORMAT = 1
MODES = ("min", "max")
_LOSS, _BATCHES = "__loop_loss_sum__", "__loop_batches__"


@dataclass
class LoopConfig:
    """Settings of the loop itself (the task holds its own, e.g. model widths or batch size).

    Attributes:
        epochs: epochs to train (fewer when stopped early).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_epochs: epochs of linear warm-up (0: none); ``None``: 10% of ``epochs``, at least 1.
        grad_clip: largest gradient norm; ``None``: no clipping (the norm is still logged).
        patience: epochs without improvement of the monitored metric before stopping; 0: never stop early.
        monitor: validation metric to monitor; ``None``: the task's ``monitor``.
        mode: ``"min"`` or ``"max"`` for ``monitor``; ``None``: the task's ``mode``.
        checkpoint_every: epochs between checkpoints (also at the last epoch and when stopping early).
        seed: seed of every RNG and of the data order.
        device: torch device; ``None``: CUDA when present, else CPU.
    """

    epochs: int = 60
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_epochs: int | None = None
    grad_clip: float | None = 1.0
    patience: int = 0
    monitor: str | None = None
    mode: str | None = None
    checkpoint_every: int = 10
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        if self.epochs < 1:
            raise UrbanReprError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise UrbanReprError(f"lr must be positive, got {self.lr}")
        if self.checkpoint_every < 1:
            raise UrbanReprError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.patience < 0:
            raise UrbanReprError(f"patience must be >= 0 (0 = never stop early), got {self.patience}")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise UrbanReprError(f"warmup_epochs must be >= 0 when given, got {self.warmup_epochs}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise UrbanReprError(f"grad_clip must be positive, or None for no clipping; got {self.grad_clip}")
        if self.mode is not None and self.mode not in MODES:
            raise UrbanReprError(f"mode must be 'min' or 'max', got {self.mode!r}")

    @property
    def warmup(self) -> int:
        """Warm-up epochs in effect."""
        return self.warmup_epochs if self.warmup_epochs is not None else max(1, self.epochs // 10)


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        output: ``task.output(model)`` with the best weights (``None`` on ranks other than 0).
        best_epoch: epoch of the best monitored value.
        best_value: the best monitored value.
        monitor: the monitored metric's name.
        epochs_run: last epoch trained.
        stopped_early: whether patience ran out before ``epochs``.
        resumed_from: epoch of the checkpoint resumed from, if any.
        history: ``{"epoch": e, **metrics}`` per epoch trained in this call.
    """

    output: Any
    best_epoch: int
    best_value: float
    monitor: str
    epochs_run: int
    stopped_early: bool
    resumed_from: int | None = None
    history: list[dict] = field(default_factory=list)


def _add(sums: dict[str, float], stats: Mapping[str, float]) -> None:
    for key, value in stats.items():
        sums[key] = sums.get(key, 0.0) + float(value)


class Trainer:
    """Fits ``task`` with the loop settings ``cfg`` (see the module docstring).

    Args:
        task: the :class:`~urbanrepml.training.task.Task` to train.
        cfg: the loop's settings.
        params: the settings that identify the run, stored in every checkpoint and
            compared on resume (``device`` excepted); default: the task's name and ``cfg``.
        progress: show a tqdm progress bar (rank 0 only).
    """

    def __init__(self, task: Task, cfg: LoopConfig, *, params: Mapping[str, Any] | None = None, progress: bool = True):
        missing = [a for a in ("name", "monitor", "mode", "build_model", "train_batches", "train_step", "val_batches",
                               "val_step", "epoch_metrics", "output") if not hasattr(task, a)]
        if missing:
            raise UrbanReprError(f"{type(task).__name__} is not a training task: it lacks {', '.join(missing)}")
        self.task, self.cfg, self.progress = task, cfg, progress
        self.monitor = cfg.monitor or task.monitor
        self.mode = cfg.mode or task.mode
        if self.mode not in MODES:
            raise UrbanReprError(f"task {task.name}: mode must be 'min' or 'max', got {self.mode!r}")
        if os.environ.get("URBANREPML_LOW_MEMORY", "").lower() in ("1", "true", "yes"):
            limit_heap_fragmentation()  # less peak memory on CPU, slower large allocations (see memory.py)
        self.rank, self.world = rank_and_world()
        if self.world > 1 and not getattr(task, "data_parallel", False):
            raise UrbanReprError(f"task {task.name} cannot train data-parallel; run it as one process, not under torchrun")
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        self.model: nn.Module = task.build_model(self.device).to(self.device)
        self.net: nn.Module = self.model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.opt, self.sched = adamw_warmup_cosine(self.model, cfg.lr, cfg.weight_decay, cfg.warmup, cfg.epochs)
        self.shard = Shard(self.rank, self.world, cfg.seed)
        self.params = dict(params) if params is not None else {"task": task.name, **asdict(cfg)}
        self.epoch = 0
        self.best_value = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.best_state: dict | None = None
        self.bad_epochs = 0
        self.tie_break: str | None = None if cfg.monitor not in (None, task.monitor) else getattr(task, "tie_break", None)
        self.best_tie: float | None = None

    # -- state --------------------------------------------------------------------------------
    def state(self) -> dict:
        """The full training state (tensors and plain values only, so ``torch.load(weights_only=True)`` reads it)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "task": self.task.name,
            "config": dict(self.params),
            "monitor": self.monitor,
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "best_val": self.best_value,
            "best_epoch": self.best_epoch,
            "best_tie": self.best_tie,
            "best_model": self.best_state,
            "bad_epochs": self.bad_epochs,
            "rng": rng_state(),
            "task_state": self.task.extra_state() if hasattr(self.task, "extra_state") else None,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state` of a run with the same settings; else one clear line."""
        lacking = [k for k in ("epoch", "model", "optimizer", "scheduler", "best_val", "rng") if k not in state]
        if lacking:
            raise UrbanReprError(f"not a training checkpoint (it lacks {', '.join(lacking)}); start a new run")
        theirs = state.get("config", {})
        differ = sorted(k for k in self.params if k != "device" and str(theirs.get(k)) != str(self.params[k]))
        if differ:
            raise UrbanReprError(
                f"checkpoint was made with other settings ({', '.join(f'{k}={theirs.get(k)!r}' for k in differ[:4])}); "
                "resume with the parameters of the original run"
            )
        if state.get("monitor", self.monitor) != self.monitor:
            raise UrbanReprError(f"checkpoint monitored {state['monitor']!r}, this run monitors {self.monitor!r}; "
                                 "resume with the original metric")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.best_value = float(state["best_val"])
        self.best_epoch = int(state["best_epoch"])
        self.best_tie = None if state.get("best_tie") is None else float(state["best_tie"])
        self.best_state = state["best_model"]
        self.bad_epochs = int(state["bad_epochs"])
        if state.get("task_state") is not None and hasattr(self.task, "load_extra_state"):
            self.task.load_extra_state(state["task_state"])
        set_rng_state(state["rng"])

    # -- one epoch ----------------------------------------------------------------------------
    def _train_pass(self, epoch: int) -> tuple[dict[str, float], float]:
        """Stats summed over this rank's batches (plus the loop's loss sum and batch count) and the largest grad norm."""
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip is not None else math.inf
        sums: dict[str, float] = {}
        grad = 0.0
        loss_sum = None
        batches = 0
        self.net.train()
        for batch in self.task.train_batches(epoch, self.shard):
            self.opt.zero_grad(set_to_none=True)
            loss, stats = self.task.train_step(self.net, batch)
            loss.backward()
            grad = max(grad, float(nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)))
            self.opt.step()
            _add(sums, stats)
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
            batches += 1
        sums[_LOSS] = float(loss_sum) if loss_sum is not None else 0.0
        sums[_BATCHES] = float(batches)
        return sums, grad

    @torch.no_grad()
    def _val_pass(self, epoch: int) -> dict[str, float]:
        sums: dict[str, float] = {}
        self.net.eval()
        for batch in self.task.val_batches(epoch, self.shard):
            _add(sums, self.task.val_step(self.net, batch))
        return sums

    def _epoch(self, epoch: int) -> dict[str, float]:
        train, grad = self._train_pass(epoch)
        val = self._val_pass(epoch)
        train = all_reduce_sums(train, self.device)
        val = all_reduce_sums(val, self.device)
        loss_sum, batches = train.pop(_LOSS), train.pop(_BATCHES)
        metrics = dict(self.task.epoch_metrics(train, val))
        metrics.setdefault("train_loss", loss_sum / max(batches, 1.0))
        metrics["grad_norm"] = grad
        if not (math.isfinite(loss_sum) and math.isfinite(metrics["train_loss"])):
            raise UrbanReprError(f"training diverged at epoch {epoch} (loss {metrics['train_loss']}); lower lr")
        for name in (self.monitor, self.tie_break):
            if name is not None and name not in metrics:
                raise UrbanReprError(f"task {self.task.name} reported no {name!r} metric (it reports "
                                     f"{', '.join(sorted(metrics))}); monitor one of those")
        return metrics

    def _improves(self, value: float, tie: float | None) -> bool:
        if self.best_state is None:
            return True

        def better(a: float, b: float) -> bool:
            return a < b if self.mode == "min" else a > b

        if better(value, self.best_value):
            return True
        return value == self.best_value and tie is not None and self.best_tie is not None and better(tie, self.best_tie)

    def _patience_spent(self) -> bool:
        return self.cfg.patience > 0 and self.bad_epochs >= self.cfg.patience

    # -- loop ---------------------------------------------------------------------------------
    def fit(self, hooks: Hooks | None = None, resume_state: Mapping[str, Any] | None = None) -> FitResult:
        """Train until ``epochs`` or early stop, from scratch or from ``resume_state``; see the module docstring."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        hooks = hooks if (hooks is not None and self.rank == 0) else TrainHooks()
        resumed_from = None
        if resume_state is not None:
            self.load_state(resume_state)
            resumed_from = self.epoch
        history: list[dict] = []
        stopped = self._patience_spent()
        bar = tqdm(range(self.epoch + 1, cfg.epochs + 1), desc=self.task.name, unit="epoch",
                   disable=not self.progress or self.rank != 0, initial=self.epoch, total=cfg.epochs)
        for epoch in ([] if stopped else bar):
            start = time.perf_counter()
            lr = self.opt.param_groups[0]["lr"]
            metrics = self._epoch(epoch)
            self.sched.step()
            self.epoch = epoch
            value = float(metrics[self.monitor])
            tie = float(metrics[self.tie_break]) if self.tie_break else None
            improved = self._improves(value, tie)
            if improved:
                self.best_value, self.best_epoch, self.bad_epochs, self.best_tie = value, epoch, 0, tie
                self.best_state = copy.deepcopy(self.model.state_dict())
            else:
                self.bad_epochs += 1
            metrics.update({"lr": lr, "epoch_seconds": time.perf_counter() - start, f"best_{self.monitor}": self.best_value})
            history.append({"epoch": epoch, **metrics})
            hooks.epoch_end(epoch, metrics)
            bar.set_postfix(train=f"{metrics['train_loss']:.4f}", **{self.monitor: f"{value:.4f}"})
            stopped = self._patience_spent()
            if improved:
                hooks.best({"epoch": epoch, "metric": self.monitor, self.monitor: self.best_value,
                            "model": self.best_state}, epoch)
            if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs or stopped:
                hooks.flush()
                hooks.checkpoint(self.state(), epoch)
            if stopped:
                break
        bar.close()
        hooks.flush()
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        output = None
        if self.rank == 0:
            self.model.eval()
            with torch.no_grad():
                output = self.task.output(self.model)
        return FitResult(output, self.best_epoch, self.best_value, self.monitor, self.epoch, stopped, resumed_from, history)


def fit(task: Task, cfg: LoopConfig, hooks: Hooks | None = None, resume_state: Mapping[str, Any] | None = None, *,
        params: Mapping[str, Any] | None = None, progress: bool = True) -> FitResult:
    """Build a :class:`Trainer` for ``task`` and fit it."""
    return Trainer(task, cfg, params=params, progress=progress).fit(hooks, resume_state)
