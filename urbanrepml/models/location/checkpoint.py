"""A trained location encoder as one dict: everything needed to rebuild it exactly (no pickled code).

``checkpoint(model, encoder, encoder_config)`` -> ``{"format", "encoder", "encoder_config",
"in_dim", "projection_hidden", "state_dict"}``; :func:`rebuild` makes the
:class:`~urbanrepml.models.location.contrastive.ContrastiveLocationModel` again from the registry
and loads every key strictly (buffers too: frames, Fourier frequencies, input standardisation),
so a reloaded model gives identical outputs. Saved with ``torch.save``, read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.location.contrastive import ContrastiveLocationModel
from urbanrepml.models.registry import get_model

CHECKPOINT_FORMAT = 1


def checkpoint(model: ContrastiveLocationModel, encoder: str, encoder_config: Mapping[str, Any]) -> dict:
    """The model's full description and weights (plain values and tensors only)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "encoder": encoder,
        "encoder_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in encoder_config.items()},
        "in_dim": int(model.in_dim),
        "projection_hidden": int(model.projection_hidden),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }


def rebuild(state: Mapping[str, Any]) -> ContrastiveLocationModel:
    """The model a :func:`checkpoint` describes, with its weights loaded strictly (eval mode)."""
    missing = [k for k in ("encoder", "encoder_config", "in_dim", "projection_hidden", "state_dict") if k not in state]
    if missing:
        raise UrbanReprError(f"not a location-encoder checkpoint (it lacks {', '.join(missing)})")
    config = dict(state["encoder_config"])
    if "bounds" in config:
        config["bounds"] = tuple(config["bounds"])
    encoder = get_model(state["encoder"], **config)
    model = ContrastiveLocationModel(encoder, int(state["in_dim"]), int(state["projection_hidden"]))
    try:
        model.load_state_dict(state["state_dict"], strict=True)
    except RuntimeError as exc:
        raise UrbanReprError(f"checkpoint does not match encoder {state['encoder']!r}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def save(state: dict, path) -> None:
    torch.save(state, path)


def load(path) -> ContrastiveLocationModel:
    """:func:`rebuild` from a file written by :func:`save`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip error means an unreadable file
        raise UrbanReprError(f"{path}: not a readable location-encoder checkpoint ({type(exc).__name__})") from None
    return rebuild(state)
