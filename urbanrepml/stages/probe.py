"""The tracked ``probe`` and ``cluster`` stages (MLflow calls grouped here, the analysis itself elsewhere).

Probe input, in this order:

- ``table``: a contract embedding table (parquet path). Baselines are computed
  from the study area's newest modality tables in the tracking store
  (:func:`urbanrepml.tasks.fusion.inputs.load_fusion_inputs`), on the same cells.
- ``model_uri`` (or nothing: ``models:/urbanrepml-<area>@champion``, else
  ``@candidate``): the registered embedding model. The version is pinned at the
  start (an alias moving mid-run does not matter); baselines come from the
  version's source fuse run (``baselines/``); the result is recorded on that
  version (``probe.*`` tags) when the folds are spatial.

Every feature set (model, concat, ring, ringconcat, 10-NN on cell-centre coordinates)
is scored on the same cells with the same folds. The headline ``mean_r2`` leaves the
count targets out (``mean_r2_all`` keeps them). See docs/analysis.md.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from urbanrepml.analysis.figures import fold_map, r2_bars, target_maps
from urbanrepml.analysis.folds import make_folds
from urbanrepml.analysis.probes import PROBES, CVResult, constant_targets, cross_validate, latlon_km
from urbanrepml.analysis.targets import load_targets, targets_digest
from urbanrepml.areas import build_area, h3ops
from urbanrepml.config import DEFAULT_STUDY_AREA, load_study_area
from urbanrepml.errors import UrbanReprError
from urbanrepml.params import param
from urbanrepml.stages.base import Stage
from urbanrepml.tables import EmbeddingTable, read_table

REFERENCE = "reference_knn_latlon"
KNN_K = 10


@dataclass
class ProbeInput:
    """The embeddings to probe and where they came from."""

    table: EmbeddingTable
    kind: str  # "table" or "model"
    uri: str  # file URI or model URI
    note: str
    model_version: tuple[str, str] | None = None  # (name, version) when a registered version
    source_run_id: str | None = None  # the run that produced the model (holds the baselines)


def _check_area(table: EmbeddingTable, study_area: str, where: str) -> None:
    if table.meta.study_area != study_area:
        raise UrbanReprError(
            f"{where}: embeddings belong to study area {table.meta.study_area!r}, not {study_area!r}; "
            f"probe them with study_area={table.meta.study_area} or pick a model of {study_area!r}"
        )


def resolve_input(study_area: str, model_uri: str | None, table: str | None) -> ProbeInput:
    """``table`` path, or ``model_uri`` (default: the area's champion, else candidate) -> :class:`ProbeInput`."""
    if model_uri and table:
        raise UrbanReprError("give model_uri or table, not both")
    if table:
        emb = read_table(table)
        _check_area(emb, study_area, str(table))
        return ProbeInput(emb, "table", Path(table).resolve().as_uri(), f"using table {table}")
    from urbanrepml.tracking.pyfunc import load_embedding_table
    from urbanrepml.tracking.registry import model_version, resolve_model_uri

    uri, note = resolve_model_uri(study_area, model_uri or None)
    pinned, source_run = None, None
    if uri.startswith("models:/") and not uri.startswith("models:/m-"):
        mv = model_version(uri)
        pinned, source_run = (mv.name, str(mv.version)), mv.run_id
        uri = f"models:/{mv.name}/{mv.version}"
    emb = load_embedding_table(uri)
    _check_area(emb, study_area, uri)
    return ProbeInput(emb, "model", uri, note, pinned, source_run or emb.meta.producer_run_id)


def _baseline_features(inp: ProbeInput, spec, area) -> tuple[dict[str, pd.DataFrame], str]:
    """``{"concat": frame, "ring": frame}`` for the input, and a note on where they came from (or why none).

    No modality tables in the store for a table input: no baselines (the note says so), the probe still runs.
    """
    study_area = spec.name
    res = inp.table.meta.resolution
    if inp.kind == "model" and inp.source_run_id:
        from urbanrepml.tracking.fusion import load_baseline_tables

        try:
            tables = load_baseline_tables(inp.source_run_id)
        except UrbanReprError as exc:  # not a fuse run: fall back to the modality tables, and say so
            tables, fallback = None, f"run {inp.source_run_id} has no baselines ({exc}); "
        if tables is not None:
            for name, t in tables.items():
                _check_area(t, study_area, f"baseline {name} of run {inp.source_run_id}")
                if t.meta.resolution != res:
                    raise UrbanReprError(f"baseline {name} of run {inp.source_run_id} is at resolution "
                                         f"{t.meta.resolution}, the model at {res}")
            return {k: t.frame for k, t in tables.items()}, f"baselines from run {inp.source_run_id}"
    else:
        fallback = ""
    from urbanrepml.modalities import current_sources_digests
    from urbanrepml.tasks.fusion.baselines import concat_baseline, ring_baseline, ringconcat_baseline
    from urbanrepml.tasks.fusion.inputs import load_fusion_inputs
    from urbanrepml.tracking.fusion import store_tables
    from urbanrepml.tracking.tables import list_table_modalities

    if not list_table_modalities(spec.name, res):
        return {}, (f"{fallback}no baselines: no modality tables of {spec.name!r} at resolution {res} in the tracking store "
                    f"(run e.g. `mlflow run . -e roads -P resolution={res}` first)")
    tables, provenance = store_tables(spec.name, res, sources=current_sources_digests(spec))
    inputs = load_fusion_inputs(spec.source_file, res, tables, area=area, provenance=provenance)
    edges = inputs.edge_index(area)
    ring = ring_baseline(inputs.x, edges, inputs.n_cells)
    frames = {"concat": pd.DataFrame(concat_baseline(inputs), index=inputs.region_ids),
              "ring": pd.DataFrame(ring, index=inputs.region_ids),
              "ringconcat": pd.DataFrame(ringconcat_baseline(inputs.x, edges, inputs.n_cells), index=inputs.region_ids)}
    mods = ", ".join(f"{m} (run {s['run_id']})" for m, s in inputs.sources.items())
    return frames, f"{fallback}baselines computed from modality tables {mods}"


def _summary_rows(results: dict[str, CVResult]) -> pd.DataFrame:
    rows = []
    for feature_set, res in results.items():
        for target, m in res.metrics.items():
            rows.append({"features": feature_set, "target": target, **m})
    return pd.DataFrame(rows)


def run_probe_stage(
    study_area: str,
    *,
    model_uri: str | None = None,
    table: str | None = None,
    probe: str = "ridge",
    block_resolution: int = 7,
    folds: int = 5,
    cv: str = "spatial",
    seed: int = 0,
    figures: bool = True,
    nested: bool | None = None,
) -> dict[str, float]:
    """Probe one embedding table or registered model against the study area's targets; return the logged metrics.

    ``nested``: run as a child of the active run (default: when a run is active, e.g. inside ``promote``/``pipeline``).
    """
    import mlflow

    from urbanrepml.tracking import configure_tracking, log_figure, log_source_files, log_table_input, stage_run
    from urbanrepml.tracking.runs import log_new_params

    if probe not in PROBES or probe == "knn":
        raise UrbanReprError(f"probe must be one of ridge, ols, mlp; got {probe!r}")
    spec = load_study_area(study_area)
    configure_tracking()
    inp = resolve_input(spec.name, model_uri, table)  # bad model / table fails before any run exists
    res = inp.table.meta.resolution
    area = build_area(spec, [res])
    emb = inp.table.frame
    outside = ~np.isin(h3ops.parse_cells(emb.index), area.cells(res))
    if outside.any():
        raise UrbanReprError(f"{inp.uri}: {int(outside.sum())} cell(s) lie outside study area {spec.name!r}, "
                             f"e.g. {list(emb.index[outside][:3])}")
    targets = load_targets(spec, res, area=area)
    baselines, baseline_note = _baseline_features(inp, spec, area)

    # One cell set for every feature set: targets ∩ embeddings ∩ baselines.
    cells = targets.frame.index.intersection(emb.index)
    for frame in baselines.values():
        cells = cells.intersection(frame.index)
    cells = cells.sort_values()
    if len(cells) == 0:
        raise UrbanReprError(f"no cell has both a target value and an embedding ({len(emb)} embedded cells, "
                             f"{len(targets.frame)} target cells)")
    y = targets.frame.loc[cells]
    flat = constant_targets(y)
    if flat:
        which = ", ".join(f"{t!r} ({n} distinct value(s))" for t, n in flat.items())
        raise UrbanReprError(
            f"target(s) {which} are constant on the {len(cells)} probed cells, so R² is undefined "
            "(probed: cells with a target value, an embedding and baselines); "
            "drop them from [targets] of the study area or probe embeddings that cover more of the area")
    fold = make_folds(cells, cv, block_resolution, folds, seed)
    pfx = fold.metric_prefix

    targets_key = targets_digest(spec)
    params = {"study_area": study_area, "model_uri": model_uri or "", "table": table or "", "probe": probe,
              "block_resolution": block_resolution, "folds": folds, "cv": cv, "seed": seed,
              "resolved.input": inp.uri, "resolved.resolution": res, "folds_digest": fold.digest[:16],
              "targets_digest": targets_key[:16]}
    tags = {"probe": probe, "cv": cv, "resolution": res, "input": inp.kind}
    if inp.model_version:
        tags["model_version"] = f"{inp.model_version[0]}/{inp.model_version[1]}"
    if nested is None:
        nested = mlflow.active_run() is not None
    with stage_run("probe", spec.name, tags=tags, run_name=f"probe-{probe}-{inp.kind}", nested=nested) as run:
        log_new_params(params)
        start = time.perf_counter()
        source = inp.uri if inp.kind == "model" else None
        if inp.table.path is not None:
            log_table_input("embeddings", inp.table.path, source_uri=source, context="probe_input")
        log_source_files({f"target.{n}": t.path for n, t in spec.targets.items()}, context="target")

        results: dict[str, CVResult] = {}
        results["model"] = cross_validate(emb.loc[cells], y, fold, probe, counts=targets.counts, seed=seed)
        for name, frame in baselines.items():
            results[f"baseline_{name}"] = cross_validate(frame.loc[cells], y, fold, probe, counts=targets.counts, seed=seed)
        results[REFERENCE] = cross_validate(latlon_km(cells), y, fold, "knn", counts=targets.counts, standardise=False)

        metrics = results["model"].flat(pfx)
        for name, result in results.items():
            if name != "model":
                metrics.update(result.flat(f"{pfx}{name}_"))
        for name in baselines:
            metrics[f"{pfx}delta_{name}_mean_r2"] = results["model"].mean_r2 - results[f"baseline_{name}"].mean_r2
        if baselines:  # the bar: the best of the free baselines on the headline mean
            best = max(results[f"baseline_{name}"].mean_r2 for name in baselines)
            metrics[f"{pfx}best_baseline_mean_r2"] = best
            metrics[f"{pfx}delta_best_baseline_mean_r2"] = results["model"].mean_r2 - best
        n_area = targets.cells_in_area
        metrics.update({"cells_in_area": n_area, "cells_embedded": len(emb), "cells_probed": len(cells),
                        "blocks": fold.n_blocks})
        for t in y.columns:
            n = int(y[t].notna().sum())
            metrics[f"cells_{t}"] = n
            metrics[f"coverage_{t}"] = n / n_area
        metrics["seconds"] = time.perf_counter() - start
        mlflow.log_metrics(metrics)

        with tempfile.TemporaryDirectory() as tmp:
            fold.save(Path(tmp) / "folds")
            mlflow.log_artifacts(str(Path(tmp) / "folds"), artifact_path="folds")
            oof = pd.DataFrame(index=cells)
            oof["fold"] = fold.fold.loc[cells]
            for t in y.columns:
                oof[f"y_{t}"] = y[t]
                for name, result in results.items():
                    oof[f"{name}_{t}"] = result.predictions[t]
            oof.to_parquet(Path(tmp) / "oof_predictions.parquet")
            _summary_rows(results).to_csv(Path(tmp) / "metrics_by_target.csv", index=False)
            info = {name: r.info for name, r in results.items()}
            (Path(tmp) / "probe_info.json").write_text(json.dumps(
                {"input": inp.uri, "note": inp.note, "baselines": baseline_note, "targets": targets.specs,
                 "count_targets": targets.counts, "target_notes": targets.notes, "folds": fold.describe(),
                 "fit_choices": info}, indent=1, default=str))
            for f in ("oof_predictions.parquet", "metrics_by_target.csv", "probe_info.json"):
                mlflow.log_artifact(str(Path(tmp) / f), artifact_path="probe")

        if figures:
            regions = area.regions_gdf(res)
            label = f"{probe}, {cv} folds"
            for t in y.columns:
                for name, fig in target_maps(regions, y[t], results["model"].predictions[t], t, label).items():
                    log_figure(fig, name)
            bars = {name: {t: m["r2"] for t, m in r.metrics.items()} for name, r in results.items()}
            log_figure(r2_bars(bars, f"{spec.name} res {res}: out-of-fold R² ({label})"), "r2_by_target", png=True)
            log_figure(fold_map(regions, fold.fold, f"{spec.name}: {fold.k} {cv} folds"
                                + (f" of res-{block_resolution} blocks ({fold.n_blocks} blocks)" if cv == "spatial" else "")),
                       "folds", png=True)

        recorded = ""
        if inp.model_version and cv == "spatial":
            from urbanrepml.tracking.registry import probe_prefix, record_probe

            # the settings the folds were made with: promote trusts a record only when they match its own
            record = {"probe": probe, "cv": cv, "block_resolution": block_resolution, "folds": folds,
                      "seed": str(int(seed)),  # a string: record_probe rounds numbers to 6 digits
                      "targets_digest": targets_key}  # and the target files: promote compares only identical evidence
            keys = ["mean_r2", "mean_r2_all", *(f"baseline_{name}_mean_r2" for name in baselines),
                    *(f"r2_{t}" for t in y.columns)]
            record.update({k: metrics[k] for k in keys if metrics.get(k) is not None})  # NaN metrics were dropped
            record_probe(inp.model_version, record, run.info.run_id, fold.digest, prefix=probe_prefix(probe))
            recorded = f"; recorded on {inp.model_version[0]} version {inp.model_version[1]}"

        lines = [inp.note, baseline_note,
                 f"{len(cells)} cells probed of {n_area} in the area; folds {fold.digest[:12]} ({fold.n_blocks} blocks)"]
        width = max(len(n) for n in results)
        for name, result in results.items():
            per_target = "  ".join(f"{t} {m['r2']:.3f}" for t, m in result.metrics.items())
            lines.append(f"{name:<{width}}  mean R² {result.mean_r2:.3f} (all {result.mean_r2_all:.3f})  {per_target}")
        lines.append(f"run {run.info.run_id}{recorded}")
        mlflow.set_tag("mlflow.note.content", "\n".join(lines))
        print("\n".join(lines))
    return metrics




@dataclass
class Params:
    """Parameters of the ``probe`` entry point."""

    study_area: str = param(DEFAULT_STUDY_AREA, "bundled area name or path to a study-area TOML")
    model_uri: str | None = param(None, "models:/... (default: the area's @champion, else @candidate)")
    table: str | None = param(None, "path of an embedding table to probe instead of a model")
    probe: str = param("ridge", "probe model", choices=("ridge", "ols", "mlp"))
    block_resolution: int = param(7, "H3 resolution of the spatial blocks")
    folds: int = param(5, "cross-validation folds")
    cv: str = param("spatial", "spatial blocks; random only for comparison", choices=("spatial", "random"))
    seed: int = param(0, "fold seed")


def run(p: Params) -> dict:
    """Probe and log (see :func:`run_probe_stage`)."""
    return run_probe_stage(p.study_area, model_uri=p.model_uri, table=p.table, probe=p.probe,
                           block_resolution=p.block_resolution, folds=p.folds, cv=p.cv, seed=p.seed)


STAGES = {"probe": Stage("probe", "spatial block cross-validated probes of embeddings against targets, beside the baselines",
                         Params, run)}
