"""Fusion artifacts in the tracking store: modality tables found, inputs logged, baselines logged and reloaded.

- ``find_modality_tables(study_area, resolution, modalities=None) -> {modality: (path, run_id)}``:
  the newest finished table per modality (downloads it).
- ``store_tables(study_area, resolution, sources=None) -> (tables, provenance)``: the same, shaped for
  :func:`urbanrepml.tasks.fusion.inputs.load_fusion_inputs`; no table is one clear error, and so is a
  table built from other source files than ``sources`` (``{modality: sources digest}``) names.
- ``log_fusion_inputs(inputs)``: every table as an input dataset of the active run, plus params
  ``inputs.*`` and metrics ``inputs.coverage_<modality>``.
- ``log_baselines(tables, area_cells=None)``: the concat, ring and ringconcat baseline tables as
  ``baselines/<prefix>_res<r>.parquet`` artifacts of the active run.
- ``load_baseline_tables(run_id) -> {"concat": ..., "ring": ..., "ringconcat": ...}`` (EmbeddingTables).

Inputs are duck-typed (anything with the attributes of ``FusionInputs``): this package depends only
on the contract layer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from urbanrepml.constants import tag
from urbanrepml.errors import UrbanReprError
from urbanrepml.tables import EmbeddingTable, read_table, write_table
from urbanrepml.tracking.lineage import log_table_input
from urbanrepml.tracking.tables import find_latest_table, latest_table_run, list_table_modalities, table_artifact_path

BASELINES_DIR = "baselines"
BASELINE_PREFIXES = ("concat", "ring", "ringconcat")
REQUIRED_BASELINES = ("concat", "ring")  # runs logged before ringconcat existed have only these
INPUT_HINT = ("run a modality entry point first, e.g. `mlflow run . -e poi -P resolution={resolution}` "
              "(also roads, gtfs, raster, alphaearth, aerial), or pass table paths with -P tables=...")


def find_modality_tables(
    study_area: str, resolution: int, modalities: Sequence[str] | None = None, dst_dir: str | Path | None = None,
    sources: Mapping[str, str] | None = None,
) -> dict[str, tuple[Path, str]]:
    """Newest finished table per modality of (``study_area``, ``resolution``) in the tracking store.

    ``modalities=None`` means every modality that has a table there. ``sources``: ``{modality: sources
    digest}`` of the files the study area names now; a modality listed there only counts a table built
    from exactly those files (modalities not listed, e.g. built from a path parameter, take the newest).
    Returns ``{modality: (local path, producer run id)}`` (downloaded under ``dst_dir`` or a temporary
    folder); modalities without a table are left out.
    """
    names = list(modalities) if modalities is not None else list_table_modalities(study_area, resolution)
    found: dict[str, tuple[Path, str]] = {}
    for modality in sorted(set(names)):
        digest = (sources or {}).get(modality)
        hit = find_latest_table(study_area, modality, resolution, dst_dir=dst_dir, sources_digest=digest)
        if hit is not None:
            found[modality] = hit
    return found


def stale_modalities(study_area: str, resolution: int, sources: Mapping[str, str]) -> dict[str, str]:
    """``{modality: run id}`` of modalities whose newest table was built from other files than ``sources`` names."""
    out: dict[str, str] = {}
    for modality in list_table_modalities(study_area, resolution):
        if modality in sources and latest_table_run(study_area, modality, resolution, sources[modality]) is None:
            newest = latest_table_run(study_area, modality, resolution)
            out[modality] = newest.info.run_id if newest is not None else ""
    return out


def log_fusion_inputs(inputs, context: str = "fusion_input") -> None:
    """Log every table as an input dataset of the active run, plus ``inputs.*`` params and coverage metrics.

    Source of each dataset: ``runs:/<producer run>/tables/<modality>_res<r>.parquet`` when the table
    was found in the tracking store, else the local file. Params are prefixed ``inputs.`` so they
    do not collide with the trainer's own.
    """
    for m, src in inputs.sources.items():
        log_table_input(f"{m}_res{inputs.resolution}", src["path"], source_uri=src.get("source_uri"), context=context)
    params = {
        "inputs.modalities": ",".join(inputs.modalities),
        "inputs.zero_filled": ",".join(inputs.zero_filled),
        "inputs.n_cells": inputs.n_cells,
        "inputs.n_features": int(inputs.x.shape[1]),
    }
    for m, src in inputs.sources.items():
        params[f"inputs.{m}.run_id"] = src.get("run_id") or "none"
        params[f"inputs.{m}.sha256"] = src["sha256"][:16]
    mlflow.log_params(params)
    mlflow.log_metrics({f"inputs.coverage_{m}": c for m, c in inputs.coverage.items()})


def baseline_artifact_path(prefix: str, resolution: int) -> str:
    return f"{BASELINES_DIR}/{prefix}_res{resolution}.parquet"


def log_baselines(tables: dict[str, EmbeddingTable], area_cells: np.ndarray | None = None) -> dict[str, EmbeddingTable]:
    """Log baseline tables (from ``tasks.fusion.baselines.baseline_tables``) to the active run.

    Artifacts ``baselines/<prefix>_res<r>.parquet``; params ``baseline.<key>`` from the ring
    table's settings (``ring_k``, ``ring_weighting``); tags ``urbanrepml.baseline_<prefix>`` with the
    artifact paths. Returns ``tables`` (their ``path`` cleared: the artifact is the record).
    """
    if mlflow.active_run() is None:
        raise UrbanReprError("log_baselines needs an active MLflow run (call it inside stage_run)")
    paths = {p: baseline_artifact_path(p, t.meta.resolution) for p, t in tables.items()}
    with tempfile.TemporaryDirectory() as tmp:
        for prefix, table in tables.items():
            mlflow.log_artifact(str(write_table(table, Path(tmp) / Path(paths[prefix]).name, area_cells=area_cells)),
                                artifact_path=BASELINES_DIR)
            table.path = None
    settings = tables["ring"].meta.extra if "ring" in tables else {}
    if settings:
        mlflow.log_params({f"baseline.{k}": v for k, v in settings.items()})
    mlflow.set_tags({tag(f"baseline_{p}"): path for p, path in paths.items()})
    return tables


def load_baseline_tables(run_id: str, dst_dir: str | Path | None = None) -> dict[str, EmbeddingTable]:
    """Download and validate the baseline tables a fuse run logged: ``{"concat": ..., "ring": ..., "ringconcat": ...}``.

    ``ringconcat`` is left out for runs logged before it existed.
    """
    client = MlflowClient()
    try:
        client.get_run(run_id)
        listed = [a.path for a in client.list_artifacts(run_id, BASELINES_DIR)]
    except MlflowException as exc:
        raise UrbanReprError(f"run {run_id!r} not found in the tracking store ({exc.error_code})") from None
    dst = Path(dst_dir) if dst_dir else Path(tempfile.mkdtemp(prefix="urbanrepml-baselines-"))
    out: dict[str, EmbeddingTable] = {}
    for prefix in BASELINE_PREFIXES:
        matches = sorted(p for p in listed if Path(p).name.startswith(f"{prefix}_res") and p.endswith(".parquet"))
        if not matches and prefix not in REQUIRED_BASELINES:
            continue
        if not matches:
            raise UrbanReprError(
                f"run {run_id} has no {BASELINES_DIR}/{prefix}_res<r>.parquet artifact; "
                "baselines are logged by the fuse entry point"
            )
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=matches[-1], dst_path=str(dst))
        out[prefix] = read_table(local)
    return out



def store_tables(study_area: str, resolution: int, dst_dir: str | Path | None = None,
                 sources: Mapping[str, str] | None = None) -> tuple[dict[str, Path], dict[str, tuple[str, str]]]:
    """The newest table per modality in the store: ``({modality: path}, {modality: (run id, source URI)})``.

    ``sources`` (``{modality: sources digest}``, see :func:`find_modality_tables`): a modality whose tables
    were all built from other source files than the study area names now is refused with one line.
    """
    if sources:
        stale = stale_modalities(study_area, resolution, sources)
        if stale:
            m, run = min(stale.items())
            raise UrbanReprError(
                f"the {m} table of study area {study_area!r} at resolution {resolution} (run {run}) was built from other "
                f"source files than the study area names now; rebuild it (`mlflow run . -e {m} -P study_area=... "
                f"-P resolution={resolution}`, or run fuse, which rebuilds it)")
    found = find_modality_tables(study_area, resolution, dst_dir=dst_dir, sources=sources)
    if not found:
        raise UrbanReprError(f"no modality tables for study area {study_area!r} at resolution {resolution} in the "
                             "tracking store; " + INPUT_HINT.format(resolution=resolution))
    tables = {m: p for m, (p, _) in found.items()}
    provenance = {m: (r, f"runs:/{r}/{table_artifact_path(m, resolution)}") for m, (_, r) in found.items()}
    return tables, provenance
