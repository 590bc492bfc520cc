"""The model registry: one registered model per study area, versions = fused embedding models, aliases.

API
---
- ``registered_model_name(study_area) -> "urbanrepml-<study_area>"``.
- ``register_embeddings(run_id, study_area, artifact_path="embedding_model", alias="candidate") -> ModelVersion``:
  registers the embedding model a run logged (:func:`urbanrepml.tracking.pyfunc.log_embedding_model`),
  waits until READY, sets ``alias`` and tags the version ``study_area``, ``resolution``,
  ``producer_run_id``, ``modality``, ``n_cells``, ``dim``. Refuses a model whose metadata names
  another study area, and a run that is not FINISHED or RUNNING (a failed run registers nothing).
- ``resolve_model_uri(study_area, model_uri=None) -> (uri, note)``: ``models:/urbanrepml-<area>@champion``,
  or ``@candidate`` when no champion is set (the note says so); an explicit ``models:/`` URI is
  checked to exist. Any other explicit URI (``runs:/``, ``models:/m-...``) is returned as is.
- ``model_version(model) -> ModelVersion``: ``model`` is ``models:/<name>@<alias>``,
  ``models:/<name>/<version>`` or ``(name, version)``.
- ``record_probe(model, metrics, run_id, folds_digest, prefix="probe.") -> ModelVersion``: version tags
  ``probe.mean_r2``, ``probe.run_id``, ``probe.folds_digest`` and ``probe.<metric>`` for each metric
  (shown on the registry page).
- ``set_alias(name, alias, version)``, ``get_version_by_alias(name, alias) -> ModelVersion | None``.

Aliases only (``candidate``, ``champion``); stages are deprecated in MLflow and never used.
"""

from __future__ import annotations

import re
import time

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from urbanrepml.constants import CANDIDATE, CHAMPION, registered_model_name  # noqa: F401 - re-exported
from urbanrepml.errors import UrbanReprError
from urbanrepml.tracking.pyfunc import MODEL_ARTIFACT_PATH

PROBE_PREFIX = "probe."


def probe_prefix(probe: str = "ridge") -> str:
    """Tag prefix of a version's probe record: ``probe.`` for the headline ridge probe, ``probe.<name>.`` otherwise."""
    return PROBE_PREFIX if probe == "ridge" else f"{PROBE_PREFIX}{probe}."
_ALIAS_URI = re.compile(r"^models:/([^/@]+)@([^/@]+)/?$")
_VERSION_URI = re.compile(r"^models:/([^/@]+)/(\d+)/?$")


def _not_found(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


def get_version_by_alias(name: str, alias: str, client: MlflowClient | None = None) -> ModelVersion | None:
    """The version ``alias`` points at, or None when the model or the alias does not exist."""
    client = client or MlflowClient()
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if _not_found(exc):
            return None
        raise


def set_alias(name: str, alias: str, version: int | str, client: MlflowClient | None = None) -> None:
    """Point ``alias`` of registered model ``name`` at ``version`` (moving it if set elsewhere)."""
    client = client or MlflowClient()
    try:
        client.set_registered_model_alias(name, alias, str(version))
    except MlflowException as exc:
        raise UrbanReprError(f"cannot set alias {alias!r} of {name!r} to version {version}: {str(exc).splitlines()[0]}") from None


def _wait_ready(client: MlflowClient, name: str, version: str, timeout: float = 120.0) -> ModelVersion:
    deadline = time.monotonic() + timeout
    while True:
        mv = client.get_model_version(name, version)
        if mv.status == "READY":
            return mv
        if mv.status == "FAILED_REGISTRATION":
            raise UrbanReprError(f"registration of {name} version {version} failed: {mv.status_message}")
        if time.monotonic() > deadline:
            raise UrbanReprError(f"{name} version {version} not READY after {timeout:.0f} s (status {mv.status})")
        time.sleep(0.5)


def _find_logged_model(client: MlflowClient, run_id: str, artifact_path: str):
    """The LoggedModel a run logged under ``artifact_path`` (MLflow 3 keeps models outside run artifacts)."""
    run = client.get_run(run_id)
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{artifact_path}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        max_results=1,
    )
    return models[0] if models else None


def finished_run_model(client: MlflowClient, run_id: str, artifact_path: str):
    """The LoggedModel FINISHED run ``run_id`` logged under ``artifact_path``; one clear error otherwise.

    Only a finished run is registered: a failed, killed or still running run gets no registry version.
    """
    try:
        client.get_run(run_id)
    except MlflowException:
        raise UrbanReprError(f"run {run_id!r} not found in the tracking store; nothing registered") from None
    status = client.get_run(run_id).info.status
    if status != "FINISHED":
        raise UrbanReprError(f"run {run_id} is {status}, not FINISHED; only a finished run is registered")
    logged = _find_logged_model(client, run_id, artifact_path)
    if logged is None:
        raise UrbanReprError(f"run {run_id} has no model named {artifact_path!r}; nothing registered")
    return logged


def register_embeddings(
    run_id: str,
    study_area: str,
    artifact_path: str = MODEL_ARTIFACT_PATH,
    alias: str | None = CANDIDATE,
) -> ModelVersion:
    """Register the embedding model of ``run_id`` as a new version of ``urbanrepml-<study_area>``.

    The version is tagged from the model's metadata and ``alias`` (default ``candidate``) is moved
    to it. Raises :class:`UrbanReprError` when the run or its model does not exist, the run has
    not FINISHED (failed, killed, or still running), or the embeddings belong to another study area.
    """
    client = MlflowClient()
    logged = finished_run_model(client, run_id, artifact_path)
    source_uri = f"models:/{logged.model_id}"
    info = mlflow.models.get_model_info(source_uri)
    meta = (info.metadata or {}).get("urbanrepml", {})
    if meta.get("study_area") and meta["study_area"] != study_area:
        raise UrbanReprError(
            f"run {run_id}'s embeddings are of study area {meta['study_area']!r}, not {study_area!r}; nothing registered"
        )
    name = registered_model_name(study_area)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        client.create_registered_model(
            name,
            tags={"urbanrepml.study_area": study_area},
            description=f"Fused H3 embeddings of study area {study_area!r} (urbanrepml). "
            "Aliases: candidate = newest fused model, champion = best by probe.",
        )
    mv = client.create_model_version(name, source_uri, run_id=run_id, model_id=logged.model_id,
                                     tags={"urbanrepml.producer_run_id": run_id})
    mv = _wait_ready(client, name, mv.version)
    tags = {
        "study_area": study_area,
        "resolution": str(meta.get("resolution", "")),
        "producer_run_id": run_id,
        "modality": str(meta.get("modality", "")),
        "n_cells": str(meta.get("n_cells", "")),
        "dim": str(meta.get("dim", "")),
    }
    for key, value in tags.items():
        if value != "":
            client.set_model_version_tag(name, mv.version, f"urbanrepml.{key}", value)
    if alias:
        set_alias(name, alias, mv.version, client)
    return client.get_model_version(name, mv.version)


def _parse_model(model) -> tuple[str, str | None, str | None]:
    """-> (name, version, alias); exactly one of version/alias is set."""
    if isinstance(model, tuple):
        name, version = model
        return str(name), str(version), None
    uri = str(model)
    if m := _ALIAS_URI.match(uri):
        return m.group(1), None, m.group(2)
    if m := _VERSION_URI.match(uri):
        return m.group(1), m.group(2), None
    raise UrbanReprError(
        f"{uri!r} is not a registered model version; use models:/<name>@<alias> or models:/<name>/<version>"
    )


def model_version(model, client: MlflowClient | None = None) -> ModelVersion:
    """Resolve ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or ``(name, version)`` to a ModelVersion."""
    client = client or MlflowClient()
    name, version, alias = _parse_model(model)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if _not_found(exc):
            raise UrbanReprError(f"registered model {name!r} does not exist; run `mlflow run . -e fuse` first") from None
        raise
    if alias is not None:
        mv = get_version_by_alias(name, alias, client)
        if mv is None:
            raise UrbanReprError(f"registered model {name!r} has no alias {alias!r}")
        return mv
    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        if _not_found(exc):
            raise UrbanReprError(f"registered model {name!r} has no version {version}") from None
        raise


def resolve_model_uri(study_area: str, model_uri: str | None = None) -> tuple[str, str]:
    """The model URI a probe should load, and a one-line note saying which version it is and why.

    Default: ``models:/urbanrepml-<area>@champion``, falling back to ``@candidate`` (with a note) when no
    champion is set. A given ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` must exist;
    other URIs are returned untouched.
    """
    client = MlflowClient()
    if model_uri:
        if _ALIAS_URI.match(model_uri) or _VERSION_URI.match(model_uri):
            mv = model_version(model_uri, client)
            return model_uri, f"using {model_uri} ({mv.name} version {mv.version})"
        return model_uri, f"using {model_uri}"
    name = registered_model_name(study_area)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if _not_found(exc):
            raise UrbanReprError(
                f"no registered model {name!r}; run `mlflow run . -e fuse -P study_area={study_area}` first, "
                "or pass model_uri / table"
            ) from None
        raise
    champion = get_version_by_alias(name, CHAMPION, client)
    if champion is not None:
        return f"models:/{name}@{CHAMPION}", f"using models:/{name}@{CHAMPION} (version {champion.version})"
    candidate = get_version_by_alias(name, CANDIDATE, client)
    if candidate is not None:
        return (f"models:/{name}@{CANDIDATE}",
                f"no @{CHAMPION} for {name} yet; using @{CANDIDATE} (version {candidate.version})")
    raise UrbanReprError(
        f"registered model {name!r} has neither a @{CHAMPION} nor a @{CANDIDATE} alias; "
        f"set one (MlflowClient().set_registered_model_alias) or pass model_uri"
    )


def record_probe(model, metrics: dict, run_id: str, folds_digest: str, prefix: str = PROBE_PREFIX) -> ModelVersion:
    """Record a probe's result on a model version as tags.

    The tags are ``<prefix>mean_r2``, ``<prefix>run_id``, ``<prefix>folds_digest`` and ``<prefix><metric>``
    for every metric (numbers as strings, 6 significant digits).

    ``model``: ``models:/<name>@<alias>``, ``models:/<name>/<version>`` or ``(name, version)``.
    """
    client = MlflowClient()
    mv = model_version(model, client)
    tags = {f"{prefix}run_id": run_id, f"{prefix}folds_digest": folds_digest}
    for key, value in metrics.items():
        tags[f"{prefix}{key}"] = f"{float(value):.6g}" if isinstance(value, (int, float)) else str(value)
    for key, value in tags.items():
        client.set_model_version_tag(mv.name, mv.version, key, value)
    return client.get_model_version(mv.name, mv.version)
