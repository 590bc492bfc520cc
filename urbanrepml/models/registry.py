"""The model registry: name -> builder, default configuration and search space, per family.

One place lists what a family can train, so entry points, tuning and docs never keep their own
lists. A spec's ``build`` makes the ``nn.Module`` (``None`` for closed-form models such as the
fusion baselines, which a task computes directly). Search spaces are plain descriptions
(:class:`IntRange`, :class:`FloatRange`, :class:`Choice`); ``tuning`` turns them into Optuna
distributions. ``search_space(max_epochs)`` may depend on the epoch budget of a study.

    register_model(ModelSpec("full_unet", "fusion", build=..., defaults={...}, search_space=...))
    list_models("fusion")        # ["full_unet", "cone_unet", "concat", "ring"]
    get_model("full_unet", in_dim=12, hidden_dims=(64, 128, 256))   # an nn.Module
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from urbanrepml.errors import UrbanReprError


@dataclass(frozen=True)
class IntRange:
    """Integers ``low..high`` (inclusive), optionally on a log scale."""

    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class FloatRange:
    """Floats in ``[low, high]``, optionally on a log scale."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of ``values``."""

    values: tuple


Space = IntRange | FloatRange | Choice


def _no_space(max_epochs: int) -> dict[str, Space]:
    return {}


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        name: the name users pass (``-P model=<name>``).
        family: ``fusion``, ``image_encoder``, ...
        description: one line for listings and docs.
        build: ``build(**config) -> nn.Module``, or None for a closed-form model.
        defaults: the default configuration (what ``build`` gets unless overridden).
        search_space: ``max_epochs -> {parameter: Space}`` that tuning samples.
    """

    name: str
    family: str
    description: str
    build: Callable[..., Any] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    search_space: Callable[[int], Mapping[str, Space]] = _no_space


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` (a name registered twice is a programming error)."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def model_spec(name: str, family: str | None = None) -> ModelSpec:
    """The spec of ``name`` (of ``family`` when given); one clear error naming the known ones otherwise."""
    spec = _REGISTRY.get(name)
    if spec is None or (family is not None and spec.family != family):
        known = ", ".join(list_models(family))
        raise UrbanReprError(f"unknown {family + ' ' if family else ''}model {name!r}; choose one of {known}")
    return spec


def list_models(family: str | None = None) -> list[str]:
    """Registered model names (of ``family``), in registration order."""
    return [n for n, s in _REGISTRY.items() if family is None or s.family == family]


def get_model(name: str, **config: Any):
    """Build model ``name`` from its defaults updated with ``config``."""
    spec = model_spec(name)
    if spec.build is None:
        raise UrbanReprError(f"model {name!r} is computed in closed form; it has no module to build")
    return spec.build(**{**spec.defaults, **config})
