"""The search space of a location-encoder training, from the model registry (Optuna, define-by-run).

A trial picks a family among ``families`` (``encoder``), then that family's registry search space
(:mod:`urbanrepml.models.location.encoders`: L or scales, capacity, lr, temperature).
:func:`suggest` returns the :class:`~urbanrepml.tasks.location.task.LocencConfig` to train and the
sampled values (logged on the trial's run).
"""

from __future__ import annotations

import dataclasses

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.location import TRAINABLE
from urbanrepml.models.registry import Choice, FloatRange, IntRange, model_spec
from urbanrepml.tasks.location.task import LocencConfig

TRAINING_KEYS = ("lr", "temperature")


def parse_families(value: str) -> tuple[str, ...]:
    """``"sh_siren,rff"`` -> a tuple of trainable families (``""`` or ``all``: every one)."""
    items = [v.strip() for v in str(value or "").split(",") if v.strip()]
    if not items or items == ["all"]:
        return TRAINABLE
    unknown = [v for v in items if v not in TRAINABLE]
    if unknown:
        raise UrbanReprError(f"tune_encoders must be a comma-separated subset of {', '.join(TRAINABLE)} (or all), got {value!r}")
    return tuple(dict.fromkeys(items))


def _sample(trial, name: str, space):
    if isinstance(space, Choice):
        return trial.suggest_categorical(name, list(space.values))
    if isinstance(space, IntRange):
        return trial.suggest_int(name, space.low, space.high, log=space.log)
    if isinstance(space, FloatRange):
        return trial.suggest_float(name, space.low, space.high, log=space.log)
    raise TypeError(f"unknown search space {space!r}")


def suggest(trial, base: LocencConfig, families: tuple[str, ...]) -> tuple[LocencConfig, dict]:
    """One trial's configuration: ``base`` with the family and its sampled settings; and the sampled values."""
    family = trial.suggest_categorical("encoder", list(families)) if len(families) > 1 else families[0]
    values: dict = {"encoder": family}
    encoder_config = {k: v for k, v in base.encoder_config.items() if k in model_spec(family).defaults}
    training = {}
    for name, space in model_spec(family).search_space(base.epochs).items():
        value = _sample(trial, f"{family}.{name}" if name not in TRAINING_KEYS else name, space)
        values[name] = value
        if name in TRAINING_KEYS:
            training[name] = value
        else:
            encoder_config[name] = value
    return dataclasses.replace(base, encoder=family, encoder_config=encoder_config, **training), values
