"""Promotion of registry versions by probe evidence: move ``champion`` only for a measurable gain.

The ``promote`` stage (:func:`run_promote_stage`); the policy lives in :mod:`urbanrepml.tracking.promotion`:

1. lists the versions of ``urbanrepml-<study_area>`` (none: a clear error);
2. probes every version that lacks a probe record on the current settings (tags ``probe.*`` written
   by the probe stage with spatial folds and the same ``probe``, ``block_resolution``, ``folds``, fold
   ``seed`` and target files, ``probe.targets_digest``), each as a nested probe run - every version, and its concat and ring baselines, are
   scored on the spatial blocks of the probe stage;
3. reads each version's evidence from its probe run: ``<metric>``, ``baseline_concat_<metric>``,
   ``baseline_ring_<metric>`` (lower is better for ``rmse``/``mae``/``poisson_deviance`` metrics);
4. picks the best version and moves ``champion`` to it only if it beats the current champion and both
   baselines by at least ``min_gain`` (and by something: a tie never moves the alias); only versions
   scored on the champion's folds and target files (equal ``folds_digest`` and ``targets_digest``)
   compete with it - a better score on other evidence is rejected as not comparable;
5. records the decision and evidence on the version as tags ``promote.decision``, ``promote.reason``,
   ``promote.evidence`` (JSON: values, run ids, folds digests), and the same on the promote run.

Versions that have no probe record after step 2 (their probe failed) are never promoted; the failure
is not recorded, so each run probes them again. Otherwise running it again with nothing new changes no
alias and probes nothing (idempotent). Caveat: a version registered by ``tune`` was selected on the
same default folds, so its score here is a maximum over trials; use ``min_gain`` > 0 or another ``seed``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from urbanrepml.analysis.targets import targets_digest
from urbanrepml.config import DEFAULT_STUDY_AREA, load_study_area
from urbanrepml.errors import UrbanReprError
from urbanrepml.params import param
from urbanrepml.stages.base import Stage
from urbanrepml.stages.probe import run_probe_stage
from urbanrepml.tracking.promotion import PROMOTE_PREFIX, Decision, Evidence, decide, evidence_of, has_probe_record
from urbanrepml.tracking.registry import CHAMPION, get_version_by_alias, registered_model_name, set_alias
from urbanrepml.tracking.runs import configure_tracking, log_new_params, stage_run, tag


def run_promote_stage(study_area: str, metric: str = "mean_r2", min_gain: float = 0.0, *, probe: str = "ridge",
                      block_resolution: int = 7, folds: int = 5, seed: int = 0) -> Decision:
    """See the module docstring. Returns the decision (also printed and recorded)."""
    if not (isinstance(min_gain, (int, float)) and math.isfinite(min_gain) and min_gain >= 0):
        raise UrbanReprError(f"min_gain must be a finite number >= 0 (e.g. -P min_gain=0.01), got {min_gain!r}")
    spec = load_study_area(study_area)
    configure_tracking()
    client = MlflowClient()
    name = registered_model_name(spec.name)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        versions = []
    if not versions:
        raise UrbanReprError(f"registered model {name!r} has no versions to promote; run `mlflow run . -e fuse` "
                             f"(or -e tune) with study_area={spec.name} first")
    targets_key = targets_digest(spec)  # records on other target files are probed again, never compared
    params = {"study_area": study_area, "metric": metric, "min_gain": min_gain, "promote.probe": probe,
              "promote.block_resolution": block_resolution, "promote.folds": folds, "promote.seed": seed}
    with stage_run("promote", spec.name, run_name="promote") as run:
        log_new_params(params)
        probed, skipped = [], {}
        for mv in sorted(versions, key=lambda v: int(v.version)):
            if has_probe_record(mv, probe, block_resolution, folds, seed, targets_key):
                continue
            print(f"promote: probing {name} version {mv.version} (no probe record on these folds)", flush=True)
            try:
                run_probe_stage(study_area, model_uri=f"models:/{name}/{mv.version}", probe=probe,
                                block_resolution=block_resolution, folds=folds, seed=seed, figures=False)
                probed.append(str(mv.version))
            except UrbanReprError as exc:
                skipped[str(mv.version)] = f"probe failed: {exc}"
                print(f"promote: version {mv.version} not probed ({exc}); it cannot be promoted", flush=True)
        evidence: dict[str, Evidence] = {}
        for mv in client.search_model_versions(f"name = '{name}'"):
            if not has_probe_record(mv, probe, block_resolution, folds, seed, targets_key):
                skipped.setdefault(str(mv.version), "no probe record")
                continue
            evidence[str(mv.version)] = evidence_of(mv, metric, probe, client)
        champ_mv = get_version_by_alias(name, CHAMPION, client)
        champion = str(champ_mv.version) if champ_mv else None
        decision = decide(evidence, champion, metric, min_gain)
        decision.probed, decision.skipped = probed, skipped
        target = decision.best.version
        if decision.promote:
            set_alias(name, CHAMPION, target, client)
        record = {
            f"{PROMOTE_PREFIX}decision": decision.decision,
            f"{PROMOTE_PREFIX}reason": decision.reason[:4000],
            f"{PROMOTE_PREFIX}metric": metric,
            f"{PROMOTE_PREFIX}value": f"{decision.best.value:.6g}",
            f"{PROMOTE_PREFIX}run_id": run.info.run_id,
            f"{PROMOTE_PREFIX}evidence": decision.evidence_json()[:5000],
            f"{PROMOTE_PREFIX}time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if decision.promote:
            record[f"{PROMOTE_PREFIX}previous_champion"] = champion or "none"
        for k, v in record.items():
            client.set_model_version_tag(name, target, k, v)
        mlflow.set_tags({tag("decision"): decision.decision, tag("best_version"): target,
                         tag("champion_version"): target if decision.promote else (champion or "none"),
                         "mlflow.note.content": decision.reason})
        metrics = {"best_version": float(target), f"best_{metric}": decision.best.value, "versions": float(len(versions)),
                   "versions_probed_now": float(len(probed)), "promoted": float(decision.promote)}
        if decision.champion is not None:
            metrics[f"champion_{metric}"] = decision.champion.value
        for n, v in decision.best.baselines.items():
            if v is not None:
                metrics[f"baseline_{n}_{metric}"] = v
        mlflow.log_metrics(metrics)
        mlflow.log_dict(json.loads(decision.evidence_json()), "promote/evidence.json")
        print(f"promote: {decision.decision}: {decision.reason}", flush=True)
        now = get_version_by_alias(name, CHAMPION, client)
        print(f"promote: models:/{name}@{CHAMPION} -> " + (f"version {now.version}" if now else "not set"), flush=True)
    return decision


@dataclass
class Params:
    """Parameters of the ``promote`` entry point."""

    study_area: str = param(DEFAULT_STUDY_AREA, "bundled area name or path to a study-area TOML")
    metric: str = param("mean_r2", "probe metric deciding promotion (e.g. mean_r2, r2_log1p_jobs)")
    min_gain: float = param(0.0, "required margin over the champion and both baselines")


def run(p: Params) -> Decision:
    """Promote (see :func:`run_promote_stage`)."""
    return run_promote_stage(p.study_area, p.metric, p.min_gain)


STAGES = {"promote": Stage("promote", "move the champion alias to the version with the best probe evidence", Params, run)}
