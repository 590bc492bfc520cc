"""What the training loop tells the outside world: per-epoch metrics, checkpoints, the best weights.

The loop calls the hooks on rank 0 only, in this order for each epoch ``e``:

1. ``epoch_end(e, metrics)``: every metric of the epoch in one dict (the task's
   metrics plus ``grad_norm``, ``lr``, ``epoch_seconds`` and ``best_<monitor>``);
2. ``best(state, e)`` when the monitored metric improved: ``state`` holds
   ``epoch``, ``metric`` (the monitored name), ``<metric>`` (its value) and ``model``
   (the weights);
3. ``flush()`` then ``checkpoint(state, e)`` every ``checkpoint_every`` epochs, at the
   last epoch and when training stops early: ``state`` is the full training state
   that :meth:`urbanrepml.training.loop.Trainer.fit` resumes from.

``flush()`` is also called once when training ends, so a hook may buffer metrics
and write them in batches. Implementations need not inherit :class:`TrainHooks`;
any object with these four methods will do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable


@runtime_checkable
class Hooks(Protocol):
    """The hook interface (structural: tracking implements it without importing this module)."""

    def epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None: ...

    def best(self, state: dict, epoch: int) -> None: ...

    def checkpoint(self, state: dict, epoch: int) -> None: ...

    def flush(self) -> None: ...


class TrainHooks:
    """Hooks that do nothing; subclass and override what you need."""

    def epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Called after every epoch with all of its metrics."""

    def best(self, state: dict, epoch: int) -> None:
        """Called when the monitored metric improved, with the new best weights."""

    def checkpoint(self, state: dict, epoch: int) -> None:
        """Called with the full training state to save."""

    def flush(self) -> None:
        """Write whatever was buffered."""
