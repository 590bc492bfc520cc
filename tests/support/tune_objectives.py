"""Cheap objectives for the tuning infrastructure tests (the storage/worker logic, not fusion)."""

from __future__ import annotations

import time

from optuna.distributions import FloatDistribution, IntDistribution


class SlowQuadratic:
    """Maximise -(x-1)^2; reports ``steps`` intermediate values, ``step_seconds`` apart (time to kill a worker)."""

    direction = "maximize"

    def __init__(self, steps: int = 4, step_seconds: float = 0.3, high: float = 3.0, fail_above: float | None = None):
        self.kwargs = dict(steps=steps, step_seconds=step_seconds, high=high, fail_above=fail_above)
        self.steps, self.step_seconds, self.high, self.fail_above = steps, step_seconds, high, fail_above

    @property
    def factory(self):
        return "tests.support.tune_objectives:SlowQuadratic", dict(self.kwargs)

    def signature(self) -> dict:
        space = {"x": repr(FloatDistribution(-3.0, self.high)), "k": repr(IntDistribution(0, 10 ** 6))}
        return {"objective": "quadratic", "space": space}

    def setup(self) -> None:
        pass

    def __call__(self, trial) -> float:
        import optuna

        x = trial.suggest_float("x", -3.0, self.high)
        trial.suggest_int("k", 0, 10 ** 6)
        if self.fail_above is not None and x > self.fail_above:
            raise RuntimeError(f"x={x:.3f} is above {self.fail_above}")
        score = -((x - 1.0) ** 2)
        for step in range(self.steps):
            time.sleep(self.step_seconds)
            trial.report(score - (self.steps - step), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return score
