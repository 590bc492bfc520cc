"""Place embedders in the tracking store: ``urbanrepml-placeemb-<dataset>`` and the promotion policy.

Policy (family :data:`FAMILY`): ``val_recall_1``, higher is better - the validation recall@1 that
picks the kept checkpoint and that tuning maximises. A new version gets ``candidate``; ``champion``
moves to it when there is none yet, or when it beats the champion's ``val_recall_1`` by more than
``min_gain`` on the same validation identities (equal ``urbanrepml.placeemb.split_digest``). Only a
FINISHED run is registered. See :mod:`urbanrepml.tracking.family`.
"""

from __future__ import annotations

from mlflow.entities.model_registry import ModelVersion

from urbanrepml.constants import CANDIDATE
from urbanrepml.tracking.family import (
    FamilyDecision,
    ModelFamily,
    promote_version,
    register_run_model,
    require_family,
    resolve_family_uri,
)
from urbanrepml.tracking.placeemb_pyfunc import MODEL_NAME

FAMILY = ModelFamily(
    name="placeemb", metric="val_recall_1", higher_is_better=True,
    what="Place embedders of {scope!r}: images (or frozen features) -> embedding, same place close",
    train_hint="mlflow run . -e placeemb -P dataset={scope}",
)
SPLIT_TAG = FAMILY.split_tag
METRIC_TAG = FAMILY.metric_tag


def placeemb_model_name(scope: str) -> str:
    """``urbanrepml-placeemb-<scope>``."""
    return FAMILY.model_name(scope)


def register_placeemb(run_id: str, scope: str, *, tags: dict | None = None, alias: str = CANDIDATE) -> ModelVersion:
    """Register the place embedder of FINISHED run ``run_id`` as a new version of ``urbanrepml-placeemb-<scope>``."""
    return register_run_model(FAMILY, run_id, scope, artifact_path=MODEL_NAME, tags=tags, alias=alias)


def promote_placeemb(version: ModelVersion, min_gain: float = 0.0) -> FamilyDecision:
    """Apply the promotion policy to ``version``; record the decision on it."""
    return promote_version(FAMILY, version, min_gain)


def resolve_placeemb_uri(scope: str, model_uri: str | None = None) -> tuple[str, str]:
    """An explicit URI, else ``@champion``, else ``@candidate`` of the scope's model."""
    return resolve_family_uri(FAMILY, scope, model_uri)


def require_placeemb(model_uri: str) -> dict:
    """The model's metadata; one clear error when ``model_uri`` is not a place embedder."""
    return require_family(model_uri, FAMILY)
