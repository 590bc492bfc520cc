"""The optimiser and learning-rate schedule of the training loop: AdamW, linear warm-up, cosine decay."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def warmup_cosine(warmup: int, epochs: int) -> Callable[[int], float]:
    """Learning-rate factor per epoch: linear warm-up over ``warmup`` epochs, then cosine decay to 0 at ``epochs``.

    Args:
        warmup: epochs of linear warm-up (factor ``(step + 1) / warmup``).
        epochs: total epochs; the factor reaches 0 at this step and stays there.

    Returns:
        A function of the scheduler step (0-based epoch) for :class:`torch.optim.lr_scheduler.LambdaLR`.
    """

    def fn(step: int) -> float:
        if step < warmup:
            return float(step + 1) / float(warmup)
        progress = (step - warmup) / max(1, epochs - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return fn


def adamw_warmup_cosine(model: nn.Module, lr: float, weight_decay: float, warmup: int, epochs: int
                        ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``model``'s parameters and its per-epoch :func:`warmup_cosine` schedule."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(warmup, epochs))
