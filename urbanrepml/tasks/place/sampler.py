"""Which difficulty band the next batch draws its negatives from: UCB1 over bands, or uniform (the ablation).

The sampler lives in the training process and is asked once per batch (:meth:`choose`); after the
batch, :meth:`update` gives it the band's reward: the share of the batch's triplets that violated
the margin (``d(a, n) < d(a, p) + margin``), i.e. how many of its negatives still taught the model
something. Easy bands whose negatives are already far score near 0; a band whose negatives are all
violating scores 1. UCB1 picks ``argmax mean_b + c * sqrt(2 ln t / n_b)`` after trying each band
once. Both samplers draw from the global numpy RNG only (seeded by the loop).

Per epoch, :meth:`epoch_stats` returns each band's pulls and mean reward and starts a new epoch.
"""

from __future__ import annotations

import math

import numpy as np

from urbanrepml.errors import UrbanReprError

SAMPLERS = ("ucb", "uniform")


class BandSampler:
    """Shared bookkeeping: pulls and rewards per band, over the run and in the current epoch."""

    name = "base"

    def __init__(self, n_bands: int):
        if n_bands < 1:
            raise UrbanReprError(f"a band sampler needs at least one band, got {n_bands}")
        self.n_bands = n_bands
        self.pulls = np.zeros(n_bands, dtype=np.int64)
        self.rewards = np.zeros(n_bands, dtype=np.float64)
        self._epoch_pulls = np.zeros(n_bands, dtype=np.int64)
        self._epoch_rewards = np.zeros(n_bands, dtype=np.float64)

    def choose(self) -> int:
        raise NotImplementedError

    def update(self, band: int, reward: float) -> None:
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"reward must be in [0, 1], got {reward}")
        self.pulls[band] += 1
        self.rewards[band] += reward
        self._epoch_pulls[band] += 1
        self._epoch_rewards[band] += reward

    def state_dict(self) -> dict[str, list]:
        """The run's pulls and summed rewards per band (plain lists: a checkpoint loads with ``weights_only``)."""
        return {"pulls": self.pulls.tolist(), "rewards": self.rewards.tolist()}

    def load_state_dict(self, state: dict) -> None:
        pulls, rewards = np.asarray(state["pulls"], dtype=np.int64), np.asarray(state["rewards"], dtype=np.float64)
        if pulls.shape != (self.n_bands,) or rewards.shape != (self.n_bands,):
            raise UrbanReprError(f"the checkpoint's sampler has {len(pulls)} band(s), this run {self.n_bands}")
        self.pulls, self.rewards = pulls, rewards

    def epoch_stats(self) -> dict[str, float]:
        """``band_<b>_pulls`` and ``band_<b>_reward`` (mean; NaN-free: 0 when not pulled) of the epoch; resets it."""
        out = {}
        for b in range(self.n_bands):
            n = int(self._epoch_pulls[b])
            out[f"band_{b}_pulls"] = float(n)
            out[f"band_{b}_reward"] = float(self._epoch_rewards[b] / n) if n else 0.0
        self._epoch_pulls[:] = 0
        self._epoch_rewards[:] = 0.0
        return out


class UCB1Sampler(BandSampler):
    """UCB1 with exploration constant ``c`` (see the module docstring)."""

    name = "ucb"

    def __init__(self, n_bands: int, c: float = 1.0):
        super().__init__(n_bands)
        if not (math.isfinite(c) and c >= 0):
            raise UrbanReprError(f"ucb_c must be a finite number >= 0, got {c}")
        self.c = c

    def choose(self) -> int:
        untried = np.flatnonzero(self.pulls == 0)
        if len(untried):
            return int(untried[0])
        t = self.pulls.sum()
        score = self.rewards / self.pulls + self.c * np.sqrt(2.0 * math.log(t) / self.pulls)
        best = np.flatnonzero(score == score.max())
        return int(best[np.random.randint(len(best))])


class UniformSampler(BandSampler):
    """Every band equally likely (the ablation)."""

    name = "uniform"

    def choose(self) -> int:
        return int(np.random.randint(self.n_bands))


def make_sampler(kind: str, n_bands: int, c: float = 1.0) -> BandSampler:
    if kind == "ucb":
        return UCB1Sampler(n_bands, c)
    if kind == "uniform":
        return UniformSampler(n_bands)
    raise UrbanReprError(f"sampler must be one of {', '.join(SAMPLERS)}, got {kind!r}")
