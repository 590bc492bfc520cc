"""Promotion of registry versions by probe evidence: move ``champion`` only for a measurable gain.

The promotion policy (the ``promote`` stage in :mod:`urbanrepml.stages.promote` runs it):

1. lists the versions of ``urbanrepml-<study_area>`` (none: a clear error);
2. probes every version that lacks a probe record on the current settings (tags ``probe.*`` written
   by the probe stage with spatial folds and the same ``probe``, ``block_resolution``, ``folds``, fold
   ``seed`` and target files, ``probe.targets_digest``), each as a nested probe run - every version,
   and its concat and ring baselines, are scored on the spatial blocks of the probe stage;
3. reads each version's evidence from its probe run: ``<metric>`` and ``baseline_<name>_<metric>`` for
   every baseline the run scored (``concat``, ``ring``, ``ringconcat``; lower is better for
   ``rmse``/``mae``/``poisson_deviance`` metrics);
4. picks the best version and moves ``champion`` to it only if it beats the current champion and every
   baseline (so the best of them; ``concat`` and ``ring`` must be present) by at least ``min_gain``
   (and by something: a tie never moves the alias); only versions
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
from dataclasses import asdict, dataclass, field

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from urbanrepml.errors import UrbanReprError
from urbanrepml.tracking.registry import CHAMPION, probe_prefix

LOWER_IS_BETTER = ("rmse", "mae", "poisson_deviance")
PROMOTE_PREFIX = "promote."


REQUIRED_BASELINES = ("concat", "ring")
KNOWN_BASELINES = ("concat", "ring", "ringconcat")


@dataclass
class Evidence:
    version: str
    value: float
    baselines: dict[str, float | None]  # baseline name -> its value of the metric (None: not scored)
    probe_run_id: str
    folds_digest: str
    run_id: str | None = None  # the run that produced the version
    targets_digest: str = ""  # the target files the probe scored against (one digest over their SHA-256s)

    @property
    def baseline_concat(self) -> float | None:
        return self.baselines.get("concat")

    @property
    def baseline_ring(self) -> float | None:
        return self.baselines.get("ring")


@dataclass
class Decision:
    promote: bool
    decision: str  # promoted | kept | rejected
    reason: str
    metric: str
    min_gain: float
    best: Evidence | None
    champion: Evidence | None
    previous_champion: str | None
    probed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def evidence_json(self) -> str:
        d = {"metric": self.metric, "min_gain": self.min_gain, "decision": self.decision,
             "best": asdict(self.best) if self.best else None, "champion": asdict(self.champion) if self.champion else None,
             "previous_champion": self.previous_champion, "probed_now": self.probed, "skipped": self.skipped}
        return json.dumps(d, sort_keys=True)


def higher_is_better(metric: str) -> bool:
    return not metric.startswith(LOWER_IS_BETTER) and "_".join(metric.split("_")[-2:]) not in LOWER_IS_BETTER


def _gain(metric: str, a: float, b: float) -> float:
    """How much better ``a`` is than ``b`` (positive = better)."""
    return a - b if higher_is_better(metric) else b - a


def has_probe_record(mv, probe: str = "ridge", block_resolution: int = 7, folds: int = 5, seed: int = 0,
                     targets_digest: str | None = None) -> bool:
    """Whether ``mv`` holds a probe record made with these settings.

    The settings are spatial folds, the same block resolution, fold count and fold seed, and - when
    ``targets_digest`` is given - the same target files. A record without the settings (an older one)
    does not count: it is re-probed.
    """
    prefix = probe_prefix(probe)
    t = mv.tags
    if not (t.get(f"{prefix}run_id") and t.get(f"{prefix}folds_digest") and t.get(f"{prefix}mean_r2")):
        return False
    if targets_digest is not None and t.get(f"{prefix}targets_digest") != targets_digest:
        return False
    if t.get(f"{prefix}cv", "spatial") != "spatial":
        return False
    try:
        return all(int(float(t.get(f"{prefix}{key}", "nan"))) == want
                   for key, want in (("block_resolution", block_resolution), ("folds", folds), ("seed", seed)))
    except (ValueError, OverflowError):
        return False


def evidence_of(mv, metric: str, probe: str = "ridge", client: MlflowClient | None = None) -> Evidence:
    """The version's probe evidence for ``metric`` (from its recorded probe run's metrics)."""
    client = client or MlflowClient()
    prefix = probe_prefix(probe)
    run_id = mv.tags.get(f"{prefix}run_id")
    if not run_id:
        raise UrbanReprError(f"{mv.name} version {mv.version} has no probe record; probe it first (mlflow run . -e probe)")
    try:
        metrics = client.get_run(run_id).data.metrics
    except MlflowException:
        metrics = {}
    value = metrics.get(metric)
    if value is None:
        tag_value = mv.tags.get(f"{prefix}{metric}")
        value = float(tag_value) if tag_value not in (None, "") else None
    if value is None:
        known = sorted(k for k in metrics if not k.startswith(("baseline_", "reference_", "cells_", "coverage_")) and "_fold" not in k)
        raise UrbanReprError(f"metric {metric!r} is not in the probe record of {mv.name} version {mv.version}; "
                             f"choose one of {', '.join(known[:12]) or 'mean_r2'}")

    def baseline(name):
        v = metrics.get(f"baseline_{name}_{metric}")
        if v is None and mv.tags.get(f"{prefix}baseline_{name}_{metric}"):
            v = float(mv.tags[f"{prefix}baseline_{name}_{metric}"])
        return v

    found = {name: baseline(name) for name in KNOWN_BASELINES}
    found = {k: v for k, v in found.items() if v is not None or k in REQUIRED_BASELINES}
    return Evidence(str(mv.version), float(value), found, run_id,
                    mv.tags.get(f"{prefix}folds_digest", ""), mv.run_id, mv.tags.get(f"{prefix}targets_digest", ""))


def decide(evidence: dict[str, Evidence], champion: str | None, metric: str, min_gain: float) -> Decision:
    """The promotion rule (pure): best by ``metric``; promote iff it beats the champion and every baseline."""
    if not evidence:
        raise UrbanReprError("refusing to promote: no version has a probe record; run the probe stage on a version first")
    def rank(e: Evidence):
        return (e.value if higher_is_better(metric) else -e.value, int(e.version))

    champ = evidence.get(champion) if champion else None
    # Scores are comparable only on the same folds (same cells, block resolution, fold count and seed) and
    # the same target files: with a champion, only versions scored on exactly its evidence compete with it.
    comparable = {v: e for v, e in evidence.items() if champ is None
                  or (e.folds_digest == champ.folds_digest and e.targets_digest == champ.targets_digest)}
    best = max(comparable.values(), key=rank)
    other = [e for e in evidence.values() if e.version not in comparable]
    if other and rank(top := max(other, key=rank)) > rank(best):
        what = ("folds" if top.folds_digest != champ.folds_digest else "targets")
        mine, theirs = ((top.folds_digest, champ.folds_digest) if what == "folds" else (top.targets_digest, champ.targets_digest))
        return Decision(False, "rejected", f"version {top.version} ({metric} {top.value:.4f}) was scored on other {what} "
                                           f"(digest {mine[:12]}) than {CHAMPION} version {champ.version} "
                                           f"(digest {theirs[:12]}: other cells, fold settings or target files), so the "
                                           "scores are not comparable; it is not promoted", metric=metric,
                        min_gain=min_gain, best=top, champion=champ, previous_champion=champion)
    base = dict(metric=metric, min_gain=min_gain, best=best, champion=champ, previous_champion=champion)
    if champion == best.version:
        return Decision(False, "kept", f"version {best.version} is already {CHAMPION} and still the best by {metric}", **base)
    missing = [n for n in REQUIRED_BASELINES if best.baselines.get(n) is None]
    if missing:
        return Decision(False, "rejected", f"version {best.version} has no {' or '.join(missing)} baseline in its probe "
                                           "record, so it cannot be shown to beat it", **base)
    scored = {n: v for n, v in best.baselines.items() if v is not None}
    # The strongest baseline first: the one a model must clear (the reason names it).
    for name, v in sorted(scored.items(), key=lambda kv: -_gain(metric, kv[1], best.value)):
        g = _gain(metric, best.value, v)
        if g <= 0 or g < min_gain:
            return Decision(False, "rejected", f"version {best.version} {metric} {best.value:.4f} does not beat the {name} "
                                               f"baseline {v:.4f} by {min_gain:g} (gain {g:+.4f})", **base)
    if champion and champ is None:
        return Decision(False, "rejected", f"current {CHAMPION} version {champion} has no probe record on these settings; "
                                           "it is kept until it is probed", **base)
    if champ is not None:
        g = _gain(metric, best.value, champ.value)
        if g <= 0 or g < min_gain:
            return Decision(False, "rejected", f"version {best.version} {metric} {best.value:.4f} does not beat {CHAMPION} "
                                               f"version {champ.version} ({champ.value:.4f}) by {min_gain:g} (gain {g:+.4f})", **base)
    against = f"{CHAMPION} version {champ.version} ({champ.value:.4f})" if champ else f"no {CHAMPION} yet"
    bars = ", ".join(f"{n} {v:.4f}" for n, v in scored.items())
    return Decision(True, "promoted", f"version {best.version} {metric} {best.value:.4f} beats {against} and the "
                                      f"baselines ({bars}) by >= {min_gain:g}", **base)


