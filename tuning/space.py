"""Search spaces for fusion, one per model, as Optuna distributions (define-by-run, conditional on ``model``).

Parameters (names as they appear in Optuna and on the MLflow trial runs):

- ``model``: which fusion model the trial trains, from the study's ``models``. The spaces come from
  the model registry (:mod:`urbanrepml.models.registry`); the U-Nets register theirs in
  :mod:`urbanrepml.models.unet`, ``ring`` in :mod:`urbanrepml.tasks.fusion.baselines`.
- U-Nets (``full_unet``, ``cone_unet``), shared names so TPE learns across both:
  ``unet.width`` (width of the finest level; each coarser level doubles it),
  ``unet.convs_per_level``, ``unet.dropout``, ``unet.lr`` (log), ``unet.epochs`` (the epoch budget,
  up to the study's ``max_epochs``), ``unet.consistency_weight``, ``unet.mask_modality``,
  ``unet.mask_cell`` (the masked-prediction objective); a trial trains the ensemble ``fuse`` trains.
- ``cone_unet`` only: ``cone.batch`` (cones per batch).
- ``ring`` (the sparse ring-aggregation model): ``ring.k``, ``ring.weighting``.

The space's JSON form (:func:`signature`) is stored on the study; continuing a study
with another space is refused (see :mod:`tuning.study`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.registry import Choice, FloatRange, IntRange, list_models, model_spec
from urbanrepml.tasks.fusion import FAMILY

# Largest epoch budget a trial may draw; the fuse entry point trains 60 epochs by default too.
DEFAULT_MAX_EPOCHS = 60
# The fusion models with something to tune (the registry's order: baselines first, then the U-Nets).
MODELS = tuple(m for m in list_models(FAMILY) if model_spec(m).search_space(DEFAULT_MAX_EPOCHS))


def to_distribution(space) -> BaseDistribution:
    """A registry search-space entry as an Optuna distribution."""
    if isinstance(space, Choice):
        return CategoricalDistribution(list(space.values))
    if isinstance(space, IntRange):
        return IntDistribution(space.low, space.high, log=space.log)
    if isinstance(space, FloatRange):
        return FloatDistribution(space.low, space.high, log=space.log)
    raise TypeError(f"unknown search space {space!r}")


def model_space(model: str, max_epochs: int) -> dict[str, BaseDistribution]:
    """The distributions a trial of ``model`` samples (besides ``model`` itself), from the model registry."""
    if model not in MODELS:
        raise UrbanReprError(f"no search space for model {model!r}; choose from {', '.join(MODELS)}")
    return {name: to_distribution(space) for name, space in model_spec(model, FAMILY).search_space(max_epochs).items()}


def parse_models(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    items = [m.strip() for m in (value.split(",") if isinstance(value, str) else value) if m.strip()]
    unknown = [m for m in items if m not in MODELS]
    if not items or unknown:
        raise UrbanReprError(f"models must be a comma-separated subset of {', '.join(MODELS)}, got {value!r}")
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class SearchSpace:
    models: tuple[str, ...] = MODELS
    max_epochs: int = DEFAULT_MAX_EPOCHS
    fixed: dict = field(default_factory=dict)

    def __post_init__(self):
        parse_models(list(self.models))
        if self.max_epochs < 1:
            raise UrbanReprError(f"max_epochs must be at least 1, got {self.max_epochs}")

    def distributions(self) -> dict[str, BaseDistribution]:
        out: dict[str, BaseDistribution] = {"model": CategoricalDistribution(list(self.models))}
        for m in self.models:
            out.update(model_space(m, self.max_epochs))
        return out

    def signature(self) -> dict:
        """JSON-able description, compared when a study is continued."""
        return {name: json.loads(distribution_to_json(d)) for name, d in sorted(self.distributions().items())}

    def suggest(self, trial) -> dict:
        """Sample one configuration: ``{"model": ..., <param>: value, ...}`` (only the chosen model's params)."""
        model = trial.suggest_categorical("model", list(self.models)) if len(self.models) > 1 else self.models[0]
        if len(self.models) == 1:
            trial.set_user_attr("model", model)
        cfg = {"model": model}
        for name, dist in model_space(model, self.max_epochs).items():
            if isinstance(dist, CategoricalDistribution):
                cfg[name] = trial.suggest_categorical(name, list(dist.choices))
            elif isinstance(dist, IntDistribution):
                cfg[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
            else:
                cfg[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        return cfg


def describe_difference(stored: dict, current: dict) -> str:
    """Human summary of how two space signatures differ (for the error message)."""
    parts = []
    for name in sorted(set(stored) | set(current)):
        if name not in current:
            parts.append(f"{name} removed")
        elif name not in stored:
            parts.append(f"{name} added")
        elif stored[name] != current[name]:
            parts.append(f"{name} changed")
    return ", ".join(parts[:6]) + (" ..." if len(parts) > 6 else "")
