"""The whole chain for one study area as one parent run: modalities -> fuse -> probe -> promote.

Each step is the same stage function its own entry point runs, started inside the pipeline's run so
it becomes a nested run:

1. modalities: every modality of :data:`urbanrepml.modalities.MODALITIES` whose sources the area
   names; a modality that already has a finished table at ``resolution`` in the tracking store is
   reused (said so in the summary), a modality without sources is skipped with the reason; a modality
   whose sources the area names but whose build fails fails the pipeline (one line, exit 2), as in
   ``fuse`` - it never fuses silently without it;
2. ``fuse`` (:func:`urbanrepml.stages.fuse.run_fuse_stage`): registers a new version, alias candidate;
3. ``probe`` of that version (records ``probe.*`` on it);
4. ``promote`` (:func:`urbanrepml.tracking.promotion.run_promote_stage`).

At the end a summary table - modality coverage, fusion validation loss, probe R² of the fused model
against the concat and ring baselines and the lat/lon 10-NN reference, the promotion decision - is
logged as ``summary/pipeline_summary.md`` and ``.csv`` and printed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from urbanrepml.config import DEFAULT_STUDY_AREA, load_study_area
from urbanrepml.errors import UrbanReprError
from urbanrepml.params import param
from urbanrepml.stages.base import Stage
from urbanrepml.stages.fuse import MODELS


def _modality_step(study_area: str, spec, resolution: int) -> list[dict]:
    from mlflow.tracking import MlflowClient

    from urbanrepml.modalities import MODALITIES, current_sources_digests
    from urbanrepml.stages.modality import run_modality_stage
    from urbanrepml.tracking.tables import find_latest_table, list_table_modalities

    existing = set(list_table_modalities(spec.name, resolution))
    current = current_sources_digests(spec)  # a table built from other source files is rebuilt, never reused
    rows = []
    client = MlflowClient()
    names = list(MODALITIES) + sorted(existing - set(MODALITIES))  # plus tables of modalities from elsewhere
    for name in names:
        cls = MODALITIES.get(name)
        row = {"modality": name, "status": "", "coverage": float("nan"), "cells": float("nan"), "run_id": ""}
        if name in existing:
            hit = find_latest_table(spec.name, name, resolution, sources_digest=current.get(name))
            if hit is not None:
                run = client.get_run(hit[1])
                row.update(status="reused", run_id=hit[1], coverage=run.data.metrics.get("coverage", float("nan")),
                           cells=run.data.metrics.get("cells_with_data", float("nan")))
                rows.append(row)
                print(f"pipeline: {name}: reusing table of run {hit[1]}", flush=True)
                continue
        if cls is None:
            continue
        try:
            modality = cls()
            modality.source_files(spec)
        except UrbanReprError as exc:
            row["status"] = f"skipped: {exc}"
            rows.append(row)
            print(f"pipeline: {name}: skipped ({exc})", flush=True)
            continue
        print(f"pipeline: {name}: building at resolution {resolution}", flush=True)
        try:
            table = run_modality_stage(modality, study_area, resolution, nested=True)
        except UrbanReprError as exc:  # the area names sources for it and they fail: the pipeline fails (as fuse does)
            raise UrbanReprError(f"pipeline: modality {name!r} of study area {spec.name!r} failed to build ({exc}); "
                                 "fix its sources or remove them from the study area") from exc
        run = client.get_run(table.meta.producer_run_id)
        row.update(status="built", run_id=run.info.run_id, coverage=run.data.metrics.get("coverage", float("nan")),
                   cells=run.data.metrics.get("cells_with_data", float("nan")))
        rows.append(row)
    if not any(r["status"] in ("built", "reused") for r in rows):
        raise UrbanReprError(f"no modality could be built for study area {spec.name!r}: "
                             + "; ".join(f"{r['modality']} {r['status']}" for r in rows))
    return rows


def summary_markdown(area: str, modalities: list[dict], fuse: dict, probe: dict, promote: dict) -> str:
    lines = [f"# Pipeline summary: {area}", "", "## Modalities", "", "| modality | status | coverage | cells |", "|---|---|---|---|"]
    for r in modalities:
        cov = f"{r['coverage']:.1%}" if r["coverage"] == r["coverage"] else "-"
        cells = f"{int(r['cells'])}" if r["cells"] == r["cells"] else "-"
        lines.append(f"| {r['modality']} | {r['status'][:90]} | {cov} | {cells} |")
    lines += ["", "## Fusion", "", "| model | cells | dim | best val loss | best epoch | version |", "|---|---|---|---|---|---|"]
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) and v == v else str(v)  # noqa: E731
    lines.append(f"| {fuse['model']} | {fuse['cells']} | {fuse['dim']} | {fmt(fuse['best_val_loss'])} | "
                 f"{fuse['best_epoch']} | {fuse['version']} |")
    lines += ["", "## Probe (out-of-fold R², spatial folds)", "", "| features | mean R² | " + " | ".join(probe["targets"]) + " |",
              "|---|---|" + "---|" * len(probe["targets"])]
    for label, row in probe["rows"].items():
        lines.append(f"| {label} | {fmt(row.get('mean_r2'))} | " + " | ".join(fmt(row.get(t)) for t in probe["targets"]) + " |")
    lines += ["", "## Promotion", "", f"{promote['decision']}: {promote['reason']}", ""]
    return "\n".join(lines)


def run_pipeline(study_area: str, *, model: str = "full_unet", epochs: int = 200, seed: int = 0, resolution: int = 9,
                 resolutions: str = "9", probe: str = "ridge") -> dict:
    """Run the chain (see the module docstring); return the summary pieces."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from urbanrepml.stages.fuse import Params as FuseParams
    from urbanrepml.stages.fuse import run_fuse_stage
    from urbanrepml.stages.probe import run_probe_stage
    from urbanrepml.stages.promote import run_promote_stage
    from urbanrepml.tracking import stage_run, tag
    from urbanrepml.tracking.registry import registered_model_name

    spec = load_study_area(study_area)
    FuseParams(study_area=study_area, model=model, epochs=epochs, seed=seed, resolution=resolution,
               resolutions=resolutions).train_config() if model in ("full_unet", "cone_unet") else None  # bad params fail first
    params = {"pipeline.model": model, "pipeline.epochs": epochs, "pipeline.seed": seed, "pipeline.resolution": resolution,
              "pipeline.resolutions": resolutions, "pipeline.probe": probe}
    with stage_run("pipeline", spec.name, params=params, run_name="pipeline") as run:
        client = MlflowClient()
        modalities = _modality_step(study_area, spec, resolution)

        table = run_fuse_stage(FuseParams(study_area=study_area, model=model, epochs=epochs, seed=seed,
                                          resolution=resolution, resolutions=resolutions))
        fuse_run = client.get_run(table.meta.producer_run_id)
        version = fuse_run.data.tags.get(tag("registered_version"))
        if not version:
            raise UrbanReprError(f"fuse run {fuse_run.info.run_id} registered no version; cannot probe or promote")
        fm = fuse_run.data.metrics
        fuse = {"model": model, "cells": table.frame.shape[0], "dim": table.frame.shape[1], "run_id": fuse_run.info.run_id,
                "best_val_loss": fm.get("best_val_loss", float("nan")), "best_epoch": int(fm["best_epoch"]) if "best_epoch" in fm else "-",
                "version": version}

        name = registered_model_name(spec.name)
        metrics = run_probe_stage(study_area, model_uri=f"models:/{name}/{version}", probe=probe, seed=seed)
        targets = sorted(k[len("r2_"):] for k in metrics if k.startswith("r2_") and "_fold" not in k)
        rows = {}
        for label, prefix in (("fused (this run)", ""), ("baseline concat", "baseline_concat_"),
                              ("baseline ring", "baseline_ring_"), ("baseline ringconcat", "baseline_ringconcat_"),
                              ("lat/lon 10-NN", "reference_knn_latlon_")):
            if f"{prefix}mean_r2" in metrics:
                rows[label] = {"mean_r2": metrics[f"{prefix}mean_r2"], **{t: metrics.get(f"{prefix}r2_{t}", float("nan")) for t in targets}}
        probe_summary = {"targets": targets, "rows": rows}

        decision = run_promote_stage(study_area, probe=probe, seed=seed)  # the same folds as the probe above
        promote = {"decision": decision.decision, "reason": decision.reason}

        md = summary_markdown(spec.name, modalities, fuse, probe_summary, promote)
        long = [{"section": "modality", "item": r["modality"], "key": k, "value": r[k]}
                for r in modalities for k in ("status", "coverage", "cells", "run_id")]
        long += [{"section": "fusion", "item": model, "key": k, "value": v} for k, v in fuse.items()]
        long += [{"section": "probe", "item": label, "key": k, "value": v} for label, row in rows.items() for k, v in row.items()]
        long += [{"section": "promote", "item": "champion", "key": k, "value": v} for k, v in promote.items()]
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "pipeline_summary.md").write_text(md)
            pd.DataFrame(long).to_csv(Path(tmp) / "pipeline_summary.csv", index=False)
            mlflow.log_artifacts(tmp, artifact_path="summary")
        summary_metrics = {"fused_mean_r2": metrics.get("mean_r2", float("nan")), "promoted": float(decision.promote),
                           "modalities_used": float(sum(r["status"] in ("built", "reused") for r in modalities))}
        for label, key in (("baseline concat", "baseline_concat_mean_r2"), ("baseline ring", "baseline_ring_mean_r2")):
            if label in rows:
                summary_metrics[key] = rows[label]["mean_r2"]
        if fuse["best_val_loss"] == fuse["best_val_loss"]:
            summary_metrics["fusion_best_val_loss"] = fuse["best_val_loss"]
        mlflow.log_metrics(summary_metrics)
        mlflow.set_tags({tag("registered_version"): version, tag("decision"): decision.decision,
                         "mlflow.note.content": md})
        print(md, flush=True)
        return {"run_id": run.info.run_id, "modalities": modalities, "fuse": fuse, "probe": probe_summary, "promote": promote}


@dataclass
class Params:
    """Parameters of the ``pipeline`` entry point."""

    study_area: str = param(DEFAULT_STUDY_AREA, "bundled area name or path to a study-area TOML")
    model: str = param("full_unet", "fusion model", choices=MODELS)
    epochs: int = param(200, "maximum fusion epochs")
    seed: int = param(0, "training and fold seed")


def run(p: Params) -> dict:
    """Run the chain (see :func:`run_pipeline`)."""
    return run_pipeline(p.study_area, model=p.model, epochs=p.epochs, seed=p.seed)


STAGES = {"pipeline": Stage("pipeline", "modalities -> fuse -> probe -> promote, as nested runs of one parent", Params, run)}
