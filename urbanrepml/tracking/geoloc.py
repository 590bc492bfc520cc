"""Geolocators in the tracking store: ``urbanrepml-geoloc-<dataset>`` and its promotion policy.

Policy (:data:`FAMILY`): metric ``val_median_km``, lower is better - the validation median error,
the same metric the training loop keeps the best checkpoint by (and the tuning study minimises).
The test split never chooses anything: its metrics (``test_median_km``, ``test_acc_top1``, ...) are
tags on the version (``urbanrepml.geoloc.test_*``) for people to read. A new version gets
``candidate``; ``champion`` moves to it when there is none, or when its ``val_median_km`` is lower
than the champion's by more than ``min_gain_km`` (a tie keeps the champion), both measured on the
same split (equal ``urbanrepml.geoloc.split_digest``: the same training and validation images and
classes). The decision and its evidence are tags on the version; only a FINISHED run is registered.
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
from urbanrepml.tracking.geoloc_pyfunc import MODEL_NAME

FAMILY = ModelFamily(
    name="geoloc", metric="val_median_km", higher_is_better=False,
    what="Image geolocators of {scope!r}: image -> H3 cell and lat/lon",
    train_hint="mlflow run . -e geolocate -P dataset={scope}",
)
SPLIT_TAG = FAMILY.split_tag
METRIC_TAG = FAMILY.metric_tag


def geoloc_model_name(scope: str) -> str:
    """``urbanrepml-geoloc-<scope>``."""
    return FAMILY.model_name(scope)


def register_geoloc(run_id: str, scope: str, *, tags: dict | None = None, alias: str = CANDIDATE) -> ModelVersion:
    """Register the geolocator of FINISHED run ``run_id`` as a new version of ``urbanrepml-geoloc-<scope>``."""
    return register_run_model(FAMILY, run_id, scope, artifact_path=MODEL_NAME, tags=tags, alias=alias)


def promote_geoloc(version: ModelVersion, min_gain_km: float = 0.0) -> FamilyDecision:
    """Apply the promotion policy (module docstring) to ``version``."""
    return promote_version(FAMILY, version, min_gain_km)


def resolve_geoloc_uri(scope: str, model_uri: str | None = None) -> tuple[str, str]:
    return resolve_family_uri(FAMILY, scope, model_uri)


def require_geolocator(model_uri: str) -> dict:
    """The model's metadata; one clear error when ``model_uri`` is not a geolocator."""
    return require_family(model_uri, FAMILY)
