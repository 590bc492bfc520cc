"""Location encoders in the tracking store: registration as ``urbanrepml-locenc-<scope>`` and the promotion policy.

Policy (:data:`PROMOTION_METRIC`, higher is better): ``val_top10``, the held-out retrieval top-10
of the run - the same metric the training loop keeps the best checkpoint by. A new version is
registered with alias ``candidate``; ``champion`` moves to it when

- there is no champion yet, or
- its ``val_top10`` beats the champion's by more than ``min_gain`` (and by something: a tie
  keeps the champion), and both were measured on the same held-out records (equal
  ``urbanrepml.locenc.split_digest``: same input records, block resolution, fraction and seed);
  a score on another split is not comparable and never moves the alias.

The decision and its evidence are tags on the version (``promote.decision``, ``promote.reason``,
``promote.evidence``). Only a FINISHED run is registered (a failed run gets no version).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from urbanrepml.constants import CANDIDATE, CHAMPION, registered_model_name, tag
from urbanrepml.errors import UrbanReprError
from urbanrepml.tracking.locenc_pyfunc import MODEL_NAME
from urbanrepml.tracking.registry import _find_logged_model, _not_found, _wait_ready, get_version_by_alias, set_alias

FAMILY_NAME = "locenc"
PROMOTION_METRIC = "val_top10"
SPLIT_TAG = tag("locenc.split_digest")
METRIC_TAG = tag(f"locenc.{PROMOTION_METRIC}")


def locenc_model_name(scope: str) -> str:
    """``urbanrepml-locenc-<scope>``."""
    return registered_model_name(scope, FAMILY_NAME)


@dataclass
class LocencDecision:
    promoted: bool
    reason: str
    version: str
    value: float
    champion: str | None
    champion_value: float | None


def register_locenc(run_id: str, scope: str, *, tags: dict | None = None, alias: str = CANDIDATE,
                    artifact_path: str = MODEL_NAME) -> ModelVersion:
    """Register the location-encoder model of FINISHED run ``run_id`` as a new version of ``urbanrepml-locenc-<scope>``."""
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UrbanReprError(f"run {run_id!r} not found in the tracking store; nothing registered") from None
    if run.info.status != "FINISHED":
        raise UrbanReprError(f"run {run_id} is {run.info.status}, not FINISHED; only a finished run is registered")
    logged = _find_logged_model(client, run_id, artifact_path)
    if logged is None:
        raise UrbanReprError(f"run {run_id} has no model named {artifact_path!r}; nothing registered")
    name = locenc_model_name(scope)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        client.create_registered_model(name, tags={tag("study_area"): scope, tag("family"): FAMILY_NAME},
                                       description=f"Location encoders of {scope!r} (urbanrepml): lat/lon -> embedding "
                                                   f"(and RAG vector). champion = best held-out {PROMOTION_METRIC}.")
    mv = client.create_model_version(name, f"models:/{logged.model_id}", run_id=run_id, model_id=logged.model_id,
                                     tags={tag("producer_run_id"): run_id})
    mv = _wait_ready(client, name, mv.version)
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, mv.version, key, str(value))
    if alias:
        set_alias(name, alias, mv.version, client)
    return client.get_model_version(name, mv.version)


def promote_locenc(version: ModelVersion, min_gain: float = 0.0) -> LocencDecision:
    """Apply the promotion policy (module docstring) to ``version``; record the decision on it."""
    client = MlflowClient()
    value = float(version.tags[METRIC_TAG])
    champ = get_version_by_alias(version.name, CHAMPION, client)
    champ_value = float(champ.tags[METRIC_TAG]) if champ is not None and champ.tags.get(METRIC_TAG) else None
    if champ is None:
        promote, reason = True, f"no {CHAMPION} yet; version {version.version} ({PROMOTION_METRIC} {value:.4f}) becomes it"
    elif str(champ.version) == str(version.version):
        promote, reason = False, f"version {version.version} is already {CHAMPION}"
    elif champ_value is None or champ.tags.get(SPLIT_TAG) != version.tags.get(SPLIT_TAG):
        promote, reason = False, (f"{CHAMPION} version {champ.version} was scored on other held-out records (split digest "
                                  f"{str(champ.tags.get(SPLIT_TAG))[:12]} vs {str(version.tags.get(SPLIT_TAG))[:12]}): "
                                  f"not comparable, {CHAMPION} kept")
    else:
        gain = value - champ_value
        promote = gain > 0 and gain > min_gain
        reason = (f"version {version.version} {PROMOTION_METRIC} {value:.4f} vs {CHAMPION} version {champ.version} "
                  f"{champ_value:.4f} (gain {gain:+.4f}, margin {min_gain:g}): "
                  + ("promoted" if promote else f"{CHAMPION} kept"))
    decision = LocencDecision(promote, reason, str(version.version), value, str(champ.version) if champ else None, champ_value)
    if promote:
        set_alias(version.name, CHAMPION, version.version, client)
    for key, val in (("promote.decision", "promoted" if promote else "kept"), ("promote.reason", reason),
                     ("promote.evidence", json.dumps(asdict(decision), sort_keys=True))):
        client.set_model_version_tag(version.name, version.version, key, val)
    return decision


def resolve_locenc_uri(scope: str, model_uri: str | None = None) -> tuple[str, str]:
    """The encoder to use and a note: ``model_uri`` as given, else ``@champion`` of the scope's model, else ``@candidate``."""
    if model_uri:
        return model_uri, f"using {model_uri}"
    client = MlflowClient()
    name = locenc_model_name(scope)
    for alias in (CHAMPION, CANDIDATE):
        try:
            mv = get_version_by_alias(name, alias, client)
        except MlflowException:
            mv = None
        if mv is not None:
            return f"models:/{name}@{alias}", f"using models:/{name}@{alias} (version {mv.version})"
    raise UrbanReprError(f"no registered location encoder {name!r} with a @{CHAMPION} or @{CANDIDATE} alias; "
                         f"train one with `mlflow run . -e locenc -P study_area={scope}` or pass model_uri")


def log_file(path: str | Path, artifact_path: str) -> None:
    """Log one local file as an artifact of the active run (no tags: the file is a record, not a modality table)."""
    mlflow.log_artifact(str(path), artifact_path=artifact_path)
