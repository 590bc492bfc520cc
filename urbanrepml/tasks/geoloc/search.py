"""The tuning search space of a geolocator: lr, tau_km, mix_ce, resolution and the model's own (dropout, ...).

The model's part comes from its registry entry (:func:`urbanrepml.models.registry.model_spec`);
resolution is searched around the given one (one coarser to one finer).
"""

from __future__ import annotations

import dataclasses

import urbanrepml.models.geoloc  # noqa: F401 - registers the geolocator models
from urbanrepml.models.registry import Choice, FloatRange, IntRange, model_spec


def _sample(trial, name: str, space):
    if isinstance(space, FloatRange):
        return trial.suggest_float(name, space.low, space.high, log=space.log)
    if isinstance(space, IntRange):
        return trial.suggest_int(name, space.low, space.high, log=space.log)
    return trial.suggest_categorical(name, list(space.values))


def space(cfg, resolution: int) -> dict:
    """``{name: Space}``: task settings and the model's own."""
    out = {"lr": FloatRange(3e-4, 1e-2, log=True), "tau_km": FloatRange(0.05, 5.0, log=True),
           "mix_ce": FloatRange(0.0, 1.0),
           "resolution": IntRange(max(0, resolution - 1), min(15, resolution + 1))}
    out.update({f"model.{k}": v for k, v in model_spec(cfg.model).search_space(cfg.epochs).items()})
    return out


def suggest(trial, cfg, resolution: int):
    """A trial's ``(config, resolution, values)``."""
    values = {name: _sample(trial, name, s) for name, s in space(cfg, resolution).items()}
    model_config = {**cfg.model_config, **{k[6:]: v for k, v in values.items() if k.startswith("model.")}}
    new = dataclasses.replace(cfg, lr=values["lr"], tau_km=values["tau_km"], mix_ce=values["mix_ce"], model_config=model_config)
    return new, int(values["resolution"]), values


__all__ = ["Choice", "space", "suggest"]
