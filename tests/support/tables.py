"""Contract tables written for tests: modality tables from given values, stand-in embeddings of cell centres."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from urbanrepml.areas import build_area, h3ops
from urbanrepml.tables import EmbeddingTable, TableMeta, to_embedding_frame, write_table


def write_modality(path: Path, modality: str, region_ids, values, *, study_area: str, resolution: int = 9,
                   run_id: str | None = None, names=None) -> Path:
    """A contract table of ``modality`` with ``values`` (one row per region id; 1-D values are one column)."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 1:
        values = values[:, None]
    frame, default_names = to_embedding_frame(values, region_ids, modality)
    meta = TableMeta(modality=modality, resolution=resolution, study_area=study_area, prefix=modality,
                     producer_run_id=run_id, feature_names=list(names or default_names))
    return write_table(EmbeddingTable(frame, meta), path)


def coords_table(path: Path, area: str, modality: str = "coords", seed: int = 0, res: int = 9) -> EmbeddingTable:
    """Random Fourier features of the cell centres of ``area`` (a name or TOML path) as a contract table.

    A learnable but imperfect function of space: the stand-in embeddings of the probe, tune and promote tests.
    """
    from urbanrepml.config import load_study_area

    spec = load_study_area(area)
    built = build_area(spec, [res])
    cells = built.cells(res)
    lat, lon = h3ops.cell_centroids(cells)
    z = np.column_stack([(lat - lat.mean()) / lat.std(), (lon - lon.mean()) / lon.std()])
    w = np.random.default_rng(seed).normal(size=(2, 4)) * 2.0
    frame, names = to_embedding_frame(np.column_stack([np.sin(z @ w), np.cos(z @ w), z]), built.region_ids(res), modality)
    meta = TableMeta(modality=modality, resolution=res, study_area=spec.name, prefix=modality, feature_names=names)
    table = EmbeddingTable(frame, meta)
    write_table(table, path, area_cells=cells)
    return table


def log_modality_table(area: str) -> str:
    """A finished stage-1 run holding a 'coords' modality table of ``area`` (what fusion inputs look for)."""
    from urbanrepml.config import load_study_area
    from urbanrepml.stages.modality import table_path
    from urbanrepml.tracking import log_embedding_table, stage_run

    name = load_study_area(area).name
    with stage_run("modality", name, tags={"modality": "coords", "resolution": 9}) as run:
        log_embedding_table(coords_table(table_path(name, "coords", 9), area, seed=1))
    return run.info.run_id
