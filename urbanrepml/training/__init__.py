"""The generic training loop every model family trains on (torch, numpy and tqdm only; no tracking code).

- :mod:`~urbanrepml.training.task`: the :class:`Task` protocol a family implements;
- :mod:`~urbanrepml.training.loop`: :class:`Trainer` / :func:`fit` and :class:`LoopConfig`;
- :mod:`~urbanrepml.training.hooks`: what the loop reports (metrics, checkpoints, best weights);
- :mod:`~urbanrepml.training.seeding`, :mod:`~urbanrepml.training.optim`,
  :mod:`~urbanrepml.training.distributed`, :mod:`~urbanrepml.training.memory`: the parts.
"""

from urbanrepml.training.distributed import Shard, rank_and_world, resolve_device
from urbanrepml.training.hooks import Hooks, TrainHooks
from urbanrepml.training.loop import FitResult, LoopConfig, Trainer, fit
from urbanrepml.training.optim import adamw_warmup_cosine, warmup_cosine
from urbanrepml.training.seeding import rng_state, seed_everything, set_rng_state
from urbanrepml.training.task import Task

__all__ = ["FitResult", "Hooks", "LoopConfig", "Shard", "Task", "TrainHooks", "Trainer", "adamw_warmup_cosine", "fit",
           "rank_and_world", "resolve_device", "rng_state", "seed_everything", "set_rng_state", "warmup_cosine"]
