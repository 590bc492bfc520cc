"""What a model family gives the training loop: the :class:`Task` protocol.

The loop owns everything generic (seeding, optimiser and schedule, gradient
clipping, early stopping, checkpoints and resume, DDP, progress, hooks); a task
owns its data, its model and its losses. Per epoch the loop does::

    model.train()
    for batch in task.train_batches(epoch, shard):
        loss, stats = task.train_step(net, batch)      # backward, clip, step by the loop
    model.eval(); with no_grad:
    for batch in task.val_batches(epoch, shard):
        stats = task.val_step(net, batch)
    metrics = task.epoch_metrics(train_sums, val_sums)  # sums over batches and ranks

``stats`` are plain floats that add up across batches and processes (e.g.
``loss * n`` and ``n``, not the mean); ``epoch_metrics`` turns the sums into
the epoch's metrics, which must include the monitored one (``task.monitor``,
unless the loop config names another).

Optional: ``tie_break`` (the name of a second metric, same direction, that decides
between epochs tied on the monitored one), and ``extra_state()`` /
``load_extra_state(state)`` for state the task itself keeps across epochs (e.g. a
bandit's statistics; plain values, saved in every checkpoint and restored on resume).

Randomness: a task draws from the global ``torch``/``numpy``/``random`` generators
(seeded by the loop and saved in every checkpoint) or from
:meth:`urbanrepml.training.distributed.Shard.indices` (a function of seed and
epoch); a generator of its own would not be restored on resume.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from urbanrepml.training.distributed import Shard


@runtime_checkable
class Task(Protocol):
    """A training task (structural protocol; see the module docstring).

    Attributes:
        name: short name, shown on the progress bar and stored in checkpoints.
        monitor: the validation metric that picks the best epoch and stops early.
        mode: ``"min"`` or ``"max"``: whether a smaller or larger ``monitor`` is better.
        data_parallel: whether the task splits its batches across ``torchrun`` ranks
            (through the :class:`Shard` it is given); a task that cannot is refused
            with more than one process.
    """

    name: str
    monitor: str
    mode: str
    data_parallel: bool

    def build_model(self, device: torch.device) -> nn.Module:
        """Put the task's data on ``device`` and return a fresh model there (called once, after seeding)."""

    def train_batches(self, epoch: int, shard: Shard) -> Iterable[Any]:
        """This rank's training batches for ``epoch`` (1-based)."""

    def train_step(self, net: nn.Module, batch: Any) -> tuple[Tensor, dict[str, float]]:
        """Forward ``batch`` through ``net`` (the model, DDP-wrapped under torchrun): (loss to backward, summable stats)."""

    def val_batches(self, epoch: int, shard: Shard) -> Iterable[Any]:
        """This rank's validation batches for ``epoch``."""

    def val_step(self, net: nn.Module, batch: Any) -> dict[str, float]:
        """Summable validation stats of one batch (called in eval mode, without gradients)."""

    def epoch_metrics(self, train: dict[str, float], val: dict[str, float]) -> dict[str, float]:
        """The epoch's metrics from the stats summed over batches and ranks."""

    def output(self, model: nn.Module) -> Any:
        """What training produces, from the best weights (rank 0 only; eval mode, without gradients)."""
