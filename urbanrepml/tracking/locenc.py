"""Location encoders in the tracking store: registration as ``urbanrepml-locenc-<scope>`` and the promotion policy.

Policy (:data:`PROMOTION_METRIC`, higher is better): ``val_top10``, the held-out retrieval top-10
of the run - the same metric the training loop keeps the best checkpoint by. A new version is
registered with alias ``candidate``; ``champion`` moves to it when

- there is no champion yet, or
- its ``val_top10`` beats the champion's by more than ``min_gain`` (and by something: a tie
  keeps the champion), and both were measured on the same held-out records (equal
  ``urbanrepml.locenc.split_digest``: same input records, block resolution, fraction and seed);
  a score on another split is not comparable and never moves the alias.

This is the family policy of :mod:`urbanrepml.tracking.family` with that metric; the decision and
its evidence are tags on the version. Only a FINISHED run is registered (a failed run gets no version).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion

from urbanrepml.constants import CANDIDATE
from urbanrepml.tracking.family import FamilyDecision, ModelFamily, promote_version, register_run_model, resolve_family_uri
from urbanrepml.tracking.locenc_pyfunc import MODEL_NAME

FAMILY = ModelFamily(
    name="locenc", metric="val_top10", higher_is_better=True,
    what="Location encoders of {scope!r}: lat/lon -> embedding (and RAG vector)",
    train_hint="mlflow run . -e locenc -P study_area={scope}",
)
FAMILY_NAME = FAMILY.name
PROMOTION_METRIC = FAMILY.metric
SPLIT_TAG = FAMILY.split_tag
METRIC_TAG = FAMILY.metric_tag


def locenc_model_name(scope: str) -> str:
    """``urbanrepml-locenc-<scope>``."""
    return FAMILY.model_name(scope)


def register_locenc(run_id: str, scope: str, *, tags: dict | None = None, alias: str = CANDIDATE,
                    artifact_path: str = MODEL_NAME) -> ModelVersion:
    """Register the location-encoder model of FINISHED run ``run_id`` as a new version of ``urbanrepml-locenc-<scope>``."""
    return register_run_model(FAMILY, run_id, scope, artifact_path=artifact_path, tags=tags, alias=alias)


def promote_locenc(version: ModelVersion, min_gain: float = 0.0) -> FamilyDecision:
    """Apply the promotion policy (module docstring) to ``version``; record the decision on it."""
    return promote_version(FAMILY, version, min_gain)


def resolve_locenc_uri(scope: str, model_uri: str | None = None) -> tuple[str, str]:
    """The encoder to use and a note: ``model_uri`` as given, else ``@champion`` of the scope's model, else ``@candidate``."""
    return resolve_family_uri(FAMILY, scope, model_uri)


def log_file(path: str | Path, artifact_path: str) -> None:
    """Log one local file as an artifact of the active run (no tags: the file is a record, not a modality table)."""
    mlflow.log_artifact(str(path), artifact_path=artifact_path)
