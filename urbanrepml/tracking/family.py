"""Registered-model families: one registered model per family and scope, one promotion policy for all.

Every trained system registers its models the same way. A :class:`ModelFamily` names the family
(``locenc``, ``geoloc``, ``placeemb``, ``conceptgeo``, ...), the metric that decides promotion and its
direction; its models are ``urbanrepml-<family>-<scope>`` (scope: a study area or an image dataset).

- :func:`register_run_model` registers the model a FINISHED run logged under ``artifact_path`` as a
  new version (alias ``candidate``), with the version tags given (at least the family's metric tag
  and split tag, see below). A run that failed or is still running registers nothing.
- :func:`promote_version` applies the promotion policy: ``champion`` moves to the version when there
  is no champion yet, or when its metric beats the champion's by more than ``min_gain`` in the
  family's direction (a tie keeps the champion), and both were measured on the same held-out data
  (equal split tag, ``urbanrepml.<family>.split_digest``); a score on another split is not comparable
  and never moves the alias. The decision and its evidence are tags on the version
  (``promote.decision``, ``promote.reason``, ``promote.evidence``).
- :func:`resolve_family_uri` picks the model to use: an explicit URI, else ``@champion``, else
  ``@candidate``.
- :func:`require_family` refuses a model URI whose logged metadata names another family (or none),
  with one line, before anything is computed with it.

Pyfunc models of a family carry ``metadata={"urbanrepml": {"family": <name>, ...}}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from urbanrepml.constants import CANDIDATE, CHAMPION, registered_model_name, tag
from urbanrepml.errors import UrbanReprError
from urbanrepml.tracking.registry import _not_found, _wait_ready, finished_run_model, get_version_by_alias, set_alias


@dataclass(frozen=True)
class ModelFamily:
    """A family of registered models and its promotion policy.

    Attributes:
        name: the family (``urbanrepml-<name>-<scope>``), also ``metadata["urbanrepml"]["family"]``.
        metric: the metric that picks the best checkpoint and decides promotion (e.g. ``test_median_km``).
        higher_is_better: the metric's direction.
        what: one line for the registered model's description (``{scope}`` is filled in).
        train_hint: the command that trains one, for the error when none is registered (``{scope}`` filled in).
    """

    name: str
    metric: str
    higher_is_better: bool
    what: str
    train_hint: str

    def model_name(self, scope: str) -> str:
        return registered_model_name(scope, self.name)

    @property
    def metric_tag(self) -> str:
        return tag(f"{self.name}.{self.metric}")

    @property
    def split_tag(self) -> str:
        return tag(f"{self.name}.split_digest")

    def gain(self, value: float, reference: float) -> float:
        """How much ``value`` improves on ``reference`` (positive: better), in the metric's units."""
        return value - reference if self.higher_is_better else reference - value


@dataclass
class FamilyDecision:
    promoted: bool
    reason: str
    version: str
    value: float
    champion: str | None
    champion_value: float | None


def register_run_model(family: ModelFamily, run_id: str, scope: str, *, artifact_path: str, tags: dict | None = None,
                       alias: str | None = CANDIDATE) -> ModelVersion:
    """Register the model FINISHED run ``run_id`` logged under ``artifact_path`` as a new version of the family's model."""
    client = MlflowClient()
    logged = finished_run_model(client, run_id, artifact_path)
    name = family.model_name(scope)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        direction = "highest" if family.higher_is_better else "lowest"
        client.create_registered_model(name, tags={tag("scope"): scope, tag("family"): family.name},
                                       description=f"{family.what.format(scope=scope)} (urbanrepml). "
                                                   f"candidate = newest; champion = {direction} held-out {family.metric}.")
    mv = client.create_model_version(name, f"models:/{logged.model_id}", run_id=run_id, model_id=logged.model_id,
                                     tags={tag("producer_run_id"): run_id})
    mv = _wait_ready(client, name, mv.version)
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, mv.version, key, str(value))
    if alias:
        set_alias(name, alias, mv.version, client)
    return client.get_model_version(name, mv.version)


def _metric_of(family: ModelFamily, mv: ModelVersion | None) -> float | None:
    raw = mv.tags.get(family.metric_tag) if mv is not None else None
    try:
        value = float(raw) if raw not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def promote_version(family: ModelFamily, version: ModelVersion, min_gain: float = 0.0) -> FamilyDecision:
    """Apply the promotion policy (module docstring) to ``version``; record the decision on it."""
    client = MlflowClient()
    value = _metric_of(family, version)
    if value is None:
        raise UrbanReprError(f"{version.name} version {version.version} has no finite {family.metric_tag} tag; "
                             "it cannot be promoted")
    champ = get_version_by_alias(version.name, CHAMPION, client)
    champ_value = _metric_of(family, champ)
    metric = family.metric
    if champ is None:
        promote, reason = True, f"no {CHAMPION} yet; version {version.version} ({metric} {value:.4g}) becomes it"
    elif str(champ.version) == str(version.version):
        promote, reason = False, f"version {version.version} is already {CHAMPION}"
    elif champ_value is None or champ.tags.get(family.split_tag) != version.tags.get(family.split_tag):
        promote, reason = False, (f"{CHAMPION} version {champ.version} was scored on other held-out data (split digest "
                                  f"{str(champ.tags.get(family.split_tag))[:12]} vs "
                                  f"{str(version.tags.get(family.split_tag))[:12]}): not comparable, {CHAMPION} kept")
    else:
        gain = family.gain(value, champ_value)
        promote = gain > 0 and gain > min_gain
        reason = (f"version {version.version} {metric} {value:.4g} vs {CHAMPION} version {champ.version} "
                  f"{champ_value:.4g} (gain {gain:+.4g}, margin {min_gain:g}): " + ("promoted" if promote else f"{CHAMPION} kept"))
    decision = FamilyDecision(promote, reason, str(version.version), value, str(champ.version) if champ else None, champ_value)
    if promote:
        set_alias(version.name, CHAMPION, version.version, client)
    for key, val in (("promote.decision", "promoted" if promote else "kept"), ("promote.reason", reason),
                     ("promote.evidence", json.dumps(asdict(decision), sort_keys=True))):
        client.set_model_version_tag(version.name, version.version, key, val)
    return decision


def resolve_family_uri(family: ModelFamily, scope: str, model_uri: str | None = None) -> tuple[str, str]:
    """The model to use and a note: ``model_uri`` as given, else ``@champion`` of the scope's model, else ``@candidate``."""
    if model_uri:
        return model_uri, f"using {model_uri}"
    client = MlflowClient()
    name = family.model_name(scope)
    for alias in (CHAMPION, CANDIDATE):
        try:
            mv = get_version_by_alias(name, alias, client)
        except MlflowException:
            mv = None
        if mv is not None:
            return f"models:/{name}@{alias}", f"using models:/{name}@{alias} (version {mv.version})"
    raise UrbanReprError(f"no registered model {name!r} with a @{CHAMPION} or @{CANDIDATE} alias; "
                         f"train one with `{family.train_hint.format(scope=scope)}` or pass model_uri")


def family_metadata(family: ModelFamily, **summary) -> dict:
    """The ``metadata`` argument of ``mlflow.pyfunc.log_model`` for a model of ``family``."""
    return {"urbanrepml": {"family": family.name, **summary}}


def require_family(model_uri: str, family: ModelFamily) -> dict:
    """The model's ``urbanrepml`` metadata; one clear error when it is missing or of another family."""
    try:
        info = mlflow.models.get_model_info(model_uri)
    except (MlflowException, OSError) as exc:
        raise UrbanReprError(f"cannot read model {model_uri!r}: {str(exc).splitlines()[0]}") from None
    meta = (info.metadata or {}).get("urbanrepml", {})
    found = meta.get("family")
    if found != family.name:
        what = f"a {found!r} model" if found else "not a urbanrepml model of any family"
        raise UrbanReprError(f"model {model_uri!r} is {what}, not a {family.name} model")
    return meta
