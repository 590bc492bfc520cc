"""Embedding tables as run artifacts, and finding the latest one per (area, modality, resolution, source files).

Stage-1 runs are tagged ``urbanrepml.sources_digest`` (one SHA-256 over the digests of the source
files they read); a lookup given the digest of the files the study area names now finds only a table
built from those files, so a study area pointed at another PBF never reuses the old tables.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from urbanrepml.constants import SOURCES_DIGEST
from urbanrepml.tables import EmbeddingTable
from urbanrepml.tracking.runs import tag

TABLES_DIR = "tables"


def table_artifact_path(modality: str, resolution: int) -> str:
    return f"{TABLES_DIR}/{modality}_res{resolution}.parquet"


def log_embedding_table(table: EmbeddingTable) -> str:
    """Log a written table as an artifact of the active run and tag the run so later stages find it."""
    assert table.path is not None, "write the table first"
    meta = table.meta
    artifact = table_artifact_path(meta.modality, meta.resolution)
    if Path(table.path).name != Path(artifact).name:
        raise ValueError(f"table file must be named {Path(artifact).name}, got {Path(table.path).name}")
    mlflow.log_artifact(str(table.path), artifact_path=TABLES_DIR)
    mlflow.set_tags({
        tag("modality"): meta.modality,
        tag("resolution"): str(meta.resolution),
        tag("table"): artifact,
    })
    return artifact


def latest_table_run(study_area: str, modality: str, resolution: int, sources_digest: str | None = None):
    """The newest FINISHED run holding a table of (area, modality, resolution), or None.

    ``sources_digest``: only a table built from exactly these source files (the run's
    ``urbanrepml.sources_digest`` tag, see :func:`urbanrepml.modalities.current_sources_digests`).
    """
    client = MlflowClient()
    filter_string = (
        f"tags.`{tag('study_area')}` = '{study_area}' and tags.`{tag('modality')}` = '{modality}' "
        f"and tags.`{tag('resolution')}` = '{resolution}' and attributes.status = 'FINISHED'"
    )
    if sources_digest is not None:
        filter_string += f" and tags.`{tag(SOURCES_DIGEST)}` = '{sources_digest}'"
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(experiments, filter_string=filter_string, order_by=["attributes.end_time DESC"], max_results=1)
    if not runs or not runs[0].data.tags.get(tag("table")):
        return None
    return runs[0]


def find_latest_table(study_area: str, modality: str, resolution: int, dst_dir: str | Path | None = None,
                      sources_digest: str | None = None) -> tuple[Path, str] | None:
    """Download the newest finished table of (area, modality, resolution).

    Only tables built from ``sources_digest`` when it is given; return (local path, run id) or None.
    """
    run = latest_table_run(study_area, modality, resolution, sources_digest)
    if run is None:
        return None
    artifact = run.data.tags[tag("table")]
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=artifact, dst_path=str(dst_dir) if dst_dir else None)
    return Path(local), run.info.run_id


def list_table_modalities(study_area: str, resolution: int) -> list[str]:
    """Modalities with at least one finished stage-1 table of (area, resolution) in the tracking store, sorted.

    Only runs tagged ``urbanrepml.stage = modality`` count, so fused or baseline tables are never
    mistaken for fusion inputs.
    """
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    filter_string = (
        f"tags.`{tag('study_area')}` = '{study_area}' and tags.`{tag('resolution')}` = '{resolution}' "
        f"and tags.`{tag('stage')}` = 'modality' and attributes.status = 'FINISHED'"
    )
    modalities: set[str] = set()
    page_token = None
    while True:
        page = client.search_runs(experiments, filter_string=filter_string, max_results=1000, page_token=page_token)
        for run in page:
            if run.data.tags.get(tag("table")) and run.data.tags.get(tag("modality")):
                modalities.add(run.data.tags[tag("modality")])
        page_token = page.token
        if not page_token:
            break
    return sorted(modalities)
